"""What ring buffer and perf buffer consumers share: record batches, waiting, dispatch.

A reader moves records from the kernel into one C-side batch (a contiguous
buffer plus offset/size/tag arrays, see ``pybpf/_native/batch.c``), copies it out
in one go as a :class:`RecordBatch`, then hands records to callbacks, to an
iterator, or to the caller as the batch itself (or a numpy structured array).
Records taken out of the kernel and not yet delivered -- because a callback
raised, or an iterator was left early -- stay queued in the consumer and are
delivered first next time: no record is lost between the kernel and Python.

The native reader (``pybpf/_native/ring.c``, ``perf.c``) owns the mapped pages,
the positions, the wait and the lifetime behind its own lock; :class:`_Reader`
is the one Python reader over it, and poll/consume (callbacks), events(),
read(), read_numpy(), borrow() and asyncio are adapters over its ``_wait`` and
``_take``.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import itertools
import operator
import re
import struct
import sys
import threading
import time
import weakref
from array import array
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, Union, overload

from . import _fastpath, typespec
from ._args import c_int, timeout_arg, user_raised
from ._ffi import ffi, lib
from .btf import BTF, BTFKind, BTFType
from .errors import (
    BPFError,
    BPFKeyError,
    BPFTypeError,
    ClosedError,
    MapError,
    MapTypeError,
    MapValueError,
    TypeSpecError,
)

if TYPE_CHECKING:
    from .maps import Map

__all__ = ["RecordBatch", "Decoder", "btf_dtype", "btf_decoder", "btf_encoder"]

Decoder = Callable[[bytes], Any]
"""Turns one record's bytes into a value (a BTF-typed record, a tuple...)."""
DecodeSpec = Union[Decoder, str, type, None]
Callback = Callable[[Any], Any]

_U32 = "I"
_DTYPES: weakref.WeakKeyDictionary[BTF, dict[str, Any]] = weakref.WeakKeyDictionary()
_UNPACKERS: dict[tuple[int, int, int], struct.Struct] = {}  # (base, size, stride) -> record
_first = operator.itemgetter(0)
_exhaust: Callable[[Iterator[Any]], None] = collections.deque(maxlen=0).extend  # in C
_alloc = ffi.new_allocator(should_clear_after_alloc=False)
_VIEW_MIN = 16 * 1024  # batches this big, and 1/8 of the lent buffer, are views
_POOL = 2  # lent buffers kept per consumer
assert array(_U32).itemsize == 4


class RecordBatch(Sequence[bytes]):
    """Records moved out of the kernel in one step, packed back to back in :attr:`data`.

    ``batch[i]`` is record *i* as ``bytes``; ``offsets``/``sizes`` locate it in
    :attr:`data`; ``tags`` says where it came from (the ring's index among the
    consumer's maps, or the CPU for perf buffers).  :meth:`numpy` views the
    records as a numpy structured array without copying them again.

    :attr:`data` is a read-only bytes-like object: ``bytes``, or, for large
    ring buffer batches, a view of the consumer's buffer that the consumer
    never reuses while the batch (or a numpy array made from it) is alive.
    """

    __slots__ = ("data", "_n", "_fixed", "_stride", "_base", "_tag0", "_offs", "_sizes",
                 "_tags", "_sources", "_decoders", "_btf")

    def __init__(self, data: Any, offsets: Sequence[int] | None, sizes: Sequence[int] | None,
                 tags: Sequence[int] | None, *, n: int | None = None, fixed: int = 0,
                 stride: int = 0, base: int = 0, tag0: int = 0, sources: Sequence[str] = (),
                 decoders: Sequence[Decoder | None] = (), btf: BTF | None = None) -> None:
        self.data = data
        self._offs = offsets
        self._sizes = sizes
        self._tags = tags
        self._n = len(offsets) if offsets is not None else (n or 0)
        self._fixed = fixed  # without offsets: every record has this size, and
        self._stride = stride or fixed  # record i starts at base + i * stride
        self._base = base
        self._tag0 = tag0  # the tag of every record when tags is None
        self._sources = sources
        self._decoders = decoders
        self._btf = btf

    @classmethod
    def empty(cls, *, sources: Sequence[str] = (), decoders: Sequence[Decoder | None] = (),
              btf: BTF | None = None) -> RecordBatch:
        return cls(b"", None, None, None, n=0, sources=sources, decoders=decoders, btf=btf)

    def _like(self, data: Any, offsets: Sequence[int] | None, sizes: Sequence[int] | None,
              tags: Sequence[int] | None, **kw: Any) -> RecordBatch:
        return RecordBatch(data, offsets, sizes, tags, sources=self._sources,
                           decoders=self._decoders, btf=self._btf, **kw)

    @property
    def offsets(self) -> Sequence[int]:
        """Where each record starts in :attr:`data`."""
        if self._offs is None:
            if not self._fixed:
                return range(0)
            return range(self._base, self._base + self._n * self._stride, self._stride)
        return self._offs

    @property
    def sizes(self) -> Sequence[int]:
        """Each record's size in bytes."""
        if self._sizes is None:
            return array(_U32, [self._fixed]) * self._n
        return self._sizes

    @property
    def tags(self) -> Sequence[int]:
        """Each record's ring index (ring buffers) or CPU (perf buffers)."""
        if self._tags is None:
            return array(_U32, [self._tag0]) * self._n
        return self._tags

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> bytes: ...

    @overload
    def __getitem__(self, i: slice) -> RecordBatch: ...

    def __getitem__(self, i: int | slice) -> bytes | RecordBatch:
        if isinstance(i, slice):
            start, stop, step = i.indices(self._n)
            if self._fixed and self._offs is None and step == 1:
                st, b0 = self._stride, self._base
                return self._like(self.data[b0 + start * st:b0 + max(start, stop) * st], None,
                                  None, None, n=max(0, stop - start), fixed=self._fixed,
                                  stride=st, tag0=self._tag0)
            return self._like(self.data, array(_U32, self.offsets[i]),
                              array(_U32, self.sizes[i]), array(_U32, self.tags[i]))
        if not isinstance(i, int):  # an object with __index__, or a BPFTypeError
            i = c_int(i, "RecordBatch index", "s64")
        if self._fixed and self._offs is None:
            if i < 0:
                i += self._n
            if not 0 <= i < self._n:
                raise IndexError("record index out of range")
            o = self._base + i * self._stride
            return bytes(self.data[o:o + self._fixed])
        o = self.offsets[i]
        return bytes(self.data[o:o + self.sizes[i]])

    def __iter__(self) -> Iterator[bytes]:
        data = self.data
        if self._fixed and self._offs is None:
            f, st, b0 = self._fixed, self._stride, self._base
            for o in range(b0, b0 + self._n * st, st):
                yield data[o:o + f]
            return
        for o, s in zip(self.offsets, self.sizes):
            yield data[o:o + s]

    def __repr__(self) -> str:
        return f"<RecordBatch {len(self)} records, {len(self.data)} bytes>"

    def source(self, i: int) -> str:
        """Name of the map record *i* came from (perf buffers: ``"cpu<N>"``)."""
        tag = self.tags[i]
        if tag < len(self._sources):
            return self._sources[tag]
        return f"cpu{tag}"

    def records(self) -> list[bytes]:
        """Every record as ``bytes`` (one copy of each)."""
        return list(self)

    def decoded(self) -> list[Any]:
        """Every record through its map's ``decode`` (raw ``bytes`` where there is none)."""
        decs = self._decoders
        if self._fixed and self._offs is None and len(decs) == 1 and self._n:
            whole = getattr(decs[0], "__self__", None)  # a C Decoder's bound decode
            if isinstance(whole, _fastpath.Decoder):  # the whole batch in one C call
                try:
                    return whole.decode_array(self.data, self._n, self._stride, self._base)
                except ValueError:
                    pass  # records shorter than the struct: the loop below says which
        out: list[Any] = []
        for rec, t in zip(self, self.tags):
            dec = decs[t] if t < len(decs) else decs[0] if len(decs) == 1 else None
            out.append(dec(rec) if dec is not None else rec)
        return out

    @property
    def fixed_size(self) -> int | None:
        """The common record size, or None if records differ in size (or there are none)."""
        if not self._n:
            return None
        if self._fixed:
            return self._fixed
        sizes = self.sizes
        first = sizes[0]
        if list(sizes).count(first) == self._n:
            return int(first)
        return None

    def numpy(self, dtype: Any) -> Any:
        """The records as a read-only numpy structured array of ``dtype``, without a copy.

        ``dtype`` is a numpy dtype or the name of a BTF struct in the map's object.
        Every record must have the same size, at least ``dtype.itemsize`` (perf
        records carry up to 7 bytes of padding at the end; they are skipped).
        """
        np = _numpy()
        dt = self._dtype(dtype)
        n = len(self)
        if n == 0:
            return np.empty(0, dtype=dt)
        size = self.fixed_size
        if size is None:
            raise ValueError("records differ in size: use numpy_by_kind() for mixed records")
        if size < dt.itemsize:
            raise ValueError(f"records are {size} bytes, dtype {dt} needs {dt.itemsize}")
        if self._offs is None:
            base, stride, contiguous = self._base, self._stride, True
        else:
            base, stride = int(self.offsets[0]), size
            contiguous = int(self.offsets[-1]) == base + (n - 1) * size
        if contiguous:
            arr = np.ndarray(shape=(n,), dtype=dt, buffer=self.data, offset=base,
                             strides=(stride,))
            arr.flags.writeable = False
            return arr
        raw = np.frombuffer(self.data, dtype=np.uint8)
        idx = np.asarray(self.offsets, dtype=np.int64)[:, None] + np.arange(dt.itemsize)
        return raw[idx].view(dt).reshape(n)

    def numpy_by_kind(self, dtypes: Mapping[int, Any], *, kind_offset: int = 0,
                      kind_format: str = "<u4", by_size: bool = False) -> dict[int, Any]:
        """Mixed records as one numpy array per kind.

        The kind of a record is the integer at ``kind_offset`` (``kind_format``),
        or its size when ``by_size`` is true; ``dtypes`` maps each kind to a
        dtype (or BTF struct name).  A record of a kind not in ``dtypes``, or
        shorter than its dtype, raises ValueError: nothing is dropped silently.
        """
        np = _numpy()
        offs = np.asarray(self.offsets, dtype=np.int64)
        sizes = np.asarray(self.sizes, dtype=np.int64)
        raw = np.frombuffer(self.data, dtype=np.uint8)
        if by_size:
            kinds = sizes.astype(np.int64)
        else:
            kdt = np.dtype(kind_format)
            if len(offs) and int((sizes < kind_offset + kdt.itemsize).sum()):
                raise ValueError(f"a record is too short to hold its kind at offset {kind_offset}")
            idx = offs[:, None] + kind_offset + np.arange(kdt.itemsize)
            kinds = raw[idx].copy().view(kdt).reshape(len(offs)).astype(np.int64)
        out: dict[int, Any] = {}
        present = set(int(k) for k in np.unique(kinds))
        unknown = present - set(dtypes)
        if unknown:
            raise ValueError(f"records of kind {sorted(unknown)} have no dtype in {sorted(dtypes)}")
        for kind in present:
            dt = self._dtype(dtypes[kind])
            sel = kinds == kind
            if int((sizes[sel] < dt.itemsize).sum()):
                raise ValueError(f"a record of kind {kind} is shorter than its dtype "
                                 f"({dt.itemsize} bytes)")
            idx = offs[sel][:, None] + np.arange(dt.itemsize)
            out[kind] = raw[idx].view(dt).reshape(int(sel.sum()))
        return out

    def _dtype(self, dtype: Any) -> Any:
        np = _numpy()
        if not (isinstance(dtype, str) and _is_numpy_spec(dtype)) and \
                typespec.is_type_spec(dtype) and not typespec.is_numpy(dtype):
            return type_dtype(typespec.btf_type(dtype, what="numpy dtype"))
        if isinstance(dtype, str) and self._btf is not None:
            known = _DTYPES.setdefault(self._btf, {})  # BTF is parsed once, never changed
            dt = known.get(dtype)
            if dt is None:
                dt = btf_dtype(self._btf, dtype) if not _is_numpy_spec(dtype) else np.dtype(dtype)
                known[dtype] = dt
            return dt
        try:
            return np.dtype(dtype)
        except (TypeError, ValueError) as e:
            raise TypeSpecError(f"numpy dtype: cannot use {dtype!r:.60} ({e}; give a numpy "
                                "dtype, a BTF struct name, a C declaration or a ctypes "
                                "type)") from None


def _is_numpy_spec(s: str) -> bool:
    if "{" in s or ";" in s:  # a C declaration
        return False
    try:
        _numpy().dtype(s)
    except (TypeError, ValueError, SyntaxError):
        return False
    return True


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("numpy is not installed: pip install 'pybpf[numpy]'") from exc
    return numpy


# --- BTF record types -----------------------------------------------------------

_TAG = re.compile(r"^\s*(struct|union)\s+")

def _struct_type(btf: BTF, name: str) -> Any:
    name = _TAG.sub("", name).strip()  # "struct event" is "event"
    t = btf.find(name, BTFKind.STRUCT) or btf.find(name, BTFKind.UNION)
    if t is None:
        t = btf.find(name, BTFKind.TYPEDEF)
        if t is not None:
            t = btf.resolve(t.type)
    if t is None or t.kind not in (BTFKind.STRUCT, BTFKind.UNION):
        raise BPFKeyError(errno.ENOENT, f"no struct {name!r} in the object's BTF")
    return t


def btf_dtype(btf: BTF, name: str) -> Any:
    """The numpy structured dtype of BTF struct ``name`` (offsets and size from BTF):
    :func:`pybpf.types.numpy_dtype` of its codec, the one layout of the type."""
    from .types import codec_for, numpy_dtype

    return numpy_dtype(codec_for(btf, _struct_type(btf, name).id))


def type_dtype(t: BTFType) -> Any:
    """The numpy dtype of a BTF type (a C declaration's, a ctypes type's...), cached."""
    btf = t._btf
    assert btf is not None
    known = _DTYPES.setdefault(btf, {})
    dt = known.get(f"#{t.id}")
    if dt is None:
        from .types import codec_for, numpy_dtype

        dt = known[f"#{t.id}"] = numpy_dtype(codec_for(btf, t.id))
    return dt


def _is_record_type(spec: Any) -> bool:
    """A type for decode=/encode= (not a callable): a name, a C declaration, a ctypes
    type, a numpy dtype, a BTF type, a generated class."""
    from .types import Struct

    return isinstance(spec, str) or typespec.is_type_spec(spec) or (
        isinstance(spec, type) and issubclass(spec, Struct))


def _record_codec(spec: Any, m: Map, what: str) -> tuple[Any, str]:
    """(codec, name) of a record type given to decode=/encode= for map ``m``."""
    from .types import as_codec, codec_for

    if isinstance(spec, str) and not typespec.is_type_spec(spec):  # a name: the object's
        btf = map_btf(m, spec)
        try:
            return codec_for(btf, _struct_type(btf, spec).id), spec
        except BPFKeyError as e:
            raise BPFKeyError(errno.ENOENT, f"map {m.name!r}: {what}: {e}") from None
    c = as_codec(spec, None, f"{what} of map {m.name!r}")
    return c, c.name


def btf_decoder(btf: BTF, name: str) -> Decoder:
    """A decoder turning one record into struct ``name``'s typed value
    (:mod:`pybpf.types`: attribute access, ``_asdict()``); a record shorter than
    the struct raises ValueError.  Extra bytes (perf padding) are ignored."""
    from .types import codec_for

    return codec_decoder(codec_for(btf, _struct_type(btf, name).id), name)


def codec_decoder(codec: Any, name: str) -> Decoder:
    """A record decoder of ``codec``'s type (see :func:`btf_decoder`)."""
    size = codec.size
    dec = codec.decode
    cdec = getattr(codec, "cdecoder", None)
    if cdec is not None:  # a struct of scalars: decoded in C, length checked there
        return cdec.decode  # type: ignore[no-any-return]

    def decode(data: bytes) -> Any:
        if len(data) < size:
            raise ValueError(f"record of {len(data)} bytes is shorter than struct {name} "
                             f"({size} bytes)")
        return dec(data)

    return decode


def btf_encoder(btf: BTF, name: str) -> Callable[[Any], bytes]:
    """Encode a value of struct ``name`` (instance, dict or tuple) into its bytes."""
    from .types import codec_for

    return codec_encoder(codec_for(btf, _struct_type(btf, name).id), name)


def codec_encoder(codec: Any, name: str, who: str = "") -> Callable[[Any], bytes]:
    """An encoder of ``codec``'s type: bytes pass as they are (see :func:`btf_encoder`);
    a value the type cannot take is a MapTypeError/MapValueError starting with ``who``."""
    lead = f"{who}: " if who else ""

    def encode(value: Any) -> bytes:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        try:
            out: bytes = codec.encode(value, name)
        except (TypeError, ValueError) as e:
            if isinstance(e, BPFError):
                raise
            kind = MapTypeError if isinstance(e, TypeError) else MapValueError
            raise kind(f"{lead}{e}", field=name, type_name=codec.name) from None
        except Exception as e:  # the value's own __index__... raised
            raise MapTypeError(f"{lead}{user_raised(e, name, value)}", field=name,
                               type_name=codec.name) from e
        return out

    return encode


def resolve_decoder(spec: DecodeSpec, m: Map) -> Decoder | None:
    """``decode=`` as given: None, a callable, a BTF struct name in ``m``'s object, or a
    type the object lacks (a C declaration, a ctypes type, a numpy dtype:
    :func:`pybpf.typespec.btf_type`), a BTF type or a generated class."""
    if spec is None:
        return None
    if _is_record_type(spec):
        return codec_decoder(*_record_codec(spec, m, "decode"))
    if callable(spec):
        return spec
    raise TypeSpecError(f"map {m.name!r}: decode must be a callable, a BTF struct name, a C "
                        "declaration, a ctypes type or a numpy dtype, got "
                        f"{type(spec).__name__}")


def resolve_encoder(spec: Any, m: Map) -> Callable[[Any], bytes] | None:
    """``encode=`` as given: like :func:`resolve_decoder`, for values to write."""
    if spec is None:
        return None
    if _is_record_type(spec):
        return codec_encoder(*_record_codec(spec, m, "encode"), who=f"map {m.name!r}")
    if callable(spec):
        return spec  # type: ignore[no-any-return]
    raise TypeSpecError(f"map {m.name!r}: encode must be a callable, a BTF struct name, a C "
                        "declaration, a ctypes type or a numpy dtype, got "
                        f"{type(spec).__name__}")


def require_callback(cb: Any, who: str) -> None:
    """Raise BPFTypeError (naming ``who``) unless ``cb`` is None or callable."""
    if cb is not None and not callable(cb):
        raise BPFTypeError(errno.EINVAL, f"{who}: a callback must be callable (or None), got "
                                         f"{type(cb).__name__}")


def require_map(m: object, map_type: str, takes: str) -> None:
    """Raise unless ``m`` is a :class:`~pybpf.maps.Map` of ``map_type`` (``takes`` says
    what the consumer takes, in the TypeError: "PerfBuffer takes a Map")."""
    from .maps import Map

    if not isinstance(m, Map):
        raise BPFTypeError(errno.EINVAL, f"{takes}, got {type(m).__name__}")
    if m.type != map_type:
        raise MapError(errno.EINVAL, f"map {m.name!r} is a {m.type} map, not a {map_type}",
                       map=m.name)


def map_btf(m: Map, what: str = "") -> BTF:
    obj = getattr(m, "_obj", None)
    if obj is None:
        raise LookupError(f"map {m.name!r} has no object BTF to find {what!r} in")
    btf: BTF = obj.btf
    return btf


# --- the reader ------------------------------------------------------------------

DEFAULT_MAX_BATCH_BYTES = 1 << 20
"""What one step takes at most by default (per ring; for perf buffers, in all):
batches of about 1 MiB are still in the CPU's cache when Python reads them."""

_INT_MAX = (1 << 31) - 1


def batch_bytes(value: int | None, who: str) -> int:
    """``max_batch_bytes`` checked for the reader ``who`` names (None: no bound)."""
    if value is None:  # (the old spelling of "everything there is")
        return 1 << 62
    return c_int(value, f"{who}: max_batch_bytes", "u64", lo=1)


def _timeout_ms(timeout: float | None, deadline: float | None) -> int:
    if timeout is None:
        return -1
    left = timeout if deadline is None else deadline - time.monotonic()
    if left <= 0:
        return 0
    return min(_INT_MAX, max(1, int(left * 1000 + 0.999)))


class _Reader:
    """The one reader of a ring or perf buffer; every way to read is an adapter over
    :meth:`_take` (move what the kernel has into a RecordBatch) and :meth:`_wait`.

    State, and who owns it:

    * the native reader (``_raw``: pybpf/_native/ring.c or perf.c) owns the mapped
      pages, the positions, the epoll and the lifetime, behind its own lock: every
      native call checks that it is not closed, and :meth:`close` (any thread)
      wakes a waiter and unmaps under that lock -- a consumer never reads unmapped
      pages.  Native calls are atomic for Python signal handlers.
    * ``_lock`` makes one consumer at a time; it is only ever taken with ``with``,
      so a KeyboardInterrupt anywhere leaves it released (never "busy forever").
    * the C batch (``_batch``) and the records taken but not delivered yet
      (``_pending``) belong to the consumer holding ``_lock``; both live as long
      as this object (close() never frees them under a consumer's feet).

    Exactly once, whatever interrupts it: a record is consumed when it is handed
    to user code, and the hand-over itself is the only state change, made where
    Python never runs a signal handler (no call between the change and the
    hand-over).  How far the records of ``_pending`` are handed over is kept as
    state that needs no clean-up to stay true: ``_done`` (records an iterator
    yielded: set just before each yield), or ``_cursor``, the iterator a
    callback loop pulls records from (``len - length_hint(_cursor)`` were handed
    to a decoder or callback).  The next call folds that progress in
    (:meth:`_pending_rest`): there is no except clause to be interrupted in.
    """

    _what = "event stream"

    def _init_reader(self, raw: Any, ops: _NativeOps, batch: Any) -> None:
        self._raw = raw
        self._ops = ops
        self._batch = batch
        self._pending: RecordBatch | None = None
        self._done = 0  # records of _pending an iterator has yielded already
        self._cursor: Iterator[Any] | None = None  # a callback loop's place in _pending
        self._received = 0  # records handed over, progress in _pending not counted yet
        self._block: Any = None  # RingBuffer: the records an open borrow() block holds
        self._lock = threading.Lock()
        self._closed = False
        self._sources: list[str] = []
        self._decoders: list[Decoder | None] = []
        self._callbacks: list[Callback | None] = []
        self._btf: BTF | None = None
        self._uniform = True  # one callback/decoder for every tag
        self._lent: Any = None  # the Python-owned buffer the C batch copies into
        self._pool: list[Any] = []  # lent buffers, reused when nothing views them
        self._lent_cap = 0

    @property
    def received(self) -> int:
        """Records handed over so far (to callbacks, iterators, batches, borrow blocks)."""
        return self._received + self._progress(self._pending)

    def _progress(self, pending: RecordBatch | None) -> int:
        """Records of ``pending`` (the pending batch) handed over already."""
        if pending is None:
            return 0
        cur = self._cursor
        if cur is not None:
            return pending._n - operator.length_hint(cur)
        return self._done

    def _track(self, map: Map) -> None:
        """Be closed when ``map``'s object is closed (Object.close_with): a thread
        blocked in poll()/read() wakes up."""
        obj = getattr(map, "_obj", None)
        if obj is not None:
            obj.close_with(self)

    # subclass hooks -------------------------------------------------------------
    def _step(self) -> int:
        """Move what the kernel has into ``self._batch`` (one native call, under the
        native lock); the count moved, or lib.PYBPF_CLOSED."""
        raise NotImplementedError

    def _prepare(self) -> None:
        """Before a step into an empty batch: lend it a buffer."""

    def _end_block(self, blk: Any) -> None:
        """RingBuffer: consume what a borrow() block held."""

    def _check_block(self) -> None:
        """With the lock held, before any read: refuse while a borrow() block is
        open; finish one whose ``__exit__`` was interrupted (its block object is
        gone)."""
        blk = self._block
        if blk is None:
            return
        if blk.owner() is not None:
            raise RuntimeError(f"{self._what}: a borrow() block is open; consume after "
                               "it ends")
        self._end_block(blk)

    # -----------------------------------------------------------------------------
    def fileno(self) -> int:
        """An epoll fd, readable when records are waiting (for select/selectors); it
        is closed by :meth:`close`."""
        fd = int(self._ops.fileno(self._raw))
        if fd < 0:
            raise ClosedError(self._what)
        return fd

    @property
    def closed(self) -> bool:
        """close() was called (directly, or by closing the maps' object)."""
        return self._closed

    def _consumer(self, what: str) -> threading.Lock:
        """The lock a consumer holds (``with self._consumer("poll"):``)."""
        if self._closed:
            raise ClosedError(self._what)
        if self._lock.locked():
            raise RuntimeError(f"{self._what}.{what}(): another thread (or a callback) is "
                               "already consuming; use one consumer thread at a time")
        return self._lock

    def _who(self) -> str:
        """What the errors of this reader name: ``ring buffer 'rb'``."""
        return self._what

    def _wait(self, timeout: float | None) -> bool:
        """Block until records may be there; False on timeout or close.  A signal
        ends the native wait: its Python handler then runs at once (Ctrl-C raises
        KeyboardInterrupt here)."""
        timeout = timeout_arg(timeout, f"{self._who()}: timeout")
        if self._block is not None:
            self._check_block()
        if self._has_pending():
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        wait, raw = self._ops.wait, self._raw
        while True:
            rc = wait(raw, _timeout_ms(timeout, deadline))
            if rc != -errno.EINTR:
                return rc > 0

    def _empty(self) -> RecordBatch:
        return RecordBatch.empty(sources=self._sources, decoders=self._decoders, btf=self._btf)

    def _lend(self, need: int, grow: bool) -> None:
        """Lend the C batch a Python-owned buffer of at least ``need`` bytes that no
        batch or array views (so records handed out are never overwritten).

        Up to ``_POOL`` buffers are kept and reused once nothing views them: the
        usual ``batch = rb.read()`` loop, which keeps the previous batch alive
        during the next read, alternates between two warm buffers instead of
        page-faulting a fresh one every time.
        """
        need = max(need, 4096)
        b = self._batch
        pool = self._pool
        cur = self._lent
        # references to a free current buffer: pool, self._lent, cur, the argument
        if (cur is not None and b.external and b.data == cur and b.grow == grow
                and ffi.sizeof(cur) >= need and sys.getrefcount(cur) <= 4):
            return
        cur = self._lent = None
        for i in range(len(pool)):
            # references to a free pooled buffer: the pool and the argument
            if ffi.sizeof(pool[i]) >= need and sys.getrefcount(pool[i]) <= 2:
                cur = pool[i]
                break
        if cur is None:
            cur = _alloc("char[]", need)
            # make room: first buffers nothing views that are too small, then the
            # oldest (a batch still viewing it keeps it alive, and it is never reused)
            pool[:] = [p for p in pool if sys.getrefcount(p) > 3]
            del pool[:max(0, len(pool) - _POOL + 1)]
            pool.append(cur)
        # (b may still point at a buffer this call dropped: nothing is read from or
        # written to b before a _prepare() completes, see _take)
        self._lent = cur
        self._lent_cap = ffi.sizeof(cur)
        lib.pybpf_batch_lend(b, cur, self._lent_cap, int(grow))

    def _has_pending(self) -> bool:
        """Records taken and not delivered yet are waiting in the reader (in the
        pending batch, or in the C batch after an interrupted step)."""
        pending = self._pending
        if pending is not None and pending._n > self._progress(pending):
            return True
        return bool(self._batch.n)

    def _pending_rest(self) -> RecordBatch | None:
        """The records taken and not delivered yet (None: none), with the progress
        an interrupted (or abandoned) hand-over made folded in."""
        pending = self._pending
        if pending is None:
            return None
        k = self._progress(pending)
        if k == 0:
            self._cursor = None
            return pending
        rest = pending[k:] if k < pending._n else None  # (may be interrupted: no change yet)
        # from here to the return, no call: the fold is one step for signal handlers
        self._received += k
        self._pending = rest
        self._done = 0
        self._cursor = None
        return rest

    def _take(self, copy: bool = True) -> RecordBatch:
        """Move everything the kernel has into a RecordBatch (pending ones first);
        called with ``_lock`` held.

        Without ``copy``, a large batch is a view of the lent buffer (see
        _prepare); the records are then copied once, from ring to buffer.

        Records are never out of the reader's hands until delivered: they stay in
        the C batch until the RecordBatch exists, which then stays in ``_pending``
        (and is returned again by the next call) until an adapter hands it over --
        so a KeyboardInterrupt landing anywhere in between loses nothing.
        """
        if self._block is not None:
            self._check_block()
        pending = self._pending_rest()
        if pending is not None:
            if pending._n:
                return pending
            self._pending = None
        b = self._batch
        if not b.n:
            self._prepare()
        self._step()  # appends to what an interrupted call may have left in b
        n = int(b.n)
        if n == 0:
            return self._empty()
        size = int(b.len)
        lent = self._lent
        if (not copy and b.external and lent is not None and b.data == lent
                and size >= max(_VIEW_MIN, b.cap // 8)):
            data: Any = ffi.buffer(lent, size)
        else:
            data = ffi.buffer(b.data, size)[:]
        fixed = int(b.fixed)
        if fixed != lib.PYBPF_MIXED and fixed and not b.tags_mixed:
            batch = RecordBatch(data, None, None, None, n=n, fixed=fixed,
                                tag0=int(b.tag0), sources=self._sources,
                                decoders=self._decoders, btf=self._btf)
        else:
            offs = array(_U32)
            offs.frombytes(ffi.buffer(b.offs, 4 * n))
            sizes = array(_U32)
            sizes.frombytes(ffi.buffer(b.sizes, 4 * n))
            tags = array(_U32)
            tags.frombytes(ffi.buffer(b.tags, 4 * n))
            batch = RecordBatch(data, offs, sizes, tags, sources=self._sources,
                                decoders=self._decoders, btf=self._btf)
        self._pending = batch  # kept until handed over
        lib.pybpf_batch_reset(b)  # (an interrupt after this C call finds it pending)
        return batch

    # --- callbacks ------------------------------------------------------------------
    def _dispatch(self, batch: RecordBatch) -> int:
        """Hand every record of ``batch`` (the pending batch) to its callback.

        The loop pulls each record from ``self._cursor`` and, with no call in
        between, passes it to the decoder or the callback: from then on it is
        handed over.  If a decoder or callback raises (a KeyboardInterrupt
        anywhere in it included), the exception propagates and the cursor says
        what was handed over; the rest stays pending for the next call."""
        n = len(batch)
        if n == 0:
            return 0
        cbs = self._callbacks
        decs = self._decoders
        data = batch.data
        if batch._tags is None or self._uniform:
            tag = 0 if self._uniform else batch._tag0
            cb = cbs[tag]
            dec = decs[tag]
            if cb is None:
                raise TypeError(f"{self._what}: {batch.source(0)!r} has no callback; "
                                "read it with events() or read()")
            f = batch._fixed
            if f and batch._offs is None:  # the common case: one size, one source
                st, b0 = batch._stride, batch._base
                if b0 + f <= st and len(data) >= n * st:
                    return self._dispatch_fixed(batch, cb, dec)
            cursor = iter(range(n))
            it = zip(cursor, batch.offsets, batch.sizes)
            self._cursor = cursor
            if dec is None:
                for _, o, s in it:
                    cb(data[o:o + s])
            else:
                for _, o, s in it:
                    cb(dec(data[o:o + s]))
            return self._handed(n)
        stop = n
        if None in cbs:  # deliver up to the first record of a map without a callback
            stop = next((i for i, t in enumerate(batch.tags) if cbs[t] is None), n)
        cursor = iter(range(stop))
        it3 = zip(cursor, batch.offsets, batch.sizes, batch.tags)
        self._cursor = cursor
        for _, o, s, t in it3:
            dec = decs[t]
            rec = data[o:o + s]
            cbs[t](dec(rec) if dec is not None else rec)  # type: ignore[misc]
        if stop < n:
            self._pending_rest()  # (the records from stop on stay pending)
            raise TypeError(f"{self._what}: {batch.source(stop)!r} has no callback; "
                            "read it with events() or read()")
        return self._handed(n)

    def _dispatch_fixed(self, batch: RecordBatch, cb: Callback, dec: Decoder | None) -> int:
        """Records of one size at a fixed stride: the loop runs in C (struct.iter_unpack
        makes each record's bytes and is the cursor, map() calls the callback), no
        bytecode per record."""
        n, f, st, b0 = batch._n, batch._fixed, batch._stride, batch._base
        key = (b0, f, st)
        unpack = _UNPACKERS.get(key)
        if unpack is None:
            unpack = _UNPACKERS.setdefault(key, struct.Struct(f"{b0}x{f}s{st - b0 - f}x"))
        data = batch.data
        if len(data) != n * st:  # (never a memoryview here: see below)
            data = bytes(memoryview(data)[:n * st])
        # The cursor may outlive this call in a traceback's frames, which the GC may
        # clear in any order: it must not hold an export of a memoryview (a cleared
        # memoryview with an export crashes CPython 3.11), only of bytes or of a lent
        # cffi buffer (which the reader keeps alive).
        recs = unpack.iter_unpack(data)
        vals: Iterator[Any] = map(_first, recs)
        if dec is not None:
            vals = map(dec, vals)
        self._cursor = recs
        _exhaust(map(cb, vals))
        return self._handed(n)

    def _handed(self, n: int) -> int:
        """The whole pending batch (``n`` records) was handed over."""
        # no call from here to the return: one step for signal handlers
        self._received += n
        self._pending = None
        self._cursor = None
        return n

    def _deliver(self, batch: RecordBatch) -> int:
        """Hand ``batch`` to the callbacks (PerfBuffer adds its CPU form and lost
        reports)."""
        return self._dispatch(batch)

    def poll(self, timeout: float | None = None) -> int:
        """Wait up to ``timeout`` seconds (None: until records come), then deliver
        every waiting record to the callbacks; returns how many were delivered
        (0 on timeout, or when :meth:`close` ends the wait).

        A callback that raises stops the delivery; the exception propagates and
        the records after it stay queued for the next call.  Cost: one native
        call to wait, one to copy the records, one callback per record.
        """
        with self._consumer("poll"):
            if not self._wait(timeout):
                return 0
            return self._deliver(self._take(copy=False))

    def wait(self, timeout: float | None = None) -> bool:
        """Block up to ``timeout`` seconds until records are waiting, without taking
        them; False on timeout or close.  Cost: one native call (epoll_wait)."""
        with self._consumer("wait"):
            return self._wait(timeout)

    def consume(self) -> int:
        """Deliver every waiting record to the callbacks without waiting."""
        with self._consumer("consume"):
            return self._deliver(self._take(copy=False))

    def read(self, timeout: float | None = None, *, copy: bool = False) -> RecordBatch:
        """Wait up to ``timeout`` seconds, then return every waiting record (up to
        ``max_batch_bytes``) as one batch (empty on timeout or close); callbacks are
        not called.  Cost: one native call to wait, one to copy the records.

        Large batches are views of a buffer the reader does not reuse while
        the batch (or an array made from it) is alive -- no second copy; two
        such buffers take turns in a ``batch = rb.read()`` loop.  ``copy=True``
        makes ``batch.data`` ``bytes``.
        """
        with self._consumer("read"):
            batch = self._read_locked(timeout, copy)
            self._after_step()
        return self._hand_over(batch)  # type: ignore[no-any-return]

    def _hand_over(self, batch: RecordBatch, result: Any = None) -> Any:
        """Return ``batch`` (the pending batch, or an empty one), or ``result`` made
        from it, to the caller."""
        # Handed over after the lock is released (its release is a call, where an
        # interrupt could land): until here the batch is pending, read again next
        # time.  From the check to the return, no call: nothing can interrupt it
        # (a Python function's return does not run signal handlers either).
        if self._pending is batch:
            self._received += batch._n
            self._pending = None
        return batch if result is None else result

    def _read_locked(self, timeout: float | None, copy: bool) -> RecordBatch:
        """Wait, then take one batch (left pending: the caller hands it over)."""
        timeout = timeout_arg(timeout, f"{self._who()}: timeout")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not self._wait(left):
                return self._empty()
            batch = self._take(copy)
            if batch._n or self._closed or left == 0.0:
                return batch
            # woken with nothing to take (a record still being written): wait on

    def _after_step(self) -> None:
        """After read() took a batch (PerfBuffer reports lost samples here)."""

    def read_numpy(self, dtype: Any, timeout: float | None = None) -> Any:
        """:meth:`read` as a numpy structured array (see :meth:`RecordBatch.numpy`).
        If the records do not fit ``dtype`` (ValueError), they stay queued."""
        with self._consumer("read_numpy"):
            batch = self._read_locked(timeout, False)
            self._after_step()
            arr = batch.numpy(dtype)
        return self._hand_over(batch, arr)

    def events(self, timeout: float | None = None) -> Iterator[Any]:
        """Yield records one by one (decoded when the map has ``decode``); stop after
        ``timeout`` seconds without a record (None: only when closed).

        Records read from the kernel but not yet yielded when the loop is left
        stay queued for the next read.
        """
        while not self._closed:
            try:
                with self._consumer("events"):
                    batch = self._read_locked(timeout, True)  # pending until yielded
            except ClosedError:
                return
            if not batch._n:
                return
            yield from self._yield_batch(batch)

    def __iter__(self) -> Iterator[Any]:
        return self.events()

    def _yield_batch(self, batch: RecordBatch) -> Generator[Any, None, None]:
        """Yield the records of ``batch`` (the pending batch) one by one.  It stays
        pending, with ``_done`` the records yielded so far, until the last one is
        out: leaving the loop early, or a KeyboardInterrupt anywhere, keeps the rest
        for the next read.  A record counts as handed over when it is yielded;
        between that count and the yield there is no call, where Python could run
        a signal handler.  If another consumer took the batch over meanwhile (the
        iterator was left suspended), this one stops."""
        decs = self._decoders
        n = batch._n
        uniform = self._uniform
        k = 0
        for rec, t in zip(batch, batch.tags if not uniform else _zeros(n)):
            dec = decs[t]
            try:
                value = dec(rec) if dec is not None else rec
            except Exception:  # a record its decoder rejects is consumed with the error
                if self._pending is batch and self._done == k and self._cursor is None:
                    self._done = k + 1
                raise
            if self._pending is not batch or self._done != k or self._cursor is not None:
                return  # (another consumer has these records now)
            # from here to the consumer's hands nothing can be interrupted (no call)
            k += 1
            self._done = k
            yield value
        if self._pending is batch and self._done == n and self._cursor is None:
            self._received += n  # (no call: one step with the two stores)
            self._pending = None
            self._done = 0

    # --- asyncio ------------------------------------------------------------------
    async def wait_async(self, timeout: float | None = None) -> bool:
        """Await records in the running loop (no thread: the loop watches the
        reader's epoll fd); False on timeout or when closed during the wait
        (ClosedError if already closed, as for :meth:`wait`)."""
        timeout = timeout_arg(timeout, f"{self._who()}: timeout")
        if self._closed:
            raise ClosedError(self._what)
        if self._has_pending() or self._ops.wait(self._raw, 0) > 0:
            return True
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        fd = int(self._ops.hold(self._raw))  # the fd stays open until unhold
        if fd < 0:
            return False
        try:
            def ready() -> None:
                if not fut.done():
                    fut.set_result(None)

            loop.add_reader(fd, ready)
            try:
                await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                return False
            finally:
                loop.remove_reader(fd)
        finally:
            self._ops.unhold(self._raw)
        return not self._closed

    async def poll_async(self, timeout: float | None = None) -> int:
        """:meth:`poll` for asyncio: awaits records through the loop, then delivers them."""
        if not await self.wait_async(timeout):
            return 0
        with self._consumer("poll_async"):
            return self._deliver(self._take(copy=False))

    async def read_async(self, timeout: float | None = None) -> RecordBatch:
        """:meth:`read` for asyncio."""
        if not await self.wait_async(timeout):
            return self._empty()
        with self._consumer("read_async"):
            batch = self._take()
        return self._hand_over(batch)  # type: ignore[no-any-return]

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[Any]:
        while not self._closed:
            if not await self.wait_async(None):
                return
            try:
                with self._consumer("async for"):
                    batch = self._take()  # pending until yielded
            except ClosedError:
                return
            gen = self._yield_batch(batch)
            try:
                for rec in gen:
                    yield rec
            finally:
                gen.close()

    # --- lifetime -------------------------------------------------------------------
    def close(self) -> None:
        """Stop reading: unmap the buffers and wake a thread blocked in poll/read.

        Safe from any thread and from inside a callback, during any way of
        reading: the native reader unmaps under its lock, so a consumer that is
        running finishes its current step and then sees the stream closed (poll
        returns 0, read an empty batch, events() ends).  Views lent by borrow()
        stay valid.  Memory is freed when the reader is garbage-collected.
        """
        self._closed = True
        self._ops.close(self._raw)

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_R = TypeVar("_R", bound=_Reader)


class _NativeOps(NamedTuple):
    """The native reader's calls (pybpf/_native/ring.c or perf.c)."""

    wait: Callable[[Any, int], int]
    hold: Callable[[Any], int]
    unhold: Callable[[Any], None]
    fileno: Callable[[Any], int]
    close: Callable[[Any], None]


def _zeros(n: int) -> Iterator[int]:
    return itertools.repeat(0, n)
