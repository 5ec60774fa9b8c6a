"""Socket hooks: sk_msg/sk_skb programs on a sockmap or sockhash, netns hooks
(flow_dissector, sk_lookup). Socket filters are :func:`pybpf.link.socket_filter_link`."""

from __future__ import annotations

import errno as _errno
import os
from typing import Any

from .._args import fd_or_path
from .._ffi import CAP_NET_ADMIN, capture, ffi, lib
from ..errors import AttachError
from ..link import Link
from ._common import attach_error, libbpf_link

__all__ = ["SOCKMAP_TYPES", "attach_sockmap", "attach_netns"]

SOCKMAP_TYPES = {"sk_msg_verdict": 7, "sk_skb_verdict": 38, "sk_skb_stream_verdict": 5,
                 "sk_skb_stream_parser": 4}


def attach_sockmap(prog_fd: int, program: str, map_fd: int, map_name: str, map_type: str,
                   attach_type: str) -> Link:
    """A sockmap link (kernel 6.10+), else ``BPF_PROG_ATTACH`` undone on detach."""
    if attach_type not in SOCKMAP_TYPES:
        raise ValueError(f"program {program!r}: sockmap attach type must be one of "
                         f"{sorted(SOCKMAP_TYPES)}, not {attach_type!r}")
    at = SOCKMAP_TYPES[attach_type]
    target = f"{attach_type} map {map_name}"
    if map_type not in ("sockmap", "sockhash"):
        raise AttachError(_errno.EINVAL, f"cannot attach program {program!r} to {target}: "
                          f"map {map_name!r} is a {map_type} map, not a sockmap or "
                          "sockhash", program=program, target=target)
    fd = lib.bpf_link_create(prog_fd, map_fd, at, ffi.NULL)
    if fd >= 0:
        return Link(program=program, target=target, fd=fd)
    # Kernels before 6.10 have no sockmap links: fall back to BPF_PROG_ATTACH.
    if lib.bpf_prog_attach(prog_fd, map_fd, at, 0) < 0:
        raise attach_error(program, ffi.errno, target)

    def detach() -> None:
        lib.bpf_prog_detach2(prog_fd, map_fd, at)

    return Link(program=program, target=target, on_detach=detach)


def attach_netns(ptr: Any, program: str, netns: str | os.PathLike[str] | int) -> Link:
    """flow_dissector / sk_lookup on a network namespace (path or fd)."""
    given, path = fd_or_path(netns, f"cannot attach program {program!r}: netns")
    if given is not None:
        fd, own = given, False
    else:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise AttachError(exc.errno or _errno.ENOENT, f"cannot attach program "
                              f"{program!r}: netns {path}: {exc.strerror}",
                              program=program, target=path) from None
        own = True
        # every namespace file lives on nsfs: same device as our own netns file
        if os.fstat(fd).st_dev != os.stat("/proc/self/ns/net").st_dev:
            os.close(fd)
            raise AttachError(_errno.EINVAL, f"cannot attach program {program!r}: "
                              f"{path} is not a network namespace (e.g. /proc/PID/ns/net "
                              "or /run/netns/NAME)", program=program,
                              target=f"netns {path}")
    try:
        with capture() as log:
            lptr = lib.bpf_program__attach_netns(ptr, fd)
        return libbpf_link(lptr, program, f"netns {path}", log, needed=(CAP_NET_ADMIN,))
    finally:
        if own:
            os.close(fd)
