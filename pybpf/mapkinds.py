"""Maps as Python mappings, typed from BTF: one class per kind of BPF map.

Each map type's class is named in the one table of map-type facts
(:mod:`pybpf._maptypes`), so ``obj.maps["name"]``, :meth:`Map.open_pinned` and
:meth:`Map.from_id` return the right class. Keys and values are decoded/encoded with the map's BTF
(:mod:`pybpf.types`): the object's BTF for maps of an :class:`~pybpf.Object`, the
kernel's copy of the creator's BTF for maps opened by id or pin. A map without
BTF uses ``bytes`` unless a type is set with :meth:`TypedMap.set_types`.

Costs: ``m[k]``, ``m[k] = v``, ``del m[k]``, ``k in m``, ``get`` are one syscall
each, made from C (:mod:`pybpf._fastpath`) with the GIL held and no Python frame
(``TypedMap`` derives from the C ``MapBase``): keys and values of ints, floats,
bools, enums and flat structs of those -- as the generated class, a tuple or a
dict -- are converted there, per-CPU values CPU by CPU; other layouts (nested
structs, arrays, fd keys...) through their codec or the kind's methods, called
from C; whatever C does not take goes through the validating Python path, which
raises :class:`~pybpf.MapTypeError`/:class:`~pybpf.MapValueError` naming the map,
the field and the C type;
``items()``/``keys()``/``values()``, ``len()`` and ``clear()`` walk the map with
batch syscalls (``BPF_MAP_LOOKUP_BATCH``, a few thousand entries per call) where
the kernel has them for the map type, else one syscall per key.

The raw byte methods of :class:`~pybpf.maps.Map` (``lookup``, ``update(k, v,
flags)`` with bytes, ``delete``, ``lookup_and_delete``, ``keys_raw``) keep
working on every kind.
"""

from __future__ import annotations

import errno as _errno
import functools
import logging
import socket
import struct
import sys
import weakref
from collections.abc import (
    Collection,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    ValuesView,
)
from collections.abc import Set as AbstractSet
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from . import _fastpath, _walk
from . import symbolize as sym
from ._args import name_arg, user_raised
from ._ffi import error_for, ffi, lib
from ._maptypes import TABLE, MapTypeFacts, facts
from .btf import BTF
from .errors import UNSUPPORTED, ClosedError, MapError, MapKeyError, MapTypeError, MapValueError
from .maps import (
    Map,
    UpdateFlags,
    map_type_value,
    possible_cpus,
    register_kind,
)
from .types import (
    Codec,
    IntCodec,
    StackTraceCodec,
    Struct,
    as_codec,
    c_layout,
    codec_for,
    decode_array,
    lpm_key_codec,
    raw_codec,
)

__all__ = ["TypedMap", "HashMap", "ArrayMap", "PerCPUHashMap", "PerCPUArrayMap", "QueueMap",
           "StackMap", "LPMTrieMap", "BloomFilterMap", "ProgArrayMap", "ArrayOfMapsMap",
           "HashOfMapsMap", "StackTraceMap", "DevMap", "CPUMap", "XSKMap", "SockMap",
           "SockHashMap", "LocalStorageMap", "MapKeysView", "MapItemsView", "MapValuesView",
           "RawBatch", "create_map", "kernel_btf_by_id"]

K = TypeVar("K")
V = TypeVar("V")

_MISSING: Any = object()


def _round8(n: int) -> int:
    return (n + 7) // 8 * 8


_map_elem = _fastpath.map_elem
_LOOKUP, _UPDATE = _fastpath.MAP_LOOKUP_ELEM, _fastpath.MAP_UPDATE_ELEM
_DELETE, _TAKE = _fastpath.MAP_DELETE_ELEM, _fastpath.MAP_LOOKUP_AND_DELETE_ELEM
_ENOENT = _errno.ENOENT
_Fallback = _fastpath.Fallback




class _NoOps:
    """Stands for MapOps where C cannot serve a map (no keys, a big-endian host): every
    operation goes to the validating Python path."""

    def _fallback(self, *args: Any) -> Any:
        raise _Fallback

    lookup = lookup_bytes = get = contains = update = delete = _fallback


_NO_OPS = _NoOps()
_kernel_btfs: dict[int, BTF] = {}


def kernel_btf_by_id(btf_id: int) -> BTF:
    """The BTF with kernel id ``btf_id`` (what a map's creator loaded), parsed and cached."""
    cached = _kernel_btfs.get(btf_id)
    if cached is not None:
        return cached
    b = lib.btf__load_from_kernel_by_id(btf_id)
    if b == ffi.NULL:
        raise error_for(ffi.errno or _errno.ENOENT, f"cannot read BTF id {btf_id} from the "
                        "kernel")
    try:
        size = ffi.new("__u32 *")
        raw = lib.btf__raw_data(b, size)
        data = bytes(ffi.buffer(raw, size[0]))
    finally:
        lib.btf__free(b)
    base = BTF.vmlinux() if _is_split(data) else None
    btf = BTF.from_bytes(data, base=base)
    _kernel_btfs[btf_id] = btf
    return btf


def _is_split(data: bytes) -> bool:
    # Split (module) BTF starts its string offsets past the base: its first string isn't "".
    hdr = struct.unpack_from("<HBBIIIII", data)
    s0 = hdr[3] + hdr[6]
    return bool(hdr[7] > 0 and data[s0] != 0)


class RawBatch:
    """A chunk of a map's entries as bytes (see :meth:`TypedMap.lookup_batch`);
    unpacks as ``keys, values, count = batch``."""

    __slots__ = ("keys", "values", "count")

    def __init__(self, keys: memoryview, values: memoryview, count: int) -> None:
        self.keys = keys
        """``count`` keys, ``key_size`` bytes each, back to back."""
        self.values = values
        """``count`` values, back to back (per-CPU maps: each CPU's, 8-byte aligned)."""
        self.count = count

    def __iter__(self) -> Iterator[Any]:
        return iter((self.keys, self.values, self.count))

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"RawBatch(count={self.count}, keys={len(self.keys)} B, " \
               f"values={len(self.values)} B)"


class TypedMap(_fastpath.MapBase, Map, Generic[K, V]):
    """A BPF map with typed, dict-like access (base of the hash/array/... kinds).

    ``m[k]`` raises ``MapKeyError`` (a ``KeyError`` naming the map) for an absent key;
    ``m.get(k)`` returns None.
    Key/value errors (``TypeError``/``ValueError``) name the map and the field and
    are raised before any syscall.
    """

    def __init__(self, owner: Any, info: Any, **kw: Any) -> None:
        super().__init__(owner, info, **kw)
        self._kc: Codec | None = None
        self._vc: Codec | None = None
        self._ops: Any = None  # pybpf._fastpath.MapOps (or _NO_OPS) once used

    # --- types -------------------------------------------------------------------
    def _btf_and_ids(self) -> tuple[BTF | None, int, int]:
        obj = self._obj
        if obj is not None:
            try:
                btf = obj.btf
            except ClosedError:
                raise
            except Exception:  # noqa: BLE001 - an object without BTF: raw bytes
                btf = None
            kid, vid = self._btf_ids
            return btf, kid, vid
        info = self._info
        if not info.btf_id:
            return None, 0, 0
        try:
            btf = kernel_btf_by_id(int(info.btf_id))
        except Exception:  # noqa: BLE001 - no readable BTF: raw bytes
            return None, 0, 0
        return btf, int(info.btf_key_type_id), int(info.btf_value_type_id)

    def _resolve_types(self) -> None:
        btf, kid, vid = self._btf_and_ids()
        ks, vs = self.key_size, self.value_size
        kc = vc = None
        if btf is not None:
            try:
                if kid:
                    kc = codec_for(btf, kid)
                if vid:
                    vc = codec_for(btf, vid)
            except Exception as e:  # noqa: BLE001 - unusual BTF: raw bytes rather than failing
                logging.getLogger("pybpf").warning(
                    "map %r: cannot build types from BTF (%s); keys/values are bytes",
                    self.name, e)
                kc = vc = None
        if self._kc is None:
            self._kc = self._key_codec(kc if kc is not None and kc.size == ks else None, ks)
        if self._vc is None:
            self._vc = self._value_codec(vc if vc is not None and vc.size == vs else None, vs)

    def _key_codec(self, c: Codec | None, size: int) -> Codec:
        return c if c is not None else _default_codec(size)

    def _value_codec(self, c: Codec | None, size: int) -> Codec:
        return c if c is not None else _default_codec(size)

    @property
    def key_type(self) -> Codec:
        """The key's :class:`~pybpf.types.Codec` (from BTF, or bytes)."""
        if self._kc is None:
            self._resolve_types()
        return cast(Codec, self._kc)

    @property
    def value_type(self) -> Codec:
        """The value's :class:`~pybpf.types.Codec` (per CPU for per-CPU maps)."""
        if self._vc is None:
            self._resolve_types()
        return cast(Codec, self._vc)

    def set_types(self, key: Any = None, value: Any = None) -> None:
        """Use these types instead of BTF's: for types the object lacks, a C declaration
        (``"struct event { __u32 pid; ... }"``), a ``ctypes.Structure`` or a numpy dtype
        (:func:`pybpf.typespec.btf_type`); else a generated class, a BTF type
        (``obj.btf["event"]``), the name of a type in the map's BTF, a
        :class:`~pybpf.types.Codec`, ``"u32"``-style names or ``bytes``. Sizes must match
        the map's. Costs one conversion (a clang run for an uncached C declaration)."""
        btf = None
        if isinstance(key, str) or isinstance(value, str):
            btf = self._btf_and_ids()[0]
        kc = vc = None
        if key is not None:
            kc = as_codec(key, self.key_size, f"map {self.name!r} key", btf=btf)
        if value is not None:
            vc = as_codec(value, self.value_size, f"map {self.name!r} value", btf=btf)
        self._kc = kc or self._kc
        self._vc = vc or self._vc
        self._ops = None

    def _make_ops(self) -> Any:
        """Build ``self._ops``: the C operations (:mod:`pybpf._fastpath`) that ``m[k]``,
        ``m[k] = v``, ``del m[k]``, ``get``, ``in`` and raw ``lookup`` try first; what
        they do not take (Fallback) goes through the validating Python path, which names
        the map and field.

        C takes unsigned 4/8-byte integer keys by value; keys and values of other
        scalars and of flat structs of scalars (as the class, a tuple or a dict) it
        converts by their layout (:func:`pybpf.types.c_layout`), per-CPU values CPU by
        CPU; others through the codec's unchecked encoder and decoder or the kind's
        ``_ekey``/``_dval``/``_eval``, called from C. Built on first use after load
        (``TypedMap``'s C slots call this); dropped never: they hold the map's owner and
        check it before each syscall, so once the map or its object closes they raise
        ClosedError."""
        self._owner.get()  # ClosedError once closed
        if self._kc is None or self._vc is None:
            self._resolve_types()
        kc, vc = cast(Codec, self._kc), cast(Codec, self._vc)
        # (C converts in host order; the codecs' formats are little-endian)
        if self.key_size == 0 or sys.byteorder != "little":
            self._ops = _NO_OPS
            return _NO_OPS
        cls = type(self)
        # kinds with their own _ekey (fd keys...), _dval, _eval: those methods, bound
        # through a weak proxy so that the cached state does not keep the map alive in
        # a cycle
        proxy = weakref.proxy(self)
        own_key = cls._ekey is not TypedMap._ekey
        kenc: Any = functools.partial(cls._ekey, proxy)
        if not own_key and kc.fast_encode is not None:
            kenc = kc.fast_encode
        int_key = not own_key and type(kc) is IntCodec and not kc.signed and kc.size in (4, 8)
        vsize = self._vbuf_size()
        ncpu = 0
        if self.percpu and vc.size == self.value_size and cls._dval is _PerCPU._dval and \
                cls._eval is _PerCPU._eval:
            # per-CPU values: C splits and joins the CPUs' values, each by the layout
            ncpu, vsize = possible_cpus(), vc.size
        if ncpu or (cls._dval is TypedMap._dval and vsize == vc.size):
            vcls, fields = c_layout(vc)
            dec: Any = vc.decode
        else:
            vcls, fields = None, ()
            own_dval = cls._dval

            def dec(b: bytes, off: int) -> Any:
                return own_dval(proxy, b)
        enc = (vc.fast_encode or vc.encode) if ncpu or cls._eval is TypedMap._eval else \
            functools.partial(cls._eval, proxy)
        # other keys C takes: struct keys of scalars, other scalars (signed, 1-2 bytes)
        kcls, kfields = (None, ()) if own_key or int_key else c_layout(kc)
        ops = _fastpath.MapOps(self._owner, self.key_size, vsize, int_key, kenc, vcls,
                               fields, dec, enc, ncpu, kcls, kfields)
        self._ops = ops
        return ops

    def _err(self, err: int, what: str) -> MapError:
        return error_for(err, f"map {self.name!r}: {what}", kind=MapError,  # type: ignore
                         map=self.name)

    def _fdf(self) -> int:
        """The fd number for a caller that holds the GIL until its use ends (ClosedError
        once closed); a cffi call releases the GIL: borrow ``self._owner`` for it."""
        return int(self._owner.get())

    def _call(self, cmd: int, key: Any, value: Any = None, flags: int = 0) -> tuple[int, int]:
        """One map element syscall (``_fastpath.map_elem``, GIL held, owner checked):
        (return code, errno)."""
        rc = _map_elem(self._owner, cmd, key, value, flags)
        return rc, -rc

    def _encode(self, codec: Codec, value: Any, path: str) -> bytes:
        """``codec.encode``; what it refuses raises MapTypeError/MapValueError naming
        this map, the field and the key's or value's C type."""
        try:
            out = codec.encode(value, path)
        except (TypeError, ValueError) as e:
            raise self._bad(e, codec, path) from None
        except Exception as e:  # the key's own __index__/__bytes__... raised: name the map
            raise self._bad(user_raised(e, path, value), codec, path, TypeError) from e
        if len(out) != codec.size:  # (a codec of the user's: the kernel reads codec.size)
            raise self._bad(f"{path}: the codec gave {len(out)} bytes, not {codec.size}",
                            codec, path)
        return out

    def _listed(self, values: Iterable[Any], call: str, *, pairs: bool = False) -> list[Any]:
        """``values`` as a list for a batch ``call``; MapTypeError naming the map if it
        is not an iterable (of (key, value) pairs, with ``pairs``)."""
        want = "(key, value) pairs" if pairs else "keys"
        try:
            items = list(values)
        except TypeError:
            raise MapTypeError(f"map {self.name!r}: {call} takes an iterable of {want}, got "
                               f"{type(values).__name__}", map=self.name) from None
        if pairs:
            for it in items:
                if not isinstance(it, (tuple, list)) or len(it) != 2:
                    raise MapTypeError(f"map {self.name!r}: {call} takes (key, value) pairs, "
                                       f"got {it!r:.60}", map=self.name)
        return items

    def _missing(self, key: Any) -> MapKeyError:
        """The error for a key that is not in the map (``m[k]``, ``del m[k]``, ``pop``)."""
        name = self.name
        return MapKeyError(f"map {name!r}: no key {key!r:.80}", map=name, key=key)

    def _bad(self, e: Exception | str, codec: Codec, path: str,
             kind: type[Exception] = ValueError) -> MapError:
        """The pybpf error for a key or value this map cannot take: the codec's message
        (which starts with the field path) and the C type."""
        text = str(e)
        field = text.split(": ", 1)[0] if text.startswith(path) else path
        what = "key" if path.startswith("key") else "value"
        cls = MapTypeError if isinstance(e, TypeError) or kind is TypeError else MapValueError
        return cls(f"map {self.name!r}: {text} ({what} type: {codec.name})", map=self.name,
                   field=field, type_name=codec.name)

    def _ekey(self, key: Any) -> bytes:
        return self._encode(self.key_type, key, "key")

    def _eval(self, value: Any) -> bytes:
        return self._encode(self.value_type, value, "value")

    def _vbuf_size(self) -> int:
        if self._vc is None:
            self._resolve_types()
        return self._value_size_total()

    def _dval(self, buf: Any) -> Any:
        return cast(Codec, self._vc).decode(buf, 0)

    def _dkey(self, buf: Any, off: int = 0) -> Any:
        kc = self._kc
        if kc is None:
            self._resolve_types()
            kc = cast(Codec, self._kc)
        return kc.decode(buf, off)

    # --- mapping -------------------------------------------------------------------
    # m[k], m[k] = v, del m[k] and k in m are C slots (pybpf._fastpath.MapBase): one C
    # call with no Python frame, which raises KeyError itself and hands whatever it does
    # not finish to _c_failed below.
    if TYPE_CHECKING:
        def __getitem__(self, key: K) -> V: ...
        def __setitem__(self, key: K, value: V | Mapping[str, Any] | tuple[Any, ...]
                        ) -> None: ...
        def __delitem__(self, key: K) -> None: ...
        def __contains__(self, key: object) -> bool: ...

    def _c_failed(self, op: str, key: Any, value: Any, exc: BaseException) -> Any:
        """The validating path of ``m[k]`` (op "get"), ``m[k] = v`` ("set"), ``del m[k]``
        ("del"), ``k in m`` ("in") and the raw ``m.lookup(key, flags=value)`` ("raw"), for
        what the C slots did not finish: a value or key C does not take (Fallback) is
        encoded again by the codecs, which explain what is wrong (raw lookups: by
        :meth:`Map.lookup`); a kernel error becomes a MapError naming the map; anything
        else (a closed map, an interrupt) is raised as it is."""
        if op == "raw" and isinstance(exc, _Fallback):
            return Map.lookup(self, key, flags=value or 0)
        if not isinstance(exc, _Fallback):
            if isinstance(exc, ClosedError) or not isinstance(exc, OSError):
                raise exc
            err = exc.errno or _errno.EIO
            if op == "set":
                self._update_failed(key, 0, err)
            raise self._err(err, "delete failed" if op == "del" else "lookup failed") from None
        if op == "set":
            self._put(key, value, 0)
            return None
        kb = self._ekey(key)
        if op == "del":
            rc = _map_elem(self._owner, _DELETE, kb, None, 0)
            if rc < 0:
                if rc == -_ENOENT:
                    raise self._missing(key)
                raise self._err(-rc, "delete failed")
            return None
        got = self._lookup_raw(kb)
        if op == "in":
            return got is not None
        if got is None:
            raise self._missing(key)
        return self._dval(got)

    def _lookup_raw(self, kb: bytes | Any) -> bytearray | None:
        buf = bytearray(self._vbuf_size())
        rc = _map_elem(self._owner, _LOOKUP, kb, buf, 0)
        if rc < 0:
            if rc == -_ENOENT:
                return None
            raise self._err(-rc, "lookup failed")
        return buf

    def get(self, key: K, default: Any = None) -> V | Any:
        """``m[key]`` or ``default`` (one syscall)."""
        ops = self._ops or self._make_ops()
        try:
            return ops.get(key, default)
        except _Fallback:
            pass
        except ClosedError:
            raise
        except OSError as e:
            raise self._err(e.errno or _errno.EIO, "lookup failed") from None
        got = self._lookup_raw(self._ekey(key))
        return default if got is None else self._dval(got)

    def _put(self, key: Any, value: Any, flags: int) -> None:
        kb = self._ekey(key)
        vb = self._eval(value)
        rc = _map_elem(self._owner, _UPDATE, kb, vb, flags)
        if rc < 0:
            self._update_failed(key, flags, -rc)

    def _update_failed(self, key: Any, flags: int, err: int) -> None:
        if err == _errno.E2BIG and isinstance(self, ArrayMap):
            raise self._missing(key)
        if err == _errno.EEXIST:
            raise MapKeyError(f"map {self.name!r}: key {key!r:.80} is already present "
                              "(BPF_NOEXIST)", map=self.name, key=key, err=err)
        if err == _errno.ENOENT and flags & UpdateFlags.EXIST:
            raise MapKeyError(f"map {self.name!r}: no key {key!r:.80} (BPF_EXIST)",
                              map=self.name, key=key)
        if err == _errno.E2BIG:
            raise MapError(err, f"map {self.name!r} is full ({self.max_entries} entries)",
                           map=self.name)
        raise self._err(err, "update failed")

    def pop(self, key: K, default: Any = _MISSING) -> V | Any:
        """Remove ``key`` and return its value (``BPF_MAP_LOOKUP_AND_DELETE_ELEM`` where
        the kernel has it for the map type, else lookup + delete)."""
        kb = self._ekey(key)
        buf = bytearray(self._vbuf_size())
        rc, err = self._call(_TAKE, kb, buf)
        if rc == 0:
            return self._dval(buf)
        if err == _errno.ENOENT:
            if default is _MISSING:
                raise self._missing(key)
            return default
        if err not in UNSUPPORTED:
            raise self._fail("lookup_and_delete failed", err)
        got = self._lookup_raw(kb)
        if got is None or self._call(_DELETE, kb)[0] < 0:
            if default is _MISSING:
                raise self._missing(key)
            return default
        return self._dval(got)

    def set(self, key: K, value: Any = None, /, **fields: Any) -> None:
        """``m[key] = value``, or build a struct value from keywords:
        ``m.set(7, count=1, pid=42)`` (missing fields are zero)."""
        if fields:
            if value is not None:
                raise MapTypeError(f"map {self.name!r}: set() takes a value or field keywords, "
                                   "not both")
            value = fields
        self[key] = value

    def setdefault(self, key: K, default: V | Mapping[str, Any] | tuple[Any, ...]) -> V:
        """``m[key]``, inserting ``default`` first if absent (BPF_NOEXIST)."""
        try:
            self._put(key, default, UpdateFlags.NOEXIST)
        except KeyError:
            pass
        return self[key]

    def update(self, *args: Any, flags: int = UpdateFlags.ANY, only_if_absent: bool = False,
               only_if_present: bool = False, lock: bool = False, **kwargs: Any) -> None:
        """Set entries: ``update(mapping_or_pairs)``, or one entry ``update(key, value)``.

        ``only_if_absent`` (BPF_NOEXIST) / ``only_if_present`` (BPF_EXIST) raise
        ``KeyError`` when the key is present / absent; ``lock`` is BPF_F_LOCK.
        ``update(key_bytes, value_bytes, flags)`` is the raw form of
        :meth:`Map.update`. Several entries go in one batch syscall where supported.
        """
        f = self._flags(flags)
        if only_if_absent:
            f |= UpdateFlags.NOEXIST
        if only_if_present:
            f |= UpdateFlags.EXIST
        if lock:
            f |= UpdateFlags.LOCK
        if kwargs:
            raise MapTypeError(f"map {self.name!r}: update() got unexpected keywords "
                               f"{', '.join(kwargs)} (map keys are not Python identifiers)")
        if len(args) == 3:
            f |= self._flags(args[2])
            args = args[:2]
        if len(args) == 2:
            key, value = args
            if isinstance(key, (bytes, bytearray)) and isinstance(value, (bytes, bytearray)) \
                    and len(key) == self.key_size and len(value) == self._value_size_total():
                Map.update(self, bytes(key), bytes(value), f)
                return
            self._put(key, value, f)
            return
        if len(args) != 1:
            raise MapTypeError(f"map {self.name!r}: update() takes a mapping or (key, value), "
                               f"got {len(args)} arguments", map=self.name)
        src = args[0]
        pairs = list(src.items()) if isinstance(src, Mapping) else list(src)
        if len(pairs) > 1 and self._facts.batch and not f & UpdateFlags.NOEXIST:
            if self.update_batch(pairs, flags=f & UpdateFlags.LOCK):
                return
        for k, v in pairs:
            self._put(k, v, f)

    def update_batch(self, pairs: Iterable[tuple[K, V]], *, flags: int = 0) -> bool:
        """Set many entries with ``BPF_MAP_UPDATE_BATCH``; False if the kernel lacks it for
        this map type (nothing was written then). Encoding errors raise before the syscall."""
        items = self._listed(pairs, "update_batch", pairs=True)
        if not items:
            return True
        flags = self._flags(flags)
        kbuf = b"".join(self._ekey(k) for k, _ in items)
        vbuf = b"".join(self._eval(v) for _, v in items)
        rc, done = _fastpath.map_batch(self._owner, _fastpath.MAP_UPDATE_BATCH, None, None,
                                       kbuf, vbuf, len(items), flags, 0)
        if rc < 0:
            err = -rc
            if err in UNSUPPORTED and done in (0, len(items)):
                return False  # refused before any entry: the count is 0 or as given
            if err == _errno.E2BIG and done < len(items):
                self._update_failed(items[done][0], flags, err)
            raise self._fail(f"update_batch failed after {done} of {len(items)} entries",
                             err)
        return True

    def delete_batch(self, keys: Iterable[K]) -> int:
        """Delete many keys (``BPF_MAP_DELETE_BATCH``, else one by one); absent keys are
        skipped. Returns how many were deleted."""
        ks = self._listed(keys, "delete_batch")
        if not ks:
            return 0
        kbs = [self._ekey(k) for k in ks]
        if self._facts.batch_delete:
            rc, done = _fastpath.map_batch(self._owner, _fastpath.MAP_DELETE_BATCH, None, None,
                                           b"".join(kbs), None, len(kbs), 0, 0)
            if rc == 0:
                return len(kbs)
            err = -rc
            if err in UNSUPPORTED and done == len(kbs):
                done = 0  # refused before any key: the count is still the one given
            kbs = kbs[done:]
            if err not in UNSUPPORTED and err != _errno.ENOENT:
                raise self._fail("delete_batch failed", err)
        else:
            done = 0
        for kb in kbs:
            rc, err = self._call(_DELETE, kb)
            if rc == 0:
                done += 1
            elif err != _errno.ENOENT:
                raise self._fail("delete failed", err)
        return done

    # --- iteration -------------------------------------------------------------------
    def keys_raw(self) -> Iterator[bytes]:
        """Raw key bytes, by the one walk of :meth:`Map.keys` (batched for hash and array
        kinds, else one ``BPF_MAP_GET_NEXT_KEY`` per key)."""
        return _walk.keys(self)

    def _walk_raw(self) -> Iterator[bytes]:
        """Key bytes by the one walk (:mod:`pybpf._walk`): keys present throughout once,
        keys inserted or deleted meanwhile at most once; raises rather than stop early."""
        return _walk.keys(self)

    def _walk_raw_keys(self) -> Iterator[Any]:
        """Decoded keys by the one walk."""
        return (self._dkey(k) for k in self._walk_raw())

    def _batches(self, *, delete: bool = False, chunk: int = 4096
                 ) -> Iterator[tuple[bytearray, bytearray, int]] | None:
        """(keys, values, count) chunks by BPF_MAP_LOOKUP[_AND_DELETE]_BATCH, or None if
        this kind is not walked by batches (:func:`pybpf._walk.batches`)."""
        return _walk.batches(self, chunk=chunk, delete=delete)

    def lookup_batch(self, chunk: int = 4096, *, delete: bool = False) -> Iterator[RawBatch]:
        """The whole map as raw chunks: :class:`RawBatch` ``(keys, values, count)``,
        ``count`` keys and values packed back to back (per-CPU values: every CPU's,
        8-byte aligned). One ``BPF_MAP_LOOKUP_BATCH`` (``delete``:
        ``..._AND_DELETE_BATCH``) per chunk of up to ``chunk`` entries; map types or
        kernels without batch ops are walked key by key into the same chunks. Each
        chunk owns its buffers: keep them as long as needed, nothing is copied again."""
        if not isinstance(chunk, int) or chunk < 1:
            raise MapValueError(f"map {self.name!r}: chunk must be an int >= 1, got {chunk!r}",
                                map=self.name)
        ks, vs = self.key_size, self._value_size_total()
        for kb, vb, c in _walk.chunks(self, chunk=chunk, delete=delete):
            yield RawBatch(memoryview(kb)[:c * ks], memoryview(vb)[:c * vs], c)

    def items_batched(self, *, delete: bool = False) -> Iterator[tuple[K, V]]:
        """(key, value) pairs; batches where the kernel has them."""
        # per item, only C iterators run (chain over one zip per batch); the generator
        # below resumes once per batch, and the first syscall waits for the first next()
        return chain.from_iterable(self._item_chunks(delete))

    def _item_chunks(self, delete: bool) -> Iterator[Iterable[tuple[K, V]]]:
        self.key_type, self.value_type  # noqa: B018 - resolve codecs (set_types may set one)
        dk, dv = self._dkey, self._dval_at
        ks, vs = self.key_size, self._value_size_total()
        b = self._batches(delete=delete)
        if b is not None:
            plain = type(self)._dval_at is TypedMap._dval_at and type(self)._dkey is \
                TypedMap._dkey
            kc, vc = cast(Codec, self._kc), cast(Codec, self._vc)
            cdec = getattr(vc, "cdecoder", None)
            if plain and kc.size == ks and vc.size == vs:
                for kb, vb, c in b:
                    yield zip(decode_array(kc, kb, c), decode_array(vc, vb, c))
            elif isinstance(self, _PerCPU) and cdec is not None and type(self)._dkey is \
                    TypedMap._dkey and kc.size == ks:
                # per-CPU values of scalars: every CPU's value of the chunk in one C call
                n, stride = possible_cpus(), _round8(vc.size)
                for kb, vb, c in b:
                    flat = cdec.decode_array(vb, c * n, stride)
                    yield zip(decode_array(kc, kb, c),
                              [flat[i:i + n] for i in range(0, c * n, n)])
            else:
                for kb, vb, c in b:
                    yield [(dk(kb, i * ks), dv(vb, i * vs)) for i in range(c)]
            return
        yield ((dk(k), dv(v, 0)) for k, v in _walk.items(self, delete=delete))

    def _dval_at(self, buf: Any, off: int) -> Any:
        return cast(Codec, self._vc).decode(buf, off)

    def items(self) -> MapItemsView[K, V]:
        """A live view of the (key, value) pairs, like ``dict.items()``: each iteration
        walks the map again (batched where the kind allows): keys present for the whole
        walk appear exactly once, keys inserted or deleted meanwhile at most once.
        ``len()`` walks the map; ``(k, v) in`` is one lookup."""
        return MapItemsView(self)

    def keys(self) -> MapKeysView[K]:  # type: ignore[override]
        """A live view of the keys, like ``dict.keys()``: iterable again and again
        (batched walks), ``len()``, ``k in`` (one lookup), set operations."""
        return MapKeysView(self)

    def values(self) -> MapValuesView[V]:
        """A live view of the values, like ``dict.values()`` (iteration is batched)."""
        return MapValuesView(self)

    def _iter_items(self) -> Iterator[tuple[K, V]]:
        """What iterating ``items()`` yields (kinds override this, not ``items``)."""
        return self.items_batched()

    def _iter_values(self) -> Iterator[V]:
        return map(itemgetter(1), self._iter_items())

    def _iter_keys(self) -> Iterator[K]:
        """Decoded keys (from batches where supported; each key at most once)."""
        self.key_type  # noqa: B018
        b = self._batches()
        if b is not None:
            kc = cast(Codec, self._kc)
            if type(self)._dkey is TypedMap._dkey and kc.size == self.key_size:
                return (k for kb, _, c in b for k in decode_array(kc, kb, c))
            ks = self.key_size
            return (self._dkey(kb, i * ks) for kb, _, c in b for i in range(c))
        return (self._dkey(k) for k in self._walk_raw())

    def __iter__(self) -> Iterator[K]:
        return self._iter_keys()

    @property
    def _facts(self) -> MapTypeFacts:
        """What pybpf knows about this map's type (:mod:`pybpf._maptypes`)."""
        return facts(self.type)

    def __len__(self) -> int:
        """Number of entries: walks the whole map (batched), not O(1); arrays:
        ``max_entries``; arrays of fds and pointers: the filled slots (a walk)."""
        how = self._facts.length
        if how == "slots":
            return self.max_entries
        if how == "filled":
            return sum(1 for _ in self._iter_keys())
        if how == "none":
            raise MapTypeError(f"map {self.name!r} ({self.type}) has no length")
        b = self._batches()
        if b is not None:
            return sum(c for _, _, c in b)
        return sum(1 for _ in self._walk_raw())

    def __bool__(self) -> bool:
        """``len(m) > 0`` for every kind, without counting: one GET_NEXT_KEY syscall for
        keyed maps, a walk up to the first filled slot for arrays of fds; kinds without
        a length raise the TypeError ``len()`` raises."""
        how = self._facts.length
        if how == "slots":
            return self.max_entries > 0
        if how == "keys":
            return _walk.first_key(self) is not None
        if how == "filled":
            return next(iter(self._iter_keys()), _MISSING) is not _MISSING
        return len(self) > 0

    def clear(self) -> None:
        """Delete every entry the walk finds (one delete syscall per key)."""
        _walk.clear(self)

    def popitems(self) -> Iterator[tuple[K, V]]:
        """Drain the map: lookup-and-delete in batches (``BPF_MAP_LOOKUP_AND_DELETE_BATCH``)."""
        return self.items_batched(delete=True)

    def to_dict(self) -> dict[K, V]:
        """A snapshot as a dict (keys must be hashable: ints, bytes, networks...)."""
        return dict(self.items())


class _MapView:
    __slots__ = ("_map",)

    def __init__(self, m: TypedMap[Any, Any]) -> None:
        self._map = m

    def __len__(self) -> int:
        """Entries in the map now: a walk (batched), not O(1). ``list(view)`` and
        ``sorted(view)`` ask for it first (a length hint), so they walk twice: for one
        walk, loop over the view, or use ``dict(m.items())`` / ``m.to_dict()``."""
        return len(self._map)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<map {self._map.name!r} ({self._map.type})>)"

    @classmethod
    def _from_iterable(cls, it: Iterable[Any]) -> set[Any]:
        # results of the set operations (&, |, -, ^) are plain sets, as for dict views
        return set(it)


class MapKeysView(_MapView, AbstractSet[K]):
    """``m.keys()`` of a :class:`TypedMap`: a live view like ``dict.keys()``. Each
    iteration walks the map afresh (batched where the kernel has batch ops); ``k in``
    is one lookup; ``==``, ``&``, ``|``, ``-`` work as for sets."""

    __slots__ = ()

    def __iter__(self) -> Iterator[K]:
        return cast(Iterator[K], self._map._iter_keys())

    def __contains__(self, key: object) -> bool:
        return key in self._map


class MapItemsView(_MapView, AbstractSet[tuple[K, V]]):
    """``m.items()`` of a :class:`TypedMap`: a live view like ``dict.items()``; each
    iteration walks the map afresh with batch lookups where supported."""

    __slots__ = ()

    def __iter__(self) -> Iterator[tuple[K, V]]:
        return cast(Iterator[tuple[K, V]], self._map._iter_items())

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, tuple) or len(item) != 2:
            return False
        key, value = item
        got = self._map.get(key, _MISSING)
        return got is not _MISSING and (got is value or bool(got == value))


class MapValuesView(_MapView, Collection[V]):
    """``m.values()`` of a :class:`TypedMap`: a live view like ``dict.values()``; each
    iteration walks the map afresh (batched); ``v in`` walks it too."""

    __slots__ = ()

    def __iter__(self) -> Iterator[V]:
        return cast(Iterator[V], self._map._iter_values())

    def __contains__(self, value: object) -> bool:
        return any(v is value or v == value for v in self)


KeysView.register(MapKeysView)
ItemsView.register(MapItemsView)
ValuesView.register(MapValuesView)


def _default_codec(size: int) -> Codec:
    return raw_codec(size)


def _index_codec(c: Codec | None, size: int) -> Codec:
    """Array-like maps index with u32 even without BTF."""
    if c is not None:
        return c
    return IntCodec(4, False, "index") if size == 4 else raw_codec(size)


class HashMap(TypedMap[K, V]):
    """``BPF_MAP_TYPE_HASH`` / ``BPF_MAP_TYPE_LRU_HASH``: a dict in the kernel."""


class ArrayMap(TypedMap[K, V]):
    """``BPF_MAP_TYPE_ARRAY``: ``max_entries`` slots indexed 0..N-1, all present (zeroed
    at creation); elements cannot be deleted. ``len()`` is ``max_entries``."""

    def _key_codec(self, c: Codec | None, size: int) -> Codec:
        return _index_codec(c, size)

    def __delitem__(self, key: K) -> None:
        raise MapTypeError(f"map {self.name!r} ({self.type}): array elements cannot be deleted; "
                           "assign a zero value instead")

    def clear(self) -> None:
        """Zero every element (one batch update where supported)."""
        zero = self.value_type.default()
        pairs = [(cast(K, i), zero) for i in range(self.max_entries)]
        if not self.update_batch(pairs):
            for k, v in pairs:
                self[k] = v

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int) and 0 <= key < self.max_entries

    def _missing(self, key: Any) -> MapKeyError:
        if isinstance(key, int) and key >= self.max_entries:
            return MapKeyError(f"map {self.name!r} ({self.type}): index {key} is past the end "
                               f"(max_entries {self.max_entries})", map=self.name, key=key)
        return super()._missing(key)


class _PerCPU(TypedMap[K, V]):
    """Values are a list with one value per possible CPU; ``sum(key)`` adds them up."""

    def _dval(self, buf: Any) -> Any:
        return self._dval_at(buf, 0)

    def _dval_at(self, buf: Any, off: int) -> Any:
        vc = cast(Codec, self._vc)
        stride = _round8(vc.size)
        d = vc.decode
        return [d(buf, off + i * stride) for i in range(possible_cpus())]

    def _eval(self, value: Any) -> bytes:
        vc = self.value_type
        ncpu = possible_cpus()
        stride = _round8(vc.size)
        if not isinstance(value, list):  # the same value on every CPU
            return self._encode(vc, value, "value").ljust(stride, b"\0") * ncpu
        if len(value) != ncpu:
            raise self._bad(f"per-CPU value needs {ncpu} values (one per possible CPU) "
                            f"or a single value, got {len(value)}", vc, "value")
        out = bytearray(stride * ncpu)
        for i, v in enumerate(value):
            out[i * stride:i * stride + vc.size] = self._encode(vc, v, f"value[{i}]")
        return bytes(out)

    def sum(self, key: K) -> Any:
        """The values of every CPU added up (numbers; structs and arrays element by element;
        byte/char arrays are taken from CPU 0)."""
        return _sum(cast(list[Any], self[key]), self.name)


def _sum(vals: list[Any], name: str) -> Any:
    first = vals[0]
    if isinstance(first, bool) or not vals:
        return any(vals)
    if isinstance(first, (int, float)):
        return sum(vals)
    if isinstance(first, Struct):
        out = type(first)()
        for f in first._fields:
            setattr(out, f, _sum([getattr(v, f) for v in vals], name))
        return out
    if isinstance(first, list):
        return [_sum(list(col), name) for col in zip(*vals)]
    if isinstance(first, bytes):
        return first  # text and byte arrays are not added: CPU 0's value
    raise MapTypeError(f"map {name!r}: cannot add values of type {type(first).__name__}")


class PerCPUHashMap(_PerCPU[K, V]):
    """``BPF_MAP_TYPE_PERCPU_HASH`` / ``LRU_PERCPU_HASH``: ``m[k]`` is a list per CPU."""


class PerCPUArrayMap(_PerCPU[K, V], ArrayMap[K, V]):
    """``BPF_MAP_TYPE_PERCPU_ARRAY``: ``m[i]`` is a list with one value per possible CPU."""

    def clear(self) -> None:
        zero = self.value_type.default()
        for i in range(self.max_entries):
            self[cast(K, i)] = cast(V, zero)


class _KeylessMap(TypedMap[Any, V]):
    def _key_codec(self, c: Codec | None, size: int) -> Codec:
        return raw_codec(0)

    def _value_codec(self, c: Codec | None, size: int) -> Codec:
        return c if c is not None else _default_codec(size)

    def _nokeys(self, *a: Any, **k: Any) -> Any:
        raise MapTypeError(f"map {self.name!r} ({self.type}) has no keys")

    __getitem__ = __setitem__ = __delitem__ = keys = items = __iter__ = __len__ = _nokeys


class QueueMap(_KeylessMap[V]):
    """``BPF_MAP_TYPE_QUEUE`` (FIFO) / ``BPF_MAP_TYPE_STACK`` (LIFO): ``push``, ``pop``,
    ``peek``; one syscall each."""

    def push(self, value: V | Mapping[str, Any] | tuple[Any, ...], *,
             overwrite: bool = False) -> None:
        """Append ``value``; when full, ``overwrite=True`` drops the oldest (BPF_EXIST),
        else ``MapError`` (E2BIG)."""
        vb = self._eval(value)
        rc, err = self._call(_UPDATE, None, vb, UpdateFlags.EXIST if overwrite else 0)
        if rc < 0:
            if err == _errno.E2BIG:
                raise MapError(err, f"map {self.name!r} is full ({self.max_entries} entries)",
                               map=self.name)
            raise self._fail("push failed", err)

    def pop(self, key: Any = _MISSING, default: Any = _MISSING) -> V | Any:
        """Remove and return the next value; ``IndexError`` (or ``default``) if empty."""
        if key is not _MISSING and default is _MISSING:
            default = key
        buf = bytearray(self._vbuf_size())
        rc, err = self._call(_TAKE, None, buf)
        if rc < 0:
            if err == _errno.ENOENT:
                if default is _MISSING:
                    raise IndexError(f"map {self.name!r} ({self.type}) is empty")
                return default
            raise self._fail("pop failed", err)
        return cast(V, self._dval(buf))

    def peek(self, default: Any = _MISSING) -> V | Any:
        """The next value without removing it."""
        buf = bytearray(self._vbuf_size())
        rc, err = self._call(_LOOKUP, None, buf)
        if rc < 0:
            if err == _errno.ENOENT:
                if default is _MISSING:
                    raise IndexError(f"map {self.name!r} ({self.type}) is empty")
                return default
            raise self._fail("peek failed", err)
        return cast(V, self._dval(buf))

    def drain(self) -> list[V]:
        """Pop until empty."""
        out: list[V] = []
        while True:
            v = self.pop(default=_MISSING_SENTINEL)
            if v is _MISSING_SENTINEL:
                return out
            out.append(v)

    def __contains__(self, key: object) -> bool:
        raise MapTypeError(f"map {self.name!r} ({self.type}) has no membership test")


_MISSING_SENTINEL: Any = object()
StackMap = QueueMap


class BloomFilterMap(_KeylessMap[V]):
    """``BPF_MAP_TYPE_BLOOM_FILTER``: ``add(v)``; ``v in m`` is False only if never added
    (true positives always, false positives sometimes)."""

    def add(self, value: V | Mapping[str, Any] | tuple[Any, ...]) -> None:
        rc, err = self._call(_UPDATE, None, self._eval(value))
        if rc < 0:
            raise self._fail("add failed", err)

    def __contains__(self, value: object) -> bool:
        vb = bytearray(self._eval(value))
        rc, err = self._call(_LOOKUP, None, vb)
        if rc < 0:
            if err == _errno.ENOENT:
                return False
            raise self._fail("lookup failed", err)
        return True


class LPMTrieMap(TypedMap[Any, V]):
    """``BPF_MAP_TYPE_LPM_TRIE``: keys are networks for the usual ``{u32 prefixlen; u8
    data[4|16]}`` layout; ``m["10.1.2.3"]`` finds the longest matching prefix."""

    def _key_codec(self, c: Codec | None, size: int) -> Codec:
        return lpm_key_codec(c, size)


class _Sparse(TypedMap[K, V]):
    """Array-like maps whose slots can be empty: iteration shows the filled ones."""

    def _key_codec(self, c: Codec | None, size: int) -> Codec:
        return _index_codec(c, size)

    def _walk_present(self) -> Iterator[tuple[Any, Any]]:
        """The filled slots, decoded: the one walk, with a lookup per slot."""
        self.key_type, self.value_type  # noqa: B018 - resolve codecs
        return ((self._dkey(kb), self._dval(vb)) for kb, vb in _walk.items(self))

    def _iter_items(self) -> Iterator[tuple[K, V]]:
        return self._walk_present()

    def _iter_keys(self) -> Iterator[K]:
        return (k for k, _ in self._walk_present())

    def clear(self) -> None:
        for k in list(self._iter_keys()):  # list(view) would walk twice (len hint)
            try:
                del self[k]
            except KeyError:
                pass


class _FdValueMap(_Sparse[K, V]):
    """Maps whose values are written as fds and read back as kernel ids."""

    def _key_codec(self, c: Codec | None, size: int) -> Codec:
        return _index_codec(c, size)

    def _value_codec(self, c: Codec | None, size: int) -> Codec:
        return IntCodec(size, False, "fd")

    def _fd_of(self, value: Any) -> int:
        if isinstance(value, int):
            return value
        fd = getattr(value, "fd", None)
        if isinstance(fd, int):
            return fd
        if isinstance(value, socket.socket):
            return value.fileno()
        raise MapTypeError(f"map {self.name!r}: expected a {self._what} or an fd, got "
                           f"{type(value).__name__}")

    _what = "program"

    def __setitem__(self, key: K, value: Any) -> None:
        self._put(key, self._fd_of(value), 0)

class ProgArrayMap(_FdValueMap[int, int]):
    """``BPF_MAP_TYPE_PROG_ARRAY`` (tail calls): ``m[i] = program``; ``m[i]`` is the
    program's id; ``del m[i]`` empties the slot."""


class ArrayOfMapsMap(_FdValueMap[K, "Map"]):
    """``BPF_MAP_TYPE_ARRAY_OF_MAPS`` / ``HASH_OF_MAPS``: ``m[k] = inner_map``; ``m[k]``
    opens the inner map by id (a new fd, typed from its BTF)."""

    _what = "map"

    def _dval(self, buf: Any) -> Any:
        (map_id,) = struct.unpack_from("<I", buf, 0)
        return Map.from_id(map_id)

    def inner_id(self, key: K) -> int | None:
        """The inner map's id at ``key`` (no new fd), or None."""
        buf = self._lookup_raw(self._ekey(key))
        return None if buf is None else int(struct.unpack_from("<I", buf, 0)[0])


HashOfMapsMap = ArrayOfMapsMap


class DevMap(_Sparse[K, V]):
    """``BPF_MAP_TYPE_DEVMAP[_HASH]`` (XDP redirect): values are ifindexes (``u32``) or
    ``struct bpf_devmap_val``; an interface name is accepted for a ``u32`` value."""

    def _key_codec(self, c: Codec | None, size: int) -> Codec:
        return _index_codec(c, size)

    def __setitem__(self, key: K, value: Any) -> None:
        if isinstance(value, str):
            value = socket.if_nametoindex(value)
        self._put(key, value, 0)

    def _value_codec(self, c: Codec | None, size: int) -> Codec:
        return c if c is not None else IntCodec(4, False, "ifindex") if size == 4 else \
            _default_codec(size)


class CPUMap(_Sparse[K, V]):
    """``BPF_MAP_TYPE_CPUMAP``: values are queue sizes (``u32``) or ``struct
    bpf_cpumap_val``."""

    def _key_codec(self, c: Codec | None, size: int) -> Codec:
        return _index_codec(c, size)

    def _value_codec(self, c: Codec | None, size: int) -> Codec:
        return c if c is not None else IntCodec(4, False, "qsize") if size == 4 else \
            _default_codec(size)


class XSKMap(_FdValueMap[int, int]):
    """``BPF_MAP_TYPE_XSKMAP``: ``m[queue] = xsk_socket`` (an AF_XDP socket or its fd),
    ``del m[queue]``, ``clear()``. The kernel does not let user space read the slots
    (lookup is EOPNOTSUPP), so reading, ``in``, iteration and ``len`` raise TypeError."""

    _what = "AF_XDP socket"

    def __setitem__(self, key: int, value: Any) -> None:
        fd = self._fd_of(value)
        try:
            self._put(key, fd, 0)
        except MapError as e:
            if e.errno in (_errno.EOPNOTSUPP, _errno.ENOTSOCK):
                raise MapError(e.errno, f"map {self.name!r} (xskmap): fd {fd} is not an "
                               f"AF_XDP socket ({e.strerror or e})", map=self.name) from None
            raise

    def _unreadable(self, *a: Any, **k: Any) -> Any:
        raise MapTypeError(f"map {self.name!r} (xskmap): the kernel does not let user space "
                           "read XSKMAP slots; only set (m[queue] = socket) and delete")

    __getitem__ = get = __contains__ = pop = _unreadable
    keys = items = values = __iter__ = __len__ = _unreadable
    items_batched = popitems = to_dict = _unreadable

    def clear(self) -> None:
        """Empty every slot (one delete per slot; empty slots are fine)."""
        for i in range(self.max_entries):
            rc, _ = self._call(_DELETE, struct.pack("<I", i))
            if rc < 0 and rc != -_ENOENT:
                raise self._err(-rc, "delete failed")


class SockMap(_FdValueMap[K, int]):
    """``BPF_MAP_TYPE_SOCKMAP`` / ``SOCKHASH``: ``m[k] = socket`` (or fd); with an 8-byte
    value, ``m[k]`` is the socket's cookie (``SO_COOKIE``)."""

    _what = "socket"


SockHashMap = SockMap


class StackTraceMap(TypedMap[int, list[int]]):
    """``BPF_MAP_TYPE_STACK_TRACE``: ``m[stack_id]`` is the list of return addresses (no
    trailing zeros); :meth:`symbolize` names them."""

    def _value_codec(self, c: Codec | None, size: int) -> Codec:
        return StackTraceCodec(size)

    def _key_codec(self, c: Codec | None, size: int) -> Codec:
        return IntCodec(4, False, "stack_id")

    def frames(self, stack_id: int, *, pid: int | None = None,
               lines: bool = False) -> list[sym.Frame]:
        """Frames of ``stack_id`` as :class:`pybpf.symbolize.Frame` (name, offset, module,
        and with ``lines=True`` file:line where the binary has DWARF line info): kernel
        frames via /proc/kallsyms, or, when ``pid`` is given, user frames via the ELF
        symbols of the files mapped in that process. One lookup syscall, then a binary
        search per frame (symbol tables read once per file)."""
        addrs = self[stack_id]
        if pid is None:
            table = sym.kernel_symbols()
            return [table.frame(a) for a in addrs]
        proc = sym.ProcessSymbols(pid)
        return [proc.frame(a, lines=lines) for a in addrs]

    def symbolize(self, stack_id: int, *, pid: int | None = None,
                  names_only: bool = False) -> list[str]:
        """Frames of ``stack_id`` as text: ``"func+0xoff"``, ``"func+0xoff [module]"`` for
        kernel module and user frames, ``"0xaddr"`` (``"0xoff [file]"``) when no symbol
        covers it (the forms of :mod:`pybpf.symbolize`); ``names_only``: just the
        function names (``"[unknown]"`` when none), as libbpf-tools print stacks."""
        frames = self.frames(stack_id, pid=pid)
        if names_only:
            return [f.name or "[unknown]" for f in frames]
        return [str(f) for f in frames]


class LocalStorageMap(TypedMap[Any, V]):
    """``BPF_MAP_TYPE_TASK_STORAGE`` / ``SK_STORAGE`` / ``INODE_STORAGE`` / ``CGRP_STORAGE``:
    values attached to a kernel object, keyed from user space by an fd of that object
    (a pidfd from :func:`os.pidfd_open`, a socket, an open file, a cgroup directory fd).
    ``m[fd]``, ``m[fd] = v``, ``del m[fd]``; the kernel offers no iteration."""

    def _key_codec(self, c: Codec | None, size: int) -> Codec:
        return IntCodec(4, True, "fd")

    def _ekey(self, key: Any) -> bytes:
        if not isinstance(key, int):
            fileno = getattr(key, "fileno", None)
            if fileno is None:
                raise MapTypeError(f"map {self.name!r} ({self.type}): the key is an fd or an "
                                   f"object with fileno(), got {type(key).__name__}")
            key = fileno()
        if not 0 <= key < 1 << 31:
            raise MapValueError(f"map {self.name!r} ({self.type}): key {key} is not a file "
                                "descriptor (0 to 2**31-1)")
        return struct.pack("<i", key)

    def _nokeys(self, *a: Any, **k: Any) -> Any:
        raise MapTypeError(f"map {self.name!r} ({self.type}) cannot be iterated")

    keys = items = values = __iter__ = __len__ = clear = _nokeys


def create_map(type: str, key_size: int, value_size: int, max_entries: int, *,
               name: str = "", flags: int = 0, inner_map: Map | None = None,
               key: Any = None, value: Any = None) -> TypedMap[Any, Any]:
    """Create a map without an object (``BPF_MAP_CREATE``): ``type`` is libbpf's name
    (``"hash"``, ``"array"``...). ``key``/``value`` give it types (see
    :meth:`TypedMap.set_types`). The returned map owns its fd; close it or let the GC."""
    try:
        t = map_type_value(type)
    except (ValueError, TypeError):
        raise MapValueError(f"cannot create a map of unknown type {type!r:.60} (libbpf's "
                            "names: 'hash', 'array'...)", map=str(name)) from None
    name = name_arg(name, f"cannot create a {type} map: name", allow_empty=True)
    who = f"cannot create {type} map {name!r}"
    for what, v in (("key_size", key_size), ("value_size", value_size),
                    ("max_entries", max_entries), ("flags", flags)):
        if not isinstance(v, int):
            raise MapTypeError(f"{who}: {what} must be an int, got {v!r:.60}", map=name)
        if not 0 <= v < 1 << 32:
            raise MapValueError(f"{who}: {what}={v} is not a 32-bit unsigned value", map=name)
    if inner_map is not None and not isinstance(inner_map, Map):
        raise MapTypeError(f"{who}: inner_map must be a Map, got {inner_map.__class__.__name__}",
                           map=name)
    opts = ffi.new("struct bpf_map_create_opts *")
    opts.sz = ffi.sizeof("struct bpf_map_create_opts")
    opts.map_flags = flags
    cname = name.encode()[:15] if name else ffi.NULL
    if inner_map is not None:
        with inner_map.owner as ifd:
            opts.inner_map_fd = ifd
            fd = lib.bpf_map_create(t, cname, key_size, value_size, max_entries, opts)
    else:
        fd = lib.bpf_map_create(t, cname, key_size, value_size, max_entries, opts)
    if fd < 0:
        raise error_for(ffi.errno, f"cannot create {type} map {name!r} (key_size={key_size}, "
                        f"value_size={value_size}, max_entries={max_entries})", kind=MapError,
                        map=name)
    m = Map.from_fd(fd, f"map {name!r} ({type})")
    if not isinstance(m, TypedMap):
        return cast(TypedMap[Any, Any], m)
    if key is not None or value is not None:
        m.set_types(key, value)
    return m


def _register_kinds() -> None:
    """Each map type gets the class the one table names for it."""
    for name, f in TABLE.items():
        if f.kind != "Map":
            register_kind(name)(globals()[f.kind])


_register_kinds()
