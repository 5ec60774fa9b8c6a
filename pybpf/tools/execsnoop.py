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
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from .. import Object, probe_path
from ..btf import BTFKind
from ..ringbuf import RingBuffer

__all__ = ["ExecEvent", "ExecSnoop", "main"]


@dataclass
class ExecEvent:
    """One exec: ``retval`` is 0 or -errno."""

    pid: int
    ppid: int
    uid: int
    retval: int
    cgroup_id: int
    comm: str
    argv: list[str]


class ExecSnoop:
    """Load and attach the execsnoop probe; iterate :meth:`events`."""

    def __init__(self, *, uid: int | None = None, pid: int | None = None,
                 ignore_failed: bool = False) -> None:
        self.obj = Object.open(probe_path("execsnoop"))
        try:
            if uid is not None:
                self.obj.set_rodata("targ_uid", uid)
            if pid is not None:
                self.obj.set_rodata("targ_pid", pid)
            self.obj.set_rodata("ignore_failed", int(ignore_failed))
            self.obj.load()
            self.obj.attach()
            self._layout = _layout(self.obj)
            self._pending: deque[ExecEvent] = deque()
            self._rb = RingBuffer(self.obj.maps["events"], callback=self._on_event)
        except BaseException:
            self.obj.close()
            raise

    def _on_event(self, data: bytes) -> None:
        f = {name: data[off:off + size] for name, (off, size) in self._layout.items()}

        def num(name: str, signed: bool = False) -> int:
            return int.from_bytes(f[name], "little", signed=signed)

        args = f["args"][:num("args_size")].split(b"\0")
        argv = [a.decode(errors="replace") for a in args[:num("args_count")]]
        self._pending.append(ExecEvent(
            pid=num("pid"), ppid=num("ppid"), uid=num("uid"), retval=num("retval", True),
            cgroup_id=num("cgroup_id"), comm=f["comm"].split(b"\0", 1)[0].decode(errors="replace"),
            argv=argv))

    def events(self, timeout: float | None = None) -> Iterator[ExecEvent]:
        """Yield events as they come; stop after ``timeout`` seconds without one."""
        while True:
            while self._pending:
                yield self._pending.popleft()
            if self._rb.poll(timeout) == 0 and not self._pending:
                return

    def close(self) -> None:
        rb = getattr(self, "_rb", None)
        if rb is not None:
            rb.close()
        self.obj.close()

    def __enter__(self) -> ExecSnoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _layout(obj: Object) -> dict[str, tuple[int, int]]:
    """Byte offset and size of each field of ``struct event``, from the object's BTF."""
    btf = obj.btf
    t = btf.find("event", BTFKind.STRUCT)
    if t is None:
        raise LookupError("execsnoop.bpf.o has no struct event in its BTF")
    return {m.name: (m.offset // 8, btf.size_of(m.type)) for m in t.members}


def _print(ev: ExecEvent, as_json: bool) -> None:
    if as_json:
        print(json.dumps(asdict(ev)), flush=True)
    else:
        print(f"{ev.comm:<16} {ev.pid:>7} {ev.ppid:>7} {ev.retval:>4}  {' '.join(ev.argv)}",
              flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pybpf execsnoop", description=__doc__.split("\n")[0])
    ap.add_argument("--uid", type=int, help="only this user id")
    ap.add_argument("--pid", type=int, help="only this process id")
    ap.add_argument("--failed", action="store_true", help="include failed execs (default)")
    ap.add_argument("--ignore-failed", action="store_true", help="drop failed execs")
    ap.add_argument("--duration", type=float, help="stop after S seconds")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument("--demo", action="store_true",
                    help="run a few commands and print their exec events, then exit")
    args = ap.parse_args(argv)
    with ExecSnoop(uid=args.uid, pid=args.pid, ignore_failed=args.ignore_failed) as snoop:
        if not args.json:
            print(f"{'COMM':<16} {'PID':>7} {'PPID':>7} {'RET':>4}  ARGS", flush=True)
        if args.demo:
            return _demo(snoop, args.json)
        deadline = time.monotonic() + args.duration if args.duration else None
        try:
            while deadline is None or time.monotonic() < deadline:
                for ev in snoop.events(timeout=0.2):
                    _print(ev, args.json)
        except KeyboardInterrupt:
            pass
    return 0


def _demo(snoop: ExecSnoop, as_json: bool) -> int:
    commands = [["/bin/echo", "hello from pybpf"], ["/bin/true"], ["/bin/ls", "-d", "/"],
                ["/bin/sh", "-c", "exit 0"]]
    me = os.getpid()
    expected = {tuple(c) for c in commands}
    seen: set[tuple[str, ...]] = set()
    for cmd in commands:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=False)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and seen != expected:
        for ev in snoop.events(timeout=0.2):
            if ev.ppid == me:
                _print(ev, as_json)
                seen.add(tuple(ev.argv))
    missing = expected - seen
    if missing:
        print(f"execsnoop demo: no event for {sorted(missing)}", file=sys.stderr)
        return 1
    print(f"execsnoop demo: {len(seen)} exec events captured", file=sys.stderr)
    return 0


def _entry() -> Any:  # pragma: no cover
    raise SystemExit(main())


if __name__ == "__main__":
    raise SystemExit(main())
