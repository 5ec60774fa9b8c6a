"""The pseudo file systems BPF needs: tracefs (tracepoint ids) and bpffs (pinning).

Both may be unmounted on a fresh boot; pybpf mounts them when it runs as root and
raises a clear error naming the mount point when it cannot.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Callable

from ._args import path_arg
from .errors import BPFError, BPFNotFoundError, describe_errno

TRACEFS = "/sys/kernel/tracing"
BPFFS = "/sys/fs/bpf"
BPF_FS_MAGIC = 0xCAFE4A11

_lock = threading.Lock()


def _mounts() -> list[tuple[str, str]]:
    try:
        with open("/proc/self/mounts") as f:
            rows = [line.split() for line in f]
    except OSError:
        return []
    return [(r[1].replace("\\040", " "), r[2]) for r in rows if len(r) >= 3]


def _mount(fstype: str, target: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                           ctypes.c_ulong, ctypes.c_void_p]
    if libc.mount(fstype.encode(), target.encode(), fstype.encode(), 0, None) != 0:
        err = ctypes.get_errno()
        raise BPFError(err, f"cannot mount {fstype} at {target}: {describe_errno(err)}"
                            f" (mount it yourself: mount -t {fstype} {fstype} {target})")


def ensure_tracefs() -> str:
    """Return the tracefs mount point, mounting it at /sys/kernel/tracing if needed."""
    with _lock:
        for target, fstype in _mounts():
            if fstype == "tracefs" and target in (TRACEFS, "/sys/kernel/debug/tracing"):
                return target
        if os.path.isdir(os.path.join(TRACEFS, "events")):
            return TRACEFS
        _mount("tracefs", TRACEFS)
        return TRACEFS


def ensure_bpffs(path: str = BPFFS) -> str:
    """Return a bpffs mount point, mounting bpffs at /sys/fs/bpf if nothing is there."""
    with _lock:
        if is_bpffs(path):
            return path
        if path != BPFFS:
            raise BPFError(errno.EINVAL, f"{path} is not on a BPF file system (bpffs)")
        _mount("bpf", BPFFS)
        return BPFFS


def is_bpffs(path: str) -> bool:
    """Is ``path`` (or, if it does not exist yet, its directory) on a bpffs mount?"""
    probe = path
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe.rstrip("/")) or "/"
    best = ""
    best_type = ""
    real = os.path.realpath(probe)
    for target, fstype in _mounts():
        inside = real == target or real.startswith(target.rstrip("/") + "/")
        if inside and len(target) >= len(best):
            best, best_type = target, fstype
    return best_type == "bpf"


def check_pinned(path: object, want: str, who: str = "") -> str:
    """Refuse, before any BPF syscall, a path that cannot hold a pinned ``want`` ("map",
    "link"): BPFTypeError/BPFValueError for no path or a NUL byte, BPFNotFoundError (a
    FileNotFoundError) if absent, BPFError if it is a directory or outside bpffs (the
    kernel would only say EACCES). ``who`` ("map 'h'") starts each message. Returns
    the path as a str."""
    lead = f"{who}: " if who else ""
    p = path_arg(path, f"{lead}pinned {want} path")
    if not os.path.lexists(p):
        raise BPFNotFoundError(f"{lead}no pinned {want} at {p}", p)
    if os.path.isdir(p):
        raise BPFError(errno.EISDIR, f"{lead}{p} is a directory, not a pinned {want}")
    if not is_bpffs(p):
        raise BPFError(errno.EINVAL, f"{lead}{p} is not on a BPF file system (bpffs): not a "
                                     f"pinned {want}")
    return p


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_unpins = iter(range(1 << 62))
_libc: list[ctypes.CDLL | None] = [None]


def _rename_noreplace(old: str, new: str) -> None:
    libc = _libc[0]
    if libc is None:
        libc = _libc[0] = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(_AT_FDCWD, old.encode(), _AT_FDCWD, new.encode(), _RENAME_NOREPLACE):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), old)


def remove_pin(path: str, check: Callable[[str], None]) -> None:
    """Unlink the pin at ``path`` if ``check(p)`` (which raises to refuse) accepts what
    is pinned at ``p``, with no window between the check and the unlink: the pin is
    first moved (atomically, never over another file) to a private name in the same
    directory, checked there, then unlinked -- or moved back when refused. Meanwhile
    ``path`` is briefly absent. Costs two renames and the check."""
    tmp = os.path.join(os.path.dirname(path),
                       f"pybpf_unpin_{os.getpid()}_{next(_unpins)}")  # (bpffs refuses dots)
    try:
        _rename_noreplace(path, tmp)
    except FileNotFoundError:
        raise BPFNotFoundError(f"nothing pinned at {path}", path) from None
    try:
        check(tmp)
    except BaseException:
        try:
            _rename_noreplace(tmp, path)
        except OSError as e:  # something was pinned at path meanwhile: keep both
            raise BPFError(e.errno or errno.EEXIST, f"refused to unpin {path}, and could not "
                           f"put it back ({e.strerror}): it is now at {tmp}") from None
        raise
    os.unlink(tmp)


def check_pin_path(path: object, who: str = "") -> str:
    """Validate a pin path for ``who`` ("map 'h'", starting each message): a str or
    PathLike without NUL, absolute, inside a bpffs mount (mounting /sys/fs/bpf if needed)."""
    lead = f"{who}: " if who else ""
    p = path_arg(path, f"{lead}pin path")
    if not os.path.isabs(p):
        raise BPFError(errno.EINVAL, f"{lead}pin path {p!r} must be absolute (inside a bpffs "
                                     "mount)")
    if p.startswith(BPFFS + "/") and not is_bpffs(p):
        ensure_bpffs()
    if not is_bpffs(p):
        raise BPFError(errno.EINVAL, f"{lead}pin path {p!r} is not inside a bpffs mount "
                                     f"(mount -t bpf bpf {BPFFS})")
    return p
