"""Typed map operations vs. a C libbpf loop on the same map, same run.

    sudo python3 benchmarks/bench_maps.py [--n 20000] [--rounds 30] [--entries 1000000]

1. Single typed lookups / updates on u32 -> 32-byte struct maps (benchmarks/maps_bench.bpf.c:
   hash, array, per-CPU hash, per-CPU array): ``m[k]`` and ``m[k] = v`` against
   bpf_map_lookup_elem / bpf_map_update_elem in C (benchmarks/map_ops.c, compiled here
   with gcc -lbpf). The update rows build the value per operation, as a program does:
   from the map's typed class (``Val(count=k, ...)``), as a tuple and as a dict (one row
   reuses one value built once). Per-CPU lookups decode one struct per possible CPU;
   per-CPU updates write the value to every CPU.
   pylibbpf (a Python peer), when it is installed, gets two rows on its own load of
   the same object: lookup and update of raw bytes (no decoding: its best case).
2. Batch dump of a 1M-entry u32 -> u64 hash: pybpf's raw batch walk
   (``m.lookup_batch(chunk)``, every chunk kept as bytes) and the typed ``items()``
   against a bpf_map_lookup_batch loop in C, same chunk size. The C loop also sums
   the values as it goes (its buffers are reused); Python's chunks are summed after
   the timed walk, and both sums must match the values written.
3. Single typed ``del m[k]`` on that 1M-entry hash against bpf_map_delete_elem in C
   (each side deletes its own present keys).

Prints both sides and the ratio (C time / Python time: 1.0 means as fast as C). The
sides alternate for several rounds and each keeps its best, because the host is shared.
The single-element C loops run in this process (map_ops.c built as a shared object too),
right before the Python loop of the same round, and each row also shows the median and
range of those paired per-round ratios.
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import pybpf  # noqa: E402
from pybpf import toolchain  # noqa: E402


def build_c(tmp: str) -> str:
    exe = os.path.join(tmp, "map_ops")
    src = os.path.join(HERE, "map_ops.c")
    subprocess.run(["gcc", "-O2", "-o", exe, src, "-lbpf"], check=True)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", exe + ".so", src, "-lbpf"],
                   check=True)
    return exe


def load_c(exe: str) -> Any:
    """The C loops of map_ops.c in this process (cffi ABI mode; the GIL is released)."""
    from cffi import FFI

    ffi = FFI()
    ffi.cdef("double map_ops_lookup(int fd, long n, long nkeys);"
             "double map_ops_update(int fd, long n, long nkeys);"
             "double map_ops_delete(int fd, uint32_t first, long n);")
    return ffi.dlopen(exe + ".so")


class Paired:
    """Best ns of each side over rounds, and the median of the per-round C/python ratios
    (each round runs both sides back to back, so they share the host's load then)."""

    def __init__(self) -> None:
        self.c: list[float] = []
        self.py: list[float] = []

    def add(self, c_ns: float, py_ns: float) -> None:
        assert c_ns > 0, "the C loop failed"
        self.c.append(c_ns)
        self.py.append(py_ns)

    def row(self, what: str) -> None:
        ratios = sorted(c / p for c, p in zip(self.c, self.py))
        med = ratios[len(ratios) // 2]
        py, c = min(self.py), min(self.c)
        print(f"{what:<44} python {py:10.1f} ns   C {c:10.1f} ns   C/python {c / py:5.2f}"
              f"   (paired rounds: median {med:4.2f}, {ratios[0]:4.2f}..{ratios[-1]:4.2f})")


def c_run(exe: str, *args: object) -> str:
    return subprocess.run([exe, *map(str, args)], check=True, capture_output=True,
                          text=True).stdout.strip()


def _loop_ns(fn: object, n: int) -> float:
    t0 = time.perf_counter_ns()
    fn()  # type: ignore[operator]
    return (time.perf_counter_ns() - t0) / n


def bench_single(exe: str, n: int, rounds: int) -> None:
    tmp = tempfile.mkdtemp()
    obj_path = os.path.join(tmp, "maps_bench.bpf.o")
    prebuilt = os.path.join(os.environ.get("PYBPF_BENCH_OBJECTS", "/nonexistent"),
                            "maps_bench.bpf.o")
    if os.path.exists(prebuilt):  # compiled elsewhere: a userspace without clang
        obj_path = prebuilt
    else:
        toolchain.compile(os.path.join(HERE, "maps_bench.bpf.c"), obj_path)
    c = load_c(exe)
    with pybpf.load(obj_path) as obj:
        Val = obj.btf["val"].pytype
        nkeys = 1000
        keys = [i % nkeys for i in range(n)]
        raw_keys = [struct.pack("<I", k) for k in keys]
        v = Val(count=1, bytes=2, pid=3, flags=4, stamp=5)

        for name in ("vals", "arr", "pc_hash", "pc_arr"):
            m = obj.maps[name]
            m.update({i: Val(count=i, bytes=2 * i, pid=i, flags=1, stamp=i)
                      for i in range(nkeys)})

        def lookups(m: Any) -> Any:
            def run() -> None:
                for k in keys:
                    m[k]
            return run

        def lookups_read(m: Any) -> Any:  # and every member read, as programs use values
            def run() -> None:
                for k in keys:
                    v = m[k]
                    _ = v.count, v.bytes, v.pid, v.flags, v.stamp
            return run

        def built(m: Any) -> Any:  # the value built per operation from the typed class
            def run() -> None:
                for k in keys:
                    m[k] = Val(count=k, bytes=k, pid=k, flags=1, stamp=k)
            return run

        hash_m, arr_m, pch_m, pca_m = (obj.maps[x] for x in ("vals", "arr", "pc_hash", "pc_arr"))

        def prebuilt() -> None:
            for k in keys:
                hash_m[k] = v

        def tuples() -> None:
            for k in keys:
                hash_m[k] = (k, k, k, 1, k)

        def dicts() -> None:
            for k in keys:
                hash_m[k] = {"count": k, "bytes": k, "pid": k, "flags": 1, "stamp": k}

        def raw_lookups() -> None:
            lookup = hash_m.lookup
            for k in raw_keys:
                lookup(k)

        from pybpf._ffi import ffi, lib

        fd = hash_m.fd

        def bare_lookups() -> None:  # one cffi call (GIL released), no decoding
            lk, buf = lib.bpf_map_lookup_elem, ffi.new("char[32]")
            for k in raw_keys:
                lk(fd, k, buf)

        peer = _pylibbpf_rows(obj_path, keys, nkeys)
        ncpu = pybpf.possible_cpus()
        # (label, C loop, map, python loop), in print order
        rows: list[tuple[str, str, Any, Any]] = [
            ("typed lookup  m[k] -> struct (32 B), hash", "lookup", hash_m, lookups(hash_m)),
            ("typed lookup + read every field, hash", "lookup", hash_m, lookups_read(hash_m)),
            ("typed update  m[k] = v (v built once)", "update", hash_m, prebuilt),
            ("typed update  m[k] = Val(...) per op, hash", "update", hash_m, built(hash_m)),
            ("typed update  m[k] = (a, b, ...) per op", "update", hash_m, tuples),
            ("typed update  m[k] = {...} per op", "update", hash_m, dicts),
            ("typed lookup  m[k] -> struct, array", "lookup", arr_m, lookups(arr_m)),
            ("typed update  m[k] = Val(...) per op, array", "update", arr_m, built(arr_m)),
            (f"per-CPU lookup m[k] -> {ncpu} structs, hash", "lookup", pch_m, lookups(pch_m)),
            ("per-CPU update m[k] = Val(...) per op, hash", "update", pch_m, built(pch_m)),
            (f"per-CPU lookup m[k] -> {ncpu} structs, array", "lookup", pca_m, lookups(pca_m)),
            ("per-CPU update m[k] = Val(...) per op, array", "update", pca_m, built(pca_m)),
            *peer,
            ("raw lookup    m.lookup(bytes) -> bytes", "lookup", hash_m, raw_lookups),
            ("bare cffi bpf_map_lookup_elem (no decoding)", "lookup", hash_m, bare_lookups),
        ]
        for _, _, _, fn in rows:
            fn()  # warm up
        sides = [Paired() for _ in rows]
        # Each round runs the C loop and then the Python loop on the same map, in this
        # process: the host is shared and noisy, and neighbours in time see the same load.
        for _ in range(rounds):
            for side, (_, op, m, fn) in zip(sides, rows):
                c_loop = c.map_ops_lookup if op == "lookup" else c.map_ops_update
                side.add(c_loop(m.fd, n, nkeys), _loop_ns(fn, n))
    for side, (label, *_) in zip(sides, rows):
        side.row(label)
    print(f"{'typed lookup / bare cffi call':<44} "
          f"{min(sides[-1].py) / min(sides[0].py):5.2f}")


def _pylibbpf_rows(obj_path: str, keys: list[int], nkeys: int) -> list[tuple[str, str, Any, Any]]:
    """Rows for pylibbpf (a Python peer, optional: none when it is not installed; never a
    dependency) on its own load of the same object: raw 32-byte values, its best case."""
    try:
        from pylibbpf import pylibbpf as plb  # type: ignore[import-not-found]
    except ImportError:
        print("(pylibbpf is not installed: no peer rows)")
        return []
    import types

    pobj = plb.BpfObject(obj_path)
    pobj.load()
    pm = pobj.get_map("vals")
    raw = bytes(32)
    for i in range(nkeys):
        pm.update(i, raw)
    fd = types.SimpleNamespace(fd=pm.get_fd())

    def lookups() -> None:
        lookup = pm.lookup
        for k in keys:
            lookup(k)

    def updates() -> None:
        update = pm.update
        for k in keys:
            update(k, raw)

    _pylibbpf_keep.append(pobj)  # its maps live as long as the rows run
    return [("pylibbpf lookup(k) -> bytes, hash", "lookup", fd, lookups),
            ("pylibbpf update(k, bytes) (built once), hash", "update", fd, updates)]


_pylibbpf_keep: list[Any] = []


def _deletes(m: object, first: int, n: int) -> None:
    for k in range(first, first + n):
        del m[k]  # type: ignore[attr-defined]


def bench_dump(exe: str, entries: int, chunk: int, rounds: int, n_del: int) -> None:
    with pybpf.create_map("hash", 4, 8, entries, name="bench_dump", key="u32",
                          value="u64") as m:
        step = 100_000
        for base in range(0, entries, step):
            hi = min(entries, base + step)
            ok = m.update_batch([(i, i * 3) for i in range(base, hi)])
            assert ok, "kernel lacks batch update"
        def check(chunks: list[Any]) -> tuple[int, int]:
            total = s = 0
            for b in chunks:
                total += b.count
                s += sum(struct.unpack_from(f"<{b.count}Q", b.values))
            return total, s

        mid = m.id
        c_ns = py_ns = typed_ns = float("inf")
        for _ in range(rounds):
            c_total, c_one, c_sum = (int(x) for x in c_run(exe, "dump", mid, chunk).split())
            c_ns = min(c_ns, c_one)
            t0 = time.perf_counter_ns()
            chunks = list(m.lookup_batch(chunk))  # the raw form: every chunk kept
            py_ns = min(py_ns, time.perf_counter_ns() - t0)
            total, s = check(chunks)  # every value checked, outside the timed walk
            del chunks
            assert total == c_total == entries and s == c_sum, (total, c_total, s, c_sum)
            t0 = time.perf_counter_ns()
            typed = sum(1 for _ in m.items())
            typed_ns = min(typed_ns, time.perf_counter_ns() - t0)
            assert typed == entries
        # single deletes on the full map: each round, C and Python delete their own keys
        c = load_c(exe)
        fd = m.fd
        del_rounds = 3 * rounds
        n_del = min(n_del, entries // (2 * del_rounds))
        deletes = Paired()
        for r in range(del_rounds):
            first = 2 * r * n_del
            deletes.add(c.map_ops_delete(fd, first, n_del),
                        _loop_ns(lambda r=first + n_del: _deletes(m, r, n_del), n_del))
    print(f"{'batch dump, raw (' + str(entries) + ' entries)':<44} python {py_ns / 1e6:8.1f} ms"
          f"     C {c_ns / 1e6:8.1f} ms     C/python {c_ns / py_ns:5.2f}")
    print(f"{'batch dump, typed items() (decoded)':<44} python {typed_ns / 1e6:8.1f} ms"
          f"     C {c_ns / 1e6:8.1f} ms     C/python {c_ns / typed_ns:5.2f}")
    deletes.row(f"typed delete  del m[k] ({entries} entries)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="single operations per side and round")
    ap.add_argument("--entries", type=int, default=1_000_000, help="entries in the dumped hash")
    ap.add_argument("--chunk", type=int, default=4096, help="batch size (both sides)")
    ap.add_argument("--rounds", type=int, default=30, help="alternating rounds; best kept")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_c(tmp)
        print(f"pybpf {pybpf.__version__}, libbpf {'.'.join(map(str, pybpf.libbpf_version()))},"
              f" kernel {os.uname().release}, Python {sys.version.split()[0]}")
        bench_single(exe, args.n, args.rounds)
        bench_dump(exe, args.entries, args.chunk, max(1, args.rounds // 6), args.n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
