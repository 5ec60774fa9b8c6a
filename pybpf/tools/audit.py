"""Session audit: everything a command and its descendants do, as Teleport-style JSON lines.

    pybpf audit -- bash -c 'cat /etc/hostname; curl -s http://10.0.0.1/'
    pybpf audit --output audit.jsonl -- ./deploy.sh

One JSON object per line, in the shape of Teleport's enhanced session
recording events:

* ``"event": "session.command"`` (code T4000I): ``path``, ``program``,
  ``argv`` (without argv[0], as Teleport), ``return_code``, ``pid``, ``ppid``,
  ``uid``, ``login``;
* ``"event": "session.open"`` (T4001I): ``path``, ``flags``, ``return_code``
  (the fd or -errno), ``pid``, ``program``;
* ``"event": "session.network"`` (T4002I): ``src_addr``, ``dst_addr``,
  ``dst_port``, ``version`` (4 or 6), ``pid``, ``program``, ``operation``.

Every event also has ``time`` (RFC 3339, UTC), ``ei`` (event index), ``sid``
(session id) and ``cgroup_id``. The session is scoped in the kernel, before
any event is emitted, by a cgroup v2 made for it (where cgroup v2 is mounted
and writable) or else by the process tree of the command, so other
processes on the machine never appear.

Python API: :class:`AuditSession` (run a command under audit) and
:class:`Auditor` (audit an existing cgroup or process tree).
"""

from __future__ import annotations

import argparse
import datetime
import errno as _errno
import json
import os
import pwd
import selectors
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

from ..errors import BPFError
from ..export.exporters import Exporters, add_flags
from ._common import ProbeSession, Scope, cgroup2_mount
from .execsnoop import ExecEvent, ExecSnoop
from .opensnoop import OpenEvent, OpenSnoop, open_flags_str
from .tcpconnect import ConnectEvent, TcpConnect

__all__ = ["Auditor", "AuditSession", "audit_event", "main"]

CODES = {"session.command": "T4000I", "session.open": "T4001I", "session.network": "T4002I"}


def _login(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _rfc3339(mono_ns: int) -> str:
    wall = time.time() - (time.monotonic() - mono_ns / 1e9)
    return datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).isoformat(
        timespec="microseconds").replace("+00:00", "Z")


def audit_event(ev: ExecEvent | OpenEvent | ConnectEvent) -> dict[str, Any]:
    """The Teleport-shaped dict for one probe event (without ``ei``/``sid``)."""
    if isinstance(ev, ExecEvent):
        d: dict[str, Any] = {
            "event": "session.command", "path": ev.path,
            "program": (os.path.basename(ev.path) or ev.comm) if ev.retval == 0 else ev.comm,
            "argv": ev.argv[1:], "return_code": ev.retval, "pid": ev.pid, "ppid": ev.ppid,
            "uid": ev.uid, "login": _login(ev.uid)}
    elif isinstance(ev, OpenEvent):
        d = {"event": "session.open", "path": ev.path, "flags": ev.flags,
             "flags_str": open_flags_str(ev.flags), "return_code": ev.ret, "pid": ev.pid,
             "program": ev.comm}
    else:
        d = {"event": "session.network", "src_addr": str(ev.saddr), "dst_addr": str(ev.daddr),
             "src_port": ev.sport, "dst_port": ev.dport, "version": ev.version, "pid": ev.pid,
             "program": ev.comm, "operation": "connect", "return_code": ev.ret}
    d["code"] = CODES[d["event"]]
    d["time"] = _rfc3339(ev.ts)
    d["cgroup_id"] = ev.cgroup_id
    return d


class Auditor:
    """The three probes (exec, open, connect) scoped to ``scope``; a context manager.

    :meth:`events` yields Teleport-shaped dicts in kernel time order within each
    batch it reads. Cost: three loaded objects, three ring buffers.
    """

    def __init__(self, scope: Scope, *, session_id: str | None = None,
                 opens: bool = True, network: bool = True) -> None:
        if scope.cgroup is None and scope.root_pid is None and scope.pid is None:
            raise ValueError("an audit needs a scope: a cgroup, a root pid or a pid")
        self.scope = scope
        self.session_id = session_id or str(uuid.uuid4())
        self._index = 0
        self._probes: list[ProbeSession] = []
        try:
            self._probes.append(ExecSnoop(scope=scope))
            if opens:
                self._probes.append(OpenSnoop(scope=scope))
            if network:
                self._probes.append(TcpConnect(scope=scope))
        except BaseException:
            self.close()
            raise
        self._sel = selectors.DefaultSelector()
        for p in self._probes:
            self._sel.register(p.fileno(), selectors.EVENT_READ)

    def read(self, timeout: float | None = 0.0) -> list[dict[str, Any]]:
        """Events ready now (waiting up to ``timeout`` seconds for the first)."""
        if timeout != 0.0:
            self._sel.select(timeout)
        raw: list[Any] = []
        for p in self._probes:
            raw.extend(p.drain())
        raw.sort(key=lambda e: e.ts)
        out = []
        for ev in raw:
            d = audit_event(ev)
            d["ei"] = self._index
            d["sid"] = self.session_id
            self._index += 1
            out.append(d)
        return out

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield events; stop after ``timeout`` seconds without one (None: never stop)."""
        while True:
            batch = self.read(timeout)
            if not batch and timeout is not None:
                return
            yield from batch

    @property
    def dropped(self) -> int:
        """Events the kernel side could not queue (ring buffers full)."""
        return sum(p.dropped for p in self._probes)

    def close(self) -> None:
        sel = getattr(self, "_sel", None)
        if sel is not None:
            sel.close()
        for p in self._probes:
            p.close()
        self._probes = []

    def __enter__(self) -> Auditor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AuditSession:
    """Run ``argv`` under audit: ``AuditSession(["sh", "-c", "..."], sink=print).run()``.

    ``scope`` is ``"auto"`` (a new cgroup v2 when possible, else the process
    tree), ``"cgroup"`` or ``"tree"``. ``sink`` gets every event dict (default:
    JSON lines on ``output``, stdout by default). :meth:`run` returns the
    command's exit status; :attr:`events` keeps every event when ``keep`` is set.
    """

    def __init__(self, argv: Sequence[str], *, scope: str = "auto",
                 sink: Callable[[dict[str, Any]], None] | None = None,
                 output: IO[str] | None = None, keep: bool = False,
                 session_id: str | None = None, env: dict[str, str] | None = None,
                 cwd: str | None = None) -> None:
        if not argv:
            raise ValueError("no command to audit")
        if scope not in ("auto", "cgroup", "tree"):
            raise ValueError(f"scope must be 'auto', 'cgroup' or 'tree', not {scope!r}")
        self.argv = list(argv)
        self.scope_mode = scope
        self.session_id = session_id or str(uuid.uuid4())
        self._out = output if output is not None else sys.stdout
        self._sink = sink
        self.keep = keep
        self.events: list[dict[str, Any]] = []
        self.dropped = 0
        self.cgroup: str | None = None
        """The cgroup made for the session (removed when it ends), if cgroup scoped."""
        self.pid: int | None = None
        self._env, self._cwd = env, cwd

    def _emit(self, ev: dict[str, Any]) -> None:
        if self.keep:
            self.events.append(ev)
        if self._sink is not None:
            self._sink(ev)
        else:
            self._out.write(json.dumps(ev) + "\n")
            self._out.flush()

    def _make_cgroup(self) -> str | None:
        root = cgroup2_mount()
        if root is None:
            if self.scope_mode == "cgroup":
                raise BPFError(_errno.ENOENT, "audit: no cgroup v2 hierarchy is mounted")
            return None
        path = os.path.join(root, f"pybpf-audit-{os.getpid()}-{self.session_id[:8]}")
        try:
            os.mkdir(path)
        except OSError as exc:
            if self.scope_mode == "cgroup":
                raise BPFError(exc.errno or _errno.EACCES,
                               f"audit: cannot create cgroup {path}: {exc.strerror}") from None
            return None
        return path

    def run(self) -> int:
        """Start the command, audit it until it exits, return its exit status.

        The command is forked, placed in its scope, and held before exec until
        the probes are attached, so its very first exec is seen. A command that
        cannot be executed raises FileNotFoundError/PermissionError.
        """
        # Resolve the command here: execvp() in the child would show as one failed
        # session.command per PATH entry tried before the right one.
        exe = self.argv[0]
        if "/" not in exe:
            path = (self._env or os.environ).get("PATH", os.defpath)
            found = shutil.which(exe, path=path)
            if found is None:
                raise FileNotFoundError(_errno.ENOENT, f"cannot run {exe!r}: not found in "
                                                       f"PATH", exe)
            exe = found
        if self.scope_mode != "tree":
            self.cgroup = self._make_cgroup()
        # The audited command must not outlive the auditor, even a SIGKILLed one: the
        # command gets PR_SET_PDEATHSIG, and a reaper (forked before anything else, not
        # in the cgroup) kills what is left in the cgroup and removes it once the
        # auditor's end of its pipe closes, however the auditor ended.
        reaper, reaper_w = _start_reaper(self.cgroup) if self.cgroup else (-1, -1)
        parent = os.getpid()
        pid = -1
        auditor: Auditor | None = None
        gate_r, gate_w = os.pipe()
        err_r, err_w = os.pipe()  # O_CLOEXEC: EOF once the exec succeeded
        try:
            pid = os.fork()
            if pid == 0:  # child: wait for the gate, then exec
                try:
                    os.close(gate_w)
                    os.close(err_r)
                    _die_with_parent(parent)
                    os.read(gate_r, 1)
                    if self._cwd:
                        os.chdir(self._cwd)
                    os.execve(exe, self.argv,
                              self._env if self._env is not None else os.environ)
                except OSError as exc:
                    os.write(err_w, str(exc.errno or 1).encode())
                finally:
                    os._exit(127)
            os.close(gate_r)
            os.close(err_w)
            gate_r = err_w = -1
            self.pid = pid
            if self.cgroup:
                with open(os.path.join(self.cgroup, "cgroup.procs"), "w") as f:
                    f.write(str(pid))
            scope = Scope(cgroup=self.cgroup) if self.cgroup else Scope(root_pid=pid)
            auditor = Auditor(scope, session_id=self.session_id)
            os.write(gate_w, b"g")  # the probes are attached: let the command exec
            os.close(gate_w)
            gate_w = -1
            failure = os.read(err_r, 16)
            if failure:
                os.waitpid(pid, 0)
                pid = -1
                err = int(failure)
                raise OSError(err, f"cannot run {self.argv[0]!r}: {os.strerror(err)}",
                              self.argv[0])
            status = None
            while status is None:
                done, st = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = os.waitstatus_to_exitcode(st)
                    pid = -1
                    break
                for ev in auditor.read(0.1):
                    self._emit(ev)
            if self.cgroup:
                _kill_cgroup(self.cgroup)
            # The last events may still be in flight in the rings.
            for ev in auditor.events(timeout=0.05):
                self._emit(ev)
            self.dropped = auditor.dropped
            return status
        finally:
            for fd in (gate_r, gate_w, err_r, err_w):
                if fd >= 0:
                    os.close(fd)
            if pid > 0:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
            if auditor is not None:
                auditor.close()
            if self.cgroup:
                _kill_cgroup(self.cgroup)
                _rmdir_retry(self.cgroup)
            if reaper_w >= 0:
                os.close(reaper_w)  # the reaper finds nothing left and exits
                os.waitpid(reaper, 0)


_libc: Any = None


def _die_with_parent(parent: int) -> None:
    """In the forked command: SIGKILL when the auditor dies (survives exec)."""
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the auditor died before the prctl
        os._exit(137)


def _start_reaper(cgroup: str) -> tuple[int, int]:
    """Fork a process that waits for the returned pipe end to close (the auditor
    exiting, or killed), then kills whatever is left in ``cgroup`` and removes it."""
    r, w = os.pipe()  # O_CLOEXEC: the audited command does not inherit it
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w)
            # its own session: a SIGKILL of the auditor's process group (a terminal, a
            # service manager, kill -9 -PGID) leaves it alive to clean up
            os.setsid()
            for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT):
                signal.signal(sig, signal.SIG_IGN)  # outlive a terminal's Ctrl-C
            while os.read(r, 64):
                pass
            _kill_cgroup(cgroup)
            deadline = time.monotonic() + 5
            while os.path.isdir(cgroup) and time.monotonic() < deadline:
                try:
                    os.rmdir(cgroup)
                except OSError:
                    time.sleep(0.02)
        finally:
            os._exit(0)
    os.close(r)
    return pid, w


def _cgroup_pids(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _kill_cgroup(path: str) -> None:
    """Kill what is left in the session's cgroup (cgroup.kill where the kernel has it)."""
    if not _cgroup_pids(path):
        return
    try:
        with open(os.path.join(path, "cgroup.kill"), "w") as f:
            f.write("1")
    except OSError:
        for pid in _cgroup_pids(path):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 2
    while _cgroup_pids(path) and time.monotonic() < deadline:
        time.sleep(0.01)


def _rmdir_retry(path: str) -> None:
    deadline = time.monotonic() + 2
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                print(f"pybpf audit: could not remove cgroup {path}", file=sys.stderr)
                return
            time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="pybpf audit",
        description="Run a command and log what it and its descendants do (execs, opens, "
                    "TCP connects) as Teleport-style JSON lines.",
        epilog="examples:\n  pybpf audit -- bash -c 'cat /etc/hostname'\n"
               "  pybpf audit --output session.jsonl --scope tree -- ./deploy.sh",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", "-o", help="write JSON lines here (default: stdout)")
    ap.add_argument("--scope", choices=("auto", "cgroup", "tree"), default="auto",
                    help="how the session is delimited (default: cgroup v2 if possible)")
    ap.add_argument("--session-id", help="the sid field (default: a random UUID)")
    add_flags(ap)
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARG...]")
    args = ap.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.print_usage(sys.stderr)
        print("pybpf audit: no command given (pybpf audit -- CMD ...)", file=sys.stderr)
        return 2
    exp = Exporters.from_args(args, "audit")
    out: IO[str] = open(args.output, "w") if args.output else sys.stdout  # noqa: SIM115

    def sink(ev: dict[str, Any]) -> None:
        # The same fields as a JSON line and as an OTLP log, plus the host's resource.
        exp.event(ev["event"], ev, wall_ns=_wall_ns(ev["time"]))
        out.write(json.dumps({**ev, **exp.resource}) + "\n")
        out.flush()

    try:
        session = AuditSession(cmd, scope=args.scope, sink=sink, session_id=args.session_id)
        try:
            rc = session.run()
        except (FileNotFoundError, PermissionError) as exc:
            print(f"pybpf audit: {exc.strerror}", file=sys.stderr)
            return 127
        if session.dropped:
            print(f"pybpf audit: {session.dropped} events lost (ring buffers full)",
                  file=sys.stderr)
        return rc if rc >= 0 else 128 - rc
    finally:
        exp.close()
        if out is not sys.stdout:
            out.close()


def _wall_ns(rfc3339: str) -> int:
    """Nanoseconds since the epoch of an event's ``time`` (microsecond precision)."""
    dt = datetime.datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%S.%fZ")
    delta = dt - datetime.datetime(1970, 1, 1)
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000
