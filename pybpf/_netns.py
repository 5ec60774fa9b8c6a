"""Network namespaces for hooks that are undone through netlink (tc clsact filters).

A netlink tc filter is named by (ifindex, parent, priority, handle) in the
network namespace of the socket that talks to the kernel. An ifindex means a
different device in another namespace, so such a hook must be detached from
the namespace it was attached in, whatever namespace the detaching thread is
in by then. :class:`NetnsRef` remembers that namespace and re-enters it.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
_SELF = "/proc/thread-self/ns/net"
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno() or _errno.EINVAL
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


class NetnsRef:
    """The calling thread's network namespace at creation (holds an fd to it)."""

    def __init__(self) -> None:
        self.fd: int | None = os.open(_SELF, os.O_RDONLY | os.O_CLOEXEC)
        self.ino = os.fstat(self.fd).st_ino

    @contextmanager
    def entered(self) -> Iterator[None]:
        """Run the block in this namespace (a no-op when the thread is already there)."""
        if self.fd is None or os.stat(_SELF).st_ino == self.ino:
            yield
            return
        back = os.open(_SELF, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(self.fd)
            try:
                yield
            finally:
                _setns(back)
        finally:
            os.close(back)

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)
