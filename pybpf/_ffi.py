"""The one place pybpf touches the cffi extension (``pybpf._libbpf``).

* ``ffi`` / ``lib``: the compiled binding to the system ``libbpf.so.1``.
* libbpf's log goes to the ``pybpf.libbpf`` logger, and every call made inside
  :func:`capture` also records the lines so errors can quote libbpf's reason.
* :func:`error_for` turns an errno from a failed call into the right pybpf
  exception; :func:`capabilities` reads what the process may do.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import logging
import threading
from collections.abc import Callable, Iterator
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

try:
    from ._libbpf import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "pybpf's C extension is not built: run `pip install .` (or `python build.py` "
        f"in a checkout); it needs libbpf-dev and a C compiler ({exc})"
    ) from exc

__all__ = ["ffi", "lib", "capture", "error_for", "raise_errno", "has_symbol", "cstr",
           "capabilities", "missing_capabilities", "walk_ids"]

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


@contextlib.contextmanager
def capture() -> Iterator[list[str]]:
    """Collect libbpf's warning/info lines logged by calls in this block (this thread)."""
    stack: list[list[str]] | None = getattr(_tls, "captures", None)
    if stack is None:
        stack = _tls.captures = []
    lines: list[str] = []
    stack.append(lines)
    try:
        yield lines
    finally:
        stack.pop()
        if stack:
            stack[-1].extend(lines)


def cstr(value: str | bytes | None) -> Any:
    """A C string for a call argument (NULL for None)."""
    if value is None:
        return ffi.NULL
    if isinstance(value, str):
        value = value.encode()
    return ffi.new("char[]", value)


_symbols: dict[str, bool] = {}


def has_symbol(name: str) -> bool:
    """Does the loaded libbpf export ``name``? (for APIs newer than libbpf 1.1)."""
    if name not in _symbols:
        _symbols[name] = bool(lib.pybpf_symbol_present(name.encode()))
    return _symbols[name]


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
        return permission_error(err, message, needed=needed, log=log)
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

    Objects that vanish between the id walk and the fd open are skipped; every fd
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
            if err == _errno.ENOENT:
                continue  # gone since the id walk saw it
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
