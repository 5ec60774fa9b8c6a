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
:class:`~pybpf.LoadError` (EROFS). Maps that are not mmapable fall back to one
lookup/update syscall per access.
"""

from __future__ import annotations

import errno as _errno
import mmap
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ._ffi import ffi, lib
from .btf import BTFKind
from .errors import ClosedError, LoadError
from .types import Codec, codec_for

if TYPE_CHECKING:
    from .maps import Map
    from .object import Object

__all__ = ["Section", "Globals"]

BPF_F_MMAPABLE = 1 << 10
BPF_F_RDONLY_PROG = 1 << 7


class Section:
    """The variables of one data section, as attributes (and ``sec["name"]``)."""

    __slots__ = ("_obj", "_map", "_name", "_vars", "_mm", "_size", "_pending", "_readonly")

    def __init__(self, obj: Object, m: Map, name: str, variables: dict[str, tuple[int, Codec]],
                 size: int) -> None:
        sa = object.__setattr__
        sa(self, "_obj", obj)
        sa(self, "_map", m)
        sa(self, "_name", name)
        sa(self, "_vars", variables)
        sa(self, "_mm", None)
        sa(self, "_size", size)
        sa(self, "_pending", {})
        sa(self, "_readonly", name.startswith(".rodata"))

    # --- storage -----------------------------------------------------------------
    def _initial(self) -> Any:
        size = ffi.new("size_t *")
        ptr = lib.bpf_map__initial_value(self._map._ptr, size)
        if ptr == ffi.NULL:
            raise LoadError(_errno.EINVAL, f"section {self._name}: libbpf has no initial value")
        return ffi.buffer(ptr, size[0])

    def _storage(self, write: bool) -> Any:
        obj = self._obj
        if obj.closed:
            raise ClosedError(f"BPF object {obj.name!r} (section {self._name})")
        if not obj.loaded:
            return self._initial()
        if write and self._readonly:
            raise LoadError(_errno.EROFS, f"{obj.name}: {self._name} is frozen after load "
                                          "(const volatile globals are set before load)")
        mm = self._mm
        if mm is None:
            mm = self._map_memory()
        return mm

    def _map_memory(self) -> Any:
        m = self._map
        if not m.flags & BPF_F_MMAPABLE:
            return None
        prot = mmap.PROT_READ | (0 if self._readonly else mmap.PROT_WRITE)
        page = mmap.PAGESIZE
        length = (self._size + page - 1) // page * page
        mm = mmap.mmap(m.fd, length, flags=mmap.MAP_SHARED, prot=prot)
        object.__setattr__(self, "_mm", mm)
        return mm

    def _read(self, off: int, codec: Codec) -> Any:
        st = self._storage(False)
        if st is None:  # not mmapable: one syscall
            raw = self._map.lookup(bytes(4))
            return codec.decode(raw or bytes(self._size), off)
        return codec.decode(st, off)

    def _write(self, off: int, data: bytes) -> None:
        st = self._storage(True)
        if st is None:
            raw = bytearray(self._map.lookup(bytes(4)) or bytes(self._size))
            raw[off:off + len(data)] = data
            self._map.update(bytes(4), bytes(raw))
            return
        st[off:off + len(data)] = data
        if not self._obj.loaded and self._name == ".bss":
            self._pending[off] = data  # libbpf 1.1 does not copy .bss: done after load

    def _after_load(self) -> None:
        pending = self._pending
        if pending:
            for off, data in pending.items():
                self._write(off, data)
            pending.clear()

    def _close(self) -> None:
        mm = self._mm
        if mm is not None:
            object.__setattr__(self, "_mm", None)
            try:
                mm.close()
            except BufferError:  # a memoryview of it is still alive: the GC closes it
                pass

    # --- attributes --------------------------------------------------------------
    def _var(self, name: str) -> tuple[int, Codec]:
        try:
            return self._vars[name]  # type: ignore[no-any-return]
        except KeyError:
            raise AttributeError(f"{self._obj.name}: section {self._name} has no variable "
                                 f"{name!r} (variables: {', '.join(self._vars) or 'none'})"
                                 ) from None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        off, codec = self._var(name)
        return self._read(off, codec)

    def __setattr__(self, name: str, value: Any) -> None:
        off, codec = self._var(name)
        try:
            data = codec.encode(value, name)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{self._obj.name}: {self._name}: {e}") from None
        self._write(off, data)

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
        return {n: self._read(off, c) for n, (off, c) in self._vars.items()}

    @property
    def map(self) -> Map:
        """The internal map that holds this section."""
        return self._map  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<Section {self._name} of {self._obj.name!r}: {', '.join(self._vars)}>"


class Globals:
    """The data sections of one object, by ELF section name."""

    def __init__(self, obj: Object) -> None:
        self.sections: dict[str, Section] = {}
        try:
            btf = obj.btf
        except Exception:  # noqa: BLE001 - no BTF: no typed globals
            return
        for m in obj.maps.values():
            if not m.internal:
                continue
            vid = int(lib.bpf_map__btf_value_type_id(m._ptr))
            if not vid:
                continue
            sec = btf.types[vid]
            if sec.kind != BTFKind.DATASEC or not sec.name.startswith((".data", ".bss",
                                                                         ".rodata")):
                continue
            variables: dict[str, tuple[int, Codec]] = {}
            for v in sec.members:
                vt = btf.types[v.type]
                if vt.kind != BTFKind.VAR:
                    continue
                variables[vt.name] = (v.offset, codec_for(btf, v.type))
            self.sections[sec.name] = Section(obj, m, sec.name, variables, sec.size or
                                              m.value_size)

    def section(self, name: str, obj_name: str) -> Section:
        try:
            return self.sections[name]
        except KeyError:
            raise AttributeError(f"{obj_name}: no {name} section (sections: "
                                 f"{', '.join(self.sections) or 'none'})") from None

    def after_load(self) -> None:
        for s in self.sections.values():
            s._after_load()

    def close(self) -> None:
        for s in self.sections.values():
            s._close()
