"""Reading files named by the user: regular files only, bounded in size.

A path handed to pybpf may name a FIFO (``open()`` blocks until a writer
comes), a device (``/dev/zero`` never ends), a directory or a sparse file of
terabytes. :func:`read_regular` refuses all of these before reading a byte:
it opens without blocking (``O_NONBLOCK``), checks the *opened* file with
``fstat`` (no window between a check and the open), refuses anything but a
regular file and any size over the limit, then reads exactly ``st_size``
bytes and fails if the file grew or shrank meanwhile.
"""

from __future__ import annotations

import errno as _errno
import os
import stat

from .errors import BPFError, BPFNotFoundError, ObjectError

__all__ = ["MAX_OBJECT_SIZE", "read_regular", "check_regular", "file_kind"]

MAX_OBJECT_SIZE = 256 << 20
"""Largest file :meth:`pybpf.Object.open` reads (256 MiB; real objects are KiB to a few MiB)."""


def file_kind(mode: int) -> str:
    """``"a FIFO"``, ``"a character device"``... for a ``st_mode``."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def _open_regular(path: str, what: str, limit: int | None,
                  error: type[BPFError]) -> tuple[int, int]:
    """An fd of ``path`` known to be a regular file of at most ``limit`` bytes, and its size."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise BPFNotFoundError(f"{what} {path} does not exist", path) from None
    except ValueError:  # an embedded NUL
        raise error(_errno.EINVAL, f"{what} {path!r}: a path cannot hold a NUL byte",
                    **_path_kw(error, path)) from None
    except IsADirectoryError:
        raise error(_errno.EISDIR, f"{what} {path} is a directory, not a regular file",
                    **_path_kw(error, path)) from None
    except OSError as exc:
        err = exc.errno or _errno.EIO
        try:  # a socket cannot be opened (ENXIO): say what it is
            mode = os.stat(path).st_mode
        except OSError:
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode):
            raise error(err, f"{what} {path} is {file_kind(mode)}, not a regular file",
                        **_path_kw(error, path)) from None
        raise error(err, f"cannot open {what} {path}: {exc.strerror}",
                    **_path_kw(error, path)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            err = _errno.EISDIR if stat.S_ISDIR(st.st_mode) else _errno.EINVAL
            raise error(err, f"{what} {path} is {file_kind(st.st_mode)}, not a regular file",
                        **_path_kw(error, path))
        if limit is not None and st.st_size > limit:
            raise error(_errno.EFBIG, f"{what} {path} is {st.st_size} bytes, over the limit of "
                                      f"{limit} bytes", **_path_kw(error, path))
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def _path_kw(error: type[BPFError], path: str) -> dict[str, str]:
    return {"path": path} if issubclass(error, ObjectError) else {}


def check_regular(path: str, what: str, *, error: type[BPFError] = ObjectError) -> None:
    """Raise unless ``path`` is a regular file (for paths another program opens by name,
    such as libbpf's ``btf_custom_path`` or clang's source). Opens nothing that blocks."""
    fd, _ = _open_regular(path, what, None, error)
    os.close(fd)


def read_regular(path: str, what: str, *, limit: int = MAX_OBJECT_SIZE,
                 error: type[BPFError] = ObjectError) -> bytes:
    """The whole content of the regular file ``path`` (at most ``limit`` bytes).

    FIFOs, devices, sockets and directories are refused before any read, as is a
    file whose size is over ``limit``; each error (``error``, an ObjectError by
    default) names ``what`` and the path. Costs one open, one fstat and one read.
    """
    fd, size = _open_regular(path, what, limit, error)
    try:
        parts = []
        got = 0
        while got < size:
            chunk = os.read(fd, size - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        if got != size or os.read(fd, 1):
            raise error(_errno.EAGAIN, f"{what} {path} changed size while it was read "
                                       f"(expected {size} bytes)", **_path_kw(error, path))
        return parts[0] if len(parts) == 1 else b"".join(parts)
    except OSError as exc:
        if isinstance(exc, BPFError):
            raise
        raise error(exc.errno or _errno.EIO, f"cannot read {what} {path}: {exc.strerror}",
                    **_path_kw(error, path)) from None
    finally:
        os.close(fd)
