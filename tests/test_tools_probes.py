"""The shipped probes (pybpf.tools) against the real kernel, on activity the tests cause."""

from __future__ import annotations

import errno
import ipaddress
import json
import mmap
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import require

from pybpf import features
from pybpf.tools.biolatency import BioLatency, Log2Histogram, disk_dev
from pybpf.tools.execsnoop import ExecSnoop
from pybpf.tools.opensnoop import OpenSnoop, open_flags_str
from pybpf.tools.profile import Profile
from pybpf.tools.tcpconnect import TcpConnect

pytestmark = pytest.mark.kernel
DATA = Path(__file__).resolve().parent / "tools_data"
BIG_RING = 16 << 20  # unfiltered sessions: room for a busy machine's other execs


def _collect(session, until, timeout=5.0):
    """Events until ``until(events)`` is true or ``timeout`` passes."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got.extend(session.events(timeout=0.1))
        if until(got):
            break
    return got


# --- execsnoop -----------------------------------------------------------------
def test_execsnoop_path_argv_ppid_retval(tmp_path):
    script = tmp_path / "run me.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    with ExecSnoop(ring_bytes=BIG_RING) as snoop:  # others' execs must not fill it
        p = subprocess.run([str(script), "first arg", "x" * 40], check=True)
        bad = subprocess.run(["/bin/sh", "-c", "exec /nonexistent/pybpf-nothing 2>/dev/null"],
                             check=False)
        evs = _collect(snoop, lambda g: any(e.path == "/nonexistent/pybpf-nothing" for e in g))
    mine = [e for e in evs if e.path == str(script)]
    assert len(mine) == 1, evs
    ev = mine[0]
    assert ev.ppid == os.getpid()
    assert ev.argv == [str(script), "first arg", "x" * 40]
    assert ev.retval == 0 and ev.uid == os.getuid()
    assert ev.comm == "run me.sh"[:15]
    failed = [e for e in evs if e.path == "/nonexistent/pybpf-nothing"]
    assert failed and failed[0].retval == -errno.ENOENT
    assert p.returncode == 0 and bad.returncode != 0


def test_execsnoop_ignore_failed():
    with ExecSnoop(ignore_failed=True, ring_bytes=BIG_RING) as snoop:
        subprocess.run(["/bin/sh", "-c", "exec /nonexistent/pybpf-x 2>/dev/null; true"],
                       check=False)
        subprocess.run(["/bin/true", "pybpf-ignore-failed-marker"], check=True)
        evs = _collect(snoop, lambda g: any("pybpf-ignore-failed-marker" in e.argv for e in g))
    assert any(e.argv == ["/bin/true", "pybpf-ignore-failed-marker"] for e in evs)
    assert all(e.retval == 0 for e in evs)
    assert not any(e.path == "/nonexistent/pybpf-x" for e in evs)


NOBODY = 65534


def _exec_when_told(argv: list[str], uid: int | None = None) -> tuple[int, int]:
    """Fork a child that waits on a pipe, then (as ``uid``) execs ``argv``: the pid is
    known before the exec. Returns (pid, write end of the pipe)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w)
            os.read(r, 1)
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    os.close(r)
    return pid, w


def _run_children(children: list[tuple[int, int]]) -> None:
    for _pid, w in children:
        os.write(w, b"x")
        os.close(w)
    for pid, _w in children:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


def _settle(snoop, want_pids: set[int]) -> list:
    evs = _collect(snoop, lambda g: want_pids <= {e.pid for e in g})
    return evs + _collect(snoop, lambda g: False, timeout=0.3)  # anything that slipped by


def test_execsnoop_pid_filter():
    mark = f"pybpf-pidfilter-{os.getpid()}"
    a = _exec_when_told(["/bin/true", mark, "a"])
    b = _exec_when_told(["/bin/true", mark, "b"])
    with ExecSnoop(pid=a[0]) as snoop:
        _run_children([a, b])
        subprocess.run(["/bin/true", mark, "c"], check=True)
        evs = _settle(snoop, {a[0]})
    assert [(e.pid, e.argv, e.ppid, e.retval) for e in evs] == [
        (a[0], ["/bin/true", mark, "a"], os.getpid(), 0)]


def test_execsnoop_uid_filter_and_both_filters():
    mark = f"pybpf-uidfilter-{os.getpid()}"
    a = _exec_when_told(["/bin/true", mark, "a"], uid=NOBODY)
    b = _exec_when_told(["/bin/true", mark, "b"])  # root
    c = _exec_when_told(["/bin/true", mark, "c"], uid=NOBODY)
    with ExecSnoop(uid=NOBODY) as snoop:
        _run_children([a, b, c])
        evs = _settle(snoop, {a[0], c[0]})
    assert {e.uid for e in evs} == {NOBODY}, evs  # nobody else's execs
    mine = sorted((e.pid, e.argv, e.uid) for e in evs if mark in e.argv)
    assert mine == sorted([(a[0], ["/bin/true", mark, "a"], NOBODY),
                           (c[0], ["/bin/true", mark, "c"], NOBODY)])
    # pid and uid together: only a task matching both
    d = _exec_when_told(["/bin/true", mark, "d"], uid=NOBODY)
    e = _exec_when_told(["/bin/true", mark, "e"], uid=NOBODY)
    f = _exec_when_told(["/bin/true", mark, "f"])
    with ExecSnoop(pid=d[0], uid=NOBODY) as snoop, ExecSnoop(pid=f[0], uid=NOBODY) as none:
        _run_children([d, e, f])
        evs = _settle(snoop, {d[0]})
        nothing = _collect(none, lambda g: False, timeout=0.3)
    assert [(x.pid, x.argv, x.uid) for x in evs] == [(d[0], ["/bin/true", mark, "d"], NOBODY)]
    assert nothing == []  # f ran as root: the uid filter keeps it out


# --- opensnoop -------------------------------------------------------------------
def test_opensnoop_fd_errno_flags_path(tmp_path):
    target = tmp_path / "opened.txt"
    with OpenSnoop(pid=os.getpid()) as snoop:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        os.close(fd)
        with pytest.raises(FileNotFoundError):
            os.open(tmp_path / "missing", os.O_RDONLY)
        evs = _collect(snoop, lambda g: any(e.path.endswith("missing") for e in g))
        assert snoop.dropped == 0
    ok = [e for e in evs if e.path == str(target)]
    assert len(ok) == 1
    assert ok[0].fd == fd and ok[0].ok and ok[0].pid == os.getpid()
    assert ok[0].flags & (os.O_WRONLY | os.O_CREAT | os.O_TRUNC) == (
        os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    assert ok[0].mode == 0o640
    assert "O_CREAT" in ok[0].flags_str and "O_WRONLY" in ok[0].flags_str
    assert ok[0].comm == Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    bad = [e for e in evs if e.path == str(tmp_path / "missing")]
    assert len(bad) == 1 and bad[0].ret == -errno.ENOENT and bad[0].fd is None
    assert bad[0].errno_name == "ENOENT"
    # Only this process: nothing foreign.
    assert {e.pid for e in evs} == {os.getpid()}


def test_opensnoop_comm_and_failed_only(tmp_path):
    comm = f"pyb{os.getpid() % 100000}cat"
    cat = tmp_path / comm
    shutil.copy("/bin/cat", cat)
    present = tmp_path / "present"
    present.write_text("x")
    with OpenSnoop(comm=comm, failed_only=True) as snoop:
        subprocess.run([str(cat), str(present), str(tmp_path / "absent")],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        # A different comm opening a missing file must not show.
        with pytest.raises(FileNotFoundError):
            open(tmp_path / "absent-from-python")
        evs = _collect(snoop, lambda g: any(e.path.endswith("absent") for e in g))
    assert evs, "no event from the renamed cat"
    assert all(e.comm == comm for e in evs)
    assert all(e.ret < 0 for e in evs)
    assert [e.path for e in evs if e.path.startswith(str(tmp_path))] == [
        str(tmp_path / "absent")]


def test_opensnoop_comm_too_long():
    with pytest.raises(ValueError, match="1-15 bytes"):
        OpenSnoop(comm="x" * 16)


def test_open_flags_str():
    assert open_flags_str(os.O_RDONLY) == "O_RDONLY"
    assert open_flags_str(os.O_RDWR | os.O_APPEND) == "O_RDWR|O_APPEND"


# --- tcpconnect ---------------------------------------------------------------------
def _listener(family, addr):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind((addr, 0))
    s.listen()
    return s


def test_tcpconnect_v4_v6_and_refused():
    srv4 = _listener(socket.AF_INET, "127.0.0.1")
    srv6 = _listener(socket.AF_INET6, "::1")
    # A port with no listener: bind one, then close it.
    tmp = socket.socket()
    tmp.bind(("127.0.0.1", 0))
    closed_port = tmp.getsockname()[1]
    tmp.close()
    try:
        with TcpConnect(pid=os.getpid()) as tc:
            assert tc.hook == ("fexit" if features.trampolines() else "tracepoint")
            c4 = socket.create_connection(srv4.getsockname())
            c6 = socket.create_connection(srv6.getsockname()[:2])
            c_refused = socket.socket()
            with pytest.raises(ConnectionRefusedError):
                c_refused.connect(("127.0.0.1", closed_port))
            want = 3  # fexit sees the refused connect too: its SYN went out
            evs = _collect(tc, lambda g: len(g) >= want)
        by_port = {e.dport: e for e in evs}
        e4 = by_port[srv4.getsockname()[1]]
        assert e4.version == 4 and e4.pid == os.getpid()
        assert e4.saddr == ipaddress.IPv4Address("127.0.0.1")
        assert e4.daddr == ipaddress.IPv4Address("127.0.0.1")
        assert e4.sport == c4.getsockname()[1] and e4.ret == 0
        e6 = by_port[srv6.getsockname()[1]]
        assert e6.version == 6 and e6.daddr == ipaddress.IPv6Address("::1")
        assert e6.saddr == ipaddress.IPv6Address("::1")
        assert e6.sport == c6.getsockname()[1]
        # connect(2)'s result with the tracepoint hook; tcp_v4_connect()'s with fexit
        assert by_port[closed_port].ret == (-errno.ECONNREFUSED if tc.hook == "tracepoint"
                                            else 0)
        assert len(evs) == want
        c4.close()
        c6.close()
        c_refused.close()
    finally:
        srv4.close()
        srv6.close()


def test_tcpconnect_port_filter():
    srv_a = _listener(socket.AF_INET, "127.0.0.1")
    srv_b = _listener(socket.AF_INET, "127.0.0.1")
    port_b = srv_b.getsockname()[1]
    try:
        with TcpConnect(port=port_b) as tc:
            socket.create_connection(srv_a.getsockname()).close()
            socket.create_connection(srv_b.getsockname()).close()
            evs = _collect(tc, lambda g: len(g) >= 1, timeout=2)
            evs += _collect(tc, lambda g: False, timeout=0.3)
        assert [e.dport for e in evs] == [port_b]
    finally:
        srv_a.close()
        srv_b.close()


def test_tcpconnect_fexit_variant():
    require(features.trampolines())
    srv = _listener(socket.AF_INET, "127.0.0.1")
    try:
        with TcpConnect(pid=os.getpid(), hook="fexit") as tc:
            c = socket.create_connection(srv.getsockname())
            evs = _collect(tc, lambda g: len(g) >= 1)
        assert evs[0].sport == c.getsockname()[1]
        c.close()
    finally:
        srv.close()


# --- biolatency ------------------------------------------------------------------------
@pytest.fixture
def loop_device():
    """A fresh 4 MiB loop device (detached afterwards)."""
    if shutil.which("losetup") is None:
        pytest.skip("losetup is not installed")
    fd, backing = tempfile.mkstemp(prefix="pybpf-bio-")
    os.ftruncate(fd, 4 << 20)
    os.close(fd)
    res = subprocess.run(["losetup", "--find", "--show", backing], capture_output=True,
                         text=True, check=False)
    if res.returncode != 0:
        os.unlink(backing)
        pytest.skip(f"cannot create a loop device: {res.stderr.strip()}")
    dev = res.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False)
        os.unlink(backing)


def test_biolatency_counts_direct_io_on_loop_device(loop_device):
    name = os.path.basename(loop_device)
    with BioLatency(per_disk=True, device=name) as bl:
        fd = os.open(loop_device, os.O_RDWR | os.O_DIRECT)
        buf = mmap.mmap(-1, 4096)
        buf.write(b"p" * 4096)
        try:
            for i in range(16):
                os.pwritev(fd, [buf], i * 4096)
            for i in range(16):
                assert os.preadv(fd, [buf], i * 4096) == 4096
        finally:
            os.close(fd)
        hists = bl.histograms()
        assert list(hists) == [name]  # the device filter kept every other disk out
        h = hists[name]
        assert h.total >= 32
        assert h.unit == "usecs"
        text = h.format()
        assert text.splitlines()[0].split() == ["usecs", ":", "count", "distribution"]
        assert f": {h.buckets()[-1][2]:<8} |" in text
        bl.clear()
        assert bl.histograms() == {}


def test_biolatency_unknown_device():
    with pytest.raises(OSError, match="no block device named 'nosuchdisk'"):
        BioLatency(device="nosuchdisk")


def test_log2_histogram_format():
    h = Log2Histogram([0, 1, 4, 2] + [0] * 23)
    assert h.buckets() == [(0, 1, 0), (2, 3, 1), (4, 7, 4), (8, 15, 2)]
    lines = h.format().splitlines()
    assert lines[3] == "         4 -> 7          : 4        |" + "*" * 40 + "|"
    assert lines[4] == "         8 -> 15         : 2        |" + "*" * 20 + " " * 20 + "|"
    for name in os.listdir("/sys/class/block")[:1]:
        major, minor = open(f"/sys/class/block/{name}/dev").read().split(":")
        assert disk_dev(name) == int(major) << 20 | int(minor)


# --- profile ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spin_binary(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler for the CPU burner")
    out = tmp_path_factory.mktemp("spin") / "spin"
    subprocess.run([cc, "-O1", "-fno-omit-frame-pointer", "-o", str(out),
                    str(DATA / "spin.c")], check=True)
    return str(out)


def test_profile_user_and_kernel_stacks(spin_binary):
    proc = subprocess.Popen([spin_binary, "3"])
    try:
        with Profile(pid=proc.pid, frequency=499) as prof:
            time.sleep(0.6)
            prof.stop()
            samples = prof.samples()
            folded = prof.folded()
    finally:
        proc.kill()
        proc.wait()
    assert samples, "no samples of the CPU burner"
    assert {s.pid for s in samples} == {proc.pid}
    assert {s.comm for s in samples} == {os.path.basename(spin_binary)[:15]}
    user_frames = {f for s in samples for f in s.user_stack}
    assert "pybpf_spin_leaf" in user_frames
    assert "main" in user_frames
    kernel = [s for s in samples if "read_zero" in s.kernel_stack]
    assert kernel, "no sample inside read(/dev/zero)"
    # Folded: comm first, user frames outermost first, then kernel frames marked _[k].
    line = next(x for x in folded if "read_zero_[k]" in x)
    stack, count = line.rsplit(" ", 1)
    frames = stack.split(";")
    assert frames[0] == os.path.basename(spin_binary)[:15]
    assert frames.index("main") < frames.index("pybpf_spin_outer") < frames.index(
        "read_zero_[k]")
    assert int(count) >= 1
    assert sum(s.count for s in samples) == sum(int(x.rsplit(" ", 1)[1]) for x in folded)


def test_profile_rejects_bad_arguments():
    with pytest.raises(ValueError, match="exclude"):
        Profile(user_only=True, kernel_only=True)
    with pytest.raises(ValueError, match="frequency"):
        Profile(frequency=0)


def test_tools_cli_help(capsys):
    from pybpf.cli import main

    for tool in ("opensnoop", "tcpconnect", "biolatency", "profile", "execsnoop"):
        with pytest.raises(SystemExit) as exc:
            main([tool, "--help"])
        assert exc.value.code == 0
        assert f"pybpf {tool}" in capsys.readouterr().out


def test_tools_cli_runs(capsys, tmp_path):
    """opensnoop's CLI (in-process) prints this process's opens: the marker file a
    thread keeps opening while the tool runs, and nothing from other processes."""
    from pybpf.cli import main

    comm = open("/proc/self/comm").read().strip()
    marker = tmp_path / "pybpf-cli-marker"
    marker.write_text("x")
    stop = threading.Event()
    fds: list[int] = []

    def open_until_stopped():  # the tool attaches at an unknown moment: keep opening
        while not stop.wait(0.05):
            fd = os.open(marker, os.O_RDONLY)
            fds.append(fd)
            os.close(fd)

    t = threading.Thread(target=open_until_stopped)
    t.start()
    try:
        assert main(["opensnoop", "--pid", str(os.getpid()), "--duration", "1.0",
                     "--json"]) == 0
    finally:
        stop.set()
        t.join()
    evs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    mine = [e for e in evs if e["path"] == str(marker)]
    assert len(mine) >= 3, evs  # ~20 opens during the second it ran
    assert all(e["ret"] in fds for e in mine), (mine, fds)  # the fds the opens returned
    assert {(e["pid"], e["comm"]) for e in evs} == {(os.getpid(), comm)}
    assert main(["opensnoop", "--comm", "x" * 20]) == 2
    assert "1-15 bytes" in capsys.readouterr().err


def test_execsnoop_execveat_fexecve():
    with ExecSnoop(ring_bytes=BIG_RING) as snoop:  # others' execs must not fill it
        pid = os.fork()
        if pid == 0:  # child: fexecve(2) = execveat(fd, "", argv, envp, AT_EMPTY_PATH)
            try:
                fd = os.open("/bin/true", os.O_RDONLY)
                os.execve(fd, ["true-by-fd", "pybpf-fexecve"], {})
            finally:
                os._exit(127)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        evs = _collect(snoop, lambda g: any(e.pid == pid for e in g))
    mine = [e for e in evs if e.pid == pid]
    assert len(mine) == 1
    assert mine[0].argv == ["true-by-fd", "pybpf-fexecve"]
    assert mine[0].path == "" and mine[0].retval == 0 and mine[0].comm == "true"


def test_lost_events_are_counted(tmp_path):
    """A ring buffer too small for a burst: every open is either received or counted lost."""
    n = 200
    with OpenSnoop(pid=os.getpid(), ring_bytes=4096) as snoop:
        for i in range(n):
            try:
                os.open(tmp_path / f"absent-{i}", os.O_RDONLY)
            except FileNotFoundError:
                pass
        got = [e for e in snoop.drain() if e.path.startswith(str(tmp_path))]
        dropped = snoop.dropped
    assert dropped > 0, "a 4 KiB ring should overflow"
    assert len(got) + dropped == n
    assert [e.path for e in got] == [str(tmp_path / f"absent-{i}") for i in range(len(got))]


def test_biolatency_cli(loop_device, capsys):
    from pybpf.cli import main

    stop = time.monotonic() + 1.5

    def io():
        fd = os.open(loop_device, os.O_RDONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, 4096)
        try:
            i = 0
            while time.monotonic() < stop:
                os.preadv(fd, [buf], (i % 256) * 4096)
                i += 1
        finally:
            os.close(fd)

    t = threading.Thread(target=io)
    t.start()
    try:
        rc = main(["biolatency", "--disks", "--device", os.path.basename(loop_device),
                   "--interval", "0.5", "--count", "1", "--json"])
    finally:
        t.join()
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (hist,) = out["histograms"]
    assert hist["label"] == os.path.basename(loop_device) and hist["unit"] == "usecs"
    assert hist["total"] > 0
    assert hist["total"] == sum(b["count"] for b in hist["buckets"])


def test_profile_cli_folded(spin_binary, capsys):
    from pybpf.cli import main

    proc = subprocess.Popen([spin_binary, "3"])
    try:
        rc = main(["profile", "--pid", str(proc.pid), "--frequency", "499", "--duration",
                   "0.5", "--folded"])
    finally:
        proc.kill()
        proc.wait()
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(x.startswith(os.path.basename(spin_binary)) for x in lines)
    assert any(";pybpf_spin_leaf" in x for x in lines)
    assert all(x.rsplit(" ", 1)[1].isdigit() for x in lines)


def test_tcpconnect_cli(capsys):
    from pybpf.cli import main

    srv = _listener(socket.AF_INET6, "::1")
    port = srv.getsockname()[1]
    stop = threading.Event()
    ports: list[int] = []

    def connect_until_stopped():  # the tool starts at an unknown moment: keep connecting
        while not stop.wait(0.1):
            c = socket.create_connection(("::1", port))
            ports.append(c.getsockname()[1])
            c.close()

    t = threading.Thread(target=connect_until_stopped)
    t.start()
    try:
        assert main(["tcpconnect", "--port", str(port), "--duration", "1.5", "--json"]) == 0
    finally:
        stop.set()
        t.join()
        srv.close()
    evs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert evs, "no connect reported"
    for e in evs:
        assert (e["version"], e["saddr"], e["daddr"], e["dport"], e["pid"]) == (
            6, "::1", "::1", port, os.getpid())
        assert e["sport"] in ports
    assert len({e["sport"] for e in evs}) == len(evs)
