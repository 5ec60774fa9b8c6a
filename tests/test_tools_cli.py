"""The tools' commands print the events the test caused, exactly: the README's first
command (``python3 -m pybpf execsnoop --demo``) and the execsnoop, opensnoop and
tcpconnect subcommands, each run as a child process (a crash fails one test).

Expected values come from what the test did (the pids of the processes it started,
the fds and errnos its opens got, the ports of its sockets) or from an independent
ExecSnoop session watching the same execs, never from the command's own output.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _child import readline

from pybpf.tools.execsnoop import ExecSnoop

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parent.parent


def run_tool(args: list[str], trigger: Callable[[], object] | None = None, *,
             timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], object]:
    """``python3 -m pybpf ARGS`` in a child; ``trigger()`` runs once the tool has said
    it is tracing (its banner on stderr: the probe is attached by then)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.Popen([sys.executable, "-m", "pybpf", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    result: object = None
    try:
        if trigger is not None:
            banner = readline(proc, proc.stderr)
            assert "Hit Ctrl-C to end." in banner, banner
            result = trigger()
            out, err = proc.communicate(timeout=timeout)
            err = banner + err
        else:
            out, err = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.communicate(timeout=120)
        raise
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    done.pid = proc.pid  # type: ignore[attr-defined]
    return done, result


def my_comm() -> str:
    return Path("/proc/self/comm").read_text().strip()


# --- the README's first command -------------------------------------------------------
DEMO = [["/bin/echo", "hello from pybpf"], ["/bin/true"], ["/bin/ls", "-d", "/"],
        ["/bin/sh", "-c", "exit 0"]]


def _demo_lines(out: str) -> list[tuple[str, int, int, int, str]]:
    """The table rows of ``execsnoop`` text output: (comm, pid, ppid, ret, args)."""
    rows = []
    row = re.compile(r"^(.{16}) +(\d+) +(\d+) +(-?\d+)  (.*)$")  # comm: 16 columns
    for line in out.splitlines()[1:]:
        m = row.match(line)
        if m is None:  # another process's argv holding a newline: its next line
            continue
        rows.append((m[1].rstrip(), int(m[2]), int(m[3]), int(m[4]), m[5]))
    return rows


def test_readme_first_command_execsnoop_demo():
    """``python3 -m pybpf execsnoop --demo`` prints the execs of the commands it starts,
    as the kernel reported them to an independent session, and the count line."""
    seen: list = []
    stop = threading.Event()
    # A big ring, drained by a thread while the demo runs: other processes' execs on a
    # busy machine must not push the demo's out of the watcher.
    with ExecSnoop(ring_bytes=32 << 20) as watcher:
        def consume() -> None:
            while not stop.is_set():
                seen.extend(watcher.events(timeout=0.1))

        t = threading.Thread(target=consume)
        t.start()
        try:
            r, _ = run_tool(["execsnoop", "--demo"])
            tool_pid = r.pid  # type: ignore[attr-defined]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and len(
                    [e for e in list(seen) if e.ppid == tool_pid]) < len(DEMO):
                time.sleep(0.1)
        finally:
            stop.set()
            t.join()
        dropped = watcher.dropped
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["COMM", "PID", "PPID", "RET", "ARGS"], r.stdout
    rows = _demo_lines(r.stdout)
    assert r.stderr.strip().splitlines()[-1] == "execsnoop demo: 4 exec events captured"
    assert "Tracing execs... Hit Ctrl-C to end." in r.stderr
    # Every row is one of the demo's commands, each exactly once, run by the tool itself.
    assert {row[2] for row in rows} == {tool_pid}, rows
    assert sorted(row[4] for row in rows) == sorted(" ".join(c) for c in DEMO)
    # The independent session saw the same execs: same pids, argv, comm, result.
    kernel = {(e.comm, e.pid, e.ppid, e.retval, " ".join(e.argv)) for e in seen
              if e.ppid == tool_pid}
    assert set(rows) == kernel, (rows, kernel, f"watcher dropped {dropped}")
    assert {row[0] for row in rows} == {"echo", "true", "ls", "sh"}
    assert all(row[3] == 0 for row in rows)


def test_execsnoop_demo_json():
    r, _ = run_tool(["execsnoop", "--demo", "--json"])
    assert r.returncode == 0, r.stderr
    evs = [json.loads(x) for x in r.stdout.splitlines()]
    assert sorted(e["argv"] for e in evs) == sorted(DEMO)
    assert len({e["ppid"] for e in evs}) == 1 and len({e["pid"] for e in evs}) == 4
    assert all(e["retval"] == 0 and e["uid"] == os.getuid() for e in evs)
    assert {e["path"] for e in evs} == {c[0] for c in DEMO}


# --- execsnoop ---------------------------------------------------------------------
NOBODY = 65534


def _exec_some(marker: str) -> list[tuple[str, int, int, int, list[str]]]:
    """Three execs that work and one that fails, as nobody (the tool runs with --uid
    65534: other processes' execs on a busy machine stay out of its ring); returns what
    the kernel should report: (comm, pid, ppid, retval, argv) of each."""
    want = []
    for i in range(3):
        p = subprocess.Popen(["/bin/true", marker, str(i)], user=NOBODY)
        p.wait()
        want.append(("true", p.pid, os.getpid(), 0, ["/bin/true", marker, str(i)]))
    sh = ["/bin/sh", "-c", f"exec /nonexistent/{marker} 2>/dev/null"]
    p = subprocess.Popen(sh, user=NOBODY)
    p.wait()
    want.append(("sh", p.pid, os.getpid(), 0, sh))  # sh itself, then its failed exec
    want.append(("sh", p.pid, os.getpid(), -errno.ENOENT, [f"/nonexistent/{marker}"]))
    return want


def test_execsnoop_cli_prints_the_execs_it_saw():
    marker = f"pybpf-cli-exec-{os.getpid()}"
    r, want = run_tool(["execsnoop", "--uid", str(NOBODY), "--duration", "3"],
                       lambda: _exec_some(marker))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split() == ["COMM", "PID", "PPID", "RET", "ARGS"]
    rows = [row for row in _demo_lines(r.stdout) if marker in row[4]]
    assert rows == [(c, pid, ppid, ret, " ".join(argv))
                    for c, pid, ppid, ret, argv in want], r.stdout  # type: ignore[attr-defined]


def test_execsnoop_cli_json_and_ignore_failed():
    marker = f"pybpf-cli-execj-{os.getpid()}"
    r, want = run_tool(["execsnoop", "--uid", str(NOBODY), "--duration", "3", "--json",
                        "--ignore-failed"],
                       lambda: _exec_some(marker))
    assert r.returncode == 0, r.stderr
    evs = [e for e in map(json.loads, r.stdout.splitlines())
           if any(marker in a for a in e["argv"])]
    assert all(e["retval"] == 0 for e in map(json.loads, r.stdout.splitlines()))
    assert [(e["comm"], e["pid"], e["ppid"], e["retval"], e["argv"]) for e in evs] == [
        w for w in want if w[3] == 0], r.stdout  # type: ignore[attr-defined]
    assert all(e["uid"] == NOBODY and e["path"] == e["argv"][0] for e in evs)


# --- opensnoop ---------------------------------------------------------------------
def _open_some(tmp_path: Path) -> list[tuple[str, int]]:
    """Open a file that exists (O_RDONLY) and one that does not: (path, fd or -errno)."""
    present = tmp_path / "present"  # made before the tool started
    fd = os.open(present, os.O_RDONLY)
    os.close(fd)
    try:
        os.open(tmp_path / "absent", os.O_RDONLY)
    except FileNotFoundError as e:
        ret = -e.errno
    return [(str(present), fd), (str(tmp_path / "absent"), ret)]


def test_opensnoop_cli_prints_the_opens_it_saw(tmp_path):
    (tmp_path / "present").write_text("x")
    r, want = run_tool(["opensnoop", "--pid", str(os.getpid()), "--duration", "3"],
                       lambda: _open_some(tmp_path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["PID", "COMM", "FD/ERR", "FLAGS", "PATH"], lines[0]
    pat = re.compile(rf"^\s*(\d+) {re.escape(my_comm())}\s+(\S+)\s+(\S+)\s+(.*)$")
    rows = []
    for line in lines[1:]:
        m = pat.match(line)
        assert m, f"a line not from this process: {line!r}"  # --pid kept others out
        assert int(m.group(1)) == os.getpid()
        rows.append((m.group(4), m.group(2), m.group(3)))
    mine = [row for row in rows if row[0].startswith(str(tmp_path))]
    (present, fd), (absent, ret) = want  # type: ignore[misc]
    flags = "O_RDONLY|O_CLOEXEC"  # what os.open(path, os.O_RDONLY) passes
    assert mine == [(present, str(fd), flags), (absent, "ENOENT", flags)], rows
    assert ret == -errno.ENOENT


def test_opensnoop_cli_json_failed_only(tmp_path):
    (tmp_path / "present").write_text("x")
    r, want = run_tool(["opensnoop", "--pid", str(os.getpid()), "--failed", "--duration", "3",
                        "--json"], lambda: _open_some(tmp_path))
    assert r.returncode == 0, r.stderr
    evs = [json.loads(x) for x in r.stdout.splitlines()]
    assert all(e["pid"] == os.getpid() and e["ret"] < 0 for e in evs), evs
    mine = [e for e in evs if e["path"].startswith(str(tmp_path))]
    (_present, _fd), (absent, ret) = want  # type: ignore[misc]
    assert [(e["path"], e["ret"], e["comm"], e["flags_str"]) for e in mine] == [
        (absent, ret, my_comm(), "O_RDONLY|O_CLOEXEC")]


# --- tcpconnect ---------------------------------------------------------------------
def test_tcpconnect_cli_prints_the_connects_it_saw():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    other.bind(("127.0.0.1", 0))
    other.listen(8)
    port = srv.getsockname()[1]

    def connect() -> list[int]:
        sports = []
        for _ in range(3):
            c = socket.create_connection(("127.0.0.1", port))
            sports.append(c.getsockname()[1])
            c.close()
        socket.create_connection(other.getsockname()).close()  # another port: filtered out
        return sports

    try:
        r, sports = run_tool(["tcpconnect", "--port", str(port), "--duration", "3"], connect)
    finally:
        srv.close()
        other.close()
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["PID", "COMM", "IP", "SADDR", "SPORT", "DADDR", "DPORT",
                                "RET"], lines[0]
    rows = [line.split() for line in lines[1:]]
    assert [tuple(x) for x in rows] == [
        (str(os.getpid()), my_comm(), "4", "127.0.0.1", str(sp), "127.0.0.1", str(port), "0")
        for sp in sports], r.stdout  # type: ignore[attr-defined]


def test_execsnoop_demo_while_other_processes_exec():
    """The demo on a busy machine: another process execs in a loop meanwhile (its events
    would fill a ring shared with them); the demo still reports its four commands."""
    floods = [subprocess.Popen(["/bin/sh", "-c", "while :; do /bin/true; done"])
              for _ in range(4)]
    try:
        time.sleep(0.3)
        r, _ = run_tool(["execsnoop", "--demo", "--json"])
    finally:
        for flood in floods:
            flood.kill()
            flood.wait()
    assert r.returncode == 0, r.stderr
    evs = [json.loads(x) for x in r.stdout.splitlines()]
    assert sorted(e["argv"] for e in evs) == sorted(DEMO)
    assert {e["ppid"] for e in evs} == {r.pid}  # type: ignore[attr-defined]
