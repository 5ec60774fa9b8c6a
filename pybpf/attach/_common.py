"""What every hook family shares: errors naming program and target, raw BPF_LINK_CREATE.

libbpf 1.1's ``bpf_link_create`` passes only the basic ``link_create`` fields
(trap 8 of the libbpf notes); :func:`link_create` builds the kernel's
``union bpf_attr`` itself and issues bpf(2) through pybpf's syscall helper, so
tcx, netkit, netfilter, uprobe_multi and sessions reach every kernel that has
them whatever libbpf is linked.
"""

from __future__ import annotations

import errno as _errno
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._ffi import CAP_PERFMON, OPTIONAL, capture, error_for, ffi, lib, optional
from ..errors import AttachError, BPFError, NotSupportedError
from ..link import Link

__all__ = ["attach_error", "libbpf_link", "fd_link", "link_create", "prog_query",
           "libbpf_api", "libbpf_route", "fallback_route",
           "BPF_LINK_CREATE", "BPF_PROG_QUERY", "BPF_F_REPLACE", "BPF_F_BEFORE",
           "BPF_F_AFTER", "BPF_F_ID", "BPF_F_LINK"]

BPF_PROG_QUERY = 16
BPF_LINK_CREATE = 28
BPF_F_REPLACE = 1 << 2
BPF_F_BEFORE = 1 << 3
BPF_F_AFTER = 1 << 4
BPF_F_ID = 1 << 5
BPF_F_LINK = 1 << 13
_ATTR_SIZE = 64  # link_create and query fit; the kernel zero-checks the rest


def cookies_for(names: Sequence[str], cookies: Sequence[int] | Mapping[str, int] | None,
                program: str, what: str) -> list[int] | None:
    """One cookie per target of a multi link, in target order: from a name -> cookie
    mapping (0 for names it lacks) or a sequence of exactly one per target; None for
    none. ValueError naming the program when the counts differ."""
    if cookies is None:
        return None
    if isinstance(cookies, Mapping):
        return [int(cookies.get(n, 0)) for n in names]
    cks = [int(c) for c in cookies]
    if len(cks) != len(names):
        raise ValueError(f"program {program!r}: {len(cks)} cookies for {len(names)} {what}")
    return cks


def attach_error(program: str, err: int, target: str, log: list[str] | tuple[str, ...] = (),
                 needed: tuple[int, ...] = (CAP_PERFMON,), feature: Any = None) -> BPFError:
    """The exception for a refused attach: NotSupportedError with the probe's reason when
    ``feature`` (a :class:`pybpf.features.Feature`) says the kernel lacks the hook."""
    err = abs(err) or _errno.EINVAL
    if feature is not None and not feature and err not in (_errno.EPERM, _errno.EACCES):
        return NotSupportedError(f"cannot attach program {program!r} to {target}: "
                                 f"{feature.reason}", reason=feature.reason, err=err,
                                 program=program, libbpf_log=list(log))
    return error_for(err, f"cannot attach program {program!r} to {target}", kind=AttachError,
                     program=program, target=target, log=list(log), needed=needed)


def libbpf_link(ptr: Any, program: str, target: str, log: list[str], *,
                cls: type[Link] = Link, needed: tuple[int, ...] = (CAP_PERFMON,),
                no_fd: str | None = None, feature: Any = None) -> Link:
    """Wrap a ``struct bpf_link *`` from a libbpf attach call (NULL: raise)."""
    if ptr == ffi.NULL:
        raise attach_error(program, ffi.errno or _errno.EINVAL, target, log, needed, feature)
    return cls(ptr, program=program, target=target, no_fd=no_fd)


def fd_link(fd: int, program: str, target: str, *, needed: tuple[int, ...] = (CAP_PERFMON,),
            feature: Any = None, cls: type[Link] = Link) -> Link:
    """Wrap a kernel link fd (``-errno``: raise)."""
    if fd < 0:
        raise attach_error(program, -fd, target, (), needed, feature)
    return cls(program=program, target=target, fd=fd)


def libbpf_api(symbol: str, prog_ptr: Any) -> Callable[..., Any] | None:
    """libbpf's attach function ``symbol`` (a row of pybpf._ffi.OPTIONAL, or a libbpf 1.1
    one) when the runtime libbpf has it and the program is an object's (``prog_ptr``:
    libbpf's ``struct bpf_program *``, None for a bare fd); None: take the fallback."""
    if prog_ptr is None:
        return None
    if symbol in OPTIONAL:
        return optional(symbol)
    fn: Callable[..., Any] = getattr(lib, symbol)
    return fn


def libbpf_route(fn: Callable[..., Any], symbol: str, args: tuple[Any, ...], program: str,
                 target: str, *, needed: tuple[int, ...] = (CAP_PERFMON,),
                 feature: Any = None, errors: dict[int, str] | None = None) -> Link:
    """Call libbpf's attach function ``fn`` (``symbol``) with ``args`` and wrap the link
    it makes (``link.via``: ``"libbpf SYMBOL"``); NULL raises as the fallback would,
    with the message of ``errors`` for its errno when given, and libbpf's log."""
    with capture() as log:
        ptr = fn(*args)
        err = ffi.errno
    if ptr == ffi.NULL and errors and err in errors:
        raise AttachError(err, f"cannot attach program {program!r} to {target}: "
                          f"{errors[err]}", program=program, target=target, libbpf_log=log)
    link = libbpf_link(ptr, program, target, log, needed=needed, feature=feature)
    link.via = f"libbpf {symbol}"
    return link


def fallback_route(link: Link, symbol: str) -> Link:
    """Mark ``link`` as made by pybpf's fallback for libbpf's ``symbol``."""
    row = OPTIONAL.get(symbol)
    link.via = row.fallback if row is not None else FALLBACKS[symbol]
    return link


#: The fallbacks of libbpf 1.1 attach functions that pybpf bypasses for some forms
#: (sessions, which libbpf 1.1 cannot make); newer ones are in pybpf._ffi.OPTIONAL.
FALLBACKS = {"bpf_program__attach_kprobe_multi_opts": "bpf_link_create(BPF_TRACE_KPROBE_*)"}


def link_create(prog_fd: int, target: int, attach_type: int, flags: int = 0,
                tail: bytes = b"") -> int:
    """bpf(BPF_LINK_CREATE) with the kernel's attr layout: ``prog_fd`` (or a struct_ops
    map fd), ``target`` (fd or ifindex), ``attach_type``, ``flags``, then ``tail``: the
    hook's own fields at offset 16. Returns the link fd or -errno. One syscall."""
    attr = ffi.new(f"char[{_ATTR_SIZE}]")
    buf = ffi.buffer(attr)
    struct.pack_into("=IIII", buf, 0, prog_fd, target & 0xFFFFFFFF, attach_type, flags)
    buf[16:16 + len(tail)] = tail
    return int(lib.pybpf_sys_bpf(BPF_LINK_CREATE, attr, _ATTR_SIZE))


def prog_query(target: int, attach_type: int) -> tuple[int, list[tuple[int, int]]]:
    """bpf(BPF_PROG_QUERY) on a multi-program hook (tcx, netkit): the chain's revision and
    its (program id, link id) pairs in run order (link id 0: not a link). Two syscalls."""
    attr = ffi.new(f"char[{_ATTR_SIZE}]")
    buf = ffi.buffer(attr)
    struct.pack_into("=II", buf, 0, target, attach_type)
    rc = lib.pybpf_sys_bpf(BPF_PROG_QUERY, attr, _ATTR_SIZE)
    if rc < 0:
        raise error_for(-rc, f"cannot query attach type {attach_type} of target {target}")
    count = struct.unpack_from("=I", buf, 24)[0]
    while True:
        prog_ids = ffi.new("__u32[]", max(count, 1))
        link_ids = ffi.new("__u32[]", max(count, 1))
        struct.pack_into("=IIII", buf, 0, target, attach_type, 0, 0)
        struct.pack_into("=QII", buf, 16, int(ffi.cast("uintptr_t", prog_ids)), count, 0)
        struct.pack_into("=QQQQ", buf, 32, 0, int(ffi.cast("uintptr_t", link_ids)), 0, 0)
        rc = lib.pybpf_sys_bpf(BPF_PROG_QUERY, attr, _ATTR_SIZE)
        got = struct.unpack_from("=I", buf, 24)[0]
        if rc == -_errno.ENOSPC or (rc == 0 and got > count):
            count = got  # the chain grew between the two calls
            continue
        if rc < 0:
            raise error_for(-rc, f"cannot query attach type {attach_type} of target {target}")
        revision = struct.unpack_from("=Q", buf, 56)[0]
        return revision, [(prog_ids[i], link_ids[i]) for i in range(got)]
