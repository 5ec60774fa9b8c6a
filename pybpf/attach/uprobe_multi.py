"""uprobe_multi links (kernel 6.6+): one link for many uprobes in one binary.

Targets are function symbols matched by glob patterns (``"pybpf_*"``), exact
names, or file offsets; each can carry its own BPF cookie. Symbols are read
from the binary's ``.symtab`` and ``.dynsym`` (pyelftools, cached per file),
and the kernel gets file offsets, as libbpf 1.3's ``attach_uprobe_multi`` does.
"""

from __future__ import annotations

import errno as _errno
import fnmatch
import os
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from .._ffi import ffi
from ..errors import AttachError
from ..link import Link
from ..symbolize import load_elf, opened_binary
from . import _common

__all__ = ["resolve", "attach_uprobe_multi", "BPF_F_UPROBE_MULTI_RETURN"]

BPF_F_UPROBE_MULTI_RETURN = 1


def resolve(path: str, functions: str | Sequence[str], *,
            read_from: str | None = None) -> dict[str, int]:
    """Function name -> file offset in ``path`` for a glob pattern or a list of names
    (every name must exist). Reads the symbol tables once per file version (through
    ``read_from``, a name of the same open file, when given)."""
    syms = load_elf(path, read_from=read_from)
    if syms is None:
        raise AttachError(_errno.ENOEXEC, f"{path} is not a readable ELF binary", target=path)
    by_name: dict[str, int] = {}
    for name, defs in syms.by_name.items():  # every alias and version of each function
        defs = [d for d in defs if not d.ifunc]  # an IFUNC's address is its resolver's
        if not defs:
            continue
        off = syms.file_offset(min(defs, key=lambda s: (s.hidden, s.weak)).addr)
        if off is not None:
            by_name[name] = off
    if isinstance(functions, str):
        found = {n: o for n, o in sorted(by_name.items()) if fnmatch.fnmatchcase(n, functions)}
        if not found:
            raise AttachError(_errno.ENOENT, f"no function matches {functions!r} in {path}",
                              target=f"{path}:{functions}")
        return found
    missing = [f for f in functions if f not in by_name]
    if missing:
        raise AttachError(_errno.ENOENT, f"function(s) {', '.join(map(repr, missing))} not "
                          f"found in {path}", target=f"{path}:{missing[0]}")
    return {f: by_name[f] for f in functions}


def attach_uprobe_multi(prog_fd: int, program: str, binary: str | os.PathLike[str],
                        functions: str | Sequence[str] | None = None, *,
                        offsets: Sequence[int] | None = None,
                        cookies: Sequence[int] | Mapping[str, int] | None = None,
                        pid: int = -1, retprobe: bool = False, attach_type: int = 48,
                        kind: str = "uprobe_multi", feature: object = None,
                        prog_ptr: Any = None, session: bool = False) -> Link:
    """One uprobe_multi (or uprobe session) link on many functions of ``binary``.

    ``functions``: a glob pattern or names; or ``offsets``: file offsets. ``cookies``:
    one per target (a sequence in target order, or a name -> cookie mapping).
    ``pid`` (> 0) limits the probes to one process. One syscall after the symbol read:
    libbpf's ``bpf_program__attach_uprobe_multi`` (given the offsets read here) where the
    runtime has it and ``prog_ptr`` is given, else raw ``BPF_LINK_CREATE``; sessions
    always the latter (libbpf before 1.5 cannot make them).
    """
    path = os.path.abspath(os.fspath(binary))
    if not os.path.exists(path):
        raise AttachError(_errno.ENOENT, f"cannot attach program {program!r}: binary {path} "
                          "does not exist", program=program, target=path)
    if (functions is None) == (offsets is None):
        raise TypeError(f"program {program!r}: give functions= (a pattern or names) or "
                        "offsets=, exactly one")
    # one open file for the symbols and the attach (symbolize.opened_binary)
    with opened_binary(path, f"cannot attach program {program!r}") as fd_path:
        if functions is not None:
            targets = resolve(path, functions, read_from=fd_path)
            names = list(targets)
            offs = list(targets.values())
            what = functions if isinstance(functions, str) else ",".join(functions)
        else:
            offs = [int(o) for o in offsets or ()]
            names = [hex(o) for o in offs]
            what = ",".join(names)
        if not offs:
            raise ValueError(f"program {program!r}: no uprobe_multi targets")
        cks = _common.cookies_for(names, cookies, program, "uprobe targets")
        target = f"{kind} {path}:{what}" + (f" pid {pid}" if pid > 0 else "")
        cpath = ffi.new("char[]", fd_path.encode())  # the open file
        coffs = ffi.new("__u64[]", offs)
        ccks = ffi.new("__u64[]", cks) if cks is not None else ffi.NULL
        symbol = "bpf_program__attach_uprobe_multi"
        fn = None if session else _common.libbpf_api(symbol, prog_ptr)
        if fn is not None:
            opts = ffi.new("struct pybpf_uprobe_multi_opts *")
            opts.sz = ffi.sizeof("struct pybpf_uprobe_multi_opts")
            offsets_ul = ffi.new("unsigned long[]", offs)
            opts.offsets, opts.cookies = offsets_ul, ccks
            opts.cnt, opts.retprobe = len(offs), retprobe
            link = _common.libbpf_route(fn, symbol, (prog_ptr, pid if pid > 0 else -1, cpath,
                                                     ffi.NULL, opts), program, target,
                                        feature=feature, errors={_errno.ESRCH: f"no process {pid}"})
            link.targets = dict(zip(names, offs))  # type: ignore[attr-defined]
            return link
        tail = struct.pack("=QQQQIII", int(ffi.cast("uintptr_t", cpath)),
                           int(ffi.cast("uintptr_t", coffs)), 0, int(ffi.cast("uintptr_t", ccks)),
                           len(offs), BPF_F_UPROBE_MULTI_RETURN if retprobe else 0,
                           pid if pid > 0 else 0)
        fd = _common.link_create(prog_fd, 0, attach_type, 0, tail)
        if fd == -_errno.ESRCH:
            raise AttachError(_errno.ESRCH, f"cannot attach program {program!r} to {target}: "
                              f"no process {pid}", program=program, target=target)
        link = _common.fd_link(fd, program, target, feature=feature)
        if session:  # never libbpf's: name the attach type the link really has
            link.via = "bpf_link_create(BPF_TRACE_UPROBE_SESSION)"
        else:
            _common.fallback_route(link, symbol)
        link.targets = dict(zip(names, offs))  # type: ignore[attr-defined]
        return link
