"""cgroup hooks (cgroup_skb, cgroup/sock*, sockops...) on a cgroup v2 directory or fd."""

from __future__ import annotations

import errno as _errno
import os
from typing import Any

from .._args import fd_or_path
from .._ffi import CAP_NET_ADMIN, capture, ffi, lib
from ..errors import AttachError
from ..link import Link
from ._common import libbpf_link

__all__ = ["cgroup2_mount", "attach_cgroup"]


def cgroup2_mount() -> str | None:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified on
    hybrid systems), from /proc/mounts."""
    try:
        with open("/proc/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[2] == "cgroup2":
                    return fields[1]
    except OSError:
        pass
    return None


def attach_cgroup(ptr: Any, program: str, cgroup: str | os.PathLike[str] | int | None) -> Link:
    """``bpf_program__attach_cgroup`` on a cgroup directory, fd, or the v2 root."""
    if cgroup is None:
        cgroup = cgroup2_mount()
        if cgroup is None:
            raise AttachError(_errno.ENOENT, f"cannot attach program {program!r}: no "
                              "cgroup v2 hierarchy is mounted", program=program,
                              target="cgroup")
    given, path = fd_or_path(cgroup, f"cannot attach program {program!r}: cgroup")
    if given is not None:
        fd, own = given, False
    else:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise AttachError(exc.errno or _errno.ENOENT, f"cannot attach program "
                              f"{program!r}: cgroup {path}: {exc.strerror}",
                              program=program, target=path) from None
        own = True
    try:
        with capture() as log:
            lptr = lib.bpf_program__attach_cgroup(ptr, fd)
        if lptr == ffi.NULL and ffi.errno == _errno.EBADF:
            mnt = cgroup2_mount()
            where = f"cgroup2 is mounted at {mnt}" if mnt else "no cgroup2 is mounted"
            raise AttachError(_errno.EBADF, f"cannot attach program {program!r}: "
                              f"{path} is not a cgroup v2 directory ({where})",
                              program=program, target=f"cgroup {path}", libbpf_log=log)
        return libbpf_link(lptr, program, f"cgroup {path}", log, needed=(CAP_NET_ADMIN,))
    finally:
        if own:
            os.close(fd)
