"""Object: an opened ``.bpf.o``, configured, loaded into the kernel, then closed.

Lifecycle (libbpf's): ``Object.open()`` parses the file without touching the
kernel; programs and maps can then be configured (autoload; ``obj.maps[name]`` is
an :class:`~pybpf.OpenMap` with settable sizes; read-only globals); ``load()``
creates the maps and verifies the programs, after which ``obj.maps[name]`` is the
live :class:`~pybpf.Map`; ``attach()`` attaches every program whose section names
its target; ``close()`` closes readers on its maps, detaches the object's links,
closes its maps' fds and frees libbpf's object. An Object is a context manager and
is also closed by the garbage collector.

The libbpf ``bpf_object`` is held by one owner (:class:`pybpf._fd.FD`): every use
of a libbpf pointer borrows it, so ``close()`` from another thread never frees
memory in use; it is freed when the last such use ends.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's C half: no enum conversion
import contextlib
import errno as _errno
import fcntl
import fnmatch
import functools
import os
import re
import signal
import struct
import sys
import threading
import warnings
import weakref
from _thread import RLock as _RLock  # threading.RLock() is a Python call around it
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType, TracebackType
from typing import Any, Union

from . import _sections, _validate, features
from . import mapkinds as _mapkinds  # noqa: F401 - registers the map kinds obj.maps uses
from . import upgrade as _upgrade
from ._args import kconfig_text
from ._fd import FD, Handle, Stage
from ._ffi import capture, error_for, ffi, lib
from ._fs import check_pin_path
from ._maptypes import facts
from ._source import read_regular
from .attach import struct_ops as _struct_ops
from .attach._common import BPF_F_LINK
from .btf import BTF, BTFFormatError, BTFKind
from .errors import (
    AttachError,
    AttachWarning,
    BPFError,
    BPFKeyError,
    BPFTypeError,
    ClosedError,
    LoadError,
    MapError,
    MapTypeError,
    MapValueError,
    NotSupportedError,
    ObjectError,
    StateError,
    UpgradeError,
    VerifierError,
    describe_errno,
)
from .globals import Globals, InternalMaps, Section, c_cast, rodata_variable
from .link import Link
from .maps import Map, OpenMap, possible_cpus
from .program import Program
from .types import codec_for

__all__ = ["Object", "load"]

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]

EM_BPF = 247
_EM_NAMES = {0: "none", 3: "x86 (i386)", 40: "ARM", 62: "x86-64", 183: "AArch64", 243: "RISC-V",
             8: "MIPS", 21: "PowerPC64", 22: "s390"}
_LOG_RE = re.compile(r"-- BEGIN PROG LOAD LOG --\n(.*?)-- END PROG LOAD LOG --", re.S)
_PROG_FAIL_RE = re.compile(r"prog '([^']+)': (?:BPF program load failed|failed to load)")
_MAP_FAIL_RE = re.compile(r"map '([^']+)': failed to create")
_BTF_TARGET_RE = re.compile(r"prog '([^']+)': failed to find (?:kernel )?BTF type ID of '([^']+)'")

# Program types that are run, not attached (BPF_PROG_TYPE_SYSCALL: test_run), or
# attached through their map (struct_ops): attach() has nothing to report about them.
_NEVER_ATTACHED = {"syscall", "struct_ops"}
_ELF64_LE = b"\x7fELF\x02\x01"  # ELF magic, 64-bit, little-endian
_REL_BPF = struct.pack("<HH", 1, EM_BPF)  # e_type ET_REL, e_machine EM_BPF

def _check_elf_header(data: bytes | memoryview, name: str) -> None:
    """Reject what is plainly not a BPF ELF object with a message that says why."""
    if len(data) >= 64 and data[16:20] == _REL_BPF and data[:6] == _ELF64_LE:
        return  # the common case, in two comparisons: a little-endian BPF ET_REL
    if len(data) < 64:
        raise ObjectError(_errno.EINVAL, f"{name}: not a BPF object: {len(data)} bytes is too "
                                         "short for an ELF header", path=name)
    head = bytes(data[:64])
    if head[:4] != b"\x7fELF":
        raise ObjectError(_errno.EINVAL, f"{name}: not a BPF object: not an ELF file "
                                         f"(starts with {head[:4]!r})", path=name)
    if head[4] != 2:
        raise ObjectError(_errno.EINVAL, f"{name}: not a BPF object: 32-bit ELF", path=name)
    endian = "<" if head[5] == 1 else ">"
    e_type, e_machine = struct.unpack_from(endian + "HH", head, 16)
    if e_machine != EM_BPF:
        machine = _EM_NAMES.get(e_machine, f"machine {e_machine}")
        raise ObjectError(_errno.EINVAL, f"{name}: not a BPF object: ELF for {machine} "
                                         f"(e_machine {e_machine}), expected EM_BPF (247)",
                          path=name)
    if e_type != 1:
        raise ObjectError(_errno.EINVAL, f"{name}: not a BPF object: ELF type {e_type}, "
                                         "expected a relocatable object (ET_REL)", path=name)
    if endian != "<":
        if sys.byteorder == "little":
            raise ObjectError(_errno.EINVAL, f"{name}: BPF object is big-endian, this host "
                                             "is little-endian", path=name)


def _check_options(label: str, path: str | None, name: Any, kconfig: Any,
                   btf_custom_path: Any) -> None:
    """Refuse an Object.open option of the wrong type or holding a NUL byte."""
    for what, value, ok in (("name", name, str), ("kconfig", kconfig, (str, Mapping)),
                            ("btf_custom_path", btf_custom_path, (str, os.PathLike))):
        if value is None:
            continue
        if not isinstance(value, ok):
            raise ObjectError(_errno.EINVAL, f"{label}: {what} must be a "
                              + {"name": "str", "kconfig": "str or a mapping"}.get(
                                  what, "path") + f", got {value!r:.60}", path=path)
        if isinstance(value, str) and "\0" in value:
            raise ObjectError(_errno.EINVAL, f"{label}: {what} {value!r:.60} holds a NUL "
                              "byte", path=path)


def _custom_btf_copy(path: str) -> FD:
    """The BTF of ``btf_custom_path``, read once and checked (:func:`_check_custom_btf`),
    in a sealed memfd for libbpf to read at load as ``/proc/self/fd/N``: what libbpf
    relocates against is what was checked, whatever happens to the file meanwhile (it
    is read again only at load, maybe much later). Costs one memfd and one write."""
    raw = _check_custom_btf(path)
    fd = os.memfd_create("pybpf-btf_custom_path", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK
                    | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    except OSError as e:
        os.close(fd)
        raise ObjectError(e.errno or _errno.EIO, f"cannot copy BTF file (btf_custom_path) "
                          f"{path}: {e.strerror}", path=path) from None
    return FD(fd, f"copy of BTF file (btf_custom_path) {path}")


def _check_custom_btf(path: str) -> bytes:
    """The raw BTF of ``btf_custom_path`` (a raw BTF file, or an ELF file's .BTF).
    Refuses a path that is no regular file or whose BTF pybpf's parser finds malformed:
    libbpf 1.1 follows a bad type id in it during CO-RE relocation into a SIGSEGV.
    Costs one read and one C pass over its types (a few ms for a kernel's)."""
    what = "BTF file (btf_custom_path)"
    raw = read_regular(path, what)
    if raw[:4] == b"\x7fELF":
        import io

        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile

        try:
            sec = ELFFile(io.BytesIO(raw)).get_section_by_name(".BTF")
        except (ELFError, ValueError, struct.error) as e:
            raise ObjectError(_errno.EINVAL, f"{what} {path}: unreadable ELF ({e})",
                              path=path) from None
        if sec is None:
            raise ObjectError(_errno.EINVAL, f"{what} {path}: an ELF file without a .BTF "
                              "section", path=path)
        raw = sec.data()
    try:
        BTF.from_bytes(raw)
    except BTFFormatError as e:
        raise ObjectError(_errno.EINVAL, f"{what} {path}: {e}", path=path) from None
    return bytes(raw)

class _ByName(Mapping[str, Any]):
    """A read-only view of an object's programs, maps or sections by name: a name it
    lacks is a BPFKeyError (a KeyError) naming the object and the names it has."""

    __slots__ = ("_items", "_owner", "_kind")

    def __init__(self, items: Mapping[str, Any], owner: str, kind: str) -> None:
        self._items = items
        self._owner = owner
        self._kind = kind

    def __getitem__(self, name: str) -> Any:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            have = ", ".join(map(repr, self._items)) or "none"
            raise BPFKeyError(_errno.ENOENT, f"{self._owner}: no {self._kind} named {name!r:.80} "
                                             f"(its {self._kind}s: {have})") from None

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._items
        except TypeError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"{{{', '.join(f'{k!r}: {v!r}' for k, v in self._items.items())}}}"


class Object(Handle):
    """An opened BPF object file. Use :meth:`open` (or :func:`pybpf.load`)."""

    # Defaults until first set (class attributes: an open that only sets a global
    # does not pay to store them on every instance).
    _load_failed = False
    # The Program and OpenMap wrappers, built on first use (see _programs): an open
    # that only sets a global never builds the programs'.
    _progs_built: dict[str, Program] | None = None
    _open_maps_built: dict[str, OpenMap] | None = None
    _maps: dict[str, Map] | None = None  # the live maps, after load
    _btf: BTF | None = None
    _globals_obj: Globals | None = None
    # Resources built on this object's maps (event readers...): closed first by
    # close(), held weakly (see close_with()); made by close_with().
    _dependents: weakref.WeakSet[Any] | None = None
    _upgrade_from: Object | None = None
    _upgrade_args: Mapping[str, Any] = MappingProxyType({})
    _not_attached: Mapping[str, str] = MappingProxyType({})
    upgrade_report: _upgrade.UpgradeReport | None = None
    """What :meth:`upgrade` did (per map, per link, timings); None otherwise."""

    def __init__(self, ptr: Any, *, name: str, path: str | None, data: bytes,
                 btf_fd: int = -1, memo: dict[str, Any] | None = None) -> None:
        """``ptr``: libbpf's object, opened from ``data`` (kept until it is freed);
        ``btf_fd``: the sealed copy of its btf_custom_path (-1: none), closed after it;
        ``memo``: facts of every object opened from bytes equal to ``data``
        (:class:`pybpf._validate.Passed`), None when they are not kept."""
        # The owner frees libbpf's object (pybpf_object_free: one C call, no Python
        # frame a Ctrl-C could cut short) when close() or the garbage collector closes
        # it and the last use has ended. The closer does not reach the Object: close()
        # detaches the links first; links that die with an unclosed Object are
        # destroyed by their own finalizers, which the collector runs before the
        # owner's (weakref callbacks come before tp_finalize), and at exit.
        owner = FD(-1, f"BPF object {name!r}",
                   closer=functools.partial(lib.pybpf_object_free, ptr, data, btf_fd))
        self._stage = Stage(owner, name)
        self._ptr: Any = ptr  # used only while borrowing self._stage.owner
        self.name = name
        """The object's name (file stem unless ``name=`` was given)."""
        self.path = path
        """The file it was opened from (None when opened from bytes)."""
        self._lock = _RLock()
        self._links: list[Link] = []
        # wrappers built before the others (a .rodata write builds only its map's),
        # by libbpf's map pointer address: _open_maps adopts them
        self._open_maps_early: dict[int, OpenMap] = {}
        self._memo = memo

    # --- opening ------------------------------------------------------------------
    @classmethod
    def open(cls, source: Source, *, btf_custom_path: str | os.PathLike[str] | None = None,
             kconfig: str | Mapping[str, str | int | bool] | None = None,
             pin_root_path: str | os.PathLike[str] | None = None,
             name: str | None = None, upgrade_from: Object | None = None,
             migrate: Mapping[str, _upgrade.Migration] | None = None,
             reattach: Mapping[str, Callable[[Program], Link]] | None = None) -> Object:
        """Parse a BPF object from a path or from bytes; does not touch the kernel.

        ``kconfig`` supplies ``CONFIG_*`` values for ``extern ... __kconfig``
        (a dict or "CONFIG_X=y" lines); ``btf_custom_path`` replaces the kernel's
        BTF for CO-RE; ``pin_root_path`` is where maps marked for pinning go.
        A path must name a regular file of at most 256 MiB
        (``pybpf._source.MAX_OBJECT_SIZE``): a FIFO, device, socket, directory or
        larger file is an :class:`ObjectError` before anything is read.

        ``upgrade_from=old`` (a loaded Object) makes :meth:`load` a live upgrade of
        ``old`` to this build (see :meth:`upgrade`; ``migrate`` and ``reattach`` as
        there); the name defaults to ``old``'s, so that internal maps match.
        """
        if upgrade_from is not None and not isinstance(upgrade_from, Object):
            raise ObjectError(_errno.EINVAL, "Object.open: upgrade_from must be the loaded "
                              f"Object to upgrade, got {type(upgrade_from).__name__}")
        if upgrade_from is not None and name is None:
            name = upgrade_from.name
        path: str | None = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            label = name or "<memory>"
        else:
            try:
                path = os.fspath(source)
            except TypeError:
                raise ObjectError(_errno.EINVAL, f"Object.open: expected a path or the bytes "
                                  f"of an object, got {type(source).__name__}") from None
            label = path
            data = read_regular(path, "BPF object file")
        _check_elf_header(data, label)
        section_names = _validate.check_object(data, label)
        obj_name = name
        if obj_name is None:
            obj_name = os.path.basename(path).split(".")[0] if path else "object"
        btf_copy: FD | None = None
        if (kconfig is not None or btf_custom_path is not None
                or name is not None and (type(name) is not str or "\0" in name)):
            _check_options(label, path, name, kconfig, btf_custom_path)
        kconfig_c = pin_c = btf_c = ffi.NULL
        if kconfig is not None:
            kconfig_c = kconfig_text(kconfig, f"{label}: kconfig").encode()
        if pin_root_path is not None:
            pin_c = check_pin_path(pin_root_path, f"object {obj_name!r}: pin_root_path").encode()
        if btf_custom_path is not None:
            btf_copy = _custom_btf_copy(os.fspath(btf_custom_path))
            btf_c = f"/proc/self/fd/{btf_copy.get()}".encode()
        # section names newer than libbpf (what it makes of these bytes: kept with them)
        memo = getattr(section_names, "memo", None)
        adapted = memo.get("for_libbpf") if memo is not None else None
        if adapted is None:
            adapted = _sections.for_libbpf(data, section_names)
            if memo is not None:
                memo["for_libbpf"] = adapted
        data, link_maps = adapted
        with capture() as log:  # one C call: the options struct is built in C
            ptr = lib.pybpf_object_open(data, len(data), obj_name.encode(), kconfig_c, pin_c,
                                        btf_c)
        if ptr == ffi.NULL:
            err = ffi.errno or _errno.EINVAL
            if btf_copy is not None:
                btf_copy.close()
            raise error_for(err, f"cannot open BPF object {label}", kind=ObjectError, log=log,
                            path=path)
        if link_maps:
            _sections.after_open(ptr, link_maps)
        obj = cls(ptr, name=obj_name, path=path, data=data,
                  btf_fd=-1 if btf_copy is None else btf_copy.detach(), memo=memo)
        if upgrade_from is not None:
            if not isinstance(upgrade_from, Object):
                obj.close()
                raise TypeError(f"upgrade_from must be a loaded pybpf.Object, got "
                                f"{type(upgrade_from).__name__}")
            obj._upgrade_from = upgrade_from
            obj._upgrade_args = {"migrate": dict(migrate or {}),
                                 "reattach": dict(reattach or {})}
        return obj

    def __repr__(self) -> str:
        if self.closed:
            return f"<Object {self.name!r} closed>"
        state = "loaded" if self.loaded else "opened"
        return (f"<Object {self.name!r} {state}: {len(self._programs)} programs, "
                f"{len(self._open_maps)} maps>")

    # --- the wrappers, built once on first use (ClosedError if first used after close)
    @property
    def _programs(self) -> dict[str, Program]:
        progs = self._progs_built
        if progs is None:
            with self._lock, self._stage.owner:
                progs = self._progs_built
                if progs is None:
                    progs = {}
                    ptr = self._ptr
                    p = lib.bpf_object__next_program(ptr, ffi.NULL)
                    while p != ffi.NULL:
                        prog = Program(self, p)
                        progs[prog.name] = prog
                        p = lib.bpf_object__next_program(ptr, p)
                    self._progs_built = progs
        return progs

    @property
    def _open_maps(self) -> dict[str, OpenMap]:
        maps = self._open_maps_built
        if maps is None:
            with self._lock, self._stage.owner:
                maps = self._open_maps_built
                if maps is None:
                    maps = {}
                    ptr, stage, early = self._ptr, self._stage, self._open_maps_early
                    m = lib.bpf_object__next_map(ptr, ffi.NULL)
                    while m != ffi.NULL:
                        om = early.get(int(ffi.cast("uintptr_t", m))) or OpenMap(stage, m)
                        maps[om.name] = om
                        m = lib.bpf_object__next_map(ptr, m)
                    self._open_maps_built = maps
                    early.clear()
        return maps

    # --- inventory ----------------------------------------------------------------
    @property
    def owner(self) -> FD:
        """The owner of libbpf's ``bpf_object``: ``with obj.owner:`` keeps it (and every
        libbpf pointer into it) alive for a call of your own; ClosedError once closed."""
        return self._stage.owner

    @property
    def loaded(self) -> bool:
        """True once :meth:`load` succeeded."""
        return self._stage.loaded

    @property
    def programs(self) -> Mapping[str, Program]:
        """Programs by name, in libbpf's order (read-only mapping)."""
        self._stage.owner.get()  # ClosedError once closed
        return _ByName(self._programs, f"BPF object {self.name!r}", "program")

    @property
    def maps(self) -> Mapping[str, Any]:
        """Maps by name in libbpf's order, internal ones (.rodata, .bss...) included:
        before load each is an :class:`~pybpf.OpenMap` (settable description, no fd),
        after load the live :class:`~pybpf.Map` of its kind (maps that load did not
        create, autocreate off, are left out). Typed ``Any``: which of the two a value
        is depends on the object's state, not on the call."""
        self._stage.owner.get()  # ClosedError once closed
        live = self._maps
        return _ByName(self._open_maps if live is None else live, f"BPF object {self.name!r}",
                       "map")

    @property
    def links(self) -> list[Link]:
        """Links attached through this object's programs and still attached."""
        return list(self._links)

    @property
    def btf(self) -> BTF:
        """The object's own BTF (types of its maps, globals and events). Shared with
        the other objects opened from the same bytes (:meth:`BTF.shared`): its types
        are built once. Reopening bytes kept as validated (:mod:`pybpf._validate`, up
        to 4 MiB) costs nothing more (libbpf's open makes the same BTF of the same
        bytes), others a comparison of libbpf's BTF with the earlier opens'."""
        btf = self._btf
        if btf is None:
            memo = self._memo
            btf = memo.get("btf") if memo is not None else None
            if btf is not None:
                self._stage.owner.get()  # ClosedError once closed
            else:
                with self._stage.owner:
                    b = lib.bpf_object__btf(self._ptr)
                    if b == ffi.NULL:
                        raise ObjectError(_errno.ENOENT, f"BPF object {self.name!r} has "
                                          "no BTF")
                    size = ffi.new("__u32 *")
                    raw = lib.btf__raw_data(b, size)
                    # compared in place with the BTF of earlier opens (copied when new)
                    btf = BTF.shared(ffi.buffer(raw, size[0]))
                if memo is not None:
                    memo["btf"] = btf
            self._btf = btf
        return btf

    @property
    def closed(self) -> bool:
        return bool(self._stage.owner.closed)

    # --- global variables (pybpf.globals) -----------------------------------------------
    def _globals(self) -> Globals:
        g = self._globals_obj
        if g is None:
            self._stage.owner.get()  # ClosedError once closed
            try:
                btf: BTF | None = self.btf
            except ClosedError:
                raise
            except Exception:  # noqa: BLE001 - no BTF: no typed globals
                btf = None
            with self._lock:
                g = self._globals_obj
                if g is None:
                    g = self._globals_obj = Globals(
                        self._stage, btf, self._internal_vids(),
                        InternalMaps(self._internal_map, self._initial_value,
                                     self._write_initial_value))
                    if self._maps is not None:
                        g.after_load(self._maps)
        return g

    @property
    def sections(self) -> Mapping[str, Section]:
        """Data sections by ELF name (``.rodata``, ``.bss``, ``.data``, ``.data.custom``)."""
        return _ByName(self._globals().sections, f"BPF object {self.name!r}",
                       "global-variable section")

    @property
    def rodata(self) -> Section:
        """``const volatile`` globals: settable before load, read-only after."""
        return self._globals().section(".rodata", self.name)

    @property
    def bss(self) -> Section:
        """Zero-initialized globals, read/written live after load (mmap of the map)."""
        return self._globals().section(".bss", self.name)

    @property
    def data(self) -> Section:
        """Initialized globals, read/written live after load (mmap of the map).
        An object without a ``.data`` section raises :class:`ObjectError` (ENOENT)
        naming the sections it has (as do ``rodata`` and ``bss``)."""
        return self._globals().section(".data", self.name)

    def set_rodata(self, name: str, value: int | bool | bytes) -> None:
        """Set a ``const volatile`` global (in ``.rodata``) before load.

        Ints are encoded by the variable's BTF size and signedness (a negative int
        for an unsigned variable is C's cast: ``-1`` sets all ones, as ``(uid_t)-1``);
        bytes must fit its size. Typed access to all globals is ``obj.rodata``.
        """
        self._stage.owner.get()  # ClosedError once closed
        if self.loaded:
            raise StateError(f"{self.name}: cannot set {name!r}: read-only globals (.rodata) "
                             "can only be set before load (the kernel freezes them at load)")
        btf = self.btf
        found = rodata_variable(btf, self._internal_vids(), name)  # cached per shared BTF
        if found is not None:
            index, offset, var_type, var_size, var_kind = found
            try:
                if isinstance(value, (bytes, bytearray)):
                    if len(value) > var_size:
                        raise ValueError(f"{name!r} holds {var_size} bytes, got "
                                         f"{len(value)}")
                    enc = bytes(value).ljust(var_size, b"\0")
                elif isinstance(value, int):
                    if var_kind not in (BTFKind.INT, BTFKind.ENUM, BTFKind.ENUM64):
                        raise TypeError(f"{name!r} is a {var_kind.name.lower()}, not an "
                                        "integer")
                    codec = codec_for(btf, var_type)  # the one encoder of the variable
                    enc = codec.encode(c_cast(codec, int(value)), repr(name))
                else:
                    raise TypeError(f"set_rodata({name!r}): value must be int, bool or "
                                    "bytes")
            except (TypeError, ValueError) as e:
                if isinstance(e, BPFError):
                    raise
                kind = MapTypeError if isinstance(e, TypeError) else MapValueError
                raise kind(f"{self.name}: .rodata: {e}", map=self._internal_map(index).name,
                           field=name) from None
            self._write_initial_value(index, offset, enc)
            return
        raise BPFKeyError(_errno.ENOENT, f"BPF object {self.name!r}: no read-only global named "
                                         f"{name!r}")

    def _internal_vids(self) -> tuple[int, ...]:
        """The BTF value type id (DATASEC) of each internal map (global-variable
        section), in libbpf's order (:meth:`_internal_map` gets one by its index). The
        same for every open of the same bytes: kept in their memo. Two C calls, no
        syscall; no wrapper built."""
        memo = self._memo
        vids: tuple[int, ...] | None = memo.get("internal_vids") if memo is not None else None
        if vids is None:
            with self._stage.owner:
                n = lib.pybpf_internal_maps(self._ptr, ffi.NULL, 0)
                arr = ffi.new("__u32[]", max(n, 1))
                lib.pybpf_internal_maps(self._ptr, arr, n)
            vids = tuple(arr[0:n])
            if memo is not None:
                memo["internal_vids"] = vids
        return vids

    def _internal_map(self, index: int) -> OpenMap:
        """The wrapper of internal map ``index`` (see :meth:`_internal_vids`). Before the
        other maps' wrappers exist it is built alone (one C call), for _open_maps to
        adopt: an open that sets a global builds no other wrapper."""
        with self._stage.owner:
            m = lib.pybpf_internal_map(self._ptr, index)
        if m == ffi.NULL:
            raise ObjectError(_errno.ENOENT, f"BPF object {self.name!r}: no internal map "
                              f"#{index}")
        addr = int(ffi.cast("uintptr_t", m))
        # Every wrapper exists once _open_maps is built (it is by load): then found
        # without the object's lock, which Globals may not take under its own (close()
        # holds the object's lock while it closes the globals).
        built = self._open_maps_built
        if built is None:
            wrapper = self._open_maps_early.get(addr)
            if wrapper is not None:
                return wrapper
            with self._lock:  # _open_maps adopts the early wrappers under it
                built = self._open_maps_built
                if built is None:
                    return self._open_maps_early.setdefault(
                        addr, OpenMap(self._stage, m, internal=True))
        return next(om for om in built.values()
                    if int(ffi.cast("uintptr_t", om.libbpf_ptr)) == addr)

    def _initial_value(self, index: int) -> bytes:
        """A copy of internal map ``index``'s initial value (before load)."""
        size = ffi.new("size_t *")
        with self._stage.owner:
            cur = lib.pybpf_internal_initial_value(self._ptr, index, size)
            return b"" if cur == ffi.NULL else bytes(ffi.buffer(cur, size[0]))

    def _write_initial_value(self, index: int, offset: int, data: bytes) -> None:
        """Overwrite ``data`` at ``offset`` of internal map ``index``'s initial value
        (before load): one C call, no wrapper of the map."""
        with self._stage.owner:
            ok = offset >= 0 and lib.pybpf_write_internal(self._ptr, index, offset, data,
                                                          len(data)) == 0
        if not ok:
            name = self._internal_map(index).name
            raise MapError(_errno.EINVAL, f"map {name!r}: initial value out of range "
                           f"({len(data)} bytes at {offset})", map=name)

    # --- choosing programs (before load) --------------------------------------------
    def select_programs(self, include: str | Iterable[str] | None = None, *,
                        exclude: str | Iterable[str] = ()) -> list[str]:
        """Choose which programs ``load()`` loads, as a C front end does with
        ``bpf_program__set_autoload``: only those matching ``include`` (names or
        ``fnmatch`` patterns; None: every program) and none matching ``exclude``.
        Returns the names that will load. A pattern that matches no program is a
        KeyError naming the object's programs; StateError after load. No syscall."""
        self._stage.owner.get()  # ClosedError once closed
        if self.loaded:
            raise StateError(f"BPF object {self.name!r} is loaded: programs can only be "
                             "chosen before load")
        who = f"BPF object {self.name!r}: select_programs"
        inc = None if include is None else _patterns(include, who)
        exc = _patterns(exclude, who)
        names = list(self._programs)
        for pat in (inc or []) + exc:
            if not fnmatch.filter(names, pat):
                raise BPFKeyError(_errno.ENOENT, f"{self.name}: no program matches {pat!r} "
                                                 f"(programs: {', '.join(names)})")
        chosen = []
        for name, prog in self._programs.items():
            on = (inc is None or any(fnmatch.fnmatchcase(name, p) for p in inc)) and \
                not any(fnmatch.fnmatchcase(name, p) for p in exc)
            prog.autoload = on
            if on:
                chosen.append(name)
        return chosen

    def alternatives(self) -> list[list[Program]]:
        """Groups of programs that reach the same kernel event in different ways
        (``tp_btf/X``, ``raw_tp/X``, ``tracepoint/*/X``; ``fentry/f`` and ``kprobe/f``;
        ``fexit/f`` and ``kretprobe/f``), most capable way first. Loading and
        attaching a whole group counts each event once per way. Programs on one
        event through the same way (two ``tp_btf/X``) are not alternatives."""
        return [[p for _, p in g] for g in self._event_groups()]

    def _event_groups(self) -> list[list[tuple[int, Program]]]:
        """(rank, program) of each event reached in more than one way, best rank first
        (programs that reach it the same way are not alternatives of each other)."""
        groups: dict[tuple[str, str], list[tuple[int, Program]]] = {}
        for prog in self._programs.values():
            ev = _sections.event_of(prog.section)
            if ev is not None:
                groups.setdefault(ev[0], []).append((ev[1], prog))
        return [sorted(g, key=lambda x: x[0]) for g in groups.values()
                if len({rank for rank, _ in g}) > 1]

    def choose_alternatives(self) -> dict[str, str]:
        """Of each group of :meth:`alternatives` whose members would all load, keep
        the most capable way the running kernel supports (probed: ``pybpf.features``)
        and turn ``autoload`` off for the others, as libbpf-tools' front ends do
        (runqlat: tp_btf when the kernel has it, else raw_tp). Returns
        ``{disabled program: kept program}``; StateError after load."""
        if self.loaded:
            raise StateError(f"BPF object {self.name!r} is loaded: programs can only be "
                             "chosen before load")
        dropped: dict[str, str] = {}
        for group in self._event_groups():
            live = [(rank, p) for rank, p in group if p.autoload]
            if len({rank for rank, _ in live}) < 2:
                continue
            best = next(((rank, p) for rank, p in live if features.for_program(p) is None
                         or features.for_program(p)), live[0])
            for rank, p in live:  # every program of the chosen way stays
                if rank != best[0]:
                    p.autoload = False
                    dropped[p.name] = best[1].name
        return dropped

    # --- load / attach / close ------------------------------------------------------
    def load(self) -> Object:
        """Create the maps and load the programs into the kernel (returns self).

        A rejected program raises :class:`VerifierError` with the verifier log and
        the failing source line; other failures raise :class:`LoadError`,
        :class:`NotSupportedError` or :class:`BPFPermissionError`. An object opened
        with ``upgrade_from=old`` takes over from ``old`` here (see :meth:`upgrade`).
        """
        old = self._upgrade_from
        if old is not None:
            self._upgrade_from = None
            self.upgrade_report = _upgrade.upgrade_object(self, old, **self._upgrade_args)
            return self
        with self._lock:
            stage = self._stage
            with stage.owner:  # ClosedError once closed; close() waits for the lock
                if self.loaded:
                    raise StateError(f"BPF object {self.name!r} is already loaded",
                                     err=_errno.EALREADY)
                if self._load_failed:
                    raise StateError(f"BPF object {self.name!r}: a failed load cannot be "
                                     "retried; open the object again", err=_errno.EINVAL)
                for om in self._open_maps.values():
                    om.record_btf_ids()
                self._check_map_sizes()
                self._check_map_memory()
                with capture() as log:
                    err = lib.bpf_object__load(self._ptr)
                if err:
                    self._load_failed = True
                    raise self._load_error(-err, log)
                live: dict[str, Map] = {}
                try:
                    for name, om in self._open_maps.items():
                        m = om.loaded_map(self)  # OpenMap.reuse(): that map itself
                        if m is not None:
                            live[name] = m
                except BaseException:
                    for m in live.values():
                        if m.object is self:
                            m.owner.close()
                    raise
            self._maps = live
            stage.loaded = True
            g = self._globals_obj
            if g is not None:
                g.after_load(live)
        return self

    def _check_map_sizes(self) -> None:
        """Refuse, before any syscall, a map whose size the object leaves to the loader
        (``max_entries``, ``key_size`` or ``value_size`` 0, as libbpf-tools' stack maps
        leave ``max_entries``): the
        kernel would only say EINVAL. The error names the map, the attribute and how
        to set it."""
        for m in self._open_maps.values():
            if not m.autocreate or m.reused or m.internal:
                continue
            mtype = m.type
            f = facts(mtype)
            for attr, zero_ok in (("max_entries", f.zero_entries),
                                  ("key_size", not f.key_size),
                                  ("value_size", not f.value_size)):
                if zero_ok or getattr(m, attr):
                    continue
                raise LoadError(
                    _errno.EINVAL,
                    f"cannot create map {m.name!r} ({mtype}) of {self.name}: its {attr} is 0 "
                    "(the object leaves it for the loader to set): set "
                    f"obj.maps[{m.name!r}].{attr} = N before load (C: bpf_map__set_{attr}; "
                    f"pybpf run: --{attr.replace('_', '-')} {m.name}=N)",
                    map=m.name)

    def _check_map_memory(self) -> None:
        """Refuse maps that would preallocate more than half the free memory (see _validate)."""
        maps = []
        for m in self._open_maps.values():
            if not m.autocreate or m.reused:
                continue  # not created by this load (disabled, or a reused pinned map)
            maps.append((m.name, m.type, m.key_size, m.value_size, m.max_entries, m.flags))
        _validate.check_map_memory(maps, self.name, possible_cpus())

    def _load_error(self, err: int, log: list[str]) -> BPFError:
        text = "\n".join(log)
        prog_name = None
        for line in log:
            m = _PROG_FAIL_RE.search(line)
            if m:
                prog_name = m.group(1)
                break
        for line in log:
            t = _BTF_TARGET_RE.search(line)
            if t:  # the target is missing, whatever the hook's support: say that
                prog_name, target = t.group(1), t.group(2)
                p = self._programs.get(prog_name)
                sec = f" (section {p.section!r})" if p is not None else ""
                return LoadError(err, f"cannot load program {prog_name!r} of {self.name}: its "
                                 f"attach target {target!r}{sec} is not in the kernel's BTF: "
                                 f"{describe_errno(err)}", program=prog_name, libbpf_log=log)
        prog = self._programs.get(prog_name) if prog_name else None
        hint = prog.load_hint(err) if prog is not None else None
        vlog = _LOG_RE.search(text)
        vtext = vlog.group(1) if vlog else ""
        if prog is not None and not vtext.strip():
            # libbpf prints no log that went to a program's own buffer (log_level set)
            vtext = prog.log_buffer_text or ""
        if prog_name and hint is None and vtext.strip():
            errno_ = err if err < 4000 else _errno.EINVAL
            return VerifierError(errno_, prog_name, vtext, libbpf_log=log)
        if prog_name:
            if hint is not None:
                return LoadError(err, f"cannot load program {prog_name!r} of {self.name}: "
                                 f"{hint}", program=prog_name, libbpf_log=log)
            feat = features.for_program(prog) if prog is not None else None
            if feat is not None and not feat and err in (_errno.EPERM, _errno.EINVAL,
                                                         _errno.EOPNOTSUPP, 524, _errno.ESRCH):
                return NotSupportedError(
                    f"cannot load program {prog_name!r} ({prog.type if prog else '?'}) of "
                    f"{self.name}: {feat.reason} (this load: {describe_errno(err)})",
                    reason=feat.reason, err=err, program=prog_name, libbpf_log=log)
            return error_for(err, f"cannot load program {prog_name!r} of {self.name}",
                             kind=LoadError, program=prog_name, log=log)
        for line in log:
            mm = _MAP_FAIL_RE.search(line)
            if mm:
                name = mm.group(1)
                failed = self._open_maps.get(name)
                mtype = failed.type if failed is not None else None
                if err in (_errno.EINVAL, _errno.EOPNOTSUPP, 524) and mtype is not None:
                    if features.map_types().get(mtype) is False:
                        return NotSupportedError(
                            f"cannot create map {name!r} of {self.name}: the kernel has no "
                            f"{mtype} maps", reason=f"the kernel has no {mtype} maps "
                            "(libbpf_probe_bpf_map_type)", err=err, map=name, libbpf_log=log)
                return error_for(err, f"cannot create map {name!r} of {self.name}",
                                 kind=LoadError, map=name, log=log)
        return error_for(err, f"cannot load BPF object {self.name}", kind=LoadError, log=log)

    def attach(self, *, strict: bool = False) -> list[Link]:
        """Attach every loaded program whose section names its target (auto-attach).

        A loaded program that cannot auto-attach (its hook needs an argument: XDP,
        tc, cgroup, a uprobe whose section names no binary such as
        ``SEC("uretprobe/readline")``...) is reported, never skipped in silence:
        :attr:`not_attached` maps it to the reason and the call to make, and an
        :class:`~pybpf.AttachWarning` says so; with ``strict=True`` it is an
        :class:`AttachError` raised before anything is attached. Programs whose
        ``autoattach`` was turned off are left alone without a word. Every
        ``SEC(".struct_ops.link")`` map is registered too (a BPF link each: unregistered
        when the link or the object closes; plain ``SEC(".struct_ops")`` maps with
        :meth:`attach_struct_ops`). A failure undoes this call's attachments.
        """
        if not self.loaded:
            self.load()
        todo: list[Program] = []
        skipped: dict[str, str] = {}
        for prog in self._programs.values():
            if not prog.autoload or not prog.autoattach:
                continue
            if prog.auto_attachable:
                todo.append(prog)
            elif prog.type not in _NEVER_ATTACHED:
                method = _sections.method_for(prog.section, prog.type) or "attach"
                skipped[prog.name] = (f"section {prog.section!r} names no target to attach "
                                      f"to: call programs[{prog.name!r}].{method}(...)")
        self._not_attached = skipped
        if skipped:
            text = "; ".join(f"{n!r}: {why}" for n, why in skipped.items())
            if strict:
                raise AttachError(_errno.EINVAL, f"BPF object {self.name!r}: programs that "
                                  f"cannot auto-attach: {text}", program=next(iter(skipped)))
            warnings.warn(f"BPF object {self.name!r}: not attached (no auto-attach target): "
                          f"{text} (set prog.autoattach = False to attach it yourself "
                          "without this warning)", AttachWarning, stacklevel=2)
        links: list[Link] = []
        try:
            for prog in todo:
                links.append(prog.attach_auto())
            for name, spec in self._open_maps.items():
                if spec.type == "struct_ops" and spec.flags & BPF_F_LINK and spec.autocreate:
                    links.append(self.attach_struct_ops(name))
        except BaseException:
            for link in links:  # all or nothing: undo this call's attachments
                link.detach()
            raise
        return links

    @property
    def not_attached(self) -> Mapping[str, str]:
        """Programs the last :meth:`attach` left unattached because they cannot
        auto-attach, with the reason and the method to call."""
        return MappingProxyType(self._not_attached)

    def libbpf_map(self, map_name: str) -> Any:
        """libbpf's ``struct bpf_map *`` for ``map_name`` (a cffi pointer): the escape
        hatch to libbpf's own API. Valid while the object is open: borrow
        :attr:`owner` (``with obj.owner:``) around its use."""
        self.owner.get()  # ClosedError once closed
        try:
            return self._open_maps[map_name].libbpf_ptr
        except KeyError:
            raise BPFKeyError(_errno.ENOENT, f"BPF object {self.name!r}: no map named "
                                             f"{map_name!r}") from None

    def attach_struct_ops(self, map_name: str) -> Link:
        """Register the loaded struct_ops map ``map_name``: a link for BPF_F_LINK
        (``SEC(".struct_ops.link")``) maps, else libbpf's value write (a few syscalls)."""
        with self.owner:
            live = self.maps[map_name]
            if live.type != "struct_ops":
                raise MapError(_errno.EINVAL, f"BPF object {self.name!r}: map {map_name!r} is a "
                               f"{live.type} map, not a struct_ops map", map=map_name)
            with live.owner as fd:
                link = _struct_ops.attach_struct_ops(self.libbpf_map(map_name), fd, map_name)
        return self._adopt_link(link)

    def _adopt_link(self, link: Link) -> Link:
        """Make ``link`` (just attached through one of this object's programs) one that
        close() detaches. When close() came first (the attach borrowed the object while
        close() ran in another thread), the link is detached here and ClosedError
        raised: no link outlives its object's close."""
        with self._lock:  # close() holds it from detaching the links to the owner's close
            closed = self._stage.owner.closed
            if not closed:
                link.held_by(self)
                self._links.append(link)
        if closed:
            link.detach()
            raise ClosedError(f"BPF object {self.name!r}")
        return link

    def link_detached(self, link: Link) -> None:
        """Called by :meth:`Link.detach` of a link this object made: forget it."""
        try:
            self._links.remove(link)
        except ValueError:
            pass

    # --- live upgrade (pybpf.upgrade) -------------------------------------------------
    def upgrade(self, source: Source, *, rodata: Mapping[str, Any] | None = None,
                migrate: Mapping[str, _upgrade.Migration] | None = None,
                reattach: Mapping[str, Callable[[Program], Link]] | None = None,
                **open_options: Any) -> Object:
        """Replace this running object by a new build of it (``source``), losing no
        event, packet or counter; returns the new live object (its
        :attr:`upgrade_report` says what happened to each map and link). This object
        is closed when it succeeds, and stays live and attached when it fails.

        Maps with the same name and BTF layout are reused (contents, ring buffers and
        their consumers included); changed value layouts are migrated by member name;
        a changed key layout or map type is refused (:class:`UpgradeError` naming
        map, field and reason) before anything changes, unless ``migrate[name]``
        converts the raw entries. Links are switched atomically where the kernel can
        (XDP, tcx, cgroup, netns...), else attached anew (``reattach[program]``
        attaches one whose section does not name its target) with the generation
        guard of ``pybpf_common.h`` deciding which version works. ``rodata`` sets the
        new build's read-only globals. Costs: a load, a walk of each migrated map
        (twice), one syscall per link, two RCU grace periods.
        """
        self._stage.owner.get()  # ClosedError once closed
        if not self.loaded:
            raise UpgradeError(f"cannot upgrade BPF object {self.name!r}: it is not loaded "
                               "(an upgrade replaces a running object; load() this one)")
        new = Object.open(source, upgrade_from=self, migrate=migrate, reattach=reattach,
                          **open_options)
        try:
            for k, v in (rodata or {}).items():
                new.rodata[k] = v
            new.load()
        except BaseException:
            new.close()  # leaves the maps it reused from this object alone
            raise
        return new

    def take_over(self, old: Object | None, links: Iterable[Link] = ()) -> None:
        """Make this object the holder of what it shares with ``old`` (the end of a live
        upgrade): every map it reuses from ``old`` (:meth:`OpenMap.reuse`), the
        ``links`` of ``old`` given (updated in place to this object's programs) and
        the resources ``old`` would close (:meth:`close_with`: readers on its maps).
        Closing ``old`` then leaves them alone; closing this object closes them.
        ``old=None`` takes over the reused maps no object holds (opened by pin or id).
        No syscall."""
        if not self.loaded:
            raise StateError(f"BPF object {self.name!r}: take_over() after load (the maps "
                             "it reuses are known then)")
        if old is not None and not isinstance(old, Object):
            raise BPFTypeError(_errno.EINVAL, f"BPF object {self.name!r}: take_over() takes the "
                                              f"old Object (or None), got {type(old).__name__}")
        links = list(links)
        if not all(isinstance(lk, Link) for lk in links):
            raise BPFTypeError(_errno.EINVAL, f"BPF object {self.name!r}: take_over() links "
                                              "must be Link objects")
        foreign = [lk for lk in links if old is None or lk not in old._links]
        if foreign:
            raise ValueError(f"BPF object {self.name!r}: take_over(): {foreign[0]!r} is "
                             f"not a link of {old.name if old else 'the old object'!r}")
        with old._lock if old is not None else contextlib.nullcontext():
            for m in (self._maps or {}).values():
                if m.object is old and m.object is not self:
                    m.held_by(self)
            if old is None:
                return
            if old._maps is not None:
                for name in [n for n, m in old._maps.items() if m.object is self]:
                    del old._maps[name]
            for link in links:
                old.link_detached(link)
                self._adopt_link(link)
            for dep in list(old._dependents or ()):
                old._dependents.discard(dep)  # type: ignore[union-attr]  # not None here
                self.close_with(dep)

    def close_with(self, resource: Any) -> None:
        """Close ``resource`` (anything with a ``close()``) when this object closes,
        before its maps go: an event reader on one of its maps, for instance. Held
        weakly: a resource that is garbage-collected earlier is simply forgotten."""
        if not callable(getattr(resource, "close", None)):
            raise BPFTypeError(_errno.EINVAL, f"BPF object {self.name!r}: close_with() takes "
                                              "something with a close() method, got "
                                              f"{type(resource).__name__}")
        with self._lock:
            if self._dependents is None:
                self._dependents = weakref.WeakSet()
            self._dependents.add(resource)

    def close(self) -> None:
        """Close readers on its maps (:meth:`close_with`), close the global-variable
        mmaps and the maps' fds, detach this object's links, then free libbpf's object
        (idempotent, from any thread). New calls on any of them raise ClosedError from
        now on; calls in flight finish first, and each fd or pointer is released when
        the last one ends. A Ctrl-C (SIGINT) that arrives during close() does not cut
        it short: close finishes, then the KeyboardInterrupt is raised, or dropped
        when one is already propagating (the second Ctrl-C of an impatient user).
        Closing an object that was never loaded, with nothing to close with it, is one
        C call (no Python code runs for a Ctrl-C to cut in)."""
        with self._lock:
            if self._maps is None and self._dependents is None and not self._links:
                # nothing of Python's to tear down (load holds the lock: none comes now)
                self._stage.owner.close()  # pybpf_object_free once no call is in flight
                return
        with _sigint_deferred(), self._lock:
            owner = self._stage.owner
            if owner.closed:
                return
            try:
                for dep in list(self._dependents or ()):
                    dep.close()  # ring/perf buffers on its maps: wakes blocked poll()/read()
                g = self._globals_obj
                if g is not None:
                    g.close()
                for m in (self._maps or {}).values():
                    if m.object is self:  # not one reused from a holder (OpenMap.reuse)
                        m.owner.close()
                for link in list(self._links):
                    link.detach()
            finally:
                owner.close()  # pybpf_object_free once no call is in flight

    def __enter__(self) -> Object:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _sigint_deferred:  # noqa: N801 - used as a context manager, like a function
    """Hold SIGINT back for the block (main thread, default handler only): teardown is
    never cut in the middle of a link's detach. After the block a held SIGINT raises
    KeyboardInterrupt, unless one is already being handled. Costs ~2 us (the C
    ``_signal`` calls: ``signal.signal`` converts to enums, five times slower)."""

    __slots__ = ("held", "old")

    def __enter__(self) -> None:
        self.old: Any = None
        if (threading.get_ident() != threading.main_thread().ident
                or _signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
            return
        held: list[int] = []
        self.held = held
        self.old = _signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.old is None:
            return
        _signal.signal(signal.SIGINT, self.old)
        if self.held and ev is None and not isinstance(sys.exc_info()[1], KeyboardInterrupt):
            raise KeyboardInterrupt


def _patterns(value: str | Iterable[str], who: str) -> list[str]:
    """Names or fnmatch patterns: one str or an iterable of them."""
    if isinstance(value, str):
        return [value]
    try:
        pats = list(value)
    except TypeError:
        pats = [value]  # type: ignore[list-item]
    for p in pats:
        if not isinstance(p, str):
            raise BPFTypeError(_errno.EINVAL, f"{who}: a program name or pattern must be a "
                                              f"str, got {type(p).__name__} {p!r:.60}")
    return pats


def load(source: Source, **options: Any) -> Object:
    """Open and load in one step: ``pybpf.load("probe.bpf.o")``."""
    obj = Object.open(source, **options)
    try:
        obj.load()
    except BaseException:
        obj.close()
        raise
    return obj
