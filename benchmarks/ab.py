#!/usr/bin/env python3
"""A/B: two checkouts' benchmarks, each beside C in the same child, interleaved rounds.

    python3 benchmarks/ab.py BEFORE_DIR AFTER_DIR [--rounds 5] [--only events,maps]
                             [--json FILE]
    python3 benchmarks/ab.py --table FILE [FILE...]

Each checkout must be built in place (``python3 build.py`` there).  Every
measurement runs in a child interpreter with ``PYTHONPATH`` set to its checkout,
which runs that checkout's own benchmark code (its ``benchmarks/bench_events.py``
imported as a module, its ``benchmarks/bench_maps.py`` run as a script) beside the
C libbpf loop of the same script, in the same child; the figure kept is the ratio
pybpf/C of that child (1.00 is C's speed, more is faster), so each ratio pairs runs
that saw the same host load.  The children of one round run back to back, BEFORE and
AFTER alternately, the first of the pair swapping every round (AB BA AB ...).  Per
row the table gives the median over rounds of those ratios with their range, and
after/before (the ratio of the medians).

Rows:

* event drains (bench_events.py's drain section: the buffer filled first, then
  consumed and timed alone; 32 MiB ring, 8192 perf pages per CPU, 1000 32-byte
  events per getppid(), the script's defaults): ``callback``, ``batch``, ``numpy``,
  ``borrow`` (the script has no perf ``borrow`` row: "-").  The consumers use the
  library's default settings.  The BEFORE side is run twice per round, with its
  library's defaults and with ``max_batch_bytes`` 1 MiB (marked ``*``: the setting
  of its README's figures, the default of its script), and after/before divides by
  the faster of the two (``--skip-before-default``: 1 MiB only).  Each row runs in
  its own child (a fresh interpreter, as each C drain is a fresh process: a process
  that has just burnt seconds of CPU in other rows drains several times slower on a
  loaded host), which keeps the best of ``--reps`` drains (C: each its own process;
  pybpf: 2 drains on each of several loads of the object, each after a warm-up
  drain: one load can drain 5x slower than the next on a loaded host, in C too).
  Every event's sequence number is checked; a row that lost or skipped one is marked
  ``!``.
* map operations (bench_maps.py with ``--rounds`` ``--map-rounds``; single-key rows:
  the median of that child's paired C/Python rounds; batch dump: the best of its
  rounds).  A row that one checkout's script lacks reads "-".

``--json FILE`` writes the figures after every round (an interrupted run keeps the
finished rounds; Ctrl-C prints their table); ``--table FILE...`` prints saved runs'
table again (several files: their rounds pooled).  Nothing is written into either
checkout; compiled objects go to a temporary directory.  Needs root (BPF).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# event drains: the defaults of bench_events.py (both versions)
RING_MB, PAGES, N_PER_TRIGGER = 32, 8192, 1000
EVENT_ROWS = [("ring", "callback"), ("ring", "batch"), ("ring", "numpy"), ("ring", "borrow"),
              ("perf", "callback"), ("perf", "batch"), ("perf", "numpy"), ("perf", "borrow")]
# map rows: (name, regex on bench_maps.py's row label, either version's wording)
MAP_ROWS = [
    ("typed lookup m[k], hash", r"typed lookup  m\[k\] -> struct \(32 B\)"),
    ("typed update m[k] = v (v built once)",
     r"typed update  m\[k\] = (struct \(32 B\)|v \(v built once\))"),
    ("typed update m[k] = Val(...) per op", r"typed update  m\[k\] = Val\(\.\.\.\) per op, hash"),
    ("raw lookup m.lookup(bytes)", r"raw lookup    m\.lookup\(bytes\)"),
    ("typed delete del m[k]", r"typed delete  del m\[k\]"),
    ("batch dump, raw lookup_batch()", r"batch dump, raw "),
    ("batch dump, typed items()", r"batch dump, typed items\(\)"),
]
MAP_LINE = re.compile(r"^(?P<label>.+?)\s+python\s.*C/python\s+(?P<best>[\d.]+)"
                      r"(?:\s+\(paired rounds: median (?P<median>[\d.]+))?")


# --- children ----------------------------------------------------------------------

def _check_import(checkout: str) -> Any:
    import pybpf

    where = Path(pybpf.__file__).resolve()
    if not where.is_relative_to(Path(checkout).resolve()):
        raise SystemExit(f"ab.py: pybpf came from {where}, not from {checkout} (not built?)")
    return pybpf


def _bench_events(checkout: str) -> Any:
    path = Path(checkout, "benchmarks", "bench_events.py")
    spec = importlib.util.spec_from_file_location("bench_events", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_events"] = mod  # (its dataclass looks itself up there)
    spec.loader.exec_module(mod)  # puts the checkout first on sys.path, imports its pybpf
    return mod


def child_setup(checkout: str, out: str) -> None:
    """Compile, once per checkout: its events object, C consumer and trigger library."""
    _check_import(checkout)
    from pybpf import toolchain

    src = Path(checkout, "benchmarks")
    toolchain.compile(src / "events_bench.bpf.c", os.path.join(out, "events.bpf.o"))
    for args in ([], ["-shared", "-fPIC"]):
        name = "events_trigger.so" if args else "events_consumer"
        subprocess.run(["cc", "-O2", *args, "-o", os.path.join(out, name),
                        str(src / "events_consumer.c"), "-lbpf", "-lpthread"], check=True)


def child_events(checkout: str, art: str, batch_kib: int | None, reps: int,
                 row: str) -> None:
    """One drain row ("ring batch") in a fresh interpreter, as each C drain runs in a
    fresh process: the C drain (best of reps), then the pybpf row (best of about reps,
    on several loads of the object, each after a warm-up drain); prints
    {row: [ratio, ok]} as JSON."""
    import ctypes

    _check_import(checkout)
    be = _bench_events(checkout)
    be._trigger_lib = ctypes.CDLL(os.path.join(art, "events_trigger.so"))
    obj, exe = os.path.join(art, "events.bpf.o"), os.path.join(art, "events_consumer")
    ring_bytes = RING_MB << 20
    kind, how = row.split()
    t = (int(ring_bytes / 40 * 0.9) if kind == "ring" else int(PAGES * 4096 / 48 * 0.9)
         ) // N_PER_TRIGGER
    bench = be.Bench(obj, ring_bytes, PAGES, None if batch_kib is None else batch_kib << 10)
    c = be.best([be.run_c(exe, obj, f"{kind}-drain", ring_bytes, PAGES, N_PER_TRIGGER, t)
                 for _ in range(reps)])
    # best of reps drains over several objects and consumers (2 drains each), as C's
    # best is over reps processes: on a loaded host one load of the object can drain
    # 5x slower than the next, in C too
    r = be.best([bench.run(kind, how, False, N_PER_TRIGGER, t, 2)
                 for _ in range((reps + 1) // 2)])
    ok = r.events == r.total and not (r.gaps or r.drops or r.lost)
    print(json.dumps({row: (r.rate / c.rate, ok)}))


# --- parent ------------------------------------------------------------------------

def run_child(checkout: str, argv: list[str]) -> str:
    env = dict(os.environ, PYTHONPATH=checkout)
    return subprocess.run([sys.executable, *argv], env=env, cwd=checkout, check=True,
                          stdout=subprocess.PIPE, text=True).stdout


def maps_round(checkout: str, rounds: int) -> dict[str, tuple[float, bool]]:
    text = run_child(checkout, [os.path.join(checkout, "benchmarks", "bench_maps.py"),
                                "--rounds", str(rounds)])
    got: dict[str, tuple[float, bool]] = {}
    for line in text.splitlines():
        m = MAP_LINE.match(line)
        if not m:
            continue
        for name, pattern in MAP_ROWS:
            if re.match(pattern, m["label"]):
                got[name] = (float(m["median"] or m["best"]), True)
    return got


def describe(checkout: str) -> str:
    rev = subprocess.run(["git", "-C", checkout, "log", "-1", "--format=%h"],
                         capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", checkout, "status", "--porcelain", "-uno"],
                           capture_output=True, text=True).stdout.strip()
    return f"{checkout} ({rev or '?'}{', modified' if dirty else ''})"


def num(x: float) -> str:
    return f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"


def cell(values: list[tuple[float, bool]]) -> str:
    if not values:
        return "-"
    xs = [v for v, _ in values]
    mark = "" if all(ok for _, ok in values) else "!"
    return f"{num(statistics.median(xs))} ({num(min(xs))}-{num(max(xs))}){mark}"


Figures = dict[str, dict[str, list[tuple[float, bool]]]]


def print_table(d: dict[str, Any]) -> None:
    """The table of the rounds in ``d`` (what ``--json`` writes after every round)."""
    ev: Figures = d["events"]
    mp: Figures = d["maps"]
    loads = d["loads"]
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), platform.machine())
    print(f"# {d['started']}, {platform.node()}: {cpu}, {os.cpu_count()} CPUs, kernel "
          f"{os.uname().release}; load average (1 min) {min(loads):.1f}-{max(loads):.1f}")
    print(f"# before: {d['before']}\n# after:  {d['after']}")
    print(f"# {d['done']} interleaved rounds; ratio = pybpf/C in the same child (1.00: C's "
          "speed), median (min-max)")
    w = 38

    def med(x: list[tuple[float, bool]]) -> float:
        return statistics.median(v for v, _ in x)

    if any(ev.values()):
        print(f"# drains: best of {d['reps']} per child; library defaults; before* = "
              "max_batch_bytes 1 MiB (non-default then); after/before: of the faster before")
        print(f"{'drain row':<{w}}{'before':>21}{'before*':>21}{'after':>21}{'after/before':>14}")
        for kind, how in EVENT_ROWS:
            row = f"{kind} {how}"
            b, b1, a = (ev.get(s, {}).get(row, []) for s in ("before", "before*", "after"))
            best_b = max((med(x) for x in (b, b1) if x), default=0)
            ratio = f"{med(a) / best_b:.2f}" if a and best_b else "-"
            print(f"{row:<{w}}{cell(b):>21}{cell(b1):>21}{cell(a):>21}{ratio:>14}")
    if any(mp.values()):
        print(f"# maps: bench_maps.py --rounds {d['map_rounds']} per child (single keys: "
              "median of its paired rounds; dumps: its best)")
        print(f"{'map row':<{w}}{'before':>21}{'after':>21}{'after/before':>14}")
        for name, _ in MAP_ROWS:
            b, a = mp["before"].get(name, []), mp["after"].get(name, [])
            ratio = f"{med(a) / med(b):.2f}" if a and b else "-"
            print(f"{name:<{w}}{cell(b):>21}{cell(a):>21}{ratio:>14}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", nargs="?")
    ap.add_argument("after", nargs="?")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--reps", type=int, default=9,
                    help="drains per event row and child, best kept (default 9, as "
                    "bench_events.py's default)")
    ap.add_argument("--map-rounds", type=int, default=12,
                    help="bench_maps.py --rounds of each child (default 12)")
    ap.add_argument("--skip-before-default", action="store_true",
                    help="drains: run BEFORE with max_batch_bytes 1 MiB only")
    ap.add_argument("--only", default="events,maps", help="events, maps or both")
    ap.add_argument("--json", help="write every finished round's figures to this file")
    ap.add_argument("--table", metavar="JSON", nargs="+",
                    help="print the table of --json files again (several: their rounds "
                    "pooled; same checkouts and settings)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.table:
        runs = [json.loads(Path(f).read_text()) for f in args.table]
        pooled = runs[0]
        for more in runs[1:]:
            pooled["done"] += more["done"]
            pooled["loads"] += more["loads"]
            for part in ("events", "maps"):
                for side, rows in more[part].items():
                    for row, values in rows.items():
                        pooled[part].setdefault(side, {}).setdefault(row, []).extend(values)
        print_table(pooled)
        return 0
    if not (args.before and args.after):
        ap.error("BEFORE_DIR and AFTER_DIR are required")
    if args.child:  # [setup OUT] | [events ART KIB|default REPS ROW]: args.before's tree
        if args.child[0] == "setup":
            child_setup(args.before, args.child[1])
        else:
            kib = None if args.child[2] == "default" else int(args.child[2])
            child_events(args.before, args.child[1], kib, int(args.child[3]), args.child[4])
        return 0

    before, after = (os.path.abspath(d) for d in (args.before, args.after))
    only = set(args.only.split(","))
    me = os.path.abspath(__file__)
    # (label, checkout, events batch KiB or None for the library default)
    sides = [("before", before, None), ("before*", before, 1024), ("after", after, None)]
    if args.skip_before_default:
        sides = sides[1:]
    ev: Figures = {s: {} for s, _, _ in sides}
    mp: Figures = {"before": {}, "after": {}}
    d: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "done": 0,
        "before": describe(before), "after": describe(after), "reps": args.reps,
        "map_rounds": args.map_rounds, "loads": [os.getloadavg()[0]], "events": ev, "maps": mp}
    tmp = tempfile.mkdtemp(prefix="pybpf-ab-")
    try:
        art = {}
        if "events" in only:
            for name, tree in (("before", before), ("after", after)):
                art[tree] = os.path.join(tmp, name)
                os.mkdir(art[tree])
                run_child(tree, [me, tree, tree, "--child", "setup", art[tree]])
        for rnd in range(args.rounds):
            order = sides if rnd % 2 == 0 else sides[::-1]
            # the script has no perf borrow row
            rows = [f"{k} {h}" for k, h in EVENT_ROWS if (k, h) != ("perf", "borrow")]
            for row in rows if "events" in only else []:
                for label, tree, kib in order:
                    text = run_child(tree, [me, tree, tree, "--child", "events", art[tree],
                                            "default" if kib is None else str(kib),
                                            str(args.reps), row])
                    for name, (ratio, ok) in json.loads(text.splitlines()[-1]).items():
                        ev[label].setdefault(name, []).append((ratio, ok))
            if "maps" in only:
                for label in (("before", "after") if rnd % 2 == 0 else ("after", "before")):
                    tree = before if label == "before" else after
                    for row, v in maps_round(tree, args.map_rounds).items():
                        mp[label].setdefault(row, []).append(v)
            d["loads"].append(os.getloadavg()[0])
            d["done"] = rnd + 1
            if args.json:
                Path(args.json).write_text(json.dumps(d))
            print(f"# round {rnd + 1}/{args.rounds} done, load {d['loads'][-1]:.1f}",
                  file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print(f"# interrupted: the {d['done']} finished rounds", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(d)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
