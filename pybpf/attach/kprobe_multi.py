"""kprobe_multi links (kernel 5.18+, fprobe) and kprobe sessions (6.10+).

Functions are given as a glob pattern, matched against tracefs's
``available_filter_functions`` (what fprobe can attach to), or as exact names;
each can carry a BPF cookie. Plain and return probes of an object's program are
made by libbpf's ``bpf_program__attach_kprobe_multi_opts`` (libbpf 1.1 has it;
pybpf gives it the names, so a pattern is matched against what fprobe can attach
to on every libbpf), sessions (which libbpf 1.1 cannot make) and bare program fds
with raw ``BPF_LINK_CREATE``.
"""

from __future__ import annotations

import errno as _errno
import fnmatch
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from .. import _fs
from .._ffi import ffi
from ..errors import AttachError
from ..link import Link
from . import _common

__all__ = ["available_functions", "attach_kprobe_multi", "BPF_F_KPROBE_MULTI_RETURN"]

BPF_F_KPROBE_MULTI_RETURN = 1


def available_functions() -> list[str]:
    """Kernel functions fprobe can attach to (tracefs available_filter_functions)."""
    root = _fs.ensure_tracefs()
    out = []
    with open(f"{root}/available_filter_functions") as f:
        for line in f:
            name = line.split()[0] if line.strip() else ""
            if name and not name.startswith("__ftrace_invalid_address"):
                out.append(name)
    return out


def attach_kprobe_multi(prog_fd: int, program: str, functions: str | Sequence[str], *,
                        cookies: Sequence[int] | Mapping[str, int] | None = None,
                        retprobe: bool = False, attach_type: int = 42,
                        kind: str = "kprobe_multi", feature: object = None,
                        prog_ptr: Any = None, session: bool = False) -> Link:
    """One kprobe_multi (or session) link on the functions of a pattern or a name list."""
    if isinstance(functions, str):
        if any(c in functions for c in "*?["):
            names = sorted({n for n in available_functions()
                            if fnmatch.fnmatchcase(n, functions)})
            if not names:
                raise AttachError(_errno.ENOENT, f"cannot attach program {program!r}: no "
                                  f"traceable kernel function matches {functions!r}",
                                  program=program, target=functions)
        else:
            names = [functions]
        what = functions
    else:
        names = list(functions)
        what = ",".join(names)
    cks = _common.cookies_for(names, cookies, program, "functions")
    target = f"{kind} {what}"
    keep = [ffi.new("char[]", n.encode()) for n in names]
    syms = ffi.new("char *[]", keep)
    ccks = ffi.new("__u64[]", cks) if cks is not None else ffi.NULL
    symbol = "bpf_program__attach_kprobe_multi_opts"
    fn = None if session else _common.libbpf_api(symbol, prog_ptr)
    if fn is not None:
        opts = ffi.new("struct bpf_kprobe_multi_opts *")
        opts.sz = ffi.sizeof("struct bpf_kprobe_multi_opts")
        opts.syms, opts.cookies, opts.cnt, opts.retprobe = syms, ccks, len(names), retprobe
        link = _common.libbpf_route(fn, symbol, (prog_ptr, ffi.NULL, opts), program, target,
                                    feature=feature)
        link.functions = tuple(names)  # type: ignore[attr-defined]
        return link
    tail = struct.pack("=IIQQQ", BPF_F_KPROBE_MULTI_RETURN if retprobe else 0, len(names),
                       int(ffi.cast("uintptr_t", syms)), 0, int(ffi.cast("uintptr_t", ccks)))
    fd = _common.link_create(prog_fd, 0, attach_type, 0, tail)
    link = _common.fd_link(fd, program, target, feature=feature)
    if session:  # never libbpf's: name the attach type the link really has
        link.via = "bpf_link_create(BPF_TRACE_KPROBE_SESSION)"
    else:
        _common.fallback_route(link, symbol)
    link.functions = tuple(names)  # type: ignore[attr-defined]
    return link
