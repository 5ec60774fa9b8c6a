"""The one place pybpf touches the cffi extension (``pybpf._libbpf``).

* ``ffi`` / ``lib``: the compiled binding. It does not link libbpf: at import the
  system ``libbpf.so.1`` is dlopen()ed and every libbpf function pybpf calls is bound
  by dlsym into the extension's table of pointers; a missing or too old libbpf (older
  than :data:`MIN_LIBBPF`, or lacking a function) is refused here.
* :func:`optional`: libbpf APIs newer than the minimum, rows of the same table that
  stay NULL when the runtime lacks them (:data:`OPTIONAL`); :func:`libbpf_capabilities`
  reports them.
* libbpf's log goes to the ``pybpf.libbpf`` logger, and every call made inside
  :func:`capture` also records the lines so errors can quote libbpf's reason.
* :func:`error_for` turns an errno from a failed call into the right pybpf
  exception; :func:`capabilities` reads what the process may do.
"""

from __future__ import annotations

import errno as _errno
import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from .errors import (
    AttachError,
    BPFError,
    BPFPermissionError,
    LoadError,
    MapError,
    ObjectError,
    describe_errno,
)

# --- the libbpf this runs on ------------------------------------------------------------

#: The oldest libbpf pybpf runs on: the newest version node among the functions the
#: extension's table requires (user_ring_buffer__*, LIBBPF_1.1.0). Newer APIs are in
#: OPTIONAL. tests/test_packaging.py checks this against the system libbpf.
MIN_LIBBPF = (1, 1)
LIBBPF_SONAME = "libbpf.so.1"
_INSTALL_HINT = ("install the distribution's libbpf (Debian/Ubuntu: libbpf1, Fedora: "
                 "libbpf), version {need} or newer")


class LibbpfVersionError(ImportError):
    """The system libbpf.so.1 is missing or older than :data:`MIN_LIBBPF`."""


def _fmt(version: tuple[int, ...]) -> str:
    return ".".join(str(v) for v in version)


def check_libbpf_version(found: tuple[int, int], needed: tuple[int, int] = MIN_LIBBPF,
                         path: str = LIBBPF_SONAME, missing: list[str] | None = None) -> None:
    """Raise :class:`LibbpfVersionError` when libbpf ``found`` is older than ``needed``
    or lacks functions pybpf needs (``missing``)."""
    if tuple(found) < tuple(needed) or missing:
        lacks = f" (it lacks {', '.join(missing)})" if missing else ""
        raise LibbpfVersionError(
            f"pybpf needs libbpf {_fmt(needed)} or newer, but the system {path} is libbpf "
            f"{_fmt(found)}{lacks}: " + _INSTALL_HINT.format(need=_fmt(needed)))


try:
    from ._libbpf import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "pybpf's C extension pybpf._libbpf cannot be loaded: run `pip install .` (or "
        f"`python build.py` in a checkout); building it needs libbpf's headers and a C "
        f"compiler ({exc})") from exc


def _table() -> list[tuple[str, bool, bool]]:
    """The extension's libbpf function table: (name, required, bound) rows."""
    rows = []
    required, bound = ffi.new("int *"), ffi.new("int *")
    i = 0
    while (name := lib.pybpf_libbpf_sym(i, required, bound)) != ffi.NULL:
        rows.append((ffi.string(name).decode(), bool(required[0]), bool(bound[0])))
        i += 1
    return rows


def _load_libbpf() -> None:
    """dlopen() the system libbpf.so.1 and bind every function pybpf calls; refuse a
    missing or too old one, naming it and the version needed."""
    err = ffi.new("char[512]")
    missing = lib.pybpf_libbpf_load(LIBBPF_SONAME.encode(), err, len(err))
    if missing < 0:
        raise LibbpfVersionError(
            f"pybpf needs the system {LIBBPF_SONAME} (libbpf {_fmt(MIN_LIBBPF)} or newer) "
            f"and cannot load it ({ffi.string(err).decode(errors='replace')}): "
            + _INSTALL_HINT.format(need=_fmt(MIN_LIBBPF)))
    lacks = [name for name, required, bound in _table() if required and not bound]
    found = (0, 0)
    if "libbpf_major_version" not in lacks and "libbpf_minor_version" not in lacks:
        found = (int(lib.libbpf_major_version()), int(lib.libbpf_minor_version()))
    check_libbpf_version(found, missing=lacks[:8] + (["..."] if len(lacks) > 8 else []))


_load_libbpf()

__all__ = ["ffi", "lib", "capture", "error_for", "raise_errno", "has_symbol", "cstr",
           "capabilities", "missing_capabilities", "walk_ids", "MIN_LIBBPF",
           "LibbpfVersionError", "check_libbpf_version", "optional", "OPTIONAL",
           "libbpf_capabilities"]

logger = logging.getLogger("pybpf.libbpf")
logging.getLogger("pybpf").addHandler(logging.NullHandler())

_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}
_tls = threading.local()


@ffi.def_extern()  # type: ignore[untyped-decorator]
def _pybpf_on_log(level: int, msg: Any) -> None:
    stack: list[list[str]] | None = getattr(_tls, "captures", None)
    py_level = _LEVELS.get(level, logging.DEBUG)
    if py_level == logging.DEBUG and not stack and not logger.isEnabledFor(logging.DEBUG):
        return
    text = ffi.string(msg).decode("utf-8", "replace").rstrip("\n")
    if stack and level <= 1:
        stack[-1].append(text)
    if logger.isEnabledFor(py_level):
        logger.log(py_level, "%s", text)


lib.pybpf_log_install()
_log_debug = lib.pybpf_log_debug


class capture:  # noqa: N801 - a context manager used like a function
    """Collect libbpf's warning/info lines logged by calls in this block (this thread):
    ``with capture() as lines:``. Costs ~1 us (a class, not a generator)."""

    __slots__ = ("lines", "stack")

    def __enter__(self) -> list[str]:
        stack: list[list[str]] | None = getattr(_tls, "captures", None)
        if stack is None:
            stack = _tls.captures = []
        self.stack = stack
        lines: list[str] = []
        self.lines = lines
        stack.append(lines)
        # libbpf's debug lines reach Python only when someone logs them (C drops the rest)
        _log_debug(logger.isEnabledFor(logging.DEBUG))
        return lines

    def __exit__(self, *exc: object) -> None:
        stack = self.stack
        stack.pop()
        if stack:
            stack[-1].extend(self.lines)
        else:
            _log_debug(1)  # outside capture(): every line reaches the logger's own check


def cstr(value: str | bytes | None) -> Any:
    """A C string for a call argument (NULL for None)."""
    if value is None:
        return ffi.NULL
    if isinstance(value, str):
        value = value.encode()
    return ffi.new("char[]", value)


def has_symbol(name: str) -> bool:
    """Does the loaded libbpf export ``name``? (for APIs newer than libbpf 1.1)."""
    return _has_symbol(name)


@functools.cache
def _has_symbol(name: str) -> bool:
    return bool(lib.pybpf_dlsym(name.encode()) != ffi.NULL)


# --- libbpf APIs newer than MIN_LIBBPF, resolved at run time ------------------------------

@dataclass(frozen=True)
class Optional:
    """One libbpf function newer than :data:`MIN_LIBBPF`: when the runtime has it and
    ``used_by`` names pybpf code that calls it, ``capability`` is done through it; else
    through ``fallback`` (the libbpf 1.1 path)."""

    symbol: str
    since: tuple[int, int]
    capability: str
    fallback: str
    used_by: str = ""


#: The one table of optional libbpf functions (pybpf.libbpf_capabilities() reports it).
#: Their prototypes, with pybpf's copies of their option structs, are in
#: pybpf/_cdef/libbpf_optional.h; the extension's function table holds them as
#: pointers that stay NULL when the runtime lacks them: call them through optional().
OPTIONAL: dict[str, Optional] = {o.symbol: o for o in [
    Optional("bpf_program__attach_tcx", (1, 3), "tcx attach",
             "bpf_link_create(BPF_TCX_INGRESS/EGRESS)", "Program.attach_tcx"),
    Optional("bpf_program__attach_netkit", (1, 3), "netkit attach",
             "bpf_link_create(BPF_NETKIT_PRIMARY/PEER)", "Program.attach_netkit"),
    Optional("bpf_program__attach_uprobe_multi", (1, 3), "uprobe_multi attach",
             "bpf_link_create(BPF_TRACE_UPROBE_MULTI)", "Program.attach_uprobe_multi"),
    Optional("bpf_program__attach_netfilter", (1, 3), "netfilter attach",
             "bpf_link_create(BPF_NETFILTER)", "Program.attach_netfilter"),
    Optional("bpf_token_create", (1, 4), "BPF token",
             "none: privileges of the process (root or CAP_BPF)",
             "Object.load (libbpf derives a token from a delegated bpffs)"),
    Optional("ring__consume_n", (1, 5), "ring buffer reads",
             "pybpf's own reader of the mmap()ed ring"),
    Optional("bpf_program__attach_sockmap", (1, 5), "sockmap attach",
             "bpf_prog_attach to the map"),
    Optional("bpf_map__set_autoattach", (1, 5), "struct_ops map auto-attach",
             "Object.attach registers each .struct_ops.link map"),
    Optional("bpf_object__prepare", (1, 6), "object prepare before load",
             "bpf_object__load does both"),
    Optional("bpf_program__attach_cgroup_opts", (1, 6), "cgroup attach with ordering",
             "bpf_program__attach_cgroup"),
]}


def optional(symbol: str) -> Callable[..., Any] | None:
    """libbpf's ``symbol`` (a row of :data:`OPTIONAL`) as a cffi function, or None when
    the runtime libbpf lacks it (resolved once, at import). A dict lookup."""
    OPTIONAL[symbol]  # KeyError: add the symbol to the table (and libbpf_optional.h) first
    return _bound_optional().get(symbol)


@functools.cache
def _bound_optional() -> dict[str, Callable[..., Any]]:
    return {name: getattr(lib, name) for name, required, bound in _table()
            if bound and not required}


def libbpf_version_string() -> str:
    """The runtime libbpf's own version string, e.g. ``v1.5``."""
    return str(ffi.string(lib.libbpf_version_string()).decode())


def libbpf_capabilities() -> dict[str, Any]:
    """The runtime libbpf's version, the minimum pybpf needs, and for each API newer
    than that minimum whether it is there and so which path the capability takes.

    Plain data (``pybpf features`` prints it); no syscall, no dlsym.
    """
    caps = {}
    for o in OPTIONAL.values():
        present = optional(o.symbol) is not None
        if present and o.used_by:
            path = f"libbpf {o.symbol}"
        elif present:
            path = f"{o.fallback} (pybpf does not call {o.symbol})"
        else:
            path = f"{o.fallback} (libbpf 1.1 path)"
        caps[o.capability] = {"symbol": o.symbol, "since": _fmt(o.since), "present": present,
                              "used_by": o.used_by, "path": path}
    return {"libbpf": libbpf_version_string(),
            "version": [int(lib.libbpf_major_version()), int(lib.libbpf_minor_version())],
            "minimum": _fmt(MIN_LIBBPF), "capabilities": caps}


# --- capabilities -------------------------------------------------------------

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_SYS_RESOURCE = 24
CAP_PERFMON = 38
CAP_BPF = 39
_CAP_NAMES = {CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_SYS_ADMIN: "CAP_SYS_ADMIN",
              CAP_PERFMON: "CAP_PERFMON", CAP_BPF: "CAP_BPF"}


def capabilities() -> int:
    """The effective capability mask of this process (from /proc/self/status)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def missing_capabilities(*needed: int) -> list[str]:
    caps = capabilities()
    if caps & (1 << CAP_SYS_ADMIN):  # CAP_SYS_ADMIN implies the BPF ones
        needed = tuple(c for c in needed if c == CAP_NET_ADMIN)
    return [_CAP_NAMES[c] for c in needed if not caps & (1 << c)]


def _lockdown() -> str | None:
    try:
        with open("/sys/kernel/security/lockdown") as f:
            text = f.read()
    except OSError:
        return None
    if "[none]" in text:
        return None
    return text.strip()


def permission_error(err: int, message: str, *, needed: tuple[int, ...] = (CAP_BPF,),
                     log: list[str] | None = None) -> BPFPermissionError:
    missing = missing_capabilities(*needed)
    if missing:
        hint = f"the process lacks {', '.join(missing)} (run as root or grant them)"
    else:
        hint = "the process has the BPF capabilities; the kernel refused anyway"
        lock = _lockdown()
        if lock:
            hint += f" (kernel lockdown: {lock})"
        else:
            hint += " (a kernel policy, LSM or unsupported feature)"
    return BPFPermissionError(err, f"{message}: {describe_errno(err)}; {hint}",
                              missing=missing, libbpf_log=log or ())


ErrorFactory = Callable[..., BPFError]


def error_for(err: int, message: str, *, kind: type[BPFError] = BPFError,
              log: list[str] | None = None, needed: tuple[int, ...] = (CAP_BPF,),
              **fields: Any) -> BPFError:
    """The exception for ``err`` raised while doing ``message`` (an errno > 0)."""
    err = abs(err) or _errno.EINVAL
    if err in (_errno.EPERM, _errno.EACCES) and kind is not ObjectError:
        exc = permission_error(err, message, needed=needed, log=log)
        exc.program = fields.get("program")
        exc.map = fields.get("map")
        return exc
    text = f"{message}: {describe_errno(err)}"
    if kind in (LoadError, AttachError, MapError, ObjectError):
        return kind(err, text, libbpf_log=log or (), **fields)
    return kind(err, text, libbpf_log=log or ())


def raise_errno(err: int, message: str, **kw: Any) -> NoReturn:
    raise error_for(err, message, **kw)


T = TypeVar("T")


def walk_ids(get_next_id: Any, get_fd_by_id: Any, info_by_fd: Callable[[int], T], *,
             what: str = "objects") -> list[T]:
    """Info of every kernel object of one kind (``what``: programs, maps, links), by id.

    Objects that vanish between the id walk and the fd open, and links still being set
    up or torn down (the kernel says EAGAIN for those), are skipped; every fd
    opened here is closed here. Listing needs CAP_SYS_ADMIN: without it the kernel
    says EPERM and this raises :class:`BPFPermissionError` (never an empty list).
    One syscall per id, plus an open, an info query and a close per object.
    """
    import os

    out: list[T] = []
    cur = 0
    nxt = ffi.new("__u32 *")
    while True:
        if get_next_id(cur, nxt) < 0:
            err = ffi.errno
            if err == _errno.ENOENT:
                return out
            raise error_for(err, f"cannot list BPF {what}", needed=(CAP_SYS_ADMIN,))
        cur = nxt[0]
        fd = get_fd_by_id(cur)
        if fd < 0:
            err = ffi.errno
            if err in (_errno.ENOENT, _errno.EAGAIN):
                # ENOENT: gone since the id walk saw it. EAGAIN: a link whose id is
                # allocated but not yet settled (being created or torn down right now).
                continue
            raise error_for(err, f"cannot open BPF {what[:-1]} id {cur}",
                            needed=(CAP_SYS_ADMIN,))
        try:
            out.append(info_by_fd(fd))
        except BPFError:
            pass
        finally:
            os.close(fd)


def last_errno(default: int = _errno.EINVAL) -> int:
    return ffi.errno or default
