"""Maps: the description libbpf holds before load, and the live fd-backed map after.

This module has the raw layer: attributes, settable-before-load properties, and
byte-level operations (``lookup``, ``update``, ``delete``, ``keys``), each one
syscall.  Typed, dict-like access decoded from BTF is layered on top.
"""

from __future__ import annotations

import enum
import errno as _errno
import fcntl
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import _fs
from ._fd import FD
from ._ffi import capture, error_for, ffi, lib, walk_ids
from .attach import struct_ops as _struct_ops
from .errors import ClosedError, MapError
from .link import Link

if TYPE_CHECKING:
    from .object import Object

__all__ = ["Map", "UpdateFlags", "MapInfo", "list_maps", "possible_cpus", "map_type_name"]


class UpdateFlags(enum.IntFlag):
    """``bpf_map_update_elem`` flags."""

    ANY = 0
    NOEXIST = 1
    EXIST = 2
    LOCK = 4


_PERCPU_TYPES = {"percpu_hash", "percpu_array", "lru_percpu_hash", "percpu_cgroup_storage"}
_NO_KEY_TYPES = {"queue", "stack", "bloom_filter", "ringbuf", "user_ringbuf"}


# Map types some libbpf 1.x releases have no name for (uapi numbers): named here so
# that such maps still get their kind's class (cgrp_storage maps keyed by cgroup fd).
_NEWER_MAP_TYPES = {32: "cgrp_storage", 33: "arena"}


def map_type_name(t: int) -> str:
    """libbpf's name of map type number ``t`` (``"hash"``...); ``"map_type_N"`` if unknown."""
    s = lib.libbpf_bpf_map_type_str(t)
    if s != ffi.NULL:
        return ffi.string(s).decode()  # type: ignore[no-any-return]
    return _NEWER_MAP_TYPES.get(t, f"map_type_{t}")


_ncpus: int | None = None


def possible_cpus() -> int:
    """Number of possible CPUs (per-CPU maps hold one value per possible CPU)."""
    global _ncpus
    if _ncpus is None:
        n = lib.libbpf_num_possible_cpus()
        if n <= 0:
            raise error_for(-n, "cannot read /sys/devices/system/cpu/possible")
        _ncpus = int(n)
    return _ncpus


class MapInfo:
    """What the kernel says about a live map (``bpf_map_info``)."""

    __slots__ = ("id", "type", "name", "key_size", "value_size", "max_entries", "flags",
                 "btf_id", "btf_key_type_id", "btf_value_type_id")

    def __init__(self, info: Any) -> None:
        self.id = int(info.id)
        self.type = map_type_name(info.type)
        self.name = ffi.string(info.name).decode(errors="replace")
        self.key_size = int(info.key_size)
        self.value_size = int(info.value_size)
        self.max_entries = int(info.max_entries)
        self.flags = int(info.map_flags)
        self.btf_id = int(info.btf_id)
        self.btf_key_type_id = int(info.btf_key_type_id)
        self.btf_value_type_id = int(info.btf_value_type_id)

    def __repr__(self) -> str:
        return (f"MapInfo(id={self.id}, type={self.type!r}, name={self.name!r}, "
                f"key_size={self.key_size}, value_size={self.value_size}, "
                f"max_entries={self.max_entries})")


def _map_info_by_fd(fd: int) -> Any:
    info = ffi.new("struct bpf_map_info *")
    size = ffi.new("__u32 *", ffi.sizeof("struct bpf_map_info"))
    if lib.bpf_obj_get_info_by_fd(fd, info, size) < 0:
        raise error_for(ffi.errno, f"cannot read map info of fd {fd}")
    return info


class Map:
    """A BPF map of an :class:`~pybpf.Object`, or one opened by id or pin path.

    Before load, ``max_entries``, ``key_size``, ``value_size``, ``flags`` and
    ``pin_path`` are settable; after load the map has an ``fd`` and the
    operations below talk to the kernel (one syscall each).
    """

    def __init__(self, obj: Object | None, ptr: Any, *, fd: int | None = None,
                 info: Any = None) -> None:
        self._obj = obj
        self._ptr = ptr
        self._own_fd = fd  # only for maps opened by id/pin (no bpf_object)
        self._info = info
        if ptr is not None:
            self.name: str = ffi.string(lib.bpf_map__name(ptr)).decode()
            self.internal: bool = bool(lib.bpf_map__is_internal(ptr))
        else:
            self.name = ffi.string(info.name).decode(errors="replace")
            self.internal = False
        self._value_buf: int | None = None
        self._finalizer: Any = None
        self._owner: FD | None = None

    # --- description ----------------------------------------------------------
    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name!r} type={self.type} key_size={self.key_size}"
                f" value_size={self.value_size} max_entries={self.max_entries}>")

    def _live_ptr(self) -> Any:
        if self._obj is not None and self._obj._ptr is None:
            raise ClosedError(f"map {self.name!r} (its object was closed)")
        return self._ptr

    def _before_load(self, what: str) -> Any:
        ptr = self._live_ptr()
        if ptr is None or (self._obj is not None and self._obj.loaded):
            raise MapError(_errno.EBUSY, f"map {self.name!r}: {what} can only be set before load",
                           map=self.name)
        return ptr

    def _attr(self, getter: Any, field: str) -> int:
        ptr = self._live_ptr()
        if ptr is not None:
            return int(getter(ptr))
        return int(getattr(self._info, field))

    @property
    def type(self) -> str:
        """libbpf's name of the map type, e.g. ``"hash"`` (BPF_MAP_TYPE_HASH)."""
        ptr = self._live_ptr()
        return map_type_name(lib.bpf_map__type(ptr) if ptr is not None else self._info.type)

    @property
    def key_size(self) -> int:
        return self._attr(lib.bpf_map__key_size, "key_size")

    @key_size.setter
    def key_size(self, value: int) -> None:
        self._set(lib.bpf_map__set_key_size, value, "key_size")

    @property
    def value_size(self) -> int:
        return self._attr(lib.bpf_map__value_size, "value_size")

    @value_size.setter
    def value_size(self, value: int) -> None:
        self._set(lib.bpf_map__set_value_size, value, "value_size")

    @property
    def max_entries(self) -> int:
        return self._attr(lib.bpf_map__max_entries, "max_entries")

    @max_entries.setter
    def max_entries(self, value: int) -> None:
        self._set(lib.bpf_map__set_max_entries, value, "max_entries")

    @property
    def flags(self) -> int:
        """``map_flags`` (BPF_F_*)."""
        return self._attr(lib.bpf_map__map_flags, "map_flags")

    @flags.setter
    def flags(self, value: int) -> None:
        self._set(lib.bpf_map__set_map_flags, value, "flags")

    def _set(self, setter: Any, value: int, what: str) -> None:
        ptr = self._before_load(what)
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"map {self.name!r}: {what} must be a non-negative int, got {value!r}")
        err = setter(ptr, value)
        if err:
            raise error_for(-err, f"map {self.name!r}: cannot set {what}={value}", kind=MapError,
                            map=self.name)

    @property
    def pin_path(self) -> str | None:
        ptr = self._live_ptr()
        if ptr is None:
            return None
        p = lib.bpf_map__pin_path(ptr)
        return ffi.string(p).decode() if p != ffi.NULL else None

    @pin_path.setter
    def pin_path(self, path: str | None) -> None:
        ptr = self._before_load("pin_path")
        if path is not None:
            path = _fs.check_pin_path(os.fspath(path))
        err = lib.bpf_map__set_pin_path(ptr, path.encode() if path else ffi.NULL)
        if err:
            raise error_for(-err, f"map {self.name!r}: cannot set pin path", kind=MapError,
                            map=self.name)

    @property
    def btf_key_type_id(self) -> int:
        return self._attr(lib.bpf_map__btf_key_type_id, "btf_key_type_id")

    @property
    def btf_value_type_id(self) -> int:
        return self._attr(lib.bpf_map__btf_value_type_id, "btf_value_type_id")

    @property
    def percpu(self) -> bool:
        return self.type in _PERCPU_TYPES

    # --- live map ---------------------------------------------------------------
    @property
    def fd(self) -> int:
        """The map's fd (after load)."""
        if self._own_fd is not None:
            return self._own_fd
        ptr = self._live_ptr()
        if ptr is None:
            raise ClosedError(f"map {self.name!r}")
        fd = int(lib.bpf_map__fd(ptr))
        if fd < 0:
            raise MapError(_errno.EBADF, f"map {self.name!r} has no fd: load the object first",
                           map=self.name)
        return fd

    def _fd_owner(self) -> FD:
        """The owner of this map's own fd (a dup of libbpf's, made on first use)."""
        o = self._owner
        if o is None:
            o = self._owner = FD(fcntl.fcntl(self.fd, fcntl.F_DUPFD_CLOEXEC, 3),
                                 f"map {self.name!r}")
        return o

    def _close_owner(self) -> None:
        o = self._owner
        if o is not None:
            o.close()

    def attach_struct_ops(self) -> Link:
        """Register this loaded struct_ops map (a TCP congestion control...): a BPF link for
        ``SEC(".struct_ops.link")`` maps (unregistered when the link closes; swap with
        ``link.update_map(other)``), else by writing its value. See pybpf.attach.struct_ops."""
        if self._obj is None or self.type != "struct_ops":
            raise MapError(_errno.EINVAL, f"map {self.name!r} is a {self.type} map of no "
                           "object, not a struct_ops map of one", map=self.name)
        link = _struct_ops.attach_struct_ops(self._live_ptr(), self.fd, self.name)
        return self._obj._adopt_link(link)

    def info(self) -> MapInfo:
        """Kernel view of the map (id, btf ids...): one syscall."""
        return MapInfo(_map_info_by_fd(self.fd))

    @property
    def id(self) -> int:
        return self.info().id

    def _value_size_total(self) -> int:
        if self._value_buf is None:
            vs = self.value_size
            self._value_buf = ((vs + 7) // 8 * 8) * possible_cpus() if self.percpu else vs
        return self._value_buf

    def _key(self, key: bytes | bytearray | memoryview) -> Any:
        if not isinstance(key, (bytes, bytearray, memoryview)):
            raise TypeError(f"map {self.name!r}: raw key must be bytes, got "
                            f"{type(key).__name__}")
        ks = self.key_size
        if len(key) != ks:
            raise ValueError(f"map {self.name!r}: key is {len(key)} bytes, "
                             f"the map's key_size is {ks}")
        return ffi.from_buffer(key) if ks else ffi.NULL

    def _value(self, value: bytes | bytearray | memoryview) -> Any:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"map {self.name!r}: raw value must be bytes, got "
                            f"{type(value).__name__}")
        vs = self._value_size_total()
        if len(value) != vs:
            raise ValueError(f"map {self.name!r}: value is {len(value)} bytes, "
                             f"expected {vs}" + (" (value_size per CPU, 8-aligned, times "
                                                 f"{possible_cpus()} CPUs)" if self.percpu else ""))
        return ffi.from_buffer(value)

    def _fail(self, what: str) -> MapError:
        return error_for(ffi.errno, f"map {self.name!r}: {what}", kind=MapError,  # type: ignore
                         map=self.name)

    def lookup(self, key: bytes, *, flags: int = 0) -> bytes | None:
        """The value bytes for ``key``, or None if absent (one syscall).

        Per-CPU maps return every possible CPU's value, each padded to 8 bytes.
        """
        fd = self.fd
        k = self._key(key)
        buf = ffi.new("char[]", self._value_size_total())
        rc = (lib.bpf_map_lookup_elem_flags(fd, k, buf, flags) if flags
              else lib.bpf_map_lookup_elem(fd, k, buf))
        if rc < 0:
            if ffi.errno == _errno.ENOENT:
                return None
            raise self._fail("lookup failed")
        return bytes(ffi.buffer(buf))

    def update(self, key: bytes, value: bytes, flags: int = UpdateFlags.ANY) -> None:
        """Set ``key`` to ``value`` (one syscall); ``flags`` is :class:`UpdateFlags`."""
        fd = self.fd
        if lib.bpf_map_update_elem(fd, self._key(key), self._value(value), int(flags)) < 0:
            err = ffi.errno
            if err == _errno.EEXIST:
                raise KeyError(key)  # NOEXIST and the key is there
            if err == _errno.ENOENT and flags & UpdateFlags.EXIST:
                raise KeyError(key)
            raise self._fail("update failed")

    def delete(self, key: bytes) -> bool:
        """Delete ``key``; False if it was absent (one syscall)."""
        if lib.bpf_map_delete_elem(self.fd, self._key(key)) < 0:
            if ffi.errno == _errno.ENOENT:
                return False
            raise self._fail("delete failed")
        return True

    def lookup_and_delete(self, key: bytes | None = None) -> bytes | None:
        """Pop ``key`` (or, for queue/stack maps, the next element); None if absent."""
        fd = self.fd
        k = ffi.NULL if key is None else self._key(key)
        buf = ffi.new("char[]", self._value_size_total())
        if lib.bpf_map_lookup_and_delete_elem(fd, k, buf) < 0:
            if ffi.errno == _errno.ENOENT:
                return None
            raise self._fail("lookup_and_delete failed")
        return bytes(ffi.buffer(buf))

    def keys(self) -> Iterator[bytes]:
        """Iterate keys with ``BPF_MAP_GET_NEXT_KEY`` (one syscall per key).

        If the current key is deleted meanwhile the kernel restarts from the
        first key; pybpf then skips keys it has already yielded, so the walk
        ends and never yields a key twice.
        """
        fd = self.fd
        ks = self.key_size
        if self.type in _NO_KEY_TYPES:
            raise MapError(_errno.EINVAL, f"map {self.name!r} ({self.type}) has no keys",
                           map=self.name)
        cur = ffi.new("char[]", ks)
        nxt = ffi.new("char[]", ks)
        seen: set[bytes] = set()
        prev = ffi.NULL
        while True:
            if lib.bpf_map_get_next_key(fd, prev, nxt) < 0:
                if ffi.errno == _errno.ENOENT:
                    return
                raise self._fail("get_next_key failed")
            key = bytes(ffi.buffer(nxt))
            if key in seen:
                return  # walked back to the start after a concurrent delete
            seen.add(key)
            ffi.memmove(cur, nxt, ks)
            prev = cur
            yield key

    def items_raw(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) byte pairs; keys deleted during the walk are skipped."""
        for k in self.keys():
            v = self.lookup(k)
            if v is not None:
                yield k, v

    def freeze(self) -> None:
        """Make the map read-only for user space (``BPF_MAP_FREEZE``)."""
        if lib.bpf_map_freeze(self.fd) < 0:
            raise self._fail("freeze failed")

    # --- pinning / opening --------------------------------------------------------
    def pin(self, path: str | os.PathLike[str]) -> None:
        """Pin the live map at ``path`` in bpffs."""
        p = _fs.check_pin_path(os.fspath(path))
        if self._ptr is not None:
            with capture() as log:
                err = lib.bpf_map__pin(self._live_ptr(), p.encode())
            if err:
                raise error_for(-err, f"map {self.name!r}: cannot pin at {p}", kind=MapError,
                                map=self.name, log=log)
        elif lib.bpf_obj_pin(self.fd, p.encode()) < 0:
            raise self._fail(f"cannot pin at {p}")

    def unpin(self, path: str | os.PathLike[str] | None = None) -> None:
        """Remove the pin (at ``path``, or where this map was pinned)."""
        if self._ptr is not None:
            err = lib.bpf_map__unpin(self._live_ptr(),
                                     os.fsencode(path) if path is not None else ffi.NULL)
            if err:
                raise error_for(-err, f"map {self.name!r}: cannot unpin", kind=MapError,
                                map=self.name)
        elif path is not None:
            os.unlink(path)
        else:
            raise ValueError(f"map {self.name!r}: unpin needs the pin path")

    @classmethod
    def _from_fd(cls, fd: int) -> Map:
        try:
            info = _map_info_by_fd(fd)
        except BaseException:
            os.close(fd)
            raise
        kind = _kind_for(map_type_name(info.type))
        m = kind(None, None, fd=fd, info=info)
        m._finalizer = _close_fd_finalizer(m, fd)
        return m

    @classmethod
    def open_pinned(cls, path: str | os.PathLike[str]) -> Map:
        """Open a map pinned in bpffs (the returned map owns a new fd)."""
        p = os.fspath(path)
        if not os.path.exists(p):
            raise FileNotFoundError(2, f"no pinned map at {p}", p)
        fd = lib.bpf_obj_get(p.encode())
        if fd < 0:
            raise error_for(ffi.errno, f"cannot open pinned map {p}", kind=MapError, map=p)
        return cls._from_fd(fd)

    @classmethod
    def from_id(cls, map_id: int) -> Map:
        """Open a live map by its kernel id."""
        fd = lib.bpf_map_get_fd_by_id(map_id)
        if fd < 0:
            raise error_for(ffi.errno, f"cannot open map id {map_id}", kind=MapError,
                            map=str(map_id))
        return cls._from_fd(fd)

    def close(self) -> None:
        """Close a map opened by id or pin (maps of an Object close with it)."""
        fin = self._finalizer
        if fin is not None:
            fin()
        self._own_fd = None
        self._close_owner()

    def __enter__(self) -> Map:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_fd_finalizer(owner: object, fd: int) -> Any:
    import weakref

    return weakref.finalize(owner, os.close, fd)


# Map kinds: subclasses registered by map type name (filled by the typed layer).
_KINDS: dict[str, type[Map]] = {}


def register_kind(*type_names: str) -> Any:
    """Class decorator: use this Map subclass for maps of these libbpf types."""

    def deco(cls: type[Map]) -> type[Map]:
        for name in type_names:
            _KINDS[name] = cls
        return cls

    return deco


def _kind_for(type_name: str) -> type[Map]:
    return _KINDS.get(type_name, Map)


def list_maps() -> list[MapInfo]:
    """Every map in the kernel (like ``bpftool map list``)."""
    return walk_ids(lib.bpf_map_get_next_id, lib.bpf_map_get_fd_by_id,
                    lambda fd: MapInfo(_map_info_by_fd(fd)))
