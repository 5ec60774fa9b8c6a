"""Session audit (pybpf.tools.audit): a shell script's execs, opens and connects, nothing else."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from pybpf.tools._common import cgroup2_mount
from pybpf.tools.audit import AuditSession

pytestmark = pytest.mark.kernel

SCRIPT = """#!/bin/bash
# $1: work dir, $2: IPv4 port, $3: IPv6 port
echo hello > "$1/out.txt"
/bin/cat "$1/in.txt" "$1/missing" > /dev/null 2>&1
/nonexistent/pybpf-cmd 2>/dev/null
exec 3<>/dev/tcp/127.0.0.1/$2
exec 3>&-
exec 4<>/dev/tcp/::1/$3
exec 4>&-
exit 7
"""


@pytest.fixture
def listeners():
    """IPv4 and IPv6 loopback listeners that accept and close."""
    socks = []
    for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.bind((addr, 0))
        s.listen(16)
        s.settimeout(0.1)
        socks.append(s)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            for s in socks:
                try:
                    c, _ = s.accept()
                    c.close()
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield socks[0].getsockname()[1], socks[1].getsockname()[1]
    stop.set()
    t.join()
    for s in socks:
        s.close()


@pytest.fixture
def noise(tmp_path, listeners):
    """Foreign activity during the session: this process opens and connects meanwhile."""
    stop = threading.Event()
    marker = tmp_path / "foreign-marker"

    def run():
        while not stop.is_set():
            try:
                marker.write_text("x")
                socket.create_connection(("127.0.0.1", listeners[0]), timeout=1).close()
            except OSError:
                pass
            time.sleep(0.005)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    yield str(marker)
    stop.set()
    t.join()


def _script(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("bash is needed for /dev/tcp")
    script = tmp_path / "audit.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    (tmp_path / "in.txt").write_text("input\n")
    return str(script)


def _check_session(events, script, tmp_path, ports, session):
    d = str(tmp_path)
    assert all(e["sid"] == session.session_id for e in events)
    assert [e["ei"] for e in events] == list(range(len(events)))
    cmds = [e for e in events if e["event"] == "session.command"]
    root = [e for e in cmds if e["path"] == script]
    assert len(root) == 1
    root_pid = root[0]["pid"]
    assert root_pid == session.pid
    assert root[0]["argv"] == [d, str(ports[0]), str(ports[1])]
    assert root[0]["program"] == "audit.sh" and root[0]["return_code"] == 0
    assert root[0]["ppid"] == os.getpid()
    assert root[0]["uid"] == os.getuid() and root[0]["login"] == "root" or os.getuid() != 0
    cat = [e for e in cmds if e["path"] == "/bin/cat"]
    assert len(cat) == 1
    assert cat[0]["argv"] == [f"{d}/in.txt", f"{d}/missing"]
    assert cat[0]["ppid"] == root_pid and cat[0]["program"] == "cat"
    bad = [e for e in cmds if e["path"] == "/nonexistent/pybpf-cmd"]
    assert len(bad) == 1 and bad[0]["return_code"] == -errno.ENOENT
    assert len(cmds) == 3

    opens = {e["path"]: e for e in events if e["event"] == "session.open"
             and e["path"].startswith(d)}
    out = opens[f"{d}/out.txt"]
    assert out["pid"] == root_pid and out["program"] == "audit.sh"
    assert out["flags"] & (os.O_WRONLY | os.O_CREAT | os.O_TRUNC) == (
        os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    assert out["return_code"] >= 0
    assert opens[f"{d}/in.txt"]["pid"] == cat[0]["pid"]
    assert opens[f"{d}/in.txt"]["return_code"] >= 0
    assert opens[f"{d}/missing"]["return_code"] == -errno.ENOENT
    assert opens[f"{d}/missing"]["program"] == "cat"
    assert opens[script]["pid"] == root_pid  # bash reads its script
    assert set(opens) == {f"{d}/out.txt", f"{d}/in.txt", f"{d}/missing", script}

    net = [e for e in events if e["event"] == "session.network"]
    assert len(net) == 2
    v4 = next(e for e in net if e["version"] == 4)
    assert (v4["src_addr"], v4["dst_addr"], v4["dst_port"]) == ("127.0.0.1", "127.0.0.1",
                                                                 ports[0])
    v6 = next(e for e in net if e["version"] == 6)
    assert (v6["src_addr"], v6["dst_addr"], v6["dst_port"]) == ("::1", "::1", ports[1])
    assert {v4["pid"], v6["pid"]} == {root_pid}
    assert v4["program"] == "audit.sh"

    # Nothing foreign: every event comes from the script or a process it started.
    session_pids = {e["pid"] for e in cmds}
    assert {e["pid"] for e in events} <= session_pids
    assert len({e["cgroup_id"] for e in events}) == 1
    for e in events:
        assert e["code"] == {"session.command": "T4000I", "session.open": "T4001I",
                             "session.network": "T4002I"}[e["event"]]
        assert e["time"].endswith("Z")


@pytest.mark.parametrize("scope", ["cgroup", "tree"])
def test_audit_shell_script(tmp_path, listeners, noise, scope):
    if scope == "cgroup" and cgroup2_mount() is None:
        pytest.skip("no cgroup v2 hierarchy mounted")
    script = _script(tmp_path)
    session = AuditSession([script, str(tmp_path), str(listeners[0]), str(listeners[1])],
                           scope=scope, keep=True, sink=lambda e: None)
    rc = session.run()
    assert rc == 7
    assert session.dropped == 0
    events = session.events
    assert not any(e.get("path") == noise for e in events)
    _check_session(events, script, tmp_path, listeners, session)
    if scope == "cgroup":
        assert session.cgroup is not None and not os.path.exists(session.cgroup)
        assert events[0]["cgroup_id"] != 1


def test_audit_cli_writes_json_lines(tmp_path, listeners):
    script = _script(tmp_path)
    out = tmp_path / "audit.jsonl"
    r = subprocess.run([sys.executable, "-m", "pybpf", "audit", "--output", str(out),
                        "--session-id", "sess-1", "--", script, str(tmp_path),
                        str(listeners[0]), str(listeners[1])],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 7, r.stderr
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert {e["sid"] for e in events} == {"sess-1"}
    cmds = [e for e in events if e["event"] == "session.command"]
    assert [c["path"] for c in cmds] == [script, "/bin/cat", "/nonexistent/pybpf-cmd"]
    net = sorted((e["version"], e["dst_port"]) for e in events
                 if e["event"] == "session.network")
    assert net == [(4, listeners[0]), (6, listeners[1])]


def test_audit_resolves_command_in_path():
    """A bare command name runs the file PATH finds, with no failed exec per PATH entry."""
    session = AuditSession(["true", "pybpf-arg"], keep=True, sink=lambda e: None,
                           env={"PATH": "/nonexistent-pybpf:/usr/bin:/bin"})
    assert session.run() == 0
    cmds = [e for e in session.events if e["event"] == "session.command"]
    assert [(c["path"], c["argv"], c["return_code"]) for c in cmds] == [
        (shutil.which("true", path="/usr/bin:/bin"), ["pybpf-arg"], 0)]


def test_audit_errors(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pybpf", "audit"], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 2 and "no command given" in r.stderr
    r = subprocess.run([sys.executable, "-m", "pybpf", "audit", "--", "/nonexistent/x"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 127 and "No such file or directory" in r.stderr
    with pytest.raises(FileNotFoundError, match="not found in PATH"):
        AuditSession(["pybpf-no-such-command"]).run()
    with pytest.raises(ValueError, match="no command"):
        AuditSession([])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("scope", ["cgroup", "tree"])
def test_sigkill_of_auditor_kills_command_and_cgroup(scope, tmp_path):
    """SIGKILL the auditor: the audited command (and its child) die within seconds and
    the session's cgroup directory is removed."""
    root = cgroup2_mount()
    if scope == "cgroup" and root is None:
        pytest.skip("no cgroup v2 hierarchy is mounted")
    marker = tmp_path / "pids"
    # The command records its pid and a child's, then sleeps.
    cmd = f"sleep 60 & echo $$ $! > {marker}; wait"
    proc = subprocess.Popen([sys.executable, "-m", "pybpf", "audit", "--scope", scope,
                             "--output", os.devnull, "--", "sh", "-c", cmd],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (marker.exists() and marker.read_text().strip()):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the audited command never started"
            time.sleep(0.05)
        pids = [int(x) for x in marker.read_text().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        cgroups = [d for d in os.listdir(root) if d.startswith(f"pybpf-audit-{proc.pid}-")] \
            if root else []
        if scope == "cgroup":
            assert len(cgroups) == 1
            with open(os.path.join(root, cgroups[0], "cgroup.procs")) as f:
                assert set(pids) <= {int(x) for x in f.read().split()}
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        # The shell dies with its parent (PR_SET_PDEATHSIG); its child is killed with
        # the cgroup (scope cgroup); in tree scope only the direct command is covered.
        watched = pids if scope == "cgroup" else pids[:1]
        while any(_alive(p) for p in watched) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in watched), [p for p in watched if _alive(p)]
        if scope == "cgroup":
            while os.path.isdir(os.path.join(root, cgroups[0])) and \
                    time.monotonic() < deadline:
                time.sleep(0.05)
            assert not os.path.isdir(os.path.join(root, cgroups[0]))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if marker.exists():
            for p in marker.read_text().split():
                try:
                    os.kill(int(p), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
