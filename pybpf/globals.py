"""Global variables of a BPF object: ``obj.rodata``, ``obj.bss``, ``obj.data`` and
custom ``.data.*`` / ``.rodata.*`` sections, typed from their BTF DATASEC.

    obj = pybpf.Object.open("probe.bpf.o")
    obj.rodata.target_pid = 1234          # before load: the initial value
    obj.load()
    obj.bss.enabled = True                # after load: written into the live map
    print(obj.bss.counter)                # ... and read from it

Before load, reads and writes go to libbpf's initial value of the section (for
``.bss`` the writes are kept and copied into the map right after load: libbpf
1.1 does not initialize ``.bss``). After load, ``.bss`` and ``.data`` are
memory-mapped from the map's fd (``BPF_F_MMAPABLE``): an access is a memory
copy, no syscall, and the running programs see writes at once. ``.rodata`` is
frozen by the kernel at load: it stays readable, and writing raises
:class:`~pybpf.StateError` (set it before load). Maps that are not mmapable fall
back to one lookup/update syscall per access.

After the object closes, every access raises :class:`~pybpf.ClosedError`, from any
thread; an access in flight finishes first (each mmap has one owner, unmapped when
the last access ends).
"""

from __future__ import annotations

import errno as _errno
import functools
import mmap
from _thread import RLock as _RLock
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from ._args import user_raised
from ._fd import FD, Stage
from .btf import BTF, BTFFormatError, BTFKind
from .errors import (
    BPFError,
    ClosedError,
    MapTypeError,
    MapValueError,
    ObjectError,
    StateError,
)
from .maps import Map, OpenMap
from .types import BoolCodec, Codec, IntCodec, as_codec, codec_for

__all__ = ["Section", "Globals", "c_cast", "rodata_variable", "section_layout"]

BPF_F_MMAPABLE = 1 << 10
BPF_F_RDONLY_PROG = 1 << 7


def _unmap(mm: mmap.mmap) -> None:
    try:
        mm.close()
    except BufferError:  # a memoryview of it is still alive: the GC unmaps it
        pass


def c_cast(codec: Codec, value: Any) -> Any:
    """C's conversion of a negative int to an unsigned global: ``(uid_t)-1`` is all ones.
    A value from -2**(bits-1) to -1 given for an unsigned integer or enum variable wraps
    modulo 2**bits (``obj.rodata.targ_uid = -1`` sets 0xffffffff); anything else is
    unchanged (and range-checked by the codec)."""
    if (isinstance(codec, IntCodec) and not isinstance(codec, BoolCodec) and not codec.signed
            and isinstance(value, int)
            and not isinstance(value, bool) and -(1 << (8 * codec.size - 1)) <= value < 0):
        return value + (1 << (8 * codec.size))
    return value


class Section:
    """The variables of one data section, as attributes (and ``sec["name"]``).
    A negative int given to an unsigned integer variable is converted as C converts it
    (``-1`` is all ones: libbpf-tools' ``(uid_t)-1`` "no filter" default)."""

    __slots__ = ("_stage", "_maps", "_index", "_live", "_name", "_vars", "_btf", "_codecs",
                 "_mm", "_mm_owner", "_size", "_pending", "_closed", "_lock")

    def __init__(self, stage: Stage, maps: InternalMaps, index: int, name: str, btf: BTF,
                 variables: Mapping[str, tuple[int, int, int]], size: int,
                 codecs: dict[str, Codec] | None = None, lock: Any = None) -> None:
        """``maps``: the object's internal maps, this section's being number ``index``
        (before load, reads and writes go to its initial value: no wrapper of it is
        built until :attr:`map` asks for one). ``codecs``: the variables' BTF codecs
        found so far, shared by the sections of one layout (same BTF and DATASEC);
        :meth:`set_type` gives this section a copy of its own. ``lock``: the reentrant
        lock of its :class:`Globals` (shared by the object's sections), else its own."""
        sa = object.__setattr__
        sa(self, "_stage", stage)
        sa(self, "_maps", maps)
        sa(self, "_index", index)
        sa(self, "_live", None)
        sa(self, "_name", name)
        sa(self, "_vars", variables)  # name -> (offset, BTF type id, size)
        sa(self, "_btf", btf)
        # name -> Codec, built on the variable's first use
        sa(self, "_codecs", {} if codecs is None else codecs)
        sa(self, "_mm", None)
        sa(self, "_mm_owner", None)
        sa(self, "_size", size)
        sa(self, "_pending", {})
        sa(self, "_closed", False)
        sa(self, "_lock", _RLock() if lock is None else lock)

    # --- storage -----------------------------------------------------------------
    def _closed_error(self) -> ClosedError:
        return ClosedError(f"BPF object {self._stage.name!r} (section {self._name})")

    def _memory(self) -> FD | None:
        """The owner of the section's mmap (made on first use after load), or None when
        the map is not mmapable."""
        owner = self._mm_owner
        if owner is not None:
            return owner  # type: ignore[no-any-return]
        m = self._live
        if m is None or not m.flags & BPF_F_MMAPABLE:
            return None
        prot = mmap.PROT_READ | (0 if self._name.startswith(".rodata") else mmap.PROT_WRITE)
        page = mmap.PAGESIZE
        length = (self._size + page - 1) // page * page
        with self._lock:
            if self._mm_owner is None:
                if self._closed:
                    raise self._closed_error()
                with m.owner as fd:
                    mm = mmap.mmap(fd, length, flags=mmap.MAP_SHARED, prot=prot)
                object.__setattr__(self, "_mm", mm)
                object.__setattr__(self, "_mm_owner", FD(
                    -1, f"section {self._name} of BPF object {self._stage.name!r}",
                    closer=functools.partial(_unmap, mm)))
        return self._mm_owner  # type: ignore[no-any-return]

    def _read(self, off: int, codec: Codec) -> Any:
        stage = self._stage
        if not stage.loaded:
            if stage.closed:
                raise self._closed_error()
            return codec.decode(self._maps.initial_value(self._index), off)
        if self._closed:
            raise self._closed_error()
        owner = self._memory()
        if owner is None:  # not mmapable: one syscall
            raw = self._live.lookup(bytes(4))
            return codec.decode(raw or bytes(self._size), off)
        with owner:  # ClosedError naming the section once closed; unmapped after us
            return codec.decode(self._mm, off)

    def _write(self, off: int, data: bytes, name: str = "") -> None:
        stage = self._stage
        if not stage.loaded:
            if stage.closed:
                raise self._closed_error()
            self._maps.write_initial_value(self._index, off, data)
            if self._name == ".bss":
                self._pending[off] = data  # libbpf 1.1 does not copy .bss: done after load
            return
        if self._name.startswith(".rodata"):
            var = f" (setting {name!r})" if name else ""
            raise StateError(f"{stage.name}: {self._name} is frozen at load{var}: const "
                             "volatile globals can only be set before load (obj.rodata.x = v "
                             "before obj.load())")
        if self._closed:
            raise self._closed_error()
        owner = self._memory()
        if owner is None:
            m = self._live
            raw = bytearray(m.lookup(bytes(4)) or bytes(self._size))
            raw[off:off + len(data)] = data
            m.update(bytes(4), bytes(raw))
            return
        with owner:
            self._mm[off:off + len(data)] = data

    def _after_load(self, live: Map | None) -> None:
        object.__setattr__(self, "_live", live)
        pending = self._pending
        if live is not None:
            for off, data in pending.items():
                self._write(off, data)
        pending.clear()

    def _close(self) -> None:
        with self._lock:
            object.__setattr__(self, "_closed", True)
            owner = self._mm_owner
        if owner is not None:
            owner.close()  # unmaps when the last access in flight ends

    # --- attributes --------------------------------------------------------------
    def _var(self, name: str) -> tuple[int, Codec]:
        try:
            off, tid, _size = self._vars[name]
        except KeyError:
            raise AttributeError(f"{self._stage.name}: section {self._name} has no variable "
                                 f"{name!r} (variables: {', '.join(self._vars) or 'none'})"
                                 ) from None
        c = self._codecs.get(name)
        if c is None:
            c = codec_for(self._btf, tid)
            if off + c.size > self._size:  # only malformed BTF places a variable so
                raise BTFFormatError(f"{self._stage.name}: section {self._name} variable "
                                     f"{name!r} ({c.name}, {c.size} bytes at offset {off}) "
                                     f"ends past the section's {self._size} bytes")
            self._codecs[name] = c
        return off, c

    def codec_of(self, name: str) -> Codec:
        """The codec variable ``name`` is read and written with (its BTF type's, or the
        one :meth:`set_type` gave); built once."""
        return self._var(name)[1]

    def set_type(self, name: str, spec: Any) -> None:
        """Read and write variable ``name`` as another type of the same size: a C
        declaration (``"struct event { ... }"``), a ``ctypes.Structure``, a numpy dtype,
        a generated class, a BTF type, a scalar name (see :func:`pybpf.typespec.btf_type`).
        Costs one conversion (a clang run for an uncached C declaration)."""
        try:
            _off, _tid, size = self._vars[name]
        except KeyError:
            self._var(name)  # the AttributeError naming the variables
            raise
        what = f"{self._stage.name}: {self._name} variable {name!r}"
        c = as_codec(spec, None, what)
        if c.size != size:
            raise MapValueError(f"{what} is {size} bytes, {c.name} is {c.size}", map=self._name,
                                field=name, type_name=c.name)
        object.__setattr__(self, "_codecs", {**self._codecs, name: c})  # never the shared one

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        off, codec = self._var(name)
        return self._read(off, codec)

    def __setattr__(self, name: str, value: Any) -> None:
        off, codec = self._var(name)
        try:
            data = codec.encode(c_cast(codec, value), name)
        except (TypeError, ValueError) as e:
            if isinstance(e, BPFError):
                raise
            kind = MapTypeError if isinstance(e, TypeError) else MapValueError
            raise kind(f"{self._stage.name}: {self._name}: {e}", map=self._name, field=name,
                       type_name=codec.name) from None
        except Exception as e:  # the value's own __index__... raised
            raise MapTypeError(f"{self._stage.name}: {self._name}: "
                               f"{user_raised(e, name, value)}", map=self._name, field=name,
                               type_name=codec.name) from e
        self._write(off, data, name)

    __getitem__ = __getattr__
    __setitem__ = __setattr__

    def __contains__(self, name: object) -> bool:
        return name in self._vars

    def __iter__(self) -> Iterator[str]:
        return iter(self._vars)

    def __dir__(self) -> list[str]:
        return list(self._vars)

    def _asdict(self) -> dict[str, Any]:
        """Every variable's current value."""
        return {n: self._read(*self._var(n)) for n in self._vars}

    @property
    def map(self) -> Map | OpenMap:
        """The internal map that holds this section (the live one after load)."""
        live: Map | None = self._live
        return live if live is not None else self._maps.wrap(self._index)

    def __repr__(self) -> str:
        return f"<Section {self._name} of {self._stage.name!r}: {', '.join(self._vars)}>"


_Variables = Mapping[str, tuple[int, int, int]]  # name -> (offset, BTF type id, size)
_NO_SECTION: tuple[None, _Variables, int] = (None, MappingProxyType({}), 0)
_NO_DECL: Mapping[str, Any] = MappingProxyType({})


def section_layout(btf: BTF, vid: int) -> tuple[str | None, _Variables, int]:
    """What a global-variable section of BTF DATASEC ``vid`` holds: its name (None when
    ``vid`` is no data section's DATASEC), its variables (name -> (offset, BTF type id,
    size); read-only) and its size. Built once per (shared) BTF, as its codecs: every
    object opened from the same bytes reuses it."""
    if not vid:
        return _NO_SECTION
    cache = btf.memo("sections")
    found = cache.get(vid)
    if found is None:
        found = _NO_SECTION
        if btf.kind_of(vid) == BTFKind.DATASEC:
            name = btf.name_of(vid)
            if name.startswith((".data", ".bss", ".rodata")):
                ds = btf.types[vid]
                variables = MappingProxyType({v.name: (v.offset, v.type, v.size)
                                              for v in ds.members
                                              if btf.kind_of(v.type) == BTFKind.VAR})
                found = (name, variables, ds.size)
        cache[vid] = found
    return found


# section name -> (index of its internal map, its variables, its size, the codecs of
# its variables found so far: shared by the sections of every object with this layout)
_Decl = Mapping[str, tuple[int, _Variables, int, dict[str, Codec]]]


def _sections_of(btf: BTF, vids: tuple[int, ...]) -> _Decl:
    """The data sections of internal maps of value type ids ``vids`` (maps without a
    data section's DATASEC left out), by name; built once per (shared) BTF and
    ``vids``."""
    cache: dict[Any, Any] = btf.memo("section_maps")  # by the tuple of type ids
    found: _Decl | None = cache.get(vids)
    if found is None:
        decl: dict[str, tuple[int, _Variables, int, dict[str, Codec]]] = {}
        for i, vid in enumerate(vids):
            name, variables, size = section_layout(btf, vid)
            if name is not None:
                decl[name] = (i, variables, size, {})
        found = cache[vids] = MappingProxyType(decl)
    return found


def rodata_variable(btf: BTF, vids: tuple[int, ...], name: str
                    ) -> tuple[int, int, int, int, BTFKind] | None:
    """Where the read-only global ``name`` is, among internal maps of value type ids
    ``vids`` (the first ``.rodata*`` section that has it): (index of its map, offset,
    BTF type id, size, kind of its resolved type); None when no section has it. Found
    once per (shared) BTF."""
    cache: dict[Any, Any] = btf.memo("rodata_variables")  # by (type ids, name)
    key = (vids, name)
    found = cache.get(key)
    if found is None:
        for i, vid in enumerate(vids):
            sec_name, variables, _size = section_layout(btf, vid)
            var = variables.get(name) if sec_name and sec_name.startswith(".rodata") else None
            if var is not None:
                offset, var_type, var_size = var
                kind = btf.resolve(btf.types[var_type].type).kind
                found = cache[key] = (i, offset, var_type, var_size, kind)
                break
    return found


class InternalMaps(NamedTuple):
    """An object's internal maps (global-variable sections), by their index in libbpf's
    order, before load: what its :class:`Globals` and sections reach them through."""

    wrap: Callable[[int], OpenMap]
    """The :class:`OpenMap` of internal map ``i`` (built on first use)."""
    initial_value: Callable[[int], bytes]
    """A copy of map ``i``'s initial value."""
    write_initial_value: Callable[[int, int, bytes], None]
    """``(i, offset, data)``: overwrite part of map ``i``'s initial value."""


class Globals:
    """The data sections of one object, by ELF section name. A section's variables are
    read from BTF when the section is first used (one DATASEC, not the whole BTF)."""

    # until load / close (class defaults: an open that sets a global does not store them)
    _live: Mapping[str, Map] | None = None
    _closed = False

    def __init__(self, stage: Stage, btf: BTF | None, vids: tuple[int, ...],
                 maps: InternalMaps) -> None:
        """``vids``: the BTF value type id of each of the object's internal maps, in
        order; ``maps``: those maps."""
        self._stage = stage
        self._btf = btf
        self._maps = maps
        self._lock = _RLock()  # also its sections' (taken again when one is built loaded)
        self._decl = _sections_of(btf, vids) if btf is not None else _NO_DECL
        self._built: dict[str, Section] = {}

    def _build(self, name: str) -> Section:
        sec = self._built.get(name)
        if sec is not None:
            return sec
        index, variables, size, codecs = self._decl[name]
        btf = self._btf
        assert btf is not None
        if not size:
            size = self._maps.wrap(index).value_size
        # the map's name, when loaded, found before taking the lock (Object's close()
        # holds the object's lock while it takes this one: never the other way round)
        live = self._live
        live_map = None if live is None else live.get(self._maps.wrap(index).name)
        with self._lock:
            sec = self._built.get(name)
            if sec is None:
                sec = Section(self._stage, self._maps, index, name, btf, variables, size,
                              codecs, self._lock)
                if self._live is not None:
                    if live is None:  # loaded meanwhile: its wrappers exist, no lock taken
                        live_map = self._live.get(self._maps.wrap(index).name)
                    sec._after_load(live_map)
                if self._closed:
                    sec._close()
                self._built[name] = sec
        return sec

    @property
    def sections(self) -> dict[str, Section]:
        """Every data section (builds those not used yet)."""
        return {name: self._build(name) for name in self._decl}

    def section(self, name: str, obj_name: str) -> Section:
        """The section ``name``; :class:`ObjectError` (ENOENT) when the object has none
        (its source defines no such globals), naming the sections it has."""
        if name not in self._decl:
            what = {".data": "initialized globals", ".bss": "zero-initialized globals",
                    ".rodata": "const volatile globals"}[name]  # (the three properties')
            raise ObjectError(_errno.ENOENT, f"BPF object {obj_name!r} has no {name} section "
                              f"(its source defines no {what}); its sections: "
                              f"{', '.join(self._decl) or 'none'}")
        return self._build(name)

    def after_load(self, live: Mapping[str, Map]) -> None:
        """The object loaded: each section now reads and writes its live map."""
        with self._lock:
            self._live = live
            built = list(self._built.values())
        for s in built:
            s._after_load(live.get(s.map.name))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            built = list(self._built.values())
        for s in built:
            s._close()
