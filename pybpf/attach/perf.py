"""perf_event programs: on a perf event fd, or cpu-clock sampling on every CPU."""

from __future__ import annotations

import errno as _errno
import os
from typing import Any

from .._args import c_int
from .._ffi import capture, ffi, lib
from ..link import Link, LinkGroup
from ._common import attach_error, libbpf_link

__all__ = ["online_cpus", "attach_perf_event"]


def online_cpus() -> list[int]:
    """The online CPUs (/sys/devices/system/cpu/online)."""
    with open("/sys/devices/system/cpu/online") as f:
        text = f.read().strip()
    cpus: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            cpus.extend(range(int(a), int(b) + 1))
        elif part:
            cpus.append(int(part))
    return cpus


def attach_perf_event(ptr: Any, program: str, perf_fd: int | None, *, frequency: int | None,
                      period: int | None, cpus: list[int] | None, pid: int,
                      cookie: int) -> Link:
    """Attach the program ``ptr`` to ``perf_fd`` (a dup is owned by the link) or to a new
    cpu-clock event per CPU (one perf_event_open and one link per CPU), with
    ``cookie`` as the BPF cookie (``bpf_get_attach_cookie``)."""
    who = f"program {program!r}: "
    opts = ffi.new("struct bpf_perf_event_opts *")
    opts.sz = ffi.sizeof("struct bpf_perf_event_opts")
    opts.bpf_cookie = c_int(cookie, who + "cookie", "u64")
    pid = c_int(pid, who + "pid (-1: every process)", "s32", lo=-1)
    if perf_fd is not None:
        perf_fd = c_int(perf_fd, who + "perf_fd", "fd")
        try:
            own = os.dup(perf_fd)  # the link owns (and closes) its own copy
        except OSError as e:
            raise attach_error(program, e.errno or _errno.EBADF, f"perf_event fd {perf_fd}",
                               []) from None
        with capture() as log:
            lptr = lib.bpf_program__attach_perf_event_opts(ptr, own, opts)
        if lptr == ffi.NULL:
            err = ffi.errno
            os.close(own)  # libbpf does not close it on failure
            raise attach_error(program, err, f"perf_event fd {perf_fd}", log)
        return libbpf_link(lptr, program, f"perf_event fd {perf_fd}", log)
    freq = 1 if period is None else 0
    sample = frequency or 99 if period is None else period
    sample = c_int(sample, who + ("frequency" if period is None else "period"), "u64", lo=1)
    links: list[Link] = []
    cpu_list = cpus if cpus is not None else ([-1] if pid >= 0 else online_cpus())
    try:
        for cpu in cpu_list:
            pfd = lib.pybpf_perf_event_open(1, 0, sample, freq, pid, cpu, -1, 0, 0)
            where = f"cpu-clock cpu {cpu}" + (f" pid {pid}" if pid >= 0 else "")
            if pfd < 0:
                raise attach_error(program, -pfd, f"perf_event {where}")
            with capture() as log:
                lptr = lib.bpf_program__attach_perf_event_opts(ptr, pfd, opts)
            if lptr == ffi.NULL:
                err = ffi.errno
                os.close(pfd)
                raise attach_error(program, err, f"perf_event {where}", log)
            links.append(Link(lptr, program=program, target=f"perf_event {where}"))
    except BaseException:
        for lk in links:
            lk.detach()
        raise
    return LinkGroup(links, program=program,
                     target=f"perf_event cpu-clock on {len(links)} cpu(s)")
