"""Maps: the description libbpf holds before load, and the live fd-backed map after.

Two classes, one per lifecycle state (cilium's ``MapSpec``/``Map``, libbpf-rs's
``OpenMap``/``Map``):

* :class:`OpenMap` -- ``obj.maps[name]`` of an opened, not yet loaded object:
  settable ``max_entries``, ``key_size``, ``value_size``, ``flags``, ``type``,
  ``pin_path``, ``autocreate``, :meth:`OpenMap.reuse_fd` and :meth:`OpenMap.reuse`.
  It has no fd: every live operation raises :class:`~pybpf.StateError` ("load the
  object first").
* :class:`Map` -- a map in the kernel: ``obj.maps[name]`` after load,
  :meth:`Map.from_id`, :meth:`Map.open_pinned`, :func:`pybpf.create_map`. It always
  holds its fd through one owner (:class:`pybpf._fd.FD`); its description comes from
  ``bpf_map_info`` once; setters raise :class:`~pybpf.StateError` ("only before load").

This module has the raw layer: attributes and byte-level operations (``lookup``,
``update``, ``delete``, ``keys``), each one syscall made while borrowing the map's
owner, so that a close from another thread can never let a call reach an fd number
that another object has been given since. Typed, dict-like access decoded from BTF
is layered on top (:mod:`pybpf.mapkinds`).
"""

from __future__ import annotations

import enum
import errno as _errno
import fcntl
import os
from collections.abc import Iterator
from typing import Any

from . import _fastpath as _sys
from . import _fs, _walk
from ._fd import FD, Handle, Stage, bpf_fd_kind
from ._ffi import error_for, ffi, lib, walk_ids
from ._maptypes import facts
from .errors import (
    BPFError,
    ClosedError,
    MapError,
    MapKeyError,
    MapTypeError,
    MapValueError,
    StateError,
)
from .types import as_codec

__all__ = ["Map", "OpenMap", "UpdateFlags", "MapInfo", "list_maps", "possible_cpus",
           "map_type_name", "register_kind"]


class UpdateFlags(enum.IntFlag):
    """``bpf_map_update_elem`` flags."""

    ANY = 0
    NOEXIST = 1
    EXIST = 2
    LOCK = 4


# Map types some libbpf 1.x releases have no name for (uapi numbers): named here so
# that such maps still get their kind's class (cgrp_storage maps keyed by cgroup fd).
_NEWER_MAP_TYPES = {32: "cgrp_storage", 33: "arena"}


_type_names: dict[int, str] = {}


def map_type_name(t: int) -> str:
    """libbpf's name of map type number ``t`` (``"hash"``...); ``"map_type_N"`` if unknown.
    A dict lookup after the first call for ``t``."""
    name = _type_names.get(t)
    if name is None:
        s = lib.libbpf_bpf_map_type_str(t)
        if s != ffi.NULL:
            name = str(ffi.string(s).decode())
        else:
            name = _NEWER_MAP_TYPES.get(t, f"map_type_{t}")
        if 0 <= t < 1024:
            _type_names[t] = name
    return name


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


def map_type_value(name: str) -> int:
    """The map type number of libbpf's name ``name`` (``"hash"`` -> 1); ValueError if unknown."""
    for i in range(64):
        if map_type_name(i) == name:
            return i
    raise ValueError(f"unknown map type {name!r}")


_SETTABLE = ("max_entries", "key_size", "value_size", "flags", "type", "pin_path",
             "autocreate")


class OpenMap:
    """A map of an opened, not yet loaded :class:`~pybpf.Object`: libbpf's description.

    Settable before load: ``max_entries``, ``key_size``, ``value_size``, ``flags``,
    ``type``, ``pin_path``, ``autocreate``, and :meth:`reuse_fd`. Each read or write
    is one libbpf call, no syscall. An OpenMap has no fd: a live operation (lookup,
    ``m[k]``, ``fd``, ``pin``...) raises :class:`~pybpf.StateError` saying to load the
    object first; after load, ``obj.maps[name]`` is the live :class:`Map`.

    A handle kept across load still reads the description, but its setters and live
    operations raise :class:`~pybpf.StateError` pointing at ``obj.maps[name]``; after
    the object closes, everything but ``name`` and ``repr`` raises ClosedError.
    """

    def __init__(self, stage: Stage, ptr: Any, *, internal: bool | None = None) -> None:
        self._stage = stage
        self._ptr = ptr
        with stage.owner:
            self.name: str = ffi.string(lib.bpf_map__name(ptr)).decode()
        # the rest is read from libbpf when first asked for (an open that only sets a
        # global reads little; its caller may know `internal` already); record_btf_ids()
        # before load, which drops some
        self._internal: bool | None = internal
        self._noted_btf_ids: tuple[int, int] | None = None
        self._types: tuple[Any, Any] | None = None  # set_types(), for the live map
        self._reused_map: Map | None = None  # reuse(): the live map load hands back

    @property
    def internal(self) -> bool:
        """A map libbpf made for global variables (``.rodata``, ``.bss``, ``.data``...)."""
        v = self._internal
        if v is None:
            v = self._internal = bool(self._get(lib.bpf_map__is_internal))
        return v

    @property
    def _btf_ids(self) -> tuple[int, int]:
        ids = self._noted_btf_ids
        if ids is None:
            with self._stage.owner:
                ids = (int(lib.bpf_map__btf_key_type_id(self._ptr)),
                       int(lib.bpf_map__btf_value_type_id(self._ptr)))
            if not self._stage.loaded:
                self._noted_btf_ids = ids
        return ids

    def record_btf_ids(self) -> None:
        """Keep the BTF key and value ids now: the object calls this just before load,
        as libbpf drops the ids of some kinds (queue, stack) at load. No syscall."""
        self._btf_ids  # noqa: B018 - reads and keeps them

    @property
    def _kind(self) -> type[Map]:
        """The class the live map of this type gets."""
        return _kind_for(self.type)

    @property
    def libbpf_ptr(self) -> Any:
        """libbpf's ``struct bpf_map *`` (a cffi pointer), the escape hatch to libbpf's own
        API; valid while the object is open (borrow ``obj.owner`` around its use)."""
        return self._ptr

    def __repr__(self) -> str:
        if self._stage.closed:
            return f"<OpenMap {self.name!r} (object {self._stage.name!r} closed)>"
        state = "loaded: see obj.maps" if self._stage.loaded else "before load"
        return (f"<OpenMap {self.name!r} type={self.type} key_size={self.key_size} "
                f"value_size={self.value_size} max_entries={self.max_entries} ({state})>")

    # --- state ------------------------------------------------------------------
    def _get(self, getter: Any) -> int:
        with self._stage.owner:
            return int(getter(self._ptr))

    def _check_open(self, what: str) -> None:
        if self._stage.loaded:
            raise StateError(f"map {self.name!r}: {what} can only be set before load "
                             f"(object {self._stage.name!r} is loaded)")

    def _set(self, setter: Any, value: Any, what: str) -> None:
        self._check_open(what)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise MapValueError(f"map {self.name!r}: {what} must be a non-negative int, got "
                                f"{value!r}", map=self.name, field=what)
        if value >= 1 << 32:
            raise MapValueError(f"map {self.name!r}: {what}={value} does not fit in 32 bits",
                                map=self.name, field=what)
        with self._stage.owner:
            err = setter(self._ptr, value)
        if err:
            raise error_for(-err, f"map {self.name!r}: cannot set {what}={value}",
                            kind=MapError, map=self.name)

    def _not_live(self, what: str) -> BPFError:
        if self._stage.closed:
            return ClosedError(f"map {self.name!r} (object {self._stage.name!r})")
        if self._stage.loaded:
            return StateError(f"map {self.name!r}: this handle is the description from before "
                              f"load; the loaded map is obj.maps[{self.name!r}] ({what})",
                              err=_errno.ESTALE)
        return StateError(f"map {self.name!r}: {what} needs the map in the kernel: load the "
                          f"object first (obj.load()), then use obj.maps[{self.name!r}]",
                          err=_errno.EBADF)

    def __getattr__(self, name: str) -> Any:
        # every operation of a live map of this kind: a clear state error, not an
        # AttributeError
        if not name.startswith("_") and "_ptr" in self.__dict__:
            try:
                kind = self._kind
            except ClosedError:
                kind = Map
            if hasattr(kind, name):
                raise self._not_live(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getitem__(self, key: Any) -> Any:
        raise self._not_live("m[key]")

    def __setitem__(self, key: Any, value: Any) -> None:
        raise self._not_live("m[key] = value")

    def __delitem__(self, key: Any) -> None:
        raise self._not_live("del m[key]")

    def __contains__(self, key: object) -> bool:
        raise self._not_live("key in m")

    def __iter__(self) -> Iterator[Any]:
        raise self._not_live("iteration")

    def __len__(self) -> int:
        raise self._not_live("len()")

    def __bool__(self) -> bool:
        return True

    def set_types(self, key: Any = None, value: Any = None) -> None:
        """Key and value types for the live map this becomes at load, instead of BTF's
        (see :meth:`pybpf.TypedMap.set_types`): a C declaration, a ctypes type, a numpy
        dtype, a generated class, a BTF type (``obj.btf["event"]``), a scalar name
        (``"u32"``). Converted now (errors name the map); sizes must match the map's
        key and value sizes (checked now and again at load)."""
        self._check_open("set_types")
        kc = as_codec(key, None, f"map {self.name!r} key") if key is not None else None
        vc = as_codec(value, None, f"map {self.name!r} value") if value is not None else None
        for c, size, what in ((kc, self.key_size, "key"), (vc, self.value_size, "value")):
            if c is not None and c.size != size:
                raise MapValueError(f"map {self.name!r} {what}: {c.name} is {c.size} bytes, the "
                                    f"map's {what} size is {size}")
        old = self._types or (None, None)
        self._types = (kc or old[0], vc or old[1])

    # --- description ---------------------------------------------------------------
    @property
    def type(self) -> str:
        """libbpf's name of the map type, e.g. ``"hash"``; settable (a name or number)."""
        return map_type_name(self._get(lib.bpf_map__type))

    @type.setter
    def type(self, value: str | int) -> None:
        try:
            t = map_type_value(value if isinstance(value, str) else map_type_name(value))
        except (ValueError, TypeError, OverflowError):
            raise MapValueError(f"map {self.name!r}: unknown map type {value!r} (libbpf's "
                                "names: 'hash', 'array'...)", map=self.name,
                                field="type") from None
        self._set(lib.bpf_map__set_type, t, "type")

    @property
    def key_size(self) -> int:
        return self._get(lib.bpf_map__key_size)

    @key_size.setter
    def key_size(self, value: int) -> None:
        self._set(lib.bpf_map__set_key_size, value, "key_size")

    @property
    def value_size(self) -> int:
        return self._get(lib.bpf_map__value_size)

    @value_size.setter
    def value_size(self, value: int) -> None:
        self._set(lib.bpf_map__set_value_size, value, "value_size")

    @property
    def max_entries(self) -> int:
        return self._get(lib.bpf_map__max_entries)

    @max_entries.setter
    def max_entries(self, value: int) -> None:
        self._set(lib.bpf_map__set_max_entries, value, "max_entries")

    @property
    def flags(self) -> int:
        """``map_flags`` (BPF_F_*)."""
        return self._get(lib.bpf_map__map_flags)

    @flags.setter
    def flags(self, value: int) -> None:
        self._set(lib.bpf_map__set_map_flags, value, "flags")

    @property
    def autocreate(self) -> bool:
        """Whether load creates this map (settable: False leaves it out, e.g. a ring buffer
        on a kernel without them; programs that use it then fail to load)."""
        with self._stage.owner:
            return bool(lib.bpf_map__autocreate(self._ptr))

    @autocreate.setter
    def autocreate(self, value: bool) -> None:
        self._check_open("autocreate")
        with self._stage.owner:
            err = lib.bpf_map__set_autocreate(self._ptr, bool(value))
        if err:
            raise error_for(-err, f"map {self.name!r}: cannot set autocreate", kind=MapError,
                            map=self.name)

    @property
    def reused(self) -> bool:
        """An existing map will stand for this one (:meth:`reuse_fd`): load creates none."""
        with self._stage.owner:
            return bool(lib.bpf_map__fd(self._ptr) >= 0)

    @property
    def btf_key_type_id(self) -> int:
        return self._btf_ids[0]

    @property
    def btf_value_type_id(self) -> int:
        return self._btf_ids[1]

    @property
    def percpu(self) -> bool:
        return facts(self.type).percpu

    @property
    def pin_path(self) -> str | None:
        """Where load pins the map (and reuses a map already pinned there); settable."""
        with self._stage.owner:
            p = lib.bpf_map__pin_path(self._ptr)
            return ffi.string(p).decode() if p != ffi.NULL else None

    @pin_path.setter
    def pin_path(self, path: str | os.PathLike[str] | None) -> None:
        self._check_open("pin_path")
        p = None if path is None else _fs.check_pin_path(path, f"map {self.name!r}")
        with self._stage.owner:
            err = lib.bpf_map__set_pin_path(self._ptr, p.encode() if p else ffi.NULL)
        if err:
            raise error_for(-err, f"map {self.name!r}: cannot set pin path", kind=MapError,
                            map=self.name)

    def initial_value(self) -> bytes:
        """A copy of the data libbpf loads into the map (global-variable sections)."""
        with self._stage.owner:
            size = ffi.new("size_t *")
            cur = lib.bpf_map__initial_value(self._ptr, size)
            return b"" if cur == ffi.NULL else bytes(ffi.buffer(cur, size[0]))

    def write_initial_value(self, offset: int, data: bytes) -> None:
        """Overwrite ``data`` at ``offset`` of the initial value, in place (before load)."""
        self._check_open("the initial value")
        with self._stage.owner:  # one C call: checks the range, copies
            if offset < 0 or lib.pybpf_write_initial_value(self._ptr, offset, data,
                                                           len(data)) < 0:
                raise MapError(_errno.EINVAL, f"map {self.name!r}: initial value out of range "
                               f"({len(data)} bytes at {offset})", map=self.name)

    def reuse_fd(self, source: Map | int | str | os.PathLike[str]) -> None:
        """Use an existing map instead of creating one at load: a live :class:`Map`, a
        map fd, or the path of a pinned map. libbpf keeps its own dup of the fd, and the
        map takes the existing one's type, sizes and flags (one syscall)."""
        self._check_open("reuse_fd")
        if isinstance(source, Map):
            with source.owner as fd:
                self._reuse(fd, f"map {source.name!r}")
            return
        if isinstance(source, int):
            kind = bpf_fd_kind(source)
            if kind != "map":
                raise MapError(_errno.EINVAL, f"map {self.name!r}: reuse_fd: fd {source} is "
                               f"a {kind}, not a BPF map", map=self.name)
            self._reuse(source, f"fd {source}")
            return
        if not isinstance(source, (str, os.PathLike)):
            raise MapTypeError(f"map {self.name!r}: reuse_fd takes a Map, an fd or a pin "
                               f"path, got {type(source).__name__}", map=self.name)
        p = _fs.check_pinned(source, "map", f"map {self.name!r}: reuse_fd")
        fd = _open_pinned_fd(p, "map")
        try:
            self._reuse(fd, f"pinned map {p}")
        finally:
            os.close(fd)

    def reuse(self, live: Map) -> None:
        """Make the live map ``live`` itself this object's map of this name: libbpf
        reuses its fd at load (``bpf_map__reuse_fd``), and after load ``obj.maps[name]``
        is ``live`` -- the same Python object, with its contents, its typed view and
        the readers on it (a live upgrade keeps a ring buffer's consumers this way).
        Unlike :meth:`reuse_fd`, ownership does not move: ``live`` stays its holder's
        (:attr:`Map.object`; closing this object leaves it open) until this object
        takes it over (:meth:`pybpf.Object.take_over`). One syscall."""
        if not isinstance(live, Map):
            raise MapTypeError(f"map {self.name!r}: reuse() takes a live pybpf.Map, got "
                               f"{type(live).__name__} (reuse_fd() takes an fd or a pin path)",
                               map=self.name)
        self.reuse_fd(live)
        self._reused_map = live

    @property
    def reused_map(self) -> Map | None:
        """The live map :meth:`reuse` gave (None: load creates one, or reuse_fd)."""
        return self._reused_map

    def _reuse(self, fd: int, what: str) -> None:
        self.record_btf_ids()  # this object's, before libbpf takes the reused map's
        with self._stage.owner:
            err = lib.bpf_map__reuse_fd(self._ptr, fd)
        if err:
            raise error_for(-err, f"map {self.name!r}: cannot reuse {what}", kind=MapError,
                            map=self.name)

    def loaded_map(self, obj: Any) -> Map | None:
        """After the object's load: a live :class:`Map` (of this map's kind) with a new
        owner of a dup of libbpf's fd, or None if load did not create the map (autocreate
        off), or the map given to :meth:`reuse` itself. Called once by ``Object.load``;
        use ``obj.maps[name]``."""
        if self._reused_map is not None:
            return self._reused_map
        with self._stage.owner:
            lfd = int(lib.bpf_map__fd(self._ptr))
            # libbpf 1.3+ gives every map a placeholder fd at open (not a BPF map):
            # one that load did not create keeps it
            if lfd < 0 or not lib.bpf_map__autocreate(self._ptr):
                return None
            fd = fcntl.fcntl(lfd, fcntl.F_DUPFD_CLOEXEC, 3)
            pinned = bool(lib.bpf_map__is_pinned(self._ptr))
            p = lib.bpf_map__pin_path(self._ptr)
            pin = ffi.string(p).decode() if pinned and p != ffi.NULL else None
        owner = FD(fd, f"map {self.name!r} of object {self._stage.name!r}")
        info = MapInfo(_map_info_by_fd(fd))
        kind = _kind_for(info.type)
        m = kind(owner, info, name=self.name, internal=self.internal, obj=obj,
                 btf_ids=self._btf_ids, pin_path=pin)
        if self._types is not None and hasattr(m, "set_types"):
            m.set_types(*self._types)
        return m


def _open_pinned_fd(path: object, want: str, who: str = "") -> int:
    """A new fd of the BPF object pinned at ``path``, checked to be a ``want``; ``who``
    starts the messages of the path's checks."""
    path = _fs.check_pinned(path, want, who)
    fd = int(lib.bpf_obj_get(path.encode()))
    if fd < 0:
        raise error_for(ffi.errno, f"cannot open pinned {want} {path}", kind=MapError, map=path)
    kind = bpf_fd_kind(fd)
    if kind != want:
        os.close(fd)
        hint = {"program": "", "link": " (pybpf.Link.open_pinned)",
                "map": " (pybpf.Map.open_pinned)"}.get(kind, "")
        raise MapError(_errno.EINVAL, f"{path} is a pinned {kind}{hint}, not a {want}",
                       map=path)
    return fd


def _refuse_live_setter(m: Map, what: str) -> None:
    raise StateError(f"map {m.name!r} is in the kernel: {what} can only be set before load "
                     f"(on obj.maps[{m.name!r}] of an opened object, before obj.load())")


class Map(Handle):
    """A BPF map in the kernel: of a loaded :class:`~pybpf.Object`, or opened by id or
    pin path, or made by :func:`~pybpf.create_map`.

    It always holds an fd (through one owner); its description (``type``,
    ``key_size``, ``max_entries``...) is what the kernel said when it was opened. The
    operations below are one syscall each. Its setters raise
    :class:`~pybpf.StateError` (sizes are set on the :class:`OpenMap` before load).
    After close, every operation raises :class:`~pybpf.ClosedError`, from any thread;
    calls in flight finish first, and the fd closes when the last one ends.
    """

    def __init__(self, owner: FD, info: MapInfo, *, name: str | None = None,
                 internal: bool = False, obj: Any = None,
                 btf_ids: tuple[int, int] | None = None, pin_path: str | None = None) -> None:
        self._owner = owner
        self._info = info
        self._obj = obj
        self.name: str = name if name is not None else info.name
        self.internal: bool = internal
        self._btf_ids = btf_ids if btf_ids is not None and any(btf_ids) else (
            info.btf_key_type_id, info.btf_value_type_id)
        self._pin_path = pin_path
        self._value_buf: int | None = None

    # --- description ----------------------------------------------------------
    def __repr__(self) -> str:
        closed = " (closed)" if self._owner.closed else ""
        return (f"<{type(self).__name__} {self.name!r} type={self.type} key_size={self.key_size}"
                f" value_size={self.value_size} max_entries={self.max_entries}{closed}>")

    @property
    def object(self) -> Any:
        """The :class:`~pybpf.Object` this map belongs to (None for maps opened by id,
        pin or created alone)."""
        return self._obj

    def held_by(self, obj: Any) -> None:
        """Record the :class:`~pybpf.Object` this map now belongs to, which closes it
        when it closes (:meth:`pybpf.Object.take_over` hands a reused map to the new
        object). Not for users."""
        self._obj = obj

    @property
    def type(self) -> str:
        """libbpf's name of the map type, e.g. ``"hash"`` (BPF_MAP_TYPE_HASH)."""
        return self._info.type

    @property
    def key_size(self) -> int:
        return self._info.key_size

    @key_size.setter
    def key_size(self, value: int) -> None:
        _refuse_live_setter(self, "key_size")

    @property
    def value_size(self) -> int:
        return self._info.value_size

    @value_size.setter
    def value_size(self, value: int) -> None:
        _refuse_live_setter(self, "value_size")

    @property
    def max_entries(self) -> int:
        return self._info.max_entries

    @max_entries.setter
    def max_entries(self, value: int) -> None:
        _refuse_live_setter(self, "max_entries")

    @property
    def flags(self) -> int:
        """``map_flags`` (BPF_F_*)."""
        return self._info.flags

    @flags.setter
    def flags(self, value: int) -> None:
        _refuse_live_setter(self, "flags")

    @property
    def autocreate(self) -> bool:
        """True: a live map exists (settable only on the OpenMap, before load)."""
        return True

    @autocreate.setter
    def autocreate(self, value: bool) -> None:
        _refuse_live_setter(self, "autocreate")

    @property
    def pin_path(self) -> str | None:
        """Where this handle pinned the map (or load pinned it); None if not pinned."""
        return self._pin_path

    @pin_path.setter
    def pin_path(self, path: str | None) -> None:
        _refuse_live_setter(self, "pin_path (use pin()/unpin() on a live map)")

    @property
    def btf_key_type_id(self) -> int:
        return self._btf_ids[0]

    @property
    def btf_value_type_id(self) -> int:
        return self._btf_ids[1]

    @property
    def id(self) -> int:
        """The kernel's id of the map (no syscall: known since it was opened)."""
        return self._info.id

    @property
    def percpu(self) -> bool:
        return facts(self.type).percpu

    # --- live map ---------------------------------------------------------------
    @property
    def owner(self) -> FD:
        """The one owner of this map's fd: ``with m.owner as fd:`` borrows it for a
        syscall of your own (ClosedError once closed; the fd stays open until the
        borrow ends)."""
        return self._owner

    @property
    def closed(self) -> bool:
        return bool(self._owner.closed)

    @property
    def fd(self) -> int:
        """The map's fd number (ClosedError after close). Only valid while this map is
        open: for a call of your own that may race a close, borrow :attr:`owner`."""
        return self._owner.get()

    def attach_struct_ops(self) -> Any:
        """Register this loaded struct_ops map (a TCP congestion control...): a BPF link for
        ``SEC(".struct_ops.link")`` maps (unregistered when the link closes; swap with
        ``link.update_map(other)``), else by writing its value. See
        :meth:`pybpf.Object.attach_struct_ops`."""
        if self._obj is None or self.type != "struct_ops":
            raise MapError(_errno.EINVAL, f"map {self.name!r} is a {self.type} map of no "
                           "object, not a struct_ops map of one", map=self.name)
        return self._obj.attach_struct_ops(self.name)

    def info(self) -> MapInfo:
        """Kernel view of the map (id, btf ids...): one syscall."""
        with self._owner as fd:
            return MapInfo(_map_info_by_fd(fd))

    def _value_size_total(self) -> int:
        if self._value_buf is None:
            vs = self.value_size
            self._value_buf = ((vs + 7) // 8 * 8) * possible_cpus() if self.percpu else vs
        return self._value_buf

    def _key(self, key: bytes | bytearray | memoryview) -> Any:
        if not isinstance(key, (bytes, bytearray, memoryview)):
            raise MapTypeError(f"map {self.name!r}: raw key must be bytes, got "
                               f"{type(key).__name__}", map=self.name, field="key")
        ks = self.key_size
        if len(key) != ks:
            raise MapValueError(f"map {self.name!r}: key is {len(key)} bytes, "
                                f"the map's key_size is {ks}", map=self.name, field="key")
        return key if ks else None

    def _value(self, value: bytes | bytearray | memoryview) -> Any:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise MapTypeError(f"map {self.name!r}: raw value must be bytes, got "
                               f"{type(value).__name__}", map=self.name, field="value")
        vs = self._value_size_total()
        if len(value) != vs:
            raise MapValueError(f"map {self.name!r}: value is {len(value)} bytes, expected {vs}"
                                + (" (value_size per CPU, 8-aligned, times "
                                   f"{possible_cpus()} CPUs)" if self.percpu else ""),
                                map=self.name, field="value")
        return value

    def _flags(self, flags: int) -> int:
        """``flags`` as the kernel's 64-bit field, or a MapError naming the map."""
        f = flags
        if not isinstance(f, int) or not 0 <= f < 1 << 64:
            raise MapError(_errno.EINVAL, f"map {self.name!r}: flags {flags!r} is not a 64-bit "
                                          "unsigned int", map=self.name)
        return f

    def _fail(self, what: str, err: int | None = None) -> MapError:
        return error_for(ffi.errno if err is None else err,  # type: ignore[return-value]
                         f"map {self.name!r}: {what}", kind=MapError, map=self.name)

    def lookup(self, key: bytes, *, flags: int = 0) -> bytes | None:
        """The value bytes for ``key``, or None if absent (one syscall).

        Per-CPU maps return every possible CPU's value, each padded to 8 bytes.
        """
        flags = self._flags(flags)
        k = self._key(key)
        buf = bytearray(self._value_size_total())
        rc = _sys.map_elem(self._owner, _sys.MAP_LOOKUP_ELEM, k, buf, flags)
        if rc < 0:
            if rc == -_errno.ENOENT:
                return None
            raise self._fail("lookup failed", -rc)
        return bytes(buf)

    def update(self, key: bytes, value: bytes, flags: int = UpdateFlags.ANY) -> None:
        """Set ``key`` to ``value`` (one syscall); ``flags`` is :class:`UpdateFlags`."""
        flags = self._flags(flags)
        k, v = self._key(key), self._value(value)
        rc = _sys.map_elem(self._owner, _sys.MAP_UPDATE_ELEM, k, v, flags)
        err = -rc
        if rc < 0:
            if err == _errno.EEXIST:  # NOEXIST and the key is there
                raise MapKeyError(f"map {self.name!r}: key {bytes(key).hex()} is already "
                                  "present (BPF_NOEXIST)", map=self.name, key=key, err=err)
            if err == _errno.ENOENT and flags & UpdateFlags.EXIST:
                raise MapKeyError(f"map {self.name!r}: no key {bytes(key).hex()} (BPF_EXIST)",
                                  map=self.name, key=key)
            raise self._fail("update failed", err)

    def delete(self, key: bytes) -> bool:
        """Delete ``key``; False if it was absent (one syscall)."""
        k = self._key(key)
        rc = _sys.map_elem(self._owner, _sys.MAP_DELETE_ELEM, k, None, 0)
        if rc < 0:
            if rc == -_errno.ENOENT:
                return False
            raise self._fail("delete failed", -rc)
        return True

    def lookup_and_delete(self, key: bytes | None = None) -> bytes | None:
        """Pop ``key`` (or, for queue/stack maps, the next element); None if absent."""
        k = None if key is None else self._key(key)
        buf = bytearray(self._value_size_total())
        rc = _sys.map_elem(self._owner, _sys.MAP_LOOKUP_AND_DELETE_ELEM, k, buf, 0)
        if rc < 0:
            if rc == -_errno.ENOENT:
                return None
            raise self._fail("lookup_and_delete failed", -rc)
        return bytes(buf)

    def keys(self) -> Iterator[bytes]:
        """Every key as bytes: batch lookups for hash and array kinds, else one
        ``BPF_MAP_GET_NEXT_KEY`` per key (see :mod:`pybpf._walk`). Keys present for the
        whole walk come exactly once while other keys are inserted or deleted; keys
        inserted or deleted meanwhile at most once."""
        return _walk.keys(self)

    def items_raw(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) byte pairs by the same walk; each value as of when it was read,
        keys deleted before their value was read are left out."""
        return _walk.items(self)

    def freeze(self) -> None:
        """Make the map read-only for user space (``BPF_MAP_FREEZE``)."""
        with self._owner as fd:
            rc = lib.bpf_map_freeze(fd)
            err = ffi.errno
        if rc < 0:
            raise self._fail("freeze failed", err)

    # --- pinning / opening --------------------------------------------------------
    def pin(self, path: str | os.PathLike[str]) -> None:
        """Pin the live map at ``path`` in bpffs (one syscall). ``pin_path`` changes
        only when the pin succeeded (EEXIST: something else is pinned there)."""
        p = _fs.check_pin_path(path, f"map {self.name!r}")
        with self._owner as fd:
            rc = lib.bpf_obj_pin(fd, p.encode())
            err = ffi.errno
        if rc < 0:
            if err == _errno.EEXIST:
                raise MapError(err, f"map {self.name!r}: cannot pin at {p}: something is "
                               "already pinned there (File exists, EEXIST)", map=self.name)
            raise self._fail(f"cannot pin at {p}", err)
        self._pin_path = p

    def unpin(self, path: str | os.PathLike[str] | None = None) -> None:
        """Remove the pin at ``path`` (default: where this map was pinned).

        Refused (MapError) unless the object pinned there is this very map: a pin this
        map does not own is never removed."""
        p = self._pin_path if path is None else _fs.check_pinned(path, "map",
                                                                 f"map {self.name!r}: unpin")
        if p is None:
            raise MapError(_errno.ENOENT, f"map {self.name!r} is not pinned by this handle: "
                           "pass the pin path", map=self.name)
        def check(q: str) -> None:
            """``q``: where the pin is while it is checked (see _fs.remove_pin)."""
            try:
                fd = _open_pinned_fd(q, "map")
            except MapError as e:
                raise MapError(e.errno or _errno.EINVAL, f"map {self.name!r}: refusing to "
                               f"unpin {p}: {e.message.replace(q, p)}", map=self.name) from None
            try:
                theirs = MapInfo(_map_info_by_fd(fd)).id
            finally:
                os.close(fd)
            if theirs != self.id:
                raise MapError(_errno.EPERM, f"map {self.name!r} (id {self.id}): refusing to "
                               f"unpin {p}: the map pinned there is another one (id {theirs})",
                               map=self.name)

        try:
            _fs.check_pinned(p, "map")
            _fs.remove_pin(p, check)
        except FileNotFoundError:
            if p == self._pin_path:
                self._pin_path = None
            raise
        except MapError:
            raise
        except BPFError as e:
            raise MapError(e.errno or _errno.EINVAL, f"map {self.name!r}: refusing to unpin "
                           f"{p}: {e}", map=self.name) from None
        if p == self._pin_path:
            self._pin_path = None

    @classmethod
    def from_fd(cls, fd: int, what: str | None = None) -> Map:
        """The live map of the right kind for map fd ``fd``, taking ownership of it: it
        closes with the returned map (pass ``os.dup(fd)`` to keep yours). An fd that is
        not a BPF map is refused with MapError and left open. One readlink, one syscall."""
        if not isinstance(fd, int) or isinstance(fd, bool):
            raise MapError(_errno.EBADF, f"a map fd must be an int, got {fd!r}", map=repr(fd))
        kind = bpf_fd_kind(fd)
        if kind != "map":
            raise MapError(_errno.EBADF if kind == "unknown" else _errno.EINVAL,
                           f"fd {fd} is {'not open' if kind == 'unknown' else kind!r}, "
                           "not a BPF map", map=f"fd {fd}")
        try:
            info = MapInfo(_map_info_by_fd(fd))
        except BaseException:
            os.close(fd)
            raise
        owner = FD(fd, what or f"map {info.name!r} (id {info.id})")
        return _kind_for(info.type)(owner, info)

    @classmethod
    def open_pinned(cls, path: str | os.PathLike[str]) -> Map:
        """Open a map pinned in bpffs (the returned map owns a new fd; one syscall).
        A pinned program or link is refused with MapError."""
        p = _fs.check_pinned(path, "map", "Map.open_pinned")
        m = cls.from_fd(_open_pinned_fd(p, "map"))
        m._pin_path = p  # unpin() removes this pin (after checking it is still this map)
        return m

    @classmethod
    def from_id(cls, map_id: int) -> Map:
        """Open a live map by its kernel id (a new fd)."""
        if not isinstance(map_id, int) or isinstance(map_id, bool):
            raise MapError(_errno.EINVAL, f"map id must be an int, got {map_id!r}",
                           map=str(map_id))
        if not 0 < map_id < 1 << 32:
            raise MapError(_errno.ENOENT, f"cannot open map id {map_id}: no such map (map ids "
                                          "are 32-bit unsigned, from 1)", map=str(map_id))
        fd = lib.bpf_map_get_fd_by_id(map_id)
        if fd < 0:
            raise error_for(ffi.errno, f"cannot open map id {map_id}", kind=MapError,
                            map=str(map_id))
        return cls.from_fd(fd)

    def close(self) -> None:
        """Close a map opened by id, pin or :func:`~pybpf.create_map` (idempotent).
        A map of an Object belongs to it and closes with it: this does nothing."""
        if self._obj is None:
            self._owner.close()

    def __enter__(self) -> Map:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

# The class of each map type is named in the one table (pybpf._maptypes); the classes
# live in pybpf.mapkinds, above this module, which registers them here by that table.
_KINDS: dict[str, type[Map]] = {}


def register_kind(*type_names: str) -> Any:
    """Class decorator: use this Map subclass for maps of these libbpf types
    (:mod:`pybpf.mapkinds` registers the class :mod:`pybpf._maptypes` names for each)."""

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
                    lambda fd: MapInfo(_map_info_by_fd(fd)), what="maps")
