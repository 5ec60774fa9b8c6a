#!/usr/bin/env python3
"""Event streams: pybpf beside a C libbpf consumer, on the same BPF object, in one run.

The object (benchmarks/events_bench.bpf.c) emits N 32-byte events with bpf_loop
on every getppid() of the benchmark process, into a ring buffer or a perf
buffer.  The C consumer (benchmarks/events_consumer.c, compiled here with
``cc -lbpf``) and pybpf each load it and consume:

* stream: a trigger thread (CPU 0) calls getppid() while the consumer (CPU 1)
  polls; events/s from the first trigger to the last event consumed (pybpf's
  trigger thread runs the C loop through ctypes, without the GIL);
* drain:  the buffer is filled first, then consumed and timed alone.

pybpf is measured per event (``poll()`` with a Python callback per record that
checks the sequence number; ``callback-typed``: the same with each record decoded
into its BTF struct, ``decode="bench_event"``, the callback reading ``ev.seq``;
``callback-append``: the builtin ``list.append`` as callback, the records checked
after each poll), in
batches (``read()``: records copied once, in C, into one buffer; sequence
numbers checked over the whole batch in one pass through a numpy view of the
seq field -- a memoryview without numpy), as numpy arrays
(``read().numpy()``), and zero-copy (``borrow()``: the ring's memory viewed in
place, checked the same way).  The C consumer's callback only reads each
record's sequence number in place; a second C row per drain
(``ring-drain-copy``, ``perf-drain-copy``) also copies every record into one
pre-faulted buffer and checks the copy, which is the work a batch does.
pybpf's consumers are made with the library's default settings (``max_batch_bytes``
1 MiB: a read() takes at most that much, so the check reads records the copy has
just left in the cache, much as the C callbacks check each record as it is
read), unless ``--batch-kib`` sets ``max_batch_bytes``; the one row with a
non-default setting, ``batch, unbounded``, takes each drain as one batch (24 MB,
checked from memory after the copy).  Percentages are of the first C row of each section.
Every event's sequence number is checked; gaps, ring drops (counted by the
program) and perf lost samples are printed, never hidden.  The script sets
``OPENBLAS_NUM_THREADS=1`` and ``OMP_NUM_THREADS=1`` before numpy is imported:
otherwise OpenBLAS starts a busy thread per CPU that competes with the
consumer and the trigger thread on small machines.  Figures are the
best of ``--repeat`` runs (3x as many for drains) after a warm-up round, with
one object and one consumer per mode.  Nothing is written into the repository:
the object and the C binary go to a temporary directory.

Run: ``python3 benchmarks/bench_events.py [--repeat 3] [--quick] [--only ring-drain]
[--batch-kib N]``.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# numpy's OpenBLAS would start a busy thread per CPU at import; on a 2-CPU machine
# they compete with the consumer and the trigger thread (set before numpy loads)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pybpf  # noqa: E402
from pybpf import PerfBuffer, RingBuffer, toolchain  # noqa: E402

try:
    import numpy as np
except ImportError:  # numpy is an optional extra
    np = None  # type: ignore[assignment]

HERE = Path(__file__).resolve().parent
_libc = ctypes.CDLL(None, use_errno=True)
_getppid = _libc.getppid  # through ctypes: the GIL is released during the syscall
_trigger_lib: ctypes.CDLL | None = None


def trigger_in_c(rounds: int) -> None:
    """getppid() ``rounds`` times on CPU 0 from C: the calling thread holds no GIL."""
    assert _trigger_lib is not None
    _trigger_lib.bench_trigger(ctypes.c_ulong(rounds))


@dataclass
class Result:
    events: int
    seconds: float
    gaps: int
    drops: int
    lost: int
    total: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def pin(cpu: int) -> None:
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {cpu})


# --- C -----------------------------------------------------------------------------

def run_c(exe: str, obj: str, mode: str, ring_bytes: int, pages: int, n: int,
          triggers: int) -> Result:
    out = subprocess.run([exe, obj, mode, str(ring_bytes), str(pages), str(n), str(triggers)],
                         capture_output=True, text=True, check=True).stdout
    f = dict(kv.split("=") for kv in out.split())
    return Result(int(f["events"]), float(f["seconds"]), int(f["gaps"]), int(f["drops"]),
                  int(f["lost"]), int(f["total"]))


# --- pybpf -------------------------------------------------------------------------

_REF: array[int] = array("Q")


def reference(upto: int) -> memoryview:
    """0, 1, 2, ... as 64-bit integers: the expected sequence numbers (built once)."""
    global _REF
    if len(_REF) < upto:
        _REF = array("Q", range(upto))
    return memoryview(_REF)


class Checker:
    """Sequence check: counts events and the seq numbers skipped (gaps)."""

    def __init__(self, total: int) -> None:
        self.ref = reference(total + 1)
        self.ref_np = np.arange(total + 1, dtype="<u8") if np is not None else None
        self._cb_state = [0, 0, 0]  # expected, events, gaps (for the callback)
        self.reset()

    def reset(self) -> None:
        self.expected = 0
        self.events = 0
        self.gaps = 0
        self._cb_state[:] = [0, 0, 0]

    def batch(self, b: pybpf.RecordBatch) -> None:
        """Check a batch of fixed 32-byte records (ring: exactly 32; perf: 36)."""
        n = len(b)
        if not n:
            return
        exp = self.expected
        size = b.fixed_size
        offs = b.offsets
        if np is not None and isinstance(offs, range) and size is not None:
            # evenly spaced: a numpy view of the seq field, compared in one pass
            seqa = np.ndarray((n,), "<u8", b.data, offs.start, (offs.step,))
            if np.array_equal(seqa, self.ref_np[exp:exp + n]):
                self.expected = exp + n
                self.events += n
                return
        elif isinstance(offs, range) and offs.start % 8 == 0 and offs.step % 8 == 0:
            # evenly spaced: every seq compared with the expected one, in C
            seqs: Any = memoryview(b.data).cast("Q")[offs.start // 8::offs.step // 8][:n]
            # (tobytes: a strided memoryview compares element by element in Python)
            if seqs.tobytes() == self.ref[exp:exp + n].tobytes():
                self.expected = exp + n
                self.events += n
                return
        if size is not None and np is not None and b.offsets[-1] == b.offsets[0] + (n - 1) * size:
            seqa = np.ndarray((n,), "<u8", b.data, int(b.offsets[0]), (size,))
            if np.array_equal(seqa, self.ref_np[exp:exp + n]):
                self.expected = exp + n
                self.events += n
                return
        elif size is not None:  # perf: 36-byte records
            seqs = array("Q", [s for (s,) in struct.iter_unpack(f"<Q{size - 8}x", b.data)])
            if seqs.tobytes() == self.ref[exp:exp + n].tobytes():
                self.expected = exp + n
                self.events += n
                return
        seqs = [struct.unpack_from("<Q", r)[0] for r in b]  # gaps: find them
        for s in seqs:
            if s != exp:
                self.gaps += s - exp if s > exp else 1
            exp = s + 1
        self.expected = exp
        self.events += n

    def array(self, a: object) -> None:
        assert np is not None
        seqs = a["seq"]  # type: ignore[index]
        n = len(seqs)
        if not n:
            return
        if not np.array_equal(seqs, self.ref_np[self.expected:self.expected + n]):
            d = np.diff(np.concatenate(([self.expected - 1], seqs.astype(np.int64))))
            self.gaps += int((d - 1)[d > 1].sum()) + int((d <= 0).sum())
        self.expected = int(seqs[-1]) + 1
        self.events += n

    def callback(self) -> Callable[[bytes], None]:
        unpack = struct.Struct("<Q").unpack_from
        st = self._cb_state

        def cb(rec: bytes) -> None:
            s = unpack(rec)[0]
            if s != st[0]:
                st[2] += s - st[0] if s > st[0] else 1
            st[0] = s + 1
            st[1] += 1

        return cb

    def typed_callback(self) -> Callable[[Any], None]:
        st = self._cb_state

        def cb(ev: Any) -> None:
            s = ev.seq
            if s != st[0]:
                st[2] += s - st[0] if s > st[0] else 1
            st[0] = s + 1
            st[1] += 1

        return cb

    def finish(self) -> None:
        self.expected, self.events, self.gaps = self._cb_state


class Bench:
    def __init__(self, obj_path: str, ring_bytes: int, pages: int,
                 batch_bytes: int | None = None) -> None:
        self.obj_path = obj_path
        self.ring_bytes = ring_bytes
        self.pages = pages
        self.batch_bytes = batch_bytes  # the consumers' max_batch_bytes (None: the default)

    def _load(self, n: int, perf: bool) -> pybpf.Object:
        obj = pybpf.Object.open(self.obj_path)
        obj.maps["rb"].max_entries = self.ring_bytes
        obj.load()
        obj.attach()
        obj.maps["cfg"].update(b"\0" * 4, struct.pack("<IIII", n, int(perf), os.getpid(), 0))
        return obj

    @staticmethod
    def _drops(obj: pybpf.Object) -> int:
        raw = obj.maps["pybpf_ringbuf_drops"].lookup(b"\0" * 4) or b""
        return sum(v for (v,) in struct.iter_unpack("<Q", raw))

    def run(self, kind: str, how: str, stream: bool, n: int, triggers: int,
            repeat: int) -> Result:
        """Best of ``repeat`` rounds with one object and one consumer (warm buffers),
        after a small warm-up round."""
        perf = kind == "perf"
        total = n * triggers
        obj = self._load(n, perf)
        chk = Checker(total)
        records: list[bytes] = []
        cb: Callable[[bytes], Any] | None = None
        decode = None
        if how == "callback":
            cb = chk.callback()
        elif how == "callback-typed":
            cb, decode = chk.typed_callback(), "bench_event"
        elif how == "callback-append":
            cb = records.append  # a builtin callback: the cost of delivery alone
        cons: RingBuffer | PerfBuffer
        kw: dict[str, Any] = {}
        if self.batch_bytes is not None:
            kw["max_batch_bytes"] = self.batch_bytes
        if perf:
            cons = PerfBuffer(obj.maps["pb"], pages=self.pages, callback=cb, decode=decode, **kw)
        else:
            cons = RingBuffer(obj.maps["rb"], callback=cb, decode=decode, **kw)
        zero = b"\0" * 4
        ncpu = pybpf.possible_cpus()

        def step(timeout: float) -> None:
            if how in ("callback", "callback-typed"):
                cons.poll(timeout)
                chk.finish()
            elif how == "callback-append":
                cons.poll(timeout)
                if records:  # verify what was delivered, all at once
                    size = len(records[0])
                    chk.batch(pybpf.RecordBatch(b"".join(records), None, None, None,
                                                n=len(records), fixed=size))
                    records.clear()
            elif how == "batch":
                chk.batch(cons.read(timeout))
            elif how == "numpy":
                chk.array(cons.read(timeout).numpy("bench_event"))
            elif how == "borrow":
                assert isinstance(cons, RingBuffer)
                with cons.borrow(timeout) as b:
                    chk.batch(b)
            else:  # borrow+numpy
                assert isinstance(cons, RingBuffer)
                with cons.borrow(timeout) as b:
                    chk.array(b.numpy("bench_event"))

        def lost() -> int:
            return cons.lost if isinstance(cons, PerfBuffer) else 0

        def one_round(rounds: int) -> Result:
            obj.maps["seq"].update(zero, bytes(8))
            obj.maps["pybpf_ringbuf_drops"].update(zero, bytes(8 * ncpu))
            lost0 = lost()
            chk.reset()
            done = threading.Event()

            def trigger() -> None:
                trigger_in_c(rounds)
                done.set()

            pin(1)
            want = n * rounds
            if stream:
                t0 = time.perf_counter()
                th = threading.Thread(target=trigger)
                th.start()
                while chk.events + chk.gaps + lost() - lost0 < want:
                    step(0.1)
                    if done.is_set() and chk.events + chk.gaps + lost() - lost0 < want:
                        step(0)
                        if chk.events + lost() - lost0 + self._drops(obj) >= want:
                            break
                t1 = time.perf_counter()
                th.join()
            else:
                trigger()
                pin(1)
                t0 = time.perf_counter()
                while True:
                    before = chk.events
                    step(0)
                    if chk.events == before:
                        break
                t1 = time.perf_counter()
            return Result(chk.events, t1 - t0, chk.gaps, self._drops(obj), lost() - lost0,
                          want)

        try:
            one_round(max(1, triggers // 10))  # warm-up: buffers, page tables, caches
            return best([one_round(triggers) for _ in range(repeat)])
        finally:
            cons.close()
            obj.close()


def best(results: list[Result]) -> Result:
    return max(results, key=lambda r: r.rate)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smaller runs")
    ap.add_argument("--ring-mb", type=int, default=32)
    ap.add_argument("--pages", type=int, default=8192, help="perf pages per CPU")
    ap.add_argument("--batch-kib", type=int, default=None,
                    help="the pybpf consumers' max_batch_bytes in KiB (default: the "
                    "library's default, 1 MiB)")
    ap.add_argument("--only", default="", help="comma-separated sections to run, e.g. "
                    "ring-drain,perf-drain (default: all four)")
    args = ap.parse_args()
    scale = 4 if args.quick else 1
    ring_bytes = args.ring_mb << 20
    n = 1000
    sizes = {  # (kind, stream) -> triggers of n events
        ("ring", True): 2000 // scale,
        ("ring", False): int(ring_bytes / 40 * 0.9) // n,
        ("perf", True): 100 // scale,
        ("perf", False): int(args.pages * 4096 / 48 * 0.9) // n,
    }

    tmp = tempfile.mkdtemp(prefix="pybpf-bench-events-")
    try:
        return _run_all(args, tmp, ring_bytes, n, sizes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_all(args: argparse.Namespace, tmp: str, ring_bytes: int, n: int,
             sizes: dict[tuple[str, bool], int]) -> int:
    prebuilt = os.path.join(os.environ.get("PYBPF_BENCH_OBJECTS", "/nonexistent"),
                            "events.bpf.o")
    obj = prebuilt if os.path.exists(prebuilt) else \
        toolchain.compile(HERE / "events_bench.bpf.c", os.path.join(tmp, "events.bpf.o"))
    exe = os.path.join(tmp, "events_consumer")
    subprocess.run(["cc", "-O2", "-o", exe, str(HERE / "events_consumer.c"), "-lbpf",
                    "-lpthread"], check=True)
    so = os.path.join(tmp, "events_trigger.so")
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", so, str(HERE / "events_consumer.c"),
                    "-lbpf", "-lpthread"], check=True)
    global _trigger_lib
    _trigger_lib = ctypes.CDLL(so)
    bench = Bench(obj, ring_bytes, args.pages,
                  None if args.batch_kib is None else args.batch_kib << 10)
    whole = Bench(obj, ring_bytes, args.pages, 1 << 62)  # unbounded: a non-default setting

    print(f"# {platform.node()}: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, kernel {os.uname().release}, libbpf "
          f"{'.'.join(map(str, pybpf.libbpf_version()))}, Python {platform.python_version()}, "
          f"numpy {np.__version__ if np is not None else 'absent'}")
    print(f"# 32-byte events, {n} per getppid(); ring {args.ring_mb} MiB, perf "
          f"{args.pages} pages/CPU; best of {args.repeat}; pybpf max_batch_bytes "
          f"{'default (1 MiB)' if args.batch_kib is None else f'{args.batch_kib} KiB'}"
          "; rows marked * use a non-default setting")
    header = (f"{'mode':<26}{'events':>9}{'Mev/s':>8}{'% of C':>8}"
              f"{'gaps':>9}{'drops':>9}{'lost':>8}")
    print(header)
    print("-" * len(header))

    def line(name: str, r: Result, c: Result | None) -> None:
        pct = f"{100 * r.rate / c.rate:.0f}%" if c is not None and c.rate else "-"
        print(f"{name:<26}{r.events:>9}{r.rate / 1e6:>8.2f}{pct:>8}{r.gaps:>9}{r.drops:>9}"
              f"{r.lost:>8}", flush=True)

    for kind in ("ring", "perf"):
        for stream in (True, False):
            t = sizes[(kind, stream)]
            mode = f"{kind}-{'stream' if stream else 'drain'}"
            if args.only and mode not in args.only.split(","):
                continue
            # drains are short (milliseconds): more rounds against scheduling noise
            reps = args.repeat if stream else 3 * args.repeat
            c = best([run_c(exe, obj, mode, ring_bytes, args.pages, n, t) for _ in range(reps)])
            line(f"C libbpf {mode}", c, None)
            if not stream:  # a C consumer that keeps every record (as batches do)
                cc = best([run_c(exe, obj, f"{mode}-copy", ring_bytes, args.pages, n, t)
                           for _ in range(reps)])
                line(f"C libbpf {mode}-copy", cc, c)
            hows = ["callback", "callback-typed", "callback-append", "batch", "numpy"]
            if kind == "ring":
                hows += ["borrow", "borrow+numpy"]
            for how in hows:
                if "numpy" in how and np is None:
                    continue
                r = bench.run(kind, how, stream, n, t, reps)
                line(f"  pybpf {how}", r, c)
            if not stream:  # the whole drain as one batch
                r = whole.run(kind, "batch", stream, n, t, reps)
                line("* pybpf batch, unbounded", r, c)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
