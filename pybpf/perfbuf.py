"""Perf buffers: per-CPU event output (BPF_MAP_TYPE_PERF_EVENT_ARRAY).

::

    with pybpf.PerfBuffer(obj.maps["events"], callback=handle, pages=64) as pb:
        while running:
            pb.poll(timeout=0.1)
    print(pb.lost)                 # samples the kernel could not store

The same forms as :class:`pybpf.RingBuffer`: ``poll``/``consume`` with a
callback, ``events()`` iterator, ``read()`` batches (``RecordBatch.tags`` is
the CPU), ``read_numpy()``, ``async for``.  libbpf sets the buffers up
(``perf_buffer__new``); pybpf reads their mmap()ed pages itself, in C
(``perf_buffer__buffer()``), copying every sample into one buffer per step,
and Python gets the whole batch.

Each record is the raw sample: the kernel pads samples so that, with their
4-byte size, they are 8-byte aligned, so a record may carry up to 7 bytes of
padding after the program's data.

Loss: the kernel counts samples it could not store (buffer full) and reports
them in order; :attr:`PerfBuffer.lost`, :meth:`PerfBuffer.lost_by_cpu` and
``lost_callback(cpu, count)`` surface them.

Threads: as for ring buffers, one consumer thread at a time; ``close()`` and
``lost`` from any thread, during any way of reading; closing the map's object
closes the reader (a blocked ``poll``/``read`` returns).
"""

from __future__ import annotations

import contextlib
import errno as _errno
import mmap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from ._args import c_int
from ._events import (
    DEFAULT_MAX_BATCH_BYTES,
    Callback,
    DecodeSpec,
    RecordBatch,
    _NativeOps,
    _Reader,
    batch_bytes,
    require_callback,
    require_map,
    resolve_decoder,
)
from ._ffi import capture, error_for, ffi, lib
from .attach.perf import online_cpus as _online_cpus
from .errors import BPFError, BPFValueError, MapError
from .maps import Map, possible_cpus

__all__ = ["PerfBuffer", "PerfBufferStats", "RecordBatch"]

LostCallback = Callable[[int, int], Any]
_SIZE_MAX = (1 << 64) - 1


@dataclass(frozen=True)
class PerfBufferStats:
    """``received``: samples handed to Python; ``lost``: samples the kernel dropped."""

    received: int
    lost: int
    lost_by_cpu: dict[int, int]


class PerfBuffer(_Reader):
    """Consume a perf event array map: one buffer of ``pages`` pages (a power of two)
    per CPU.  ``callback(record)`` (or ``callback(cpu, record)`` with
    ``with_cpu=True``) for poll/consume; ``lost_callback(cpu, count)`` after
    each step in which the kernel reported lost samples.  ``max_batch_bytes``
    bounds the sample bytes one step takes from all CPUs (default 1 MiB; the rest
    waits in the kernel's buffers; at least one sample is taken)."""

    _what = "perf buffer"

    def __init__(self, map: Map, *, callback: Callback | None = None,
                 lost_callback: LostCallback | None = None, pages: int = 64,
                 decode: DecodeSpec = None, with_cpu: bool = False,
                 max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES) -> None:
        require_map(map, "perf_event_array", "PerfBuffer takes a Map")
        require_callback(callback, f"perf buffer {map.name!r}")
        require_callback(lost_callback, f"perf buffer {map.name!r}: lost_callback")
        who = f"perf buffer {map.name!r}"
        pages = c_int(pages, f"{who}: pages (a power of two)", "u32", lo=1, hi=1 << 20)
        if pages & (pages - 1):
            raise BPFValueError(_errno.EINVAL, f"{who}: pages must be a power of two, got "
                                               f"{pages}")
        max_batch_bytes = batch_bytes(max_batch_bytes, who)
        self.map = map
        ncpu = possible_cpus()
        batch = lib.pybpf_batch_new(1 << 16, 1024, ncpu)
        if batch == ffi.NULL:
            raise MemoryError("perf buffer: cannot allocate the batch buffer")
        batch = ffi.gc(batch, lib.pybpf_batch_free)
        # buffer i is the i-th online CPU (among the possible ones, as libbpf opens them)
        cpus = [c for c in _online_cpus() if c < ncpu]
        err = ffi.new("int *")
        with capture() as log, map.owner as fd:
            raw = lib.pybpf_perf_reader_new(fd, pages, ffi.new("__u32[]", cpus or [0]),
                                            len(cpus), err)
        if raw == ffi.NULL:
            raise error_for(-err[0], f"cannot open perf buffer on {map.name!r} ({pages} "
                            "pages per CPU)", kind=MapError, map=map.name, log=log)
        self._init_reader(ffi.gc(raw, lib.pybpf_perf_reader_free), _PERF_OPS, batch)
        self._max_bytes = min(max_batch_bytes, _SIZE_MAX)
        self._ncpu = ncpu
        self._nbuf = int(lib.pybpf_perf_reader_buffer_cnt(raw))
        self._capacity = pages * mmap.PAGESIZE * max(1, self._nbuf)
        self._lost_cb = lost_callback
        self._lost_seen = [0] * ncpu
        dec = resolve_decoder(decode, map)
        self._with_cpu = bool(with_cpu and callback is not None)
        self._callbacks = [callback]
        self._decoders = [dec]
        self._sources = []  # tags are CPUs: RecordBatch.source() says "cpu<N>"
        obj = getattr(map, "_obj", None)
        if obj is not None:
            with contextlib.suppress(BPFError, LookupError):
                self._btf = obj.btf
        self._track(map)

    def _who(self) -> str:
        return f"perf buffer {self.map.name!r}"

    def _prepare(self) -> None:
        # max_batch_bytes (the rest waits in the kernel's buffers), or, when that is
        # more than the per-CPU buffers hold, their size (a step that finds more
        # moves to a C buffer that grows)
        if self._max_bytes <= self._capacity:
            self._lend(self._max_bytes, grow=False)
        else:
            self._lend(self._capacity, grow=True)

    def _step(self) -> int:
        rc = int(lib.pybpf_perf_reader_drain(self._raw, self._batch, self._max_bytes))
        if rc < 0 and rc != lib.PYBPF_CLOSED:
            raise error_for(-rc, f"cannot read perf buffer {self.map.name!r}",
                            kind=MapError, map=self.map.name)
        return rc

    def _report_lost(self) -> None:
        if self._lost_cb is None:
            return
        b = self._batch
        for cpu in range(self._ncpu):
            now = int(b.lost_cpu[cpu])
            if now != self._lost_seen[cpu]:
                delta, self._lost_seen[cpu] = now - self._lost_seen[cpu], now
                self._lost_cb(cpu, delta)

    def _deliver(self, batch: RecordBatch) -> int:
        try:
            if not self._with_cpu:
                return self._dispatch(batch)
            return self._dispatch_with_cpu(batch)
        finally:
            self._report_lost()

    def _dispatch_with_cpu(self, batch: RecordBatch) -> int:
        """``callback(cpu, record)``, with the cursor of :meth:`_Reader._dispatch`."""
        cb = cast("Callable[[int, Any], Any] | None", self._callbacks[0])
        assert cb is not None
        dec = self._decoders[0]
        data = batch.data
        n = len(batch)
        cursor = iter(range(n))
        it = zip(cursor, batch.offsets, batch.sizes, batch.tags)
        self._cursor = cursor
        for _, o, s, cpu in it:
            rec = data[o:o + s]
            cb(cpu, dec(rec) if dec is not None else rec)
        return self._handed(n)

    def _after_step(self) -> None:
        self._report_lost()

    @property
    def lost(self) -> int:
        """Samples the kernel reported lost so far (all CPUs)."""
        return int(self._batch.lost)

    def lost_by_cpu(self) -> dict[int, int]:
        """Lost samples per CPU (CPUs with none are left out)."""
        b = self._batch
        return {c: int(b.lost_cpu[c]) for c in range(self._ncpu) if b.lost_cpu[c]}

    def stats(self) -> PerfBufferStats:
        """Samples received, samples the kernel reported lost (in total and per CPU)."""
        return PerfBufferStats(self.received, self.lost, self.lost_by_cpu())

    @property
    def buffer_count(self) -> int:
        """Number of per-CPU buffers (``perf_buffer__buffer_cnt``)."""
        return 0 if self._closed else self._nbuf

    def __repr__(self) -> str:
        return (f"<PerfBuffer {self.map.name!r} received={self.received} lost={self.lost}"
                f"{' closed' if self._closed else ''}>")


_PERF_OPS = _NativeOps(lib.pybpf_perf_reader_wait, lib.pybpf_perf_reader_hold,
                       lib.pybpf_perf_reader_unhold, lib.pybpf_perf_reader_fileno,
                       lib.pybpf_perf_reader_close)
