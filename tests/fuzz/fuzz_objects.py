#!/usr/bin/env python3
"""Mutation fuzzer for pybpf's object parsing: open and load mutated ``.bpf.o`` files.

Every mutated object goes through ``pybpf.Object.open`` and, when that succeeds,
``Object.load`` (the kernel really loads it) and ``close``, inside a worker
subprocess. The parent records, per input:

* ``ok``        open and load succeeded (the mutation was harmless)
* ``pybpf``     a pybpf exception (BPFError subclass): the wanted outcome for bad input
* ``other``     any other Python exception: a bug (pybpf must raise its own errors)
* ``crash``     the worker died on a signal (SIGSEGV, SIGABRT...): a bug
* ``hang``      no answer within ``--timeout`` seconds: a bug

Crashing, hanging and ``other`` inputs are written to ``--out`` (default
``build/fuzz/``) as ``<probe>-<seed>-<iteration>.bpf.o``; a crash is re-run alone
in a fresh worker to tell a reproducible crasher from heap damage left by an
earlier input. Minimize one with ``--minimize FILE`` and add it to
``tests/fuzz_corpus/`` so ``tests/test_fuzz.py`` keeps it as a regression test.

Mutations are deterministic: input ``i`` of probe ``P`` with seed ``S`` is always
the same bytes, so ``--seed S --start i --iterations 1 P`` replays it.

Short run (what the test suite does, a few seconds)::

    python3 tests/fuzz/fuzz_objects.py --iterations 200

Long run (the issue's acceptance: 20,000 mutations of every shipped probe)::

    python3 tests/fuzz/fuzz_objects.py --iterations 20000 --jobs 2 --seed 1

With no object arguments it fuzzes every ``pybpf/probes/*.bpf.o``.
``--malloc-check`` runs workers with glibc's checking allocator so heap
damage that would not crash yet aborts at once (slower).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import random
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INTERESTING32 = (0, 1, 2, 3, 4, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF,
                 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)
INTERESTING8 = (0, 1, 2, 0x7F, 0x80, 0xFE, 0xFF)
SHT_NOBITS = 8


# --- mutation -------------------------------------------------------------------------

def _sections(data: bytes) -> list[tuple[str, int, int, int]]:
    """(name, type, offset, size) of each section, best effort on valid input."""
    try:
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        hdrs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * 64) for i in range(shnum)]
        stroff, strsize = hdrs[shstrndx][4], hdrs[shstrndx][5]
        strtab = data[stroff:stroff + strsize]
        out = []
        for h in hdrs:
            end = strtab.find(b"\0", h[0])
            out.append((strtab[h[0]:end].decode("latin-1"), h[1], h[4], h[5]))
        out.append(("<shdrs>", 0, shoff, shnum * 64))
        out.append(("<ehdr>", 0, 0, 64))
        return out
    except (struct.error, IndexError):
        return [("<all>", 0, 0, len(data))]


_WEIGHT = {".BTF": 6, ".BTF.ext": 6, ".symtab": 5, "<shdrs>": 4, ".maps": 3, ".strtab": 2,
           "<ehdr>": 1, "license": 1}


def _region(secs: list[tuple[str, int, int, int]], rng: random.Random,
            size: int) -> tuple[int, int]:
    cands = [(n, off, sz) for n, t, off, sz in secs if t != SHT_NOBITS and sz > 0
             and off + sz <= size]
    if not cands:
        return 0, size
    weights = [_WEIGHT.get(n, 4 if n.startswith(".rel") else 1) for n, _, _ in cands]
    _, off, sz = rng.choices(cands, weights)[0]
    return off, sz


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One mutated copy of ``data``: a few byte, word or structure-aware changes."""
    buf = bytearray(data)
    secs = _sections(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
        how = rng.random()
        if how < 0.25:  # the method: random bytes anywhere
            pos = rng.randrange(len(buf))
            buf[pos] = rng.randrange(256)
            continue
        off, sz = _region(secs, rng, len(buf))
        if how < 0.45:
            pos = off + rng.randrange(sz)
            buf[pos] = rng.choice(INTERESTING8) if rng.random() < 0.5 else buf[pos] ^ (
                1 << rng.randrange(8))
        elif how < 0.85 and sz >= 4:
            pos = off + (rng.randrange(sz - 3) & ~3)
            old, = struct.unpack_from("<I", buf, pos)
            r = rng.random()
            if r < 0.5:
                new = rng.choice(INTERESTING32)
            elif r < 0.8:
                new = (old + rng.choice((-8, -4, -2, -1, 1, 2, 4, 8, 16, 64))) & 0xFFFFFFFF
            else:
                new = rng.getrandbits(32)
            struct.pack_into("<I", buf, pos, new)
        elif how < 0.92 and sz >= 2:
            pos = off + (rng.randrange(sz - 1) & ~1)
            struct.pack_into("<H", buf, pos, rng.choice((0, 1, 0x7FFF, 0x8000, 0xFFFF,
                                                         rng.getrandbits(16))))
        elif how < 0.96:  # copy a chunk over another (duplicated records)
            n = rng.randrange(1, 33)
            src = rng.randrange(max(1, len(buf) - n))
            dst = off + rng.randrange(sz)
            buf[dst:dst + n] = buf[src:src + n]
            del buf[len(data):]
        elif len(buf) > 65:  # truncate
            del buf[rng.randrange(64, len(buf)):]
    return bytes(buf)


def mutation(data: bytes, label: str, seed: int, i: int) -> bytes:
    return mutate(data, random.Random(f"{seed}:{label}:{i}"))


# --- worker side ----------------------------------------------------------------------

def worker_main(raw: bool = False) -> None:
    """Read length-prefixed objects on stdin, answer one JSON line each on stdout.

    ``raw`` switches pybpf's validation off, to measure what libbpf alone does
    with an input (``--raw``: baseline crash rates, minimizing crashers).
    """
    import traceback

    import pybpf
    from pybpf import _validate, features

    # Mutated max_entries ask the kernel for huge maps. pybpf refuses loads needing
    # more than half the free memory; two workers each allowed that could still push
    # a shared machine into the OOM killer, so the fuzzer allows 1/20 each.
    _validate.MAP_MEMORY_FRACTION = 0.05
    if raw:
        _validate.check_object = lambda data, name: None

    stdin = sys.stdin.buffer
    out = sys.stdout
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            return
        n, = struct.unpack("<I", head)
        data = stdin.read(n)
        stage = "open"
        res: dict[str, object]
        try:
            obj = pybpf.Object.open(data, name="fuzz")
            try:
                stage = "load"
                # as the tools do: skip programs this kernel cannot load (fexit here),
                # so the rest of the object still reaches the kernel
                for prog in obj.programs.values():
                    feat = features.for_program(prog)
                    if feat is not None and not feat:
                        prog.autoload = False
                obj.load()
            finally:
                obj.close()
            res = {"r": "ok"}
        except pybpf.BPFError as exc:
            res = {"r": "pybpf", "stage": stage, "exc": type(exc).__name__,
                   "msg": str(exc).splitlines()[0][:200]}
        except Exception as exc:  # noqa: BLE001 - classify everything
            res = {"r": "other", "stage": stage, "exc": type(exc).__name__,
                   "msg": "".join(traceback.format_exception(exc))[-1500:]}
        out.write(json.dumps(res) + "\n")
        out.flush()


# --- parent side ----------------------------------------------------------------------

class Worker:
    """A worker subprocess; ``run(data)`` returns the result dict (crash/hang included)."""

    def __init__(self, timeout: float, malloc_check: bool = False, raw: bool = False) -> None:
        self.timeout = timeout
        self.malloc_check = malloc_check
        self.raw = raw
        self.proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        if self.malloc_check:
            env["LD_PRELOAD"] = "libc_malloc_debug.so.0"
            env["GLIBC_TUNABLES"] = "glibc.malloc.check=3"
        argv = [sys.executable, os.path.abspath(__file__), "--worker"]
        if self.raw:
            argv.append("--raw")
        return subprocess.Popen(argv,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=env)

    def run(self, data: bytes) -> dict[str, object]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(struct.pack("<I", len(data)) + data)
            proc.stdin.flush()
        except BrokenPipeError:
            pass
        ready, _, _ = select.select([proc.stdout], [], [], self.timeout)
        if not ready:
            proc.kill()
            proc.wait()
            self.proc = None
            return {"r": "hang"}
        line = proc.stdout.readline()
        if not line.endswith(b"\n"):  # died before (or while) answering
            rc = proc.wait()
            self.proc = None
            sig = -rc if rc < 0 else 0
            name = signal.Signals(sig).name if sig else f"exit {rc}"
            return {"r": "crash", "signal": name}
        result: dict[str, object] = json.loads(line)
        return result

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@dataclass
class Stats:
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    exceptions: collections.Counter[str] = field(default_factory=collections.Counter)
    bad: list[dict[str, object]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def fuzz_probe(path: str, *, seed: int, start: int, iterations: int, jobs: int,
               timeout: float, out: Path, malloc_check: bool = False, raw: bool = False,
               progress: bool = True) -> Stats:
    data = Path(path).read_bytes()
    label = os.path.basename(path).split(".")[0]
    stats = Stats()
    todo = iter(range(start, start + iterations))
    todo_lock = threading.Lock()
    done = [0]
    t0 = time.monotonic()

    def record_bad(i: int, blob: bytes, res: dict[str, object]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        fname = out / f"{label}-{seed}-{i}.bpf.o"
        fname.write_bytes(blob)
        res = dict(res, file=str(fname), iteration=i)
        if res["r"] in ("crash", "hang"):
            alone = Worker(timeout, malloc_check, raw)
            try:
                res["alone"] = alone.run(blob)["r"]
            finally:
                alone.close()
        with stats.lock:
            stats.bad.append(res)

    def loop() -> None:
        w = Worker(timeout, malloc_check, raw)
        try:
            while True:
                with todo_lock:
                    i = next(todo, None)
                if i is None:
                    return
                blob = mutation(data, label, seed, i)
                res = w.run(blob)
                r = str(res["r"])
                with stats.lock:
                    stats.counts[r] += 1
                    if r == "pybpf":
                        stats.exceptions[f"{res['stage']}:{res['exc']}"] += 1
                    done[0] += 1
                    n = done[0]
                if r in ("crash", "hang", "other"):
                    record_bad(i, blob, res)
                if progress and n % 1000 == 0:
                    rate = n / (time.monotonic() - t0)
                    print(f"  {label}: {n}/{iterations} ({rate:.0f}/s) {dict(stats.counts)}",
                          file=sys.stderr, flush=True)
        finally:
            w.close()

    threads = [threading.Thread(target=loop) for _ in range(max(1, jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return stats


def shrink(blob: bytes, original: bytes, outcome: str, timeout: float,
           raw: bool = False) -> bytes:
    """Smallest set of differences from ``original`` that still gives ``outcome``."""
    w = Worker(timeout, raw=raw)
    try:
        cur = bytearray(blob)
        n = min(len(cur), len(original))
        diffs = [i for i in range(n) if cur[i] != original[i]]
        # try restoring each differing byte; keep it restored if the outcome stays
        for i in diffs:
            trial = bytearray(cur)
            trial[i] = original[i]
            if w.run(bytes(trial))["r"] == outcome:
                cur = trial
        if len(cur) < len(original):
            trial = cur + original[len(cur):]
            if w.run(bytes(trial))["r"] == outcome:
                cur = trial
        return bytes(cur)
    finally:
        w.close()


def default_probes() -> list[str]:
    return sorted(glob.glob(str(ROOT / "pybpf" / "probes" / "*.bpf.o")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("objects", nargs="*", help="objects to mutate (default: shipped probes)")
    ap.add_argument("--iterations", "-n", type=int, default=200)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", "-j", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "fuzz")
    ap.add_argument("--malloc-check", action="store_true")
    ap.add_argument("--json", type=Path, help="write the summary here")
    ap.add_argument("--raw", action="store_true",
                    help="switch pybpf's validation off (libbpf alone: baseline, minimizing)")
    ap.add_argument("--shrink", nargs=2, metavar=("CRASHER", "ORIGINAL"),
                    help="minimize CRASHER against ORIGINAL, print the result path")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker_main(args.raw)
        return 0
    if args.shrink:
        crasher, original = (Path(p).read_bytes() for p in args.shrink)
        w = Worker(args.timeout, raw=args.raw)
        outcome = str(w.run(crasher)["r"])
        w.close()
        small = shrink(crasher, original, outcome, args.timeout, args.raw)
        dest = Path(args.shrink[0]).with_suffix(".min.o")
        dest.write_bytes(small)
        ndiff = sum(a != b for a, b in zip(small, original)) + abs(len(small) - len(original))
        print(f"{dest}: outcome {outcome}, {ndiff} bytes differ from the original")
        return 0
    objects = args.objects or default_probes()
    summary = {}
    failed = False
    for path in objects:
        t0 = time.monotonic()
        st = fuzz_probe(path, seed=args.seed, start=args.start, iterations=args.iterations,
                        jobs=args.jobs, timeout=args.timeout, out=args.out,
                        malloc_check=args.malloc_check, raw=args.raw)
        dt = time.monotonic() - t0
        name = os.path.basename(path)
        summary[name] = {"iterations": args.iterations, "seconds": round(dt, 1),
                         "outcomes": dict(st.counts), "exceptions": dict(st.exceptions),
                         "bad": st.bad}
        bad = st.counts["crash"] + st.counts["hang"] + st.counts["other"]
        failed |= bool(bad)
        print(f"{name}: {args.iterations} mutations in {dt:.0f}s: "
              f"ok {st.counts['ok']}, pybpf exceptions {st.counts['pybpf']}, "
              f"crashes {st.counts['crash']}, hangs {st.counts['hang']}, "
              f"other exceptions {st.counts['other']}")
        for b in st.bad:
            print(f"    {b['r']}: {b.get('signal', '')} {b.get('exc', '')} "
                  f"alone={b.get('alone', '-')} {b['file']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
