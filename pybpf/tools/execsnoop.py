"""execsnoop: every exec on the system, with pid, ppid, uid, comm, argv and return code.

    with ExecSnoop() as snoop:
        for ev in snoop.events(timeout=1.0):
            print(ev.pid, ev.argv)

CLI: ``pybpf execsnoop [--uid N] [--pid N] [--failed] [--duration S] [--json]``;
``--demo`` runs a few commands itself and prints their events.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from ..btf import BTFKind
from ..export.exporters import Exporters, add_flags
from ._common import (
    ProbeSession,
    Scope,
    announce,
    pid_arg,
    pid_filter,
    seconds,
    stream,
    uid_arg,
    uid_filter,
)

__all__ = ["ExecEvent", "ExecSnoop", "main"]


@dataclass
class ExecEvent:
    """One exec: ``path`` is the file passed to execve(2), ``retval`` 0 or -errno."""

    pid: int
    ppid: int
    uid: int
    retval: int
    cgroup_id: int
    comm: str
    argv: list[str]
    path: str = ""
    ts: int = 0
    """CLOCK_MONOTONIC nanoseconds when the exec returned."""


class ExecSnoop(ProbeSession):
    """Load and attach the execsnoop probe; iterate :meth:`events` for :class:`ExecEvent`."""

    probe = "execsnoop"

    def __init__(self, *, uid: int | None = None, pid: int | None = None,
                 ignore_failed: bool = False, scope: Scope | None = None,
                 ring_bytes: int | None = None) -> None:
        rodata: dict[str, int | bytes] = {"ignore_failed": int(ignore_failed)}
        if uid is not None:
            rodata["targ_uid"] = uid_filter(uid)
        if pid is not None:
            rodata["targ_pid"] = pid_filter(pid)
        super().__init__(rodata=rodata, scope=scope, ring_bytes=ring_bytes)

    def _convert(self, raw: dict[str, Any]) -> ExecEvent:
        return ExecEvent(pid=raw["pid"], ppid=raw["ppid"], uid=raw["uid"],
                         retval=raw["retval"], cgroup_id=raw["cgroup_id"], comm=raw["comm"],
                         argv=[], path=raw["filename"], ts=raw["ts"])

    def _record(self, data: bytes) -> ExecEvent:
        # argv is NUL-separated inside args[]: decode it from the raw record.
        raw = self._decode_event(data)
        off, size = self._args_at
        n, used = raw["args_count"], raw["args_size"]
        parts = data[off:off + min(used, size)].split(b"\0")
        ev = self._convert(raw)
        ev.argv = [a.decode(errors="replace") for a in parts[:n]]
        return ev

    def configure(self) -> None:
        btf = self.obj.btf
        t = btf.find("event", BTFKind.STRUCT)
        if t is None:
            raise LookupError("execsnoop.bpf.o has no struct event in its BTF")
        m = next(m for m in t.members if m.name == "args")
        self._args_at = (m.offset // 8, btf.size_of(m.type))


def _print(ev: ExecEvent, as_json: bool, stamp: dict[str, Any] | None = None) -> None:
    if as_json:
        print(json.dumps({**asdict(ev), **(stamp or {})}), flush=True)
    else:
        print(f"{ev.comm:<16} {ev.pid:>7} {ev.ppid:>7} {ev.retval:>4}  {' '.join(ev.argv)}",
              flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pybpf execsnoop", description=__doc__.split("\n")[0])
    ap.add_argument("--uid", type=uid_arg, help="only this user id")
    ap.add_argument("--pid", type=pid_arg, help="only this process id")
    ap.add_argument("--failed", action="store_true", help="include failed execs (default)")
    ap.add_argument("--ignore-failed", action="store_true", help="drop failed execs")
    ap.add_argument("--duration", type=seconds, help="stop after S seconds")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument("--demo", action="store_true",
                    help="run a few commands and print their exec events, then exit")
    add_flags(ap)
    args = ap.parse_args(argv)
    exp = Exporters.from_args(args, "execsnoop")
    # --demo watches only its own children, in the kernel: on a busy machine other
    # processes' execs would fill the ring and push the demo's own events out.
    scope = Scope(root_pid=os.getpid()) if args.demo else None
    with exp, ExecSnoop(uid=args.uid, pid=args.pid, ignore_failed=args.ignore_failed,
                        scope=scope) as snoop:
        exp.watch(snoop.obj, maps=["pybpf_ringbuf_drops"])
        announce("Tracing execs", None if args.json else
                 f"{'COMM':<16} {'PID':>7} {'PPID':>7} {'RET':>4}  ARGS")
        if args.demo:
            return _demo(snoop, args.json, exp)
        stream(snoop, "execsnoop", args.duration,
               lambda ev: _print(ev, args.json, exp.stamp(exp.event("exec", ev))))
    return 0


def _demo(snoop: ExecSnoop, as_json: bool, exp: Exporters) -> int:
    commands = [["/bin/echo", "hello from pybpf"], ["/bin/true"], ["/bin/ls", "-d", "/"],
                ["/bin/sh", "-c", "exit 0"]]
    me = os.getpid()
    expected = {tuple(c) for c in commands}
    seen: set[tuple[str, ...]] = set()
    for cmd in commands:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=False)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and seen != expected:
        snoop.poll(0.2)
        for ev in snoop.drain():
            if ev.ppid == me:
                _print(ev, as_json, exp.stamp(exp.event("exec", ev)))
                seen.add(tuple(ev.argv))
    missing = expected - seen
    if missing:
        lost = f" ({snoop.dropped} events lost: ring buffer full)" if snoop.dropped else ""
        print(f"execsnoop demo: no event for {sorted(missing)}{lost}", file=sys.stderr)
        return 1
    print(f"execsnoop demo: {len(seen)} exec events captured", file=sys.stderr)
    return 0


def _entry() -> Any:  # pragma: no cover
    raise SystemExit(main())


if __name__ == "__main__":
    raise SystemExit(main())
