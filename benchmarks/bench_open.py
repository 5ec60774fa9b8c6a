#!/usr/bin/env python3
"""Cost of pybpf's pre-libbpf validation on opening valid objects, beside C libbpf.

For each object (default: the shipped probes) prints the median of N runs (the C
side reports its median too, so the two compare like with like) of:

* ``C open_mem``      bpf_object__open_mem + close from C (benchmarks/open_mem.c)
* ``pybpf open``      Object.open(bytes) with validation, first time in the process
* ``no validation``   the same with pybpf._validate switched off
* ``validate``        pybpf._validate.check_object alone
* ``reopen``          Object.open of bytes that already passed (kept copy, compared)

(each open is timed with its close, in C as in Python), then, each beside C in the
same run:

* open + one ``.rodata`` write, on a small object (profile.bpf.o, ~60 BTF types) and
  one of ~450 types (execsnoop.bpf.o): ``Object.open(bytes)`` (validation
  cached), ``obj.rodata.targ_pid = 1`` / ``obj.set_rodata(...)``, close; C:
  ``bpf_object__open_mem``, the variable's offset from the object's BTF, the write,
  close;
* a kernel-sized BTF: ``BTF.from_file("/sys/kernel/btf/vmlinux")`` then
  ``find("task_struct")`` and its size; C: ``btf__parse`` + ``btf__find_by_name_kind``
  + ``btf__resolve_size``.

Run: ``python3 benchmarks/bench_open.py [OBJECTS...] [--n 200]``.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pybpf  # noqa: E402
from pybpf import _validate  # noqa: E402


def median_us(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def c_baseline(*args: str | int) -> float | None:
    exe = ROOT / "build" / "open_mem"
    src = ROOT / "benchmarks" / "open_mem.c"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        exe.parent.mkdir(exist_ok=True)
        r = subprocess.run(["cc", "-O2", "-o", str(exe), str(src), "-lbpf"],
                           capture_output=True, text=True)
        if r.returncode:
            print(f"(C baseline not built: {r.stderr.strip()})", file=sys.stderr)
            return None
    out = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True)
    return float(out.stdout) if out.returncode == 0 else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("objects", nargs="*")
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    objects = args.objects or sorted(glob.glob(str(ROOT / "pybpf" / "probes" / "*.bpf.o")))
    print(f"{'object':22} {'bytes':>7} {'C open_mem':>11} {'pybpf open':>11} "
          f"{'no validation':>14} {'validate':>9} {'added':>7} {'reopen':>8}   (microseconds)")
    check = _validate.check_object
    for path in objects:
        data = Path(path).read_bytes()
        name = os.path.basename(path)

        def open_first(data: bytes = data) -> None:
            _validate.forget_passed()
            pybpf.Object.open(data, name="bench").close()

        def open_cached(data: bytes = data) -> None:
            pybpf.Object.open(data, name="bench").close()

        def validate(data: bytes = data, name: str = name) -> None:
            _validate.forget_passed()
            check(data, name)

        open_raw = open_cached  # timed while the check is switched off

        open_first()  # warm up: imports, page cache
        with_v = median_us(open_first, args.n)
        alone = median_us(validate, args.n)
        reopen = median_us(open_cached, args.n)
        _validate.check_object = lambda d, n: None  # type: ignore[assignment]
        try:
            without = median_us(open_raw, args.n)
        finally:
            _validate.check_object = check
        c = c_baseline(path, args.n)
        c_txt = f"{c:11.0f}" if c is not None else f"{'-':>11}"
        print(f"{name:22} {len(data):7} {c_txt} {with_v:11.0f} {without:14.0f} {alone:9.0f} "
              f"{with_v - without:7.0f} {reopen:8.0f}")
    if not args.objects:
        rodata_rows(args.n)
        vmlinux_row(max(5, args.n // 20))


def ratio(py: float, c: float | None) -> str:
    return f"{py / c:6.1f}x" if c else f"{'-':>7}"


def rodata_rows(n: int) -> None:
    """Open + set one .rodata variable + close, beside C (the bytes already validated)."""
    print(f"\n{'open + .rodata write':34} {'C':>8} {'pybpf':>8} {'ratio':>7}   "
          "(microseconds; ratio = pybpf / C)")
    for probe in ("profile", "execsnoop"):
        path = str(ROOT / "pybpf" / "probes" / f"{probe}.bpf.o")
        data = Path(path).read_bytes()
        with pybpf.Object.open(data) as o:
            ntypes = len(o.btf)

        def attr(data: bytes = data) -> None:
            with pybpf.Object.open(data, name="bench") as o:
                o.rodata.targ_pid = 1

        def call(data: bytes = data) -> None:
            with pybpf.Object.open(data, name="bench") as o:
                o.set_rodata("targ_pid", 1)

        c = c_baseline(path, n, "targ_pid")
        for label, fn in (("rodata.x = 1", attr), ("set_rodata", call)):
            fn()
            py = median_us(fn, n)
            print(f"{f'{probe} ({ntypes} types) {label}':34} "
                  f"{c if c is not None else float('nan'):8.0f} {py:8.0f} {ratio(py, c)}")


def vmlinux_row(n: int) -> None:
    """A kernel-sized BTF: parse, find one struct, its size."""
    path = "/sys/kernel/btf/vmlinux"
    if not os.path.exists(path):
        return

    def parse() -> None:
        b = pybpf.BTF.from_file(path)
        t = b.find("task_struct", pybpf.BTFKind.STRUCT)
        assert t is not None and b.size_of(t.id) > 0

    parse()
    py = median_us(parse, n)
    c = c_baseline("--btf", path, n, "task_struct")
    ntypes = len(pybpf.BTF.from_file(path))
    print(f"{f'vmlinux BTF ({ntypes} types) + find':34} "
          f"{c if c is not None else float('nan'):8.0f} {py:8.0f} {ratio(py, c)}")


if __name__ == "__main__":
    main()
