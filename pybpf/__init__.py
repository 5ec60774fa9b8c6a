"""pybpf: load ahead-of-time compiled CO-RE eBPF objects with the system libbpf.

    import pybpf
    with pybpf.load("probe.bpf.o") as obj:
        obj.attach()
        ...

The objects: :class:`Object` (a .bpf.o, opened then loaded), :class:`Program`,
:class:`Map`, :class:`Link`; errors derive from :class:`BPFError`.
"""

from __future__ import annotations

from ._ffi import MIN_LIBBPF, LibbpfVersionError, libbpf_capabilities
from ._ffi import ffi as _ffi_mod
from ._ffi import lib as _lib
from .btf import BTF, BTFKind, BTFType
from .errors import (
    AttachError,
    AttachWarning,
    BPFError,
    BPFNotFoundError,
    BPFPermissionError,
    ClosedError,
    LoadError,
    MapError,
    MapTypeError,
    MapValueError,
    NotSupportedError,
    ObjectError,
    StateError,
    TypeSpecError,
    UpgradeError,
    VerifierError,
)
from .link import IterLink, Link, LinkInfo, list_links
from .mapkinds import RawBatch, TypedMap, create_map
from .maps import Map, MapInfo, OpenMap, UpdateFlags, list_maps, possible_cpus
from .object import Object, load
from .perfbuf import PerfBuffer
from .program import Program, ProgramInfo, TestRun, list_programs
from .ringbuf import RecordBatch, RingBuffer, UserRingBuffer
from .symbolize import Frame, UprobeTarget, resolve_uprobe
from .types import CStr, Struct, Union
from .typespec import btf_type

__version__ = "0.1.0"

__all__ = [
    "CStr", "RawBatch", "Struct", "TypedMap", "Union", "create_map",
    "AttachError", "AttachWarning", "BPFError", "BPFNotFoundError", "BPFPermissionError",
    "BTF", "BTFKind", "BTFType",
    "ClosedError", "IterLink", "Link", "LinkInfo", "LoadError", "Map", "MapError", "MapInfo",
    "MapTypeError", "MapValueError",
    "NotSupportedError", "Object", "ObjectError", "OpenMap", "PerfBuffer", "Program",
    "ProgramInfo", "StateError", "TypeSpecError", "UpgradeError", "btf_type",
    "RecordBatch", "RingBuffer", "TestRun", "UserRingBuffer",
    "UpdateFlags", "VerifierError", "enable_stats", "libbpf_version", "list_links",
    "MIN_LIBBPF", "LibbpfVersionError", "libbpf_capabilities",
    "list_maps", "list_programs", "load", "possible_cpus", "probe_path",
    "Frame", "UprobeTarget", "resolve_uprobe",
]


def libbpf_version() -> tuple[int, int]:
    """(major, minor) of the libbpf loaded at run time, e.g. (1, 1)."""
    return int(_lib.libbpf_major_version()), int(_lib.libbpf_minor_version())


def probe_path(name: str) -> str:
    """Path of a probe shipped with pybpf, e.g. ``probe_path("execsnoop")``."""
    import os

    from ._args import name_arg

    name_arg(name, "probe_path: probe name")
    path = os.path.join(os.path.dirname(__file__), "probes", f"{name}.bpf.o")
    if not os.path.exists(path):
        raise BPFNotFoundError(f"pybpf ships no probe named {name!r} ({path})", path)
    return path


class _Stats:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        import os

        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> _Stats:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def enable_stats() -> _Stats:
    """Count program run time and runs (``BPF_ENABLE_STATS``) while the result is open."""
    from ._ffi import error_for

    fd = _lib.bpf_enable_stats(_lib.BPF_STATS_RUN_TIME)
    if fd < 0:
        raise error_for(_ffi_mod.errno, "cannot enable BPF run-time stats")
    return _Stats(int(fd))
