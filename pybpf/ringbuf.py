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
``pybpf_count_drop()`` (``pybpf/include/pybpf_common.h``) into the per-CPU map
``pybpf_ringbuf_drops``; :meth:`RingBuffer.stats` reports that count next to
the records received.

Threads: one thread consumes (poll/consume/read/events/borrow) at a time -- a
second concurrent consumer gets RuntimeError.  Any thread may call :meth:`close`
during any of them (it unmaps under the native reader's lock, so a consumer never
reads unmapped pages, and wakes a blocked one), :meth:`stats`, or use other maps
and programs of the object meanwhile.  Closing the object closes its readers
too: a thread blocked in ``poll(None)``/``read(None)`` then returns (0 or an
empty batch).  A KeyboardInterrupt landing anywhere leaves the reader usable.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import mmap
import struct
import threading
import weakref
from array import array
from dataclasses import dataclass
from typing import Any, Union

from ._args import c_int, timeout_arg
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
    resolve_encoder,
)
from ._fastpath import Lent
from ._ffi import capture, error_for, ffi, lib
from .errors import BPFError, BPFTypeError, ClosedError, MapError
from .maps import Map

__all__ = ["RingBuffer", "RingBufferStats", "UserRingBuffer", "RecordBatch", "DROPS_MAP"]

DROPS_MAP = "pybpf_ringbuf_drops"
"""Name of the per-CPU drop counter map defined by ``pybpf/include/pybpf_common.h``."""

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


class RingBuffer(_Reader):
    """Consume records from one or many ``BPF_MAP_TYPE_RINGBUF`` maps.

    ``callback`` (for :meth:`poll`/:meth:`consume`) receives each record, as
    ``bytes`` or as ``decode(bytes)``; ``decode`` is a callable, the name of a
    BTF struct in the map's object, or a type the object lacks: a C declaration,
    a ctypes type or a numpy dtype (records then arrive as that struct's
    :mod:`pybpf.types` class, with attribute access).  Without a
    callback, read with :meth:`events`, :meth:`read`, :meth:`borrow` or
    ``async for``.  ``max_batch_bytes`` bounds how much one step takes out of
    each ring (default 1 MiB, :data:`DEFAULT_MAX_BATCH_BYTES`; the first record
    is always taken, whatever its size): such batches are still in the CPU's
    cache when Python reads them, which makes draining a large ring faster than
    one batch of everything (``benchmarks/bench_events.py``).
    """

    _what = "ring buffer"

    def __init__(self, *maps: Map, callback: Callback | None = None,
                 decode: DecodeSpec = None, max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
                 drops_map: Map | None = None) -> None:
        names = ", ".join(repr(getattr(m, "name", m)) for m in maps)
        max_batch_bytes = batch_bytes(max_batch_bytes, f"ring buffer {names}".rstrip())
        if drops_map is not None and not isinstance(drops_map, Map):
            raise BPFTypeError(_errno.EINVAL, f"ring buffer {names}: drops_map must be a Map, "
                                              f"got {type(drops_map).__name__}")
        err = ffi.new("int *")
        raw = lib.pybpf_ring_reader_new(err)
        if raw == ffi.NULL:
            raise error_for(-err[0], "cannot create a ring buffer reader")
        raw = ffi.gc(raw, lib.pybpf_ring_reader_free)
        batch = lib.pybpf_batch_new(1 << 16, 1024, 0)
        if batch == ffi.NULL:
            raise MemoryError("ring buffer: cannot allocate the batch buffer")
        self._init_reader(raw, _RING_OPS, ffi.gc(batch, lib.pybpf_batch_free))
        self._caps: list[int] = []  # bytes one step takes from each ring
        self._maps: list[Map] = []
        self._max_bytes = max_batch_bytes
        self._drops_maps: list[Map] = [drops_map] if drops_map is not None else []
        self._explicit_drops = drops_map is not None
        self._views: list[Any] = []  # read-only mappings of the rings, for borrow()
        self._failed = ffi.new("int *")
        peek = lib.pybpf_batch_new(4096, 64, 0)
        if peek == ffi.NULL:
            raise MemoryError("ring buffer: cannot allocate the batch buffer")
        self._peek_batch = ffi.gc(peek, lib.pybpf_batch_free)
        self._peek_out = (ffi.new("__u64 *"), ffi.new("__u64 *"), ffi.new("__u64 *"),
                          ffi.new("__u32 *"), ffi.new("int *"))
        try:
            for m in maps:
                self.add(m, callback, decode=decode)
        except BaseException:
            self.close()
            raise

    def add(self, map: Map, callback: Callback | None = None, *,
            decode: DecodeSpec = None) -> None:
        """Also consume ``map`` (records go to ``callback``, decoded by ``decode``).
        Not while another thread consumes."""
        require_map(map, "ringbuf", "RingBuffer takes Map objects")
        require_callback(callback, f"ring buffer {map.name!r}")
        dec = resolve_decoder(decode, map)
        with self._consumer("add"):
            with map.owner as fd:
                tag = int(lib.pybpf_ring_reader_add(self._raw, fd))
            if tag == _errno.EEXIST * -1:
                raise MapError(_errno.EEXIST, f"map {map.name!r} is already consumed by "
                               "this ring buffer", map=map.name)
            if tag < 0:
                if tag == lib.PYBPF_CLOSED:
                    raise ClosedError(self._what)
                raise error_for(-tag, f"cannot map ring buffer {map.name!r}", kind=MapError,
                                map=map.name)
            size = int(lib.pybpf_ring_reader_size(self._raw, tag))
            self._caps.append(min(self._max_bytes, size))
            self._views.append(None)
            self._maps.append(map)
            self._sources.append(map.name)
            self._callbacks.append(callback)
            self._decoders.append(dec)
            self._uniform = len(self._maps) == 1
        self._track(map)
        obj = getattr(map, "_obj", None)
        if self._btf is None and obj is not None:
            with contextlib.suppress(BPFError, LookupError):
                self._btf = obj.btf
        if not self._explicit_drops and obj is not None:
            self._count_drops_of(obj)

    def _count_drops_of(self, obj: Any) -> None:
        """Count the drops ``obj``'s programs count, if they do: one counter per object,
        however many of its rings are consumed."""
        drops = obj.maps.get(DROPS_MAP)
        if drops is not None and all(d is not drops for d in self._drops_maps):
            self._drops_maps.append(drops)

    def _who(self) -> str:
        return f"ring buffer {', '.join(map(repr, self._sources))}".rstrip()

    @property
    def maps(self) -> list[Map]:
        """The maps consumed, in the order of their tags in a :class:`RecordBatch`."""
        return list(self._maps)

    def _prepare(self) -> None:
        # room for one step of every ring; records that do not fit stay there
        self._lend(sum(self._caps), grow=False)

    def _step(self) -> int:
        cap = max(self._caps) if len(self._caps) > 1 else (self._caps or [0])[0]
        rc = int(lib.pybpf_ring_reader_drain(self._raw, self._batch, cap, self._failed))
        if rc < 0 and rc != lib.PYBPF_CLOSED:
            name = self._sources[self._failed[0]]
            raise error_for(-rc, f"cannot read ring buffer {name!r}", kind=MapError, map=name)
        return rc

    def borrow(self, timeout: float | None = None
               ) -> contextlib.AbstractContextManager[RecordBatch]:
        """Zero-copy read: the records waiting in one ring (up to ``max_batch_bytes``,
        at least one record), viewed where the kernel wrote them (no copy at all;
        numpy arrays from :meth:`RecordBatch.numpy` read the ring itself)::

            with rb.borrow(timeout=1.0) as batch:
                handle(batch.numpy("event"))

        Waits up to ``timeout`` seconds (the batch is empty on timeout or close).
        The records are handed over when the block is entered: when it ends,
        however it ends (an exception, a KeyboardInterrupt), they are consumed
        and the ring space goes back to the producers, which then overwrite it --
        copy whatever must outlive the block.  If the wait or the peek is
        interrupted before the block starts, nothing is consumed.  No other
        consumer call may run while the block is open (RuntimeError).  One ring
        per call, taking turns.  Views stay safe to touch (never unmapped while
        alive), even after :meth:`close` from any thread.
        """
        return _Borrow(self, timeout)

    def _begin_borrow(self, owner: weakref.ref[_Borrow],
                      timeout: float | None) -> tuple[RecordBatch, _Block | None]:
        """Wait up to ``timeout`` and lend a borrow() block its records: the batch
        and its block, or an empty batch and None."""
        with self._consumer("borrow"):
            if self._wait(timeout):
                blk = self._lend_block(owner)
                if blk is not None:
                    return blk.batch, blk
        return self._empty(), None

    def _lend_block(self, owner: weakref.ref[_Borrow]) -> _Block | None:
        """With the lock held: the records a borrow() block gets, marked lent
        (``_block``) until the block ends; None if there are none."""
        pending = self._pending_rest()
        if (pending is None or not len(pending)) and self._batch.n:
            pending = self._take()  # records an interrupted step left in the C batch
        if pending is not None and len(pending):
            blk = _Block(owner, -1, 0, pending)  # taken already: lent from the reader
        else:
            found = self._peek()
            if found is None:
                return None
            tag, end, batch = found
            blk = _Block(owner, tag, end, batch)
        self._block = blk
        return blk

    def _end_block(self, blk: _Block) -> None:
        """A borrow() block ended (or its __exit__ was interrupted and the block
        object is gone): its records are consumed, if it was entered."""
        if blk.entered:
            if blk.tag >= 0:  # (again after an interrupt: the same end, a no-op)
                lib.pybpf_ring_reader_release(self._raw, blk.tag, blk.end)
            n = len(blk.batch)
            # no call from here on: one step for signal handlers
            if blk.tag < 0 and self._pending is blk.batch:
                self._pending = None
            self._received += n
        self._block = None

    def _peek(self) -> tuple[int, int, RecordBatch] | None:
        """The first ring (taking turns) with committed records, viewed in place."""
        end, offset, span, fixed, tagp = self._peek_out
        b = self._peek_batch  # (not _batch: an interrupted peek must not leave records there)
        n = int(lib.pybpf_ring_reader_peek(self._raw, min(self._max_bytes, _SIZE_MAX), end,
                                           offset, span, fixed, b, tagp))
        if n <= 0:
            lib.pybpf_batch_reset(b)
            return None
        tag = int(tagp[0])
        view = self._views[tag]
        if view is None:
            view = self._views[tag] = _map_data(self._raw, tag)
            if view is None:  # closed meanwhile
                lib.pybpf_batch_reset(b)
                return None
        off = _PAGE + int(offset[0])
        data = memoryview(view)[off:off + int(span[0])]
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
        return tag, int(end[0]), batch

    def pending_bytes(self) -> int:
        """Bytes produced into the rings and not consumed yet (no syscall)."""
        return int(lib.pybpf_ring_reader_pending(self._raw))

    def drops(self) -> int | None:
        """Failed reservations counted by the programs (see :data:`DROPS_MAP`), over
        every CPU, once per object (two rings of one object share its counter);
        None if no consumed map's object counts them.  One syscall per drop map."""
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

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._maps)} rings"
        return f"<RingBuffer {state} {self._sources} received={self.received}>"


class _Block:
    """The records a borrow() block holds: ring ``tag`` up to position ``end``
    (tag -1: the reader's pending batch), lent to ``owner`` until it ends."""

    __slots__ = ("owner", "tag", "end", "batch", "entered")

    def __init__(self, owner: weakref.ref[_Borrow], tag: int, end: int,
                 batch: RecordBatch) -> None:
        self.owner = owner
        self.tag = tag
        self.end = end
        self.batch = batch
        self.entered = False


class _Borrow:
    """One ``RingBuffer.borrow()`` block (see there).  Its records are handed over
    at the end of ``__enter__`` (no call between marking them entered and the
    return); ``__exit__`` consumes them.  An ``__exit__`` interrupted before it
    finished is completed by the reader's next call, once this object is gone."""

    __slots__ = ("_rb", "_timeout", "_blk", "__weakref__")

    def __init__(self, rb: RingBuffer, timeout: float | None) -> None:
        self._rb = rb
        self._timeout = timeout
        self._blk: _Block | None = None

    def __enter__(self) -> RecordBatch:
        rb = self._rb
        if self._blk is not None:
            raise RuntimeError("a borrow() block cannot be entered twice")
        blk = None
        try:
            batch, blk = rb._begin_borrow(weakref.ref(self), self._timeout)
            if blk is None:
                return batch
            self._blk = blk
            blk.entered = True  # handed over: no call from here to the return
            return blk.batch
        except BaseException:
            if blk is not None and not blk.entered and rb._block is blk:
                rb._block = None  # not handed over: the records stay in the ring
            raise

    def __exit__(self, *exc: object) -> None:
        blk = self._blk
        if blk is not None and self._rb._block is blk:
            self._rb._end_block(blk)


_RING_OPS = _NativeOps(lib.pybpf_ring_reader_wait, lib.pybpf_ring_reader_hold,
                       lib.pybpf_ring_reader_unhold, lib.pybpf_ring_reader_fileno,
                       lib.pybpf_ring_reader_close)
_PAGE = mmap.PAGESIZE


def _map_data(raw: Any, tag: int) -> Any:
    """A read-only mapping of ring ``tag`` that lives as long as the views of it."""
    length = ffi.new("long *")
    p = lib.pybpf_ring_reader_map_data(raw, tag, length)
    if p == ffi.NULL:
        if length[0] == lib.PYBPF_CLOSED:
            return None
        raise error_for(-int(length[0]), "cannot map a ring buffer for borrow()", kind=MapError)
    n = int(length[0])
    p = ffi.gc(ffi.cast("char *", p), lambda q: lib.pybpf_unmap(q, n), size=n)
    return ffi.buffer(p, n)


# --- user ring buffer ---------------------------------------------------------------

Value = Union[bytes, bytearray, memoryview]


class UserRingBuffer:
    """Write records for a BPF program to drain (``BPF_MAP_TYPE_USER_RINGBUF``).

    The program reads them with ``bpf_user_ringbuf_drain()``.  ``encode``
    (a callable, a BTF struct name, a C declaration, a ctypes type or a numpy dtype:
    values may then be that struct's
    :mod:`pybpf.types` instance, a dict or a tuple) turns values into bytes::

        urb = pybpf.UserRingBuffer(obj.maps["requests"])
        urb.submit(b"...")                    # copy in and publish
        with urb.reserve(16) as buf:          # fill in place; published on exit
            buf[:8] = ...

    Thread-safe: reservations and submits are serialized by a lock.  ``close()``
    from any thread is safe: a later (or racing) ``submit()`` raises ClosedError;
    a reservation still open keeps the ring mapped until its block ends, which
    then raises ClosedError (the record is discarded, never published).
    """

    def __init__(self, map: Map, *, encode: Any = None) -> None:
        self._ptr: Any = None
        require_map(map, "user_ringbuf", "UserRingBuffer takes a Map")
        self.map = map
        self._lock = threading.RLock()  # (RLock: a _Reservation.__del__ may run anywhere)
        self._open = 0  # reservations not submitted or discarded yet
        self._closing = False
        self._encode = resolve_encoder(encode, map)
        with capture() as log, map.owner as fd:
            ptr = lib.user_ring_buffer__new(fd, ffi.NULL)
        if ptr == ffi.NULL:
            raise error_for(ffi.errno, f"cannot open user ring buffer {map.name!r}",
                            kind=MapError, map=map.name, log=log)
        self._ptr = ptr
        self.submitted = 0
        """Records submitted so far."""
        obj = getattr(map, "_obj", None)
        if obj is not None:
            obj.close_with(self)  # closed with its object

    def _closed_error(self) -> ClosedError:
        return ClosedError(f"user ring buffer {self.map.name!r}")

    def _bytes(self, value: Any) -> bytes | bytearray | memoryview:
        if self._encode is not None:
            value = self._encode(value)
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise BPFTypeError(_errno.EINVAL, f"user ring buffer {self.map.name!r}: value must "
                               f"be bytes (or pass encode=), got {type(value).__name__}")
        return value

    def _size_and_ms(self, size: int, timeout: float | None) -> tuple[int, int]:
        """A record size (1 to the ring's size) and a timeout in ms (-1: none), checked."""
        who = f"user ring buffer {self.map.name!r}"
        size = c_int(size, f"{who}: record size", "u32", lo=1)
        t = timeout_arg(timeout, f"{who}: timeout")
        return size, -1 if t is None else min(max(0, int(t * 1000)), (1 << 31) - 1)

    def _fail(self, err: int, size: int, timeout: float | None) -> BPFError:
        what = {_errno.ENOSPC: "the ring is full" if timeout is None else
                f"the ring is still full after {timeout}s",
                _errno.E2BIG: "the record is larger than the ring"}.get(err)
        msg = f"user ring buffer {self.map.name!r}: cannot reserve {size} bytes"
        if what:
            msg += f" ({what})"
        return error_for(err, msg, kind=MapError, map=self.map.name)

    def submit(self, value: Any, *, timeout: float | None = None) -> None:
        """Copy ``value`` in and publish it.  A full ring raises MapError(ENOSPC), or,
        with ``timeout``, waits up to that long for the program to drain (holding
        the lock: a racing close() waits too).  Cost: one C call (reserve, copy and
        submit at once, so an exception can never strand a reservation), no
        syscall unless the program must be woken."""
        data = self._bytes(value)
        n, ms = self._size_and_ms(len(data), timeout)
        src = ffi.from_buffer(data)
        with self._lock:
            if self._closing or self._ptr is None:
                raise self._closed_error()
            rc = int(lib.pybpf_urb_write(self._ptr, src, n, ms))
            if rc == 0:
                self.submitted += 1
        if rc < 0:
            raise self._fail(-rc, n, timeout)

    def reserve(self, size: int, *, timeout: float | None = None) -> _Reservation:
        """Reserve ``size`` bytes (when the ``with`` block starts) and yield them
        writable, zeroed (a buffer: ``buf[i]``, ``buf[a:b] = data``,
        ``struct.pack_into(fmt, buf, ...)``); submitted when the block ends,
        discarded if it raises (or if the ring was closed meanwhile: then
        ClosedError).  A reservation is settled on every path, even if an
        exception (KeyboardInterrupt) lands in between.  The buffer is private
        (copied into the ring at submit, one memcpy): after the block, using it or
        a slice of it raises ClosedError (``struct.pack_into`` reports it as a
        TypeError), and a memoryview made of it never reaches the ring."""
        size, _ = self._size_and_ms(size, timeout)
        return _Reservation(self, size, timeout)

    def _free_locked(self) -> None:
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            lib.user_ring_buffer__free(ptr)

    def close(self) -> None:
        """Unmap the ring (at once, or when the last open reservation ends: its
        block then raises ClosedError, and nothing it wrote is published)."""
        with self._lock:
            self._closing = True
            if self._open == 0:
                self._free_locked()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> UserRingBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Reservation:
    """One ``UserRingBuffer.reserve()`` block.  The sample pointer lives in a C slot
    that the native reserve fills and the native settle clears, so whichever of
    ``__exit__`` and ``__del__`` (the backstop when an exception skipped
    ``__exit__``) runs first settles it, exactly once.

    The block writes into a private buffer (:class:`pybpf._fastpath.Lent`) that the
    settle copies into the sample on submit: nothing the user holds ever points into
    the ring.  Settling closes that buffer: any later use of it, or of a slice of
    it, raises ClosedError."""

    def __init__(self, urb: UserRingBuffer, size: int, timeout: float | None) -> None:
        self._urb = urb
        self._size = size
        self._timeout = timeout
        self._slot = ffi.new("void **")
        self._counted = False
        self._buf: Lent | None = None

    def __enter__(self) -> Lent:
        urb = self._urb
        _, ms = urb._size_and_ms(self._size, self._timeout)
        buf = Lent(self._size, f"reservation in user ring buffer {urb.map.name!r}")
        with urb._lock:
            if self._counted or self._slot[0] != ffi.NULL:
                raise RuntimeError("a reservation block cannot be entered twice")
            if urb._closing or urb._ptr is None:
                raise urb._closed_error()
            urb._open += 1
            self._counted = True
            self._buf = buf
            rc = int(lib.pybpf_urb_reserve(urb._ptr, self._size, ms, self._slot))
            if rc < 0:
                self._settle(False)
                raise urb._fail(-rc, self._size, self._timeout)
        return buf

    def _revoke(self) -> None:
        """Close the private buffer: every later use raises ClosedError."""
        buf = self._buf
        if buf is not None:
            buf.close()

    def _settle(self, submit: bool) -> bool:
        """Submit (or discard) the sample if still held; True if it was published."""
        urb = self._urb
        with urb._lock:
            if not self._counted:
                self._revoke()
                return False
            closing = urb._closing
            buf = self._buf
            ok = submit and not closing and buf is not None and not buf.closed
            src = ffi.from_buffer(buf) if ok else ffi.NULL
            published = bool(lib.pybpf_urb_settle(urb._ptr, self._slot, 1 if ok else 0,
                                                  src, self._size if ok else 0))
            self._revoke()
            self._counted = False
            urb._open -= 1
            if published:
                urb.submitted += 1
            if closing and urb._open == 0:
                urb._free_locked()
        return published

    def __exit__(self, exc_type: object, *rest: object) -> None:
        ok = exc_type is None
        if not self._settle(ok) and ok:
            raise self._urb._closed_error()

    def __del__(self) -> None:
        try:
            self._settle(False)
        except Exception:  # noqa: BLE001
            pass
