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
``lost`` from any thread; closing the map's object closes the consumer (a
blocked ``poll``/``read`` returns).
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from ._events import Callback, DecodeSpec, RecordBatch, _Consumer, require_map, resolve_decoder
from ._ffi import capture, error_for, ffi, lib
from .attach.perf import online_cpus as _online_cpus
from .errors import BPFError, MapError
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


class PerfBuffer(_Consumer):
    """Consume a perf event array map: one buffer of ``pages`` pages (a power of two)
    per CPU.  ``callback(record)`` (or ``callback(cpu, record)`` with
    ``with_cpu=True``) for poll/consume; ``lost_callback(cpu, count)`` after
    each step in which the kernel reported lost samples.  ``max_batch_bytes``
    bounds the sample bytes one step takes (the rest waits in the kernel's
    buffers; default: everything there is)."""

    _what = "perf buffer"

    def __init__(self, map: Map, *, callback: Callback | None = None,
                 lost_callback: LostCallback | None = None, pages: int = 64,
                 decode: DecodeSpec = None, with_cpu: bool = False,
                 max_batch_bytes: int | None = None) -> None:
        self._init_consumer()
        self._pb: Any = None
        require_map(map, "perf_event_array", "PerfBuffer takes a Map")
        if pages <= 0 or pages & (pages - 1):
            raise ValueError(f"perf buffer {map.name!r}: pages must be a power of two, "
                             f"got {pages}")
        if max_batch_bytes is not None and max_batch_bytes <= 0:
            raise ValueError(f"perf buffer {map.name!r}: max_batch_bytes must be > 0")
        self.map = map
        self._max_bytes = max_batch_bytes
        self._ncpu = possible_cpus()
        self._capacity = pages * os.sysconf("SC_PAGE_SIZE") * self._ncpu
        self._lost_cb = lost_callback
        self._lost_seen = [0] * self._ncpu
        dec = resolve_decoder(decode, map)
        if with_cpu and callback is not None:
            user_cb = callback
            self._with_cpu = True
            self._callbacks = [user_cb]
        else:
            self._with_cpu = False
            self._callbacks = [callback]
        self._decoders = [dec]
        self._sources = []  # tags are CPUs: RecordBatch.source() says "cpu<N>"
        obj = getattr(map, "_obj", None)
        if obj is not None:
            with contextlib.suppress(BPFError, LookupError):
                self._btf = obj.btf
        self._batch = lib.pybpf_batch_new(1 << 16, 1024, self._ncpu)
        if self._batch == ffi.NULL:
            raise MemoryError("perf buffer: cannot allocate the batch buffer")
        with capture() as log:
            pb = lib.pybpf_perf_buffer_new(map.fd, pages, self._batch)
        if pb == ffi.NULL:
            err = ffi.errno
            lib.pybpf_batch_free(self._batch)
            self._batch = None
            self._closed = True
            raise error_for(err, f"cannot open perf buffer on {map.name!r} ({pages} pages "
                            "per CPU)", kind=MapError, map=map.name, log=log)
        self._pb = pb
        self._track(map)
        # buffer i is the i-th online CPU (among the possible ones, as libbpf opens them)
        nbuf = int(lib.perf_buffer__buffer_cnt(pb))
        self._buf_cpus = [c for c in _online_cpus() if c < self._ncpu][:nbuf]
        self._buf_cpus += [-1] * (nbuf - len(self._buf_cpus))  # (a CPU went offline)
        self._turn = 0
        self._open_waiter()
        assert self._ep is not None
        self._ep.register(int(lib.perf_buffer__epoll_fd(pb)), 0x001)

    def _prepare(self) -> None:
        # as much as the per-CPU buffers hold (more moves to a growing C buffer), or
        # max_batch_bytes (the rest waits in the kernel's buffers)
        if self._max_bytes is None:
            self._lend(self._capacity, grow=True)
        else:
            self._lend(self._max_bytes, grow=False)

    def _fill(self) -> None:
        # pybpf reads the per-CPU buffers itself (perf_buffer__buffer(): the mmap()ed
        # pages), in C, taking turns when max_batch_bytes stops a step early
        b, pb = self._batch, self._pb
        cpus = self._buf_cpus
        nbuf = len(cpus)
        limit = _SIZE_MAX if self._max_bytes is None else self._max_bytes
        first = self._turn
        for k in range(nbuf):
            i = (first + k) % nbuf
            rc = lib.pybpf_perf_drain(pb, i, b, cpus[i], limit)
            if rc == -_errno.ENOBUFS or (rc >= 0 and b.len >= limit):
                self._turn = i + 1
                break  # full: the rest waits in the kernel
            if rc < 0:
                raise error_for(-rc, f"cannot read perf buffer {self.map.name!r}",
                                kind=MapError, map=self.map.name)

    def _available(self) -> bool:
        # A perf fd reports readiness once per wakeup, so asking the fd is not
        # enough after someone else (a selector) has seen it: fetch instead, into
        # the C batch (no syscall: libbpf reads the mmap()ed buffers).
        with self._res_lock:
            if self._closed:
                return False
            if not self._batch.n:
                self._prepare()
            self._fill()
            return int(self._batch.n) > 0

    def _after_take(self) -> None:
        pass

    def _free(self) -> None:
        if self._batch is not None:
            self._lost_seen = [int(self._batch.lost_cpu[c]) for c in range(self._ncpu)]
        pb, self._pb = self._pb, None
        if pb is not None:
            lib.perf_buffer__free(pb)

    def _report_lost(self) -> None:
        if self._lost_cb is None or self._batch is None:
            return
        b = self._batch
        for cpu in range(self._ncpu):
            now = int(b.lost_cpu[cpu])
            if now != self._lost_seen[cpu]:
                delta, self._lost_seen[cpu] = now - self._lost_seen[cpu], now
                self._lost_cb(cpu, delta)

    def _dispatch(self, batch: RecordBatch) -> int:
        try:
            if not self._with_cpu:
                return super()._dispatch(batch)
            return self._dispatch_with_cpu(batch)
        finally:
            self._report_lost()

    def _dispatch_with_cpu(self, batch: RecordBatch) -> int:
        cb = cast("Callable[[int, Any], Any] | None", self._callbacks[0])
        assert cb is not None
        dec = self._decoders[0]
        data = batch.data
        it = zip(batch.offsets, batch.sizes, batch.tags)
        try:
            for o, s, cpu in it:
                rec = data[o:o + s]
                cb(cpu, dec(rec) if dec is not None else rec)
        except BaseException:
            self._keep_rest(batch, it)
            raise
        self.received += len(batch)
        return len(batch)

    def read(self, timeout: float | None = None, *, copy: bool = False) -> RecordBatch:
        batch = super().read(timeout, copy=copy)
        self._report_lost()
        return batch

    @property
    def lost(self) -> int:
        """Samples the kernel reported lost so far (all CPUs)."""
        b = self._batch
        return int(b.lost) if b is not None else sum(self._lost_seen)

    def lost_by_cpu(self) -> dict[int, int]:
        """Lost samples per CPU (CPUs with none are left out)."""
        b = self._batch
        counts = ([int(b.lost_cpu[c]) for c in range(self._ncpu)] if b is not None
                  else self._lost_seen)
        return {c: n for c, n in enumerate(counts) if n}

    def stats(self) -> PerfBufferStats:
        return PerfBufferStats(self.received, self.lost, self.lost_by_cpu())

    @property
    def buffer_count(self) -> int:
        """Number of per-CPU buffers (``perf_buffer__buffer_cnt``)."""
        return int(lib.perf_buffer__buffer_cnt(self._pb)) if self._pb is not None else 0

    def __enter__(self) -> PerfBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<PerfBuffer {self.map.name!r} received={self.received} lost={self.lost}"
                f"{' closed' if self._closed else ''}>")
