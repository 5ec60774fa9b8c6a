"""tc hooks: tcx and netkit links (multi-program chains, kernel 6.6+/6.7+) and classic
clsact filters over netlink.

tcx and netkit share the kernel's mprog API: a chain of programs per hook,
ordered by ``before``/``after`` a program or link, guarded by an expected
revision, and listed by :func:`query`. Links are made by libbpf's
``bpf_program__attach_tcx``/``_netkit`` where the runtime libbpf has them (1.3+), else
with raw ``BPF_LINK_CREATE`` (:func:`pybpf.attach._common.link_create`): libbpf 1.1
has none of it.
"""

from __future__ import annotations

import errno as _errno
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any

from .._args import c_int, name_arg
from .._ffi import CAP_NET_ADMIN, capture, ffi, lib
from .._netns import NetnsRef
from ..errors import AttachError
from ..link import Link
from . import _common
from ._common import BPF_F_AFTER, BPF_F_BEFORE, BPF_F_LINK, attach_error

__all__ = ["ifindex", "mprog_attach", "query", "Chain", "netlink_attach", "TCX", "NETKIT"]

TCX = {"ingress": 46, "egress": 47}
NETKIT = {"primary": 54, "peer": 55}


def ifindex(iface: str | int, program: str | None = None) -> tuple[int, str]:
    """(ifindex, name) of a device of this thread's netns, by name or index; the errors
    name ``program`` (the one being attached) when given."""
    lead = f"cannot attach program {program!r}: " if program else ""
    if not isinstance(iface, str):
        idx = c_int(iface, f"{lead}network interface index", "ifindex")
        try:
            return idx, socket.if_indextoname(idx)
        except OSError:
            raise AttachError(_errno.ENODEV, f"{lead}network interface index {idx} does not "
                              "exist", program=program, target=str(idx)) from None
    name_arg(iface, f"{lead}network interface")
    try:
        return socket.if_nametoindex(iface), iface
    except OSError:
        raise AttachError(_errno.ENODEV, f"{lead}network interface {iface!r} does not exist",
                          program=program, target=iface) from None


def _relative(before: Any, after: Any, what: str) -> tuple[int, int, str]:
    """(flags, relative fd, text) for an mprog position."""
    if before is not None and after is not None:
        raise ValueError(f"{what}: give before= or after=, not both")
    rel = before if before is not None else after
    if rel is None:
        return 0, 0, ""
    flags = BPF_F_BEFORE if before is not None else BPF_F_AFTER
    word = "before" if before is not None else "after"
    if isinstance(rel, Link):
        return flags | BPF_F_LINK, rel.fd, f" {word} link of {rel.program!r}"
    fd = getattr(rel, "fd", None)
    if not isinstance(fd, int):
        raise TypeError(f"{what}: {word}= takes a loaded Program or a Link, got {rel!r}")
    return flags, fd, f" {word} program {getattr(rel, 'name', fd)!r}"


_LIBBPF = {"tcx": ("bpf_program__attach_tcx", "struct pybpf_tcx_opts *"),
           "netkit": ("bpf_program__attach_netkit", "struct pybpf_netkit_opts *")}


def mprog_attach(prog_fd: int, program: str, iface: str | int, attach_type: int, kind: str,
                 role: str, *, before: Any = None, after: Any = None, expected_revision: int = 0,
                 feature: Any = None, prog_ptr: Any = None) -> Link:
    """A tcx/netkit link of ``prog_fd`` on ``iface``, placed before/after a program or link
    of the same hook; ``expected_revision`` (non-zero) fails with ESTALE if the chain
    changed since it was read with :func:`query`. One syscall: libbpf's
    ``bpf_program__attach_tcx``/``_netkit`` where the runtime has it and ``prog_ptr``
    (libbpf's program, whose expected attach type is the hook's) is given, else raw
    ``BPF_LINK_CREATE``."""
    idx, name = ifindex(iface, program)
    flags, rel_fd, where = _relative(before, after, f"{kind} attach of {program!r}")
    target = f"{kind} {name} {role}{where}"
    stale = {_errno.ESTALE: f"the chain is no longer at revision {expected_revision} (ESTALE)"}
    symbol, opts_type = _LIBBPF[kind]
    fn = _common.libbpf_api(symbol, prog_ptr)
    # libbpf attaches with the program's expected attach type: only when it is the hook's
    if fn is not None and lib.bpf_program__expected_attach_type(prog_ptr) == attach_type:
        opts = ffi.new(opts_type)
        opts.sz = ffi.sizeof(opts_type[:-2])
        opts.flags, opts.relative_fd = flags, rel_fd
        opts.expected_revision = expected_revision
        return _common.libbpf_route(fn, symbol, (prog_ptr, idx, opts), program, target,
                                    needed=(CAP_NET_ADMIN,), feature=feature, errors=stale)
    fd = _common.link_create(prog_fd, idx, attach_type, flags,
                             struct.pack("=IIQ", rel_fd, 0, expected_revision))
    if fd == -_errno.ESTALE:
        raise AttachError(_errno.ESTALE, f"cannot attach program {program!r} to {target}: "
                          f"{stale[_errno.ESTALE]}", program=program, target=target)
    return _common.fallback_route(
        _common.fd_link(fd, program, target, needed=(CAP_NET_ADMIN,), feature=feature), symbol)


@dataclass(frozen=True)
class Chain:
    """The programs on one tcx/netkit hook, in the order the kernel runs them."""

    revision: int
    prog_ids: tuple[int, ...]
    link_ids: tuple[int, ...]


def query(iface: str | int, attach_type: int) -> Chain:
    """The chain on a tcx/netkit hook of ``iface`` (``BPF_PROG_QUERY``; two syscalls)."""
    idx, _ = ifindex(iface)
    revision, pairs = _common.prog_query(idx, attach_type)
    return Chain(revision, tuple(p for p, _ in pairs), tuple(lk for _, lk in pairs))


# --- classic tc: clsact qdisc + filter over netlink (bpf_tc_*) ---------------------

# clsact qdiscs pybpf created, by (netns inode, ifindex) -> [filters attached
# through pybpf, created by pybpf]: the qdisc is removed with the last of them,
# not with the first (removing it would take the other filters along).
_clsact_users: dict[tuple[int, int], list[int]] = {}
_clsact_lock = threading.RLock()  # reentrant: a GC finalizer may detach mid-attach


def netlink_attach(prog_fd: int, program: str, idx: int, name: str, direction: str,
                   priority: int, handle: int) -> Link:
    """A tc filter on a clsact qdisc (created if missing; removed with pybpf's last filter)."""
    hook = ffi.new("struct bpf_tc_hook *")
    hook.sz = ffi.sizeof("struct bpf_tc_hook")
    hook.ifindex = idx
    hook.attach_point = lib.BPF_TC_INGRESS if direction == "ingress" else lib.BPF_TC_EGRESS
    target = f"tc {name} {direction}"
    # The filter is named by an ifindex of this thread's netns: detach it there,
    # whichever netns the detaching thread is in by then.
    netns = NetnsRef()
    key = (netns.ino, idx)
    with _clsact_lock:
        with capture() as log:
            rc = lib.bpf_tc_hook_create(hook)
        if rc not in (0, -_errno.EEXIST):
            netns.close()
            raise attach_error(program, -rc, f"{target} (clsact qdisc)", log, (CAP_NET_ADMIN,))
        users = _clsact_users.setdefault(key, [0, 0])
        if rc == 0:
            users[1] = 1  # ours: remove it when the last pybpf filter on it goes
        opts = ffi.new("struct bpf_tc_opts *")
        opts.sz = ffi.sizeof("struct bpf_tc_opts")
        opts.prog_fd = prog_fd
        opts.priority = priority
        opts.handle = handle
        with capture() as log:
            rc = lib.bpf_tc_attach(hook, opts)
        if rc:
            _release_clsact(key, idx, attached=False)
            netns.close()
            raise attach_error(program, -rc, target, log, (CAP_NET_ADMIN,))
        users[0] += 1
    prio, hnd = opts.priority, opts.handle

    def detach() -> None:
        h = ffi.new("struct bpf_tc_hook *")
        h.sz = ffi.sizeof("struct bpf_tc_hook")
        h.ifindex = idx
        h.attach_point = hook.attach_point
        o = ffi.new("struct bpf_tc_opts *")
        o.sz = ffi.sizeof("struct bpf_tc_opts")
        o.priority = prio
        o.handle = hnd
        try:
            with netns.entered(), _clsact_lock:
                lib.bpf_tc_detach(h, o)
                _release_clsact(key, idx, attached=True)
        finally:
            netns.close()

    return Link(program=program, target=f"{target} prio {prio} handle {hnd:#x}",
                on_detach=detach)


def _release_clsact(key: tuple[int, int], idx: int, *, attached: bool) -> None:
    """One pybpf filter is gone from ``key``'s clsact: remove the qdisc if it was
    pybpf's and no pybpf filter is left on it (call with _clsact_lock held, in
    the device's netns)."""
    users = _clsact_users.get(key)
    if users is None:
        return
    if attached:
        users[0] -= 1
    if users[0] <= 0:
        del _clsact_users[key]
        if users[1]:
            _destroy_clsact(idx)


def _destroy_clsact(idx: int) -> None:
    """Remove the clsact qdisc that pybpf created (and any filter left on it)."""
    h = ffi.new("struct bpf_tc_hook *")
    h.sz = ffi.sizeof("struct bpf_tc_hook")
    h.ifindex = idx
    h.attach_point = lib.BPF_TC_INGRESS | lib.BPF_TC_EGRESS
    lib.bpf_tc_hook_destroy(h)
