#!/usr/bin/env python3
"""Mutation testing, one area at a time, with the tests that exercise it (mutmut 3.3.1).

    python3 scripts/mutation.py AREA [--dir DIR] [--children N] [--only GLOB...]
    python3 scripts/mutation.py AREA --score      # the score of the last run in DIR
    python3 scripts/mutation.py AREA --again [--only GLOB...]  # survivors, with new tests

AREA is one of the keys of AREAS below. The script copies this checkout to DIR
(default /tmp/pybpf-mut-AREA; mutmut writes its mutated tree to DIR/mutants), rewrites
the copy's ``[tool.mutmut]`` so that only the area's files are mutated and only the
area's tests run (mutmut then runs, for each mutant, the tests that reached the mutated
module in its first, clean run: see widen_stats), runs ``mutmut run`` over the area's mutant names,
and prints the score: caught (killed or timed out) of all, with the survivors and the
mutants no test reached. Child interpreters the tests start import the mutated tree
(PYTHONPATH), and apply the mutant under test too. Run as root: the tests load BPF.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# area -> (files mutated, mutant name globs counted, tests run)
AREAS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "types": (["pybpf/types.py"], ["pybpf.types.*"],
              ["tests/test_types.py", "tests/test_codecs.py", "tests/test_globals.py",
               "tests/test_typed_maps.py"]),
    "loss": (["pybpf/ringbuf.py", "pybpf/perfbuf.py"],
             ["pybpf.ringbuf.xǁRingBufferǁ_count_drops_of__*",
              "pybpf.ringbuf.xǁRingBufferǁdrops__*", "pybpf.ringbuf.xǁRingBufferǁstats__*",
              "pybpf.perfbuf.xǁPerfBufferǁ_report_lost__*",
              "pybpf.perfbuf.xǁPerfBufferǁ_after_step__*",
              "pybpf.perfbuf.xǁPerfBufferǁlost__*", "pybpf.perfbuf.xǁPerfBufferǁlost_by_cpu__*",
              "pybpf.perfbuf.xǁPerfBufferǁstats__*"],
             ["tests/test_events_loss.py", "tests/test_perfbuf.py"]),
    "globals": (["pybpf/globals.py", "pybpf/object.py"],
                ["pybpf.globals.*", "pybpf.object.*ǁset_rodata__*",
                 "pybpf.object.*ǁ_rodata_maps__*"],
                ["tests/test_globals.py", "tests/test_object.py"]),
    "walks": (["pybpf/_walk.py"], ["pybpf._walk.*"],
              ["tests/test_walks.py", "tests/test_integrity_walks.py",
               "tests/test_walk_errors.py", "tests/test_walk_fallback.py",
               "-k", "not cli_map_dump"]),
    "cli": (["pybpf/_clicmds.py"], ["pybpf._clicmds.*"],
            ["tests/test_cli.py", "tests/test_cli_output.py"]),
}

STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests",
          34: "skipped", 35: "suspicious", 36: "timeout", -24: "timeout", 24: "timeout",
          152: "timeout", 255: "timeout", -11: "segfault", None: "not checked"}
CAUGHT = {"killed", "timeout", "segfault"}

# mutmut 3.3.1 records as a test's duration that of its last phase (teardown: about 0),
# and limits each mutant to (its tests' estimate + 1) x 30 s of CPU, and its own
# wall-clock check compares every running mutant with the estimate of every mutant of its
# file, the smallest included. On this project the estimates are then about 0 and tests
# that took longer on a loaded machine read as "timeouts" though nothing hung. Here a
# test's duration is the sum of its phases, the CPU limit is at least an hour, and each
# mutant is held to its own tests' time x 3 plus 2 minutes, 10 minutes at least (wall).
MUTMUT = """
import os, resource, signal, time
from datetime import datetime
import mutmut
import mutmut.__main__ as mm

class Summed(dict):
    def __setitem__(self, key, value):
        super().__setitem__(key, self.get(key, 0.0) + value)

_run_stats = mm.PytestRunner.run_stats
def run_stats(self, *, tests):
    mutmut.duration_by_test = Summed(mutmut.duration_by_test)  # setup + call + teardown
    return _run_stats(self, tests=tests)
mm.PytestRunner.run_stats = run_stats

_setrlimit = resource.setrlimit
def setrlimit(which, limits):
    if which == resource.RLIMIT_CPU:
        limits = (max(limits[0], 3600), max(limits[1], 3601))
    _setrlimit(which, limits)
mm.resource.setrlimit = setrlimit

def timeout_checker(mutants):
    files = list({id(m): m for m, _, _ in mutants}.values())
    def check():
        while True:
            time.sleep(1)
            now = datetime.now()
            for m in files:
                with mm.START_TIMES_BY_PID_LOCK:
                    starts = dict(m.start_time_by_pid)
                for pid, t in starts.items():
                    est = m.estimated_time_of_tests_by_pid.get(pid, 0)
                    if (now - t).total_seconds() > max(600, est * 3 + 120):
                        try:
                            os.kill(pid, signal.SIGXCPU)
                        except ProcessLookupError:
                            pass
    return check

def fresh_caches():
    # each mutant runs in a fork of mutmut's process, which ran every test once: the
    # BTF it parsed then (BTF.shared, with the types and codecs built from it) would be
    # reused, and a mutant of a codec's constructor would never run
    import sys
    btf = sys.modules.get("pybpf.btf")
    if btf is not None:
        btf._shared.clear()
        btf.BTF._vmlinux = None

os.register_at_fork(after_in_child=fresh_caches)
mm.timeout_checker = timeout_checker
mm.cli()
"""


def prepare(area: str, dest: Path) -> None:
    """Copy the checkout to ``dest`` and point its [tool.mutmut] at the area."""
    files, _, tests = AREAS[area]
    shutil.rmtree(dest, ignore_errors=True)  # mutants/ too: no results of older sources
    shutil.copytree(ROOT, dest, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "mutants", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"))
    others = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pybpf").rglob("*.py")
                    if str(p.relative_to(ROOT)) not in files)
    section = ("[tool.mutmut]\n"
               'paths_to_mutate = ["pybpf/"]\n'
               'also_copy = ["bpf_src/"]\n'
               f"do_not_mutate = {json.dumps(others)}\n"
               f"tests_dir = {json.dumps(tests)}\n")
    py = dest / "pyproject.toml"
    text = py.read_text()
    text, n = re.subn(r"^\[tool\.mutmut\]\n(?:(?!^\[).*\n|\n)*", section + "\n", text,
                      flags=re.M)
    if n != 1:
        sys.exit("pyproject.toml: no [tool.mutmut] section to rewrite")
    py.write_text(text)


def score(area: str, dest: Path) -> dict[str, list[str]]:
    """Mutant names of the area by status, from mutmut's records in ``dest/mutants``."""
    globs = AREAS[area][1]
    by: dict[str, list[str]] = {}
    for meta in (dest / "mutants").rglob("*.meta"):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        for name, code in codes.items():
            if any(fnmatch.fnmatchcase(name, g) for g in globs):
                by.setdefault(STATUS.get(code, f"exit {code}"), []).append(name)
    return by


def report(area: str, dest: Path) -> int:
    by = score(area, dest)
    unrun = len(by.pop("not checked", []))
    total = sum(len(v) for v in by.values())
    caught = sum(len(v) for k, v in by.items() if k in CAUGHT)
    print(f"{area}: {caught} of {total} mutants caught"
          f" ({100 * caught / max(total, 1):.0f}%): "
          + ", ".join(f"{k} {len(v)}" for k, v in sorted(by.items()))
          + (f" ({unrun} more not run: a sample)" if unrun else ""))
    for k in ("survived", "no tests", "suspicious", "timeout"):
        for name in sorted(by.get(k, [])):
            print(f"  {k}: {name}")
    return 0 if total else 1


def widen_stats(dest: Path) -> None:
    """Map every function of a mutated module to every test that reached the module.

    mutmut runs, for a mutant, only the tests that called its function during the
    first, clean run. Codecs, sections and walks are built once and cached (per BTF
    object, per module-scoped fixture), so only the first test that builds one is
    recorded, and a mutant of ``EnumCodec.__init__`` ran a test that checks offsets
    only: the tests that check enum names never ran and it "survived"."""
    stats = dest / "mutants" / "mutmut-stats.json"
    data = json.loads(stats.read_text())
    by_fn: dict[str, list[str]] = data["tests_by_mangled_function_name"]
    by_module: dict[str, set[str]] = {}
    for fn, tests in by_fn.items():
        by_module.setdefault(fn.rsplit(".", 1)[0], set()).update(tests)
    for meta in (dest / "mutants").rglob("*.meta"):
        for name in json.loads(meta.read_text())["exit_code_by_key"]:
            fn = name.partition("__mutmut_")[0]
            tests = by_module.get(fn.rsplit(".", 1)[0])
            if tests:
                by_fn[fn] = sorted(tests)
    stats.write_text(json.dumps(data))


def mutmut(dest: Path, env: dict[str, str], children: int, names: list[str]) -> None:
    # (not ``-m mutmut``: its trampolines import mutmut.__main__, a second copy then)
    subprocess.run([sys.executable, "-c", MUTMUT, "run", "--max-children", str(children),
                    *names], cwd=dest, env=env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("area", choices=sorted(AREAS))
    ap.add_argument("--dir", type=Path)
    ap.add_argument("--children", type=int, default=1)
    ap.add_argument("--only", nargs="*", help="mutant name globs (default: the area's)")
    ap.add_argument("--sample", type=int, default=0,
                    help="run about this many of the area's mutants, evenly spread")
    ap.add_argument("--score", action="store_true", help="only print the last run's score")
    ap.add_argument("--again", action="store_true",
                    help="run the last run's survivors, timeouts and mutants no test reached "
                         "(those matching --only, if given) again, with the tests as they "
                         "are now")
    a = ap.parse_args()
    dest = a.dir or Path(f"/tmp/pybpf-mut-{a.area}")
    if a.again:
        # the survivors of the last run in DEST, against this checkout's tests now
        for sub in (dest / "tests", dest / "mutants" / "tests"):
            shutil.rmtree(sub, ignore_errors=True)
            shutil.copytree(ROOT / "tests", sub, ignore=shutil.ignore_patterns("__pycache__"))
        # which tests reach each function, and how long each takes, measured again
        (dest / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
        by = score(a.area, dest)
        names = sorted(n for k in ("survived", "no tests", "timeout") for n in by.get(k, [])
                       if not a.only or any(fnmatch.fnmatchcase(n, g) for g in a.only))
        before = {meta: json.loads(meta.read_text())
                  for meta in (dest / "mutants").rglob("*.meta")}
        if names:
            env = dict(os.environ, PYTHONPATH=str(dest / "mutants"),
                       PYBPF_TEST_BPF_DIR=str(dest / "build" / "test-bpf"))
            mutmut(dest, env, a.children, ["nothing.matches.this*"])  # stats of new tests
            widen_stats(dest)
            mutmut(dest, env, a.children, names)
        for meta, old in before.items():  # mutmut forgets the results of the others
            new = json.loads(meta.read_text())
            for name, code in old["exit_code_by_key"].items():
                if new["exit_code_by_key"].get(name) is None:
                    new["exit_code_by_key"][name] = code
            meta.write_text(json.dumps(new))
    elif not a.score:
        prepare(a.area, dest)
        # made now: a PYTHONPATH entry that does not exist yet is cached as "no modules"
        (dest / "mutants").mkdir()
        env = dict(os.environ, PYTHONPATH=str(dest / "mutants"),
                   PYBPF_TEST_BPF_DIR=str(dest / "build" / "test-bpf"))
        names = a.only or AREAS[a.area][1]
        # a first run over no mutant generates them all (and runs the tests once)
        mutmut(dest, env, a.children, ["nothing.matches.this*"])
        widen_stats(dest)
        if a.sample:
            everyone = sorted(n for v in score(a.area, dest).values() for n in v)
            names = everyone[::max(1, -(-len(everyone) // a.sample))]
            print(f"a sample of {len(names)} of the area's {len(everyone)} mutants")
        mutmut(dest, env, a.children, names)
    return report(a.area, dest)


if __name__ == "__main__":
    sys.exit(main())
