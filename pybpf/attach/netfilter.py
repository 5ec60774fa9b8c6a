"""netfilter links (kernel 6.4+): a BPF program as a netfilter hook function."""

from __future__ import annotations

import struct
from typing import Any

from .._args import c_int, choice
from .._ffi import CAP_NET_ADMIN, ffi
from ..link import Link
from . import _common

__all__ = ["FAMILIES", "HOOKS", "attach_netfilter", "BPF_F_NETFILTER_IP_DEFRAG"]

FAMILIES = {"ipv4": 2, "inet4": 2, "ipv6": 10, "inet6": 10}  # NFPROTO_*
HOOKS = {"prerouting": 0, "local_in": 1, "input": 1, "forward": 2, "local_out": 3,
         "output": 3, "postrouting": 4}  # NF_INET_*
BPF_F_NETFILTER_IP_DEFRAG = 1
_NETFILTER = 45


def attach_netfilter(prog_fd: int, program: str, family: str | int = "ipv4",
                     hook: str | int = "local_in", priority: int = 0, *, defrag: bool = False,
                     feature: object = None, prog_ptr: Any = None) -> Link:
    """A netfilter link: ``family`` ("ipv4"/"ipv6" or NFPROTO_*), ``hook`` ("prerouting",
    "local_in", "forward", "local_out", "postrouting" or NF_INET_*), ``priority``
    (the kernel refuses INT_MIN and INT_MAX), ``defrag`` (see reassembled packets).
    libbpf's ``bpf_program__attach_netfilter`` where the runtime has it and ``prog_ptr``
    is given, else raw ``BPF_LINK_CREATE``."""
    who = f"cannot attach program {program!r}: netfilter"
    pf = (choice(family, FAMILIES, f"{who} family") if isinstance(family, str)
          else c_int(family, f"{who} family", "u32"))
    hooknum = (choice(hook, HOOKS, f"{who} hook") if isinstance(hook, str)
               else c_int(hook, f"{who} hook", "u32"))
    priority = c_int(priority, f"{who} priority", "s32")
    target = f"netfilter {family} {hook} priority {priority}" + (" defrag" if defrag else "")
    flags = BPF_F_NETFILTER_IP_DEFRAG if defrag else 0
    symbol = "bpf_program__attach_netfilter"
    fn = _common.libbpf_api(symbol, prog_ptr)
    if fn is not None:
        opts = ffi.new("struct pybpf_netfilter_opts *")
        opts.sz = ffi.sizeof("struct pybpf_netfilter_opts")
        opts.pf, opts.hooknum, opts.priority, opts.flags = pf, hooknum, priority, flags
        return _common.libbpf_route(fn, symbol, (prog_ptr, opts), program, target,
                                    needed=(CAP_NET_ADMIN,), feature=feature)
    fd = _common.link_create(prog_fd, 0, _NETFILTER, 0, struct.pack("=IIiI", pf, hooknum,
                                                                     priority, flags))
    return _common.fallback_route(
        _common.fd_link(fd, program, target, needed=(CAP_NET_ADMIN,), feature=feature), symbol)
