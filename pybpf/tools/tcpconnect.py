"""tcpconnect: every active TCP connect (IPv4 and IPv6) with pid, comm, addresses and ports.

    with TcpConnect() as tc:
        for ev in tc.events(timeout=1.0):
            print(ev.pid, ev.comm, ev.saddr, "->", ev.daddr, ev.dport)

Two hooks, chosen by probing the kernel (:func:`pybpf.features.trampolines`):
``fexit`` on ``tcp_v4_connect``/``tcp_v6_connect`` where BPF trampolines
work, else the ``sock:inet_sock_set_state`` tracepoint (CLOSE -> SYN_SENT)
completed at ``syscalls:sys_exit_connect``. CLI: ``pybpf tcpconnect [--pid N]
[--port P] [--duration S] [--json]``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import sys
from dataclasses import dataclass
from typing import Any, Union

from .. import features
from ..export.exporters import Exporters, add_flags
from ._common import ProbeSession, Scope, announce, pid_arg, seconds, stream, uid_arg, uid_filter

__all__ = ["ConnectEvent", "TcpConnect", "main"]

_TP_PROGS = ("tcpconnect_state", "tcpconnect_exit")
_FEXIT_PROGS = ("tcpconnect_v4_fexit", "tcpconnect_v6_fexit")

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


@dataclass
class ConnectEvent:
    """One connect. ``ret`` is connect(2)'s result (0, -EINPROGRESS, -ECONNREFUSED...)
    with the tracepoint hook; with fexit it is always 0: the SYN went out (connects
    that fail before that are not reported), the outcome comes later."""

    pid: int
    tid: int
    uid: int
    comm: str
    version: int
    saddr: IPAddress
    daddr: IPAddress
    sport: int
    dport: int
    ret: int
    cgroup_id: int
    ts: int = 0
    """CLOCK_MONOTONIC nanoseconds when connect() returned (fexit: when it finished)."""

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["saddr"], d["daddr"] = str(self.saddr), str(self.daddr)
        return d


class TcpConnect(ProbeSession):
    """Load and attach the tcpconnect probe; iterate :meth:`events` for :class:`ConnectEvent`.

    ``hook`` is ``"auto"`` (probe the kernel), ``"fexit"`` or ``"tracepoint"``;
    :attr:`hook` says which one is in use.
    """

    probe = "tcpconnect"

    def __init__(self, *, pid: int | None = None, port: int | None = None,
                 uid: int | None = None, scope: Scope | None = None,
                 hook: str = "auto", ring_bytes: int | None = None) -> None:
        if hook not in ("auto", "fexit", "tracepoint"):
            raise ValueError(f"hook must be 'auto', 'fexit' or 'tracepoint', not {hook!r}")
        if hook == "auto":
            hook = "fexit" if features.trampolines() else "tracepoint"
        self.hook = hook
        """The hook in use: ``"fexit"`` or ``"tracepoint"``."""
        rodata: dict[str, int | bytes] = {}
        if port is not None:
            if not 0 < port < 65536:
                raise ValueError(f"port must be 1-65535, got {port}")
            rodata["targ_dport"] = port
        if uid is not None:
            rodata["targ_uid"] = uid_filter(uid)
        if pid is not None:
            scope = Scope(pid=pid, cgroup=scope.cgroup if scope else None,
                          root_pid=scope.root_pid if scope else None)
        autoload = {name: hook == "tracepoint" for name in _TP_PROGS}
        autoload.update({name: hook == "fexit" for name in _FEXIT_PROGS})
        super().__init__(rodata=rodata, scope=scope, autoload=autoload,
                         ring_bytes=ring_bytes)

    def _convert(self, raw: dict[str, Any]) -> ConnectEvent:
        fam = raw["family"]
        if fam == socket.AF_INET:
            version = 4
            saddr: IPAddress = ipaddress.IPv4Address(raw["saddr"][:4])
            daddr: IPAddress = ipaddress.IPv4Address(raw["daddr"][:4])
        else:
            version = 6
            saddr = ipaddress.IPv6Address(raw["saddr"])
            daddr = ipaddress.IPv6Address(raw["daddr"])
        return ConnectEvent(pid=raw["pid"], tid=raw["tid"], uid=raw["uid"], comm=raw["comm"],
                            version=version, saddr=saddr, daddr=daddr, sport=raw["sport"],
                            dport=raw["dport"], ret=raw["ret"], cgroup_id=raw["cgroup_id"],
                            ts=raw["ts"])


def _print(ev: ConnectEvent, as_json: bool, stamp: dict[str, Any] | None = None) -> None:
    if as_json:
        print(json.dumps({**ev.to_dict(), **(stamp or {})}), flush=True)
        return
    print(f"{ev.pid:>7} {ev.comm:<16} {ev.version:>2} {str(ev.saddr):>39} {ev.sport:>5} "
          f"{str(ev.daddr):>39} {ev.dport:>5} {ev.ret:>4}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="pybpf tcpconnect", description="Trace active TCP connects (IPv4 and IPv6).",
        epilog="examples:\n  pybpf tcpconnect\n  pybpf tcpconnect --port 443 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pid", type=pid_arg, help="only this process id")
    ap.add_argument("--port", type=int, help="only connects to this destination port")
    ap.add_argument("--uid", type=uid_arg, help="only this user id")
    ap.add_argument("--hook", choices=("auto", "fexit", "tracepoint"), default="auto",
                    help="kernel hook (default: probe the kernel)")
    ap.add_argument("--duration", type=seconds, help="stop after S seconds")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    add_flags(ap)
    args = ap.parse_args(argv)
    exp = Exporters.from_args(args, "tcpconnect")
    try:
        tc = TcpConnect(pid=args.pid, port=args.port, uid=args.uid, hook=args.hook)
    except ValueError as exc:
        print(f"pybpf tcpconnect: {exc}", file=sys.stderr)
        exp.close()
        return 2
    with exp, tc:
        exp.watch(tc.obj, maps=["pybpf_ringbuf_drops"])
        announce(f"Tracing TCP connects ({tc.hook})", None if args.json else
                 f"{'PID':>7} {'COMM':<16} {'IP':>2} {'SADDR':>39} {'SPORT':>5} "
                 f"{'DADDR':>39} {'DPORT':>5} {'RET':>4}")
        stream(tc, "tcpconnect", args.duration,
               lambda ev: _print(ev, args.json, exp.stamp(exp.event("connect", ev))))
    return 0
