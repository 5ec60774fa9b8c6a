"""Ring buffers: kernel -> user (BPF_MAP_TYPE_RINGBUF) and user -> kernel (USER_RINGBUF).

Consume one or many ring buffer maps::

    with pybpf.RingBuffer(obj.maps["events"], callback=handle) as rb:
        while running:
            rb.poll(timeout=0.1)          # handle(record) per record

    rb = pybpf.RingBuffer(obj.maps["events"], decode="event")  # typed BTF struct
    for ev in rb.events(timeout=1.0):     # iterator, stops after 1 s without events
        ...
    batch = rb.read(timeout=1.0)          # every waiting record, one RecordBatch
    arr = rb.read_numpy("event")          # numpy structured array (pybpf[numpy])
    async for ev in rb: ...               # asyncio, through the loop's selector

pybpf reads the rings itself, in C, through the maps' mmap()ed pages (the
kernel's ring buffer ABI), copying every committed record into one buffer per
step; Python then slices records out of that buffer.  ``poll``/``consume``/
``read``/``events`` never call back from C into Python per record.

Loss: a record is either still in the ring or delivered.  Records the kernel
could not reserve (ring full) are counted by programs that call
``pybpf_count_drop()`` (``bpf_src/pybpf_common.h``) into the per-CPU map
``pybpf_ringbuf_drops``; :meth:`RingBuffer.stats` reports that count next to
the records received.

Threads: one thread consumes (poll/consume/read/events) at a time -- a second
concurrent consumer gets RuntimeError.  Any thread may call :meth:`close`
(which wakes a blocked consumer), :meth:`stats`, or use other maps and
programs of the object meanwhile.  Closing the object closes its consumers
too: a thread blocked in ``poll(None)``/``read(None)`` then returns (0 or an
empty batch).
"""

from __future__ import annotations

import contextlib
import errno as _errno
import struct
import threading
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Union

from ._events import (
    Callback,
    DecodeSpec,
    RecordBatch,
    _Consumer,
    btf_encoder,
    map_btf,
    require_map,
    resolve_decoder,
)
from ._ffi import capture, error_for, ffi, lib
from .errors import BPFError, ClosedError, MapError
from .maps import Map

__all__ = ["RingBuffer", "RingBufferStats", "UserRingBuffer", "RecordBatch", "DROPS_MAP"]

DROPS_MAP = "pybpf_ringbuf_drops"
"""Name of the per-CPU drop counter map defined by ``bpf_src/pybpf_common.h``."""

_SIZE_MAX = (1 << 64) - 1


@dataclass(frozen=True)
class RingBufferStats:
    """What a :class:`RingBuffer` has seen.

    ``received``: records handed to Python so far.  ``dropped``: reservations
    the programs counted as failed in their ``pybpf_ringbuf_drops`` maps (None
    when no consumed map's object has one: then drops are not counted).
    ``pending_bytes``: bytes in the rings not consumed yet.
    """

    received: int
    dropped: int | None
    pending_bytes: int


class RingBuffer(_Consumer):
    """Consume records from one or many ``BPF_MAP_TYPE_RINGBUF`` maps.

    ``callback`` (for :meth:`poll`/:meth:`consume`) receives each record, as
    ``bytes`` or as ``decode(bytes)``; ``decode`` is a callable or the name of a
    BTF struct in the map's object (records then arrive as that struct's
    :mod:`pybpf.types` class, with attribute access).  Without a
    callback, read with :meth:`events`, :meth:`read` or ``async for``.
    ``max_batch_bytes`` bounds how much one step takes out of each ring
    (default: the ring's size); batches of about 1 MiB are still in the CPU's
    cache when Python reads them, which makes draining a large ring faster
    than one batch of everything (``benchmarks/bench_events.py``).
    """

    _what = "ring buffer"

    def __init__(self, *maps: Map, callback: Callback | None = None,
                 decode: DecodeSpec = None, max_batch_bytes: int | None = None,
                 drops_map: Map | None = None) -> None:
        self._init_consumer()
        if max_batch_bytes is not None and max_batch_bytes <= 0:
            raise ValueError(f"ring buffer: max_batch_bytes must be > 0, got {max_batch_bytes}")
        self._rings: list[Any] = []
        self._caps: list[int] = []  # bytes one step takes from each ring
        self._maps: list[Map] = []
        self._max_bytes = max_batch_bytes
        self._drops_maps: list[Map] = [drops_map] if drops_map is not None else []
        self._explicit_drops = drops_map is not None
        self._views: list[Any] = []  # Python mmaps of the rings, for borrow()
        self._turn = 0  # the ring borrow() looks at first
        self._fill_turn = 0  # the ring a step takes from first
        self._batch = lib.pybpf_batch_new(1 << 16, 1024, 0)
        if self._batch == ffi.NULL:
            raise MemoryError("ring buffer: cannot allocate the batch buffer")
        self._open_waiter()
        try:
            for m in maps:
                self.add(m, callback, decode=decode)
        except BaseException:
            self.close()
            raise

    def add(self, map: Map, callback: Callback | None = None, *,
            decode: DecodeSpec = None) -> None:
        """Also consume ``map`` (records go to ``callback``, decoded by ``decode``)."""
        if self._closed:
            raise ClosedError(self._what)
        require_map(map, "ringbuf", "RingBuffer takes Map objects")
        dec = resolve_decoder(decode, map)
        fd = map.fd
        err = ffi.new("int *")
        with self._res_lock:
            ring = lib.pybpf_ring_open(fd, err)
            if ring == ffi.NULL:
                raise error_for(-err[0], f"cannot map ring buffer {map.name!r}", kind=MapError,
                                map=map.name)
            try:
                assert self._ep is not None
                self._ep.register(fd, 0x001)  # EPOLLIN, level-triggered
            except OSError as exc:
                lib.pybpf_ring_close(ring)
                if exc.errno == _errno.EEXIST:
                    raise MapError(_errno.EEXIST, f"map {map.name!r} is already consumed by "
                                   "this ring buffer", map=map.name) from None
                raise
            self._rings.append(ring)
            self._caps.append(self._max_bytes or int(lib.pybpf_ring_size(ring)))
            self._views.append(None)
            self._maps.append(map)
            self._sources.append(map.name)
            self._callbacks.append(callback)
            self._decoders.append(dec)
            self._uniform = len(self._rings) == 1
        self._track(map)
        obj = getattr(map, "_obj", None)
        if self._btf is None and obj is not None:
            with contextlib.suppress(BPFError, LookupError):
                self._btf = obj.btf
        if not self._explicit_drops and obj is not None:
            drops = obj.maps.get(DROPS_MAP)
            if drops is not None and all(d is not drops for d in self._drops_maps):
                self._drops_maps.append(drops)

    @property
    def maps(self) -> list[Map]:
        """The maps consumed, in the order of their tags in a :class:`RecordBatch`."""
        return list(self._maps)

    def _prepare(self) -> None:
        # room for a whole drain of every ring; records that do not fit stay there
        self._lend(sum(self._caps), grow=False)

    def _fill(self) -> None:
        b = self._batch
        drain = lib.pybpf_ring_drain
        rings = self._rings
        nr = len(rings)
        for k in range(nr):
            tag = (self._fill_turn + k) % nr if nr > 1 else 0
            rc = drain(rings[tag], b, tag, b.len + self._caps[tag], _SIZE_MAX)
            if rc == -_errno.ENOBUFS:
                self._fill_turn = tag  # this ring goes first next time
                break  # the buffer is full: the rest stays in the rings for next time
            if rc < 0:
                raise error_for(-rc, f"cannot read ring buffer {self._sources[tag]!r}",
                                kind=MapError, map=self._sources[tag])

    def _available(self) -> bool:
        rings = self._rings
        if len(rings) == 1:
            return bool(lib.pybpf_ring_avail(rings[0]))
        return any(lib.pybpf_ring_avail(r) for r in rings)

    def _free(self) -> None:
        for ring in self._rings:
            lib.pybpf_ring_close(ring)
        self._rings = []
        self._caps = []
        self._views = []  # unmapped when the last borrowed view is gone

    @contextlib.contextmanager
    def borrow(self, timeout: float | None = None) -> Iterator[RecordBatch]:
        """Zero-copy read: the records waiting in one ring, viewed where the kernel
        wrote them (no copy at all; numpy arrays from :meth:`RecordBatch.numpy`
        read the ring itself).

        Waits up to ``timeout`` seconds (the batch is empty on timeout).  When the
        block ends, the ring space goes back to the producers, which then
        overwrite it: copy whatever must outlive the block.  If the block raises,
        nothing is given back -- the records are read again next time.  One ring
        per call, taking turns.  Views stay safe to touch (never unmapped while
        alive), even after :meth:`close`.
        """
        self._enter("borrow")
        try:
            if not self._wait(timeout):
                yield RecordBatch.empty(sources=self._sources, decoders=self._decoders,
                                        btf=self._btf)
                return
            pending, self._pending = self._pending, None
            if pending is not None and len(pending):
                try:
                    yield pending
                except BaseException:
                    self._pending = pending
                    raise
                self.received += len(pending)
                return
            found = self._peek()
            if found is None:
                yield RecordBatch.empty(sources=self._sources, decoders=self._decoders,
                                        btf=self._btf)
                return
            ring, end, batch = found
            yield batch
            with self._res_lock:
                if not self._closed:
                    lib.pybpf_ring_release(ring, end)
            self.received += len(batch)
        finally:
            self._leave()

    def _peek(self) -> tuple[Any, int, RecordBatch] | None:
        """The first ring (taking turns) with committed records, viewed in place."""
        import mmap

        start = ffi.new("__u64 *")
        end = ffi.new("__u64 *")
        fixed = ffi.new("__u32 *")
        with self._res_lock:
            if self._closed:
                return None
            nr = len(self._rings)
            b = self._batch
            for k in range(nr):
                tag = (self._turn + k) % nr
                ring = self._rings[tag]
                lib.pybpf_batch_reset(b)
                max_bytes = self._max_bytes or _SIZE_MAX
                n = int(lib.pybpf_ring_peek(ring, max_bytes, start, end, fixed, b, tag, 0))
                if n == 0:
                    if end[0] != start[0]:  # only discarded records: skip them
                        lib.pybpf_ring_release(ring, end[0])
                    continue
                self._turn = tag + 1
                if self._views[tag] is None:
                    page = mmap.PAGESIZE
                    size = int(lib.pybpf_ring_size(ring))
                    self._views[tag] = mmap.mmap(self._maps[tag].fd, page + 2 * size,
                                                 mmap.MAP_SHARED, mmap.PROT_READ,
                                                 offset=page)
                page = mmap.PAGESIZE
                off = page + int(start[0] & lib.pybpf_ring_mask(ring))
                data = memoryview(self._views[tag])[off:off + int(end[0] - start[0])]
                common = int(fixed[0])
                kw: dict[str, Any] = dict(sources=self._sources, decoders=self._decoders,
                                          btf=self._btf)
                if common != lib.PYBPF_MIXED:
                    batch = RecordBatch(data, None, None, None, n=n, fixed=common,
                                        stride=(8 + common + 7) & ~7, base=8, tag0=tag, **kw)
                else:
                    offs, sizes, tags = (array("I"), array("I"), array("I"))
                    offs.frombytes(ffi.buffer(b.offs, 4 * n))
                    sizes.frombytes(ffi.buffer(b.sizes, 4 * n))
                    tags.frombytes(ffi.buffer(b.tags, 4 * n))
                    batch = RecordBatch(data, offs, sizes, tags, **kw)
                lib.pybpf_batch_reset(b)
                return ring, int(end[0]), batch
            lib.pybpf_batch_reset(b)
        return None

    def pending_bytes(self) -> int:
        """Bytes produced into the rings and not consumed yet (no syscall)."""
        with self._res_lock:
            return sum(int(lib.pybpf_ring_avail(r)) for r in self._rings)

    def drops(self) -> int | None:
        """Failed reservations counted by the programs (see :data:`DROPS_MAP`); None if
        no consumed map's object counts them.  One syscall per drop map."""
        if not self._drops_maps:
            return None
        total = 0
        for m in self._drops_maps:
            raw = m.lookup(b"\0\0\0\0")
            if raw:
                total += sum(v for (v,) in struct.iter_unpack("<Q", raw))
        return total

    def stats(self) -> RingBufferStats:
        """Records received, drops counted by the programs, bytes still in the rings."""
        return RingBufferStats(self.received, self.drops(), self.pending_bytes())

    def __enter__(self) -> RingBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._rings)} rings"
        return f"<RingBuffer {state} {self._sources} received={self.received}>"


# --- user ring buffer ---------------------------------------------------------------

Value = Union[bytes, bytearray, memoryview]


class UserRingBuffer:
    """Write records for a BPF program to drain (``BPF_MAP_TYPE_USER_RINGBUF``).

    The program reads them with ``bpf_user_ringbuf_drain()``.  ``encode``
    (a callable, or a BTF struct name: values may then be that struct's
    :mod:`pybpf.types` instance, a dict or a tuple) turns values into bytes::

        urb = pybpf.UserRingBuffer(obj.maps["requests"])
        urb.submit(b"...")                    # copy in and publish
        with urb.reserve(16) as buf:          # fill in place; published on exit
            buf[:8] = ...

    Thread-safe: reservations are serialized by a lock.
    """

    def __init__(self, map: Map, *, encode: Any = None) -> None:
        self._ptr: Any = None
        require_map(map, "user_ringbuf", "UserRingBuffer takes a Map")
        self.map = map
        self._lock = threading.Lock()
        if isinstance(encode, str):
            encode = btf_encoder(map_btf(map, encode), encode)
        self._encode = encode
        with capture() as log:
            ptr = lib.user_ring_buffer__new(map.fd, ffi.NULL)
        if ptr == ffi.NULL:
            raise error_for(ffi.errno, f"cannot open user ring buffer {map.name!r}",
                            kind=MapError, map=map.name, log=log)
        self._ptr = ptr
        self.submitted = 0
        """Records submitted so far."""

    def _raw(self) -> Any:
        if self._ptr is None:
            raise ClosedError(f"user ring buffer {self.map.name!r}")
        return self._ptr

    def _bytes(self, value: Any) -> bytes | bytearray | memoryview:
        if self._encode is not None:
            value = self._encode(value)
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"user ring buffer {self.map.name!r}: value must be bytes "
                            f"(or pass encode=), got {type(value).__name__}")
        return value

    def _reserve(self, size: int, timeout: float | None) -> Any:
        if size <= 0:
            raise ValueError(f"user ring buffer {self.map.name!r}: size must be > 0")
        with self._lock:
            ptr = self._raw()
            if timeout is None:
                sample = lib.user_ring_buffer__reserve(ptr, size)
            else:
                sample = lib.user_ring_buffer__reserve_blocking(ptr, size, int(timeout * 1000))
        if sample == ffi.NULL:
            err = ffi.errno
            what = {_errno.ENOSPC: "the ring is full" if timeout is None else
                    f"the ring is still full after {timeout}s",
                    _errno.E2BIG: "the record is larger than the ring"}.get(err)
            msg = f"user ring buffer {self.map.name!r}: cannot reserve {size} bytes"
            if what:
                msg += f" ({what})"
            raise error_for(err, msg, kind=MapError, map=self.map.name)
        return sample

    def submit(self, value: Any, *, timeout: float | None = None) -> None:
        """Copy ``value`` in and publish it.  A full ring raises MapError(ENOSPC), or,
        with ``timeout``, waits up to that long for the program to drain."""
        data = self._bytes(value)
        n = len(data)
        sample = self._reserve(n, timeout)
        ffi.memmove(sample, data, n)
        lib.user_ring_buffer__submit(self._ptr, sample)
        self.submitted += 1

    @contextlib.contextmanager
    def reserve(self, size: int, *, timeout: float | None = None) -> Iterator[memoryview]:
        """Reserve ``size`` bytes and yield them writable; submitted when the block
        ends, discarded if it raises."""
        sample = self._reserve(size, timeout)
        view = memoryview(ffi.buffer(sample, size))
        try:
            yield view
        except BaseException:
            view.release()
            lib.user_ring_buffer__discard(self._ptr, sample)
            raise
        view.release()
        lib.user_ring_buffer__submit(self._ptr, sample)
        self.submitted += 1

    def close(self) -> None:
        with self._lock:
            ptr, self._ptr = self._ptr, None
            if ptr is not None:
                lib.user_ring_buffer__free(ptr)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> UserRingBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
