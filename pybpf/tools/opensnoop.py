"""opensnoop: every open(2)/openat(2)/openat2(2) with pid, comm, path, flags and fd or errno.

    with OpenSnoop(comm="python3", failed_only=False) as snoop:
        for ev in snoop.events(timeout=1.0):
            print(ev.pid, ev.path, ev.fd if ev.ok else ev.errno_name)

Filters are ``const volatile`` globals set before load: ``pid``, ``comm``,
``uid``, ``failed_only``. CLI: ``pybpf opensnoop [--pid N] [--comm NAME]
[--failed] [--duration S] [--json]``.
"""

from __future__ import annotations

import argparse
import errno as _errno
import json
import os
import sys
from dataclasses import asdict, dataclass
from typing import Any

from ..export.exporters import Exporters, add_flags
from ._common import (
    ProbeSession,
    Scope,
    announce,
    pid_arg,
    seconds,
    stream,
    tracepoint_exists,
    uid_arg,
    uid_filter,
)

__all__ = ["OpenEvent", "OpenSnoop", "open_flags_str", "main"]

_FLAG_NAMES = [(getattr(os, n), n) for n in (
    "O_WRONLY", "O_RDWR", "O_CREAT", "O_EXCL", "O_NOCTTY", "O_TRUNC", "O_APPEND", "O_NONBLOCK",
    "O_DSYNC", "O_DIRECT", "O_LARGEFILE", "O_DIRECTORY", "O_NOFOLLOW", "O_NOATIME",
    "O_CLOEXEC", "O_PATH", "O_TMPFILE") if hasattr(os, n)]


def open_flags_str(flags: int) -> str:
    """``O_WRONLY|O_CREAT|O_TRUNC`` for an open(2) flags value."""
    acc = flags & 3
    names = ["O_RDONLY" if acc == 0 else "O_WRONLY" if acc == 1 else "O_RDWR" if acc == 2
             else "O_ACCMODE"]
    rest = flags & ~3
    for bit, name in _FLAG_NAMES:
        if name in ("O_WRONLY", "O_RDWR") or not bit:
            continue
        if name == "O_TMPFILE":  # includes O_DIRECTORY's bit
            if rest & bit == bit:
                names.append(name)
                rest &= ~bit
            continue
        if rest & bit == bit:
            names.append(name)
            rest &= ~bit
    if rest:
        names.append(hex(rest))
    return "|".join(names)


@dataclass
class OpenEvent:
    """One open: ``ret`` is the fd, or -errno when the open failed."""

    pid: int
    tid: int
    uid: int
    comm: str
    path: str
    flags: int
    mode: int
    ret: int
    cgroup_id: int
    ts: int = 0
    """CLOCK_MONOTONIC nanoseconds when the open returned."""

    @property
    def ok(self) -> bool:
        return self.ret >= 0

    @property
    def fd(self) -> int | None:
        """The new fd, or None if the open failed."""
        return self.ret if self.ret >= 0 else None

    @property
    def errno(self) -> int:
        """The errno of a failed open (0 when it succeeded)."""
        return -self.ret if self.ret < 0 else 0

    @property
    def errno_name(self) -> str:
        return _errno.errorcode.get(self.errno, str(self.errno)) if self.errno else ""

    @property
    def flags_str(self) -> str:
        return open_flags_str(self.flags)


class OpenSnoop(ProbeSession):
    """Load and attach the opensnoop probe; iterate :meth:`events` for :class:`OpenEvent`."""

    probe = "opensnoop"

    def __init__(self, *, pid: int | None = None, comm: str | None = None,
                 uid: int | None = None, failed_only: bool = False,
                 scope: Scope | None = None, ring_bytes: int | None = None) -> None:
        rodata: dict[str, int | bytes] = {"targ_failed": int(failed_only)}
        if comm is not None:
            raw = comm.encode()
            if not raw or len(raw) > 15:
                raise ValueError(f"comm filter must be 1-15 bytes (TASK_COMM_LEN - 1), "
                                 f"got {comm!r}")
            rodata["targ_comm"] = raw
        if uid is not None:
            rodata["targ_uid"] = uid_filter(uid)
        if pid is not None:
            scope = Scope(pid=pid, cgroup=scope.cgroup if scope else None,
                          root_pid=scope.root_pid if scope else None)
        # open(2) has no syscall (nor tracepoint) on arm64 and other new ABIs.
        autoload = {}
        if not tracepoint_exists("syscalls", "sys_enter_open"):
            autoload = {"tracepoint__syscalls__sys_enter_open": False,
                        "tracepoint__syscalls__sys_exit_open": False}
        super().__init__(rodata=rodata, scope=scope, autoload=autoload,
                         ring_bytes=ring_bytes)

    def _convert(self, raw: dict[str, Any]) -> OpenEvent:
        return OpenEvent(pid=raw["pid"], tid=raw["tid"], uid=raw["uid"], comm=raw["comm"],
                         path=raw["path"], flags=raw["flags"], mode=raw["mode"], ret=raw["ret"],
                         cgroup_id=raw["cgroup_id"], ts=raw["ts"])


def _print(ev: OpenEvent, as_json: bool, stamp: dict[str, Any] | None = None) -> None:
    if as_json:
        d = asdict(ev)
        d["flags_str"] = ev.flags_str
        d.update(stamp or {})
        print(json.dumps(d), flush=True)
        return
    res = str(ev.fd) if ev.ok else ev.errno_name
    print(f"{ev.pid:>7} {ev.comm:<16} {res:>7}  {ev.flags_str:<24} {ev.path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="pybpf opensnoop", description="Trace open(2) calls: pid, comm, fd or errno, path.",
        epilog="examples:\n  pybpf opensnoop --comm bash\n  pybpf opensnoop --failed "
               "--duration 5 --json", formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pid", type=pid_arg, help="only this process id")
    ap.add_argument("--comm", help="only tasks with this command name (up to 15 bytes)")
    ap.add_argument("--uid", type=uid_arg, help="only this user id")
    ap.add_argument("--failed", action="store_true", help="only failed opens")
    ap.add_argument("--duration", type=seconds, help="stop after S seconds")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    add_flags(ap)
    args = ap.parse_args(argv)
    exp = Exporters.from_args(args, "opensnoop")
    try:
        snoop = OpenSnoop(pid=args.pid, comm=args.comm, uid=args.uid, failed_only=args.failed)
    except ValueError as exc:
        print(f"pybpf opensnoop: {exc}", file=sys.stderr)
        exp.close()
        return 2
    with exp, snoop:
        exp.watch(snoop.obj, maps=["pybpf_ringbuf_drops"])
        announce("Tracing opens", None if args.json else
                 f"{'PID':>7} {'COMM':<16} {'FD/ERR':>7}  {'FLAGS':<24} PATH")
        stream(snoop, "opensnoop", args.duration,
               lambda ev: _print(ev, args.json, exp.stamp(exp.event("open", ev))))
    return 0
