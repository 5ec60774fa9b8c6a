"""Conformance: pybpf front ends (tests/_libbpf_tools.py) beside the C tools of
Debian's libbpf-tools, on the same .bpf.o (carved from the installed binary at test
time) and the same workload, generated here; their outputs must report the same
events, pids, paths and counts.

Shapes: a log2 histogram with paired tp_btf/raw_tp programs (runqlat), a histogram
in .bss over a uprobe on an aliased libc symbol (funclatency on clock_nanosleep), a
hash of counters with a .rodata pid filter (syscount), perf buffer streams with
.rodata filters (execsnoop -u, an unsigned one; opensnoop -p; sigsnoop -p -s, whose
front end also chooses its programs as the C tool does and names signals), a
uretprobe whose section names no binary (bashreadline), a ring buffer stream
(mountsnoop) and stack traces from a map the object leaves unsized (offcputime).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from _child import readline
from _libbpf_tools import carve

HERE = os.path.dirname(os.path.abspath(__file__))
FRONT = os.path.join(HERE, "_libbpf_tools.py")


@pytest.fixture(scope="module")
def objdir():
    d = tempfile.mkdtemp(prefix="pybpf-conformance-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def tool(name: str, objdir: str) -> tuple[str, str]:
    """(C binary, carved .bpf.o path); skips when libbpf-tools is not installed."""
    binary = shutil.which(name) or f"/usr/sbin/{name}"
    if not os.path.exists(binary):
        pytest.skip(f"libbpf-tools is not installed ({binary} missing; scripts/setup.sh "
                    "installs it: apt-get install libbpf-tools)")
    path = os.path.join(objdir, f"{name}.bpf.o")
    if not os.path.exists(path):
        data = carve(binary)
        assert data, f"no BPF object found inside {binary}"
        with open(path, "wb") as f:
            f.write(data)
    return binary, path


def _attachments(pid: int) -> int:
    n = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                t = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            n += t in ("anon_inode:bpf_link", "anon_inode:bpf-link", "anon_inode:[perf_event]")
    except OSError:
        pass
    return n


class Pair:
    """The C tool and the pybpf front end, started together, stopped with SIGINT."""

    def __init__(self, c_argv: list[str], py_argv: list[str], attachments: int) -> None:
        self.c = subprocess.Popen(c_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        self.py = subprocess.Popen([sys.executable, FRONT, *py_argv], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while _attachments(self.c.pid) < attachments or _attachments(self.py.pid) < attachments:
            if self.c.poll() is not None or self.py.poll() is not None:
                self.stop()
                pytest.fail(f"a tool exited early:\nC: {self.c_out} {self.c_err}\n"
                            f"pybpf: {self.py_out} {self.py_err}")
            assert time.monotonic() < deadline, "tools did not attach within 20 s"
            time.sleep(0.05)
        time.sleep(0.3)  # the C tool reads its maps right after attaching

    def stop(self) -> tuple[str, str]:
        time.sleep(0.3)
        for p in (self.c, self.py):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        self.c_out, self.c_err = self.c.communicate(timeout=20)
        self.py_out, self.py_err = self.py.communicate(timeout=20)
        assert self.py.returncode == 0, self.py_err
        return self.c_out, self.py_out


def workload(code: str) -> subprocess.Popen[str]:
    """A Python process that, once started (imports done, before the tools attach),
    waits for a line on stdin, then runs ``code``."""
    w = subprocess.Popen([sys.executable, "-c", "import sys, os, time, select\n"
                          "print('W', flush=True); sys.stdin.readline()\n" + code],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert w.stdout is not None and readline(w) == "W\n"
    return w


def release(w: subprocess.Popen[str]) -> None:
    assert w.stdin is not None
    w.stdin.write("go\n")
    w.stdin.flush()
    assert w.wait(timeout=30) == 0


HIST_ROW = re.compile(r"^\s*(\d+) -> (\d+)\s*: (\d+)", re.M)


def hist(text: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for lo, _hi, count in HIST_ROW.findall(text):
        out[int(lo)] = out.get(int(lo), 0) + int(count)
    return out


def test_runqlat_histogram_alternatives(objdir):
    c, obj = tool("runqlat", objdir)
    w = workload("import time\nfor _ in range(40): time.sleep(0.002)")
    pair = Pair([c, "-p", str(w.pid)], ["runqlat", obj, str(w.pid)], attachments=3)
    release(w)
    c_out, py_out = pair.stop()
    hc, hp = hist(c_out), hist(py_out)
    assert sum(hc.values()) >= 40, c_out
    # the same wakeups, each counted once (one of each tp_btf/raw_tp pair loaded: all
    # six would count each twice); a wakeup at the edge of the two tools' windows may
    # land in one only
    assert abs(sum(hp.values()) - sum(hc.values())) <= 2, (c_out, py_out)


def test_funclatency_uprobe_on_aliased_libc_symbol(objdir):
    c, obj = tool("funclatency", objdir)
    w = workload("import time\nfor _ in range(30): time.sleep(0.001)")
    pair = Pair([c, "-p", str(w.pid), "c:clock_nanosleep"],
                ["funclatency", obj, str(w.pid), "c:clock_nanosleep"], attachments=2)
    release(w)
    c_out, py_out = pair.stop()
    hc, hp = hist(c_out), hist(py_out)
    assert sum(hc.values()) >= 30, c_out
    # the same calls (each tool's program times them with its own clock reads, so a
    # call near a bucket boundary may land in the neighbouring bucket)
    assert sum(hp.values()) == sum(hc.values()), (c_out, py_out)
    moved = sum(abs(hp.get(k, 0) - hc.get(k, 0)) for k in set(hp) | set(hc))
    assert moved <= 2 * max(1, sum(hc.values()) // 10), (c_out, py_out)
    # the text is libbpf-tools' print_log2_hist: the same header and bucket labels
    def labels(text: str) -> list[str]:
        return [ln.split(":")[0] for ln in text.splitlines() if "->" in ln or "distri" in ln]

    lp, lc = labels(py_out), labels(c_out)
    assert lp[0] == lc[0] and all(a == b for a, b in zip(lp, lc)), (c_out, py_out)
    assert abs(len(lp) - len(lc)) <= 1


def test_syscount_counters_rodata_pid_filter(objdir):
    c, obj = tool("syscount", objdir)
    w = workload("import os\nfor _ in range(777): os.getppid()")
    pair = Pair([c, "-p", str(w.pid)], ["syscount", obj, str(w.pid)], attachments=2)
    release(w)
    c_out, py_out = pair.stop()

    def counts(text: str) -> dict[str, int]:
        return {m.group(1): int(m.group(2))
                for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", text, re.M)}

    cc, cp = counts(c_out), counts(py_out)
    assert cc.get("getppid", 0) >= 777, c_out
    assert cp == cc, (c_out, py_out)


def test_execsnoop_perf_buffer_unsigned_rodata(objdir):
    c, obj = tool("execsnoop", objdir)
    marker = f"pybpf-conf-{os.getpid()}"
    pair = Pair([c, "-u", "0"], ["execsnoop", obj, "0"], attachments=2)
    pids = []
    for i in range(5):
        p = subprocess.Popen(["/bin/echo", marker, str(i)], stdout=subprocess.DEVNULL)
        p.wait()
        pids.append(p.pid)
    c_out, py_out = pair.stop()

    def seen(text: str) -> set[tuple[int, str]]:
        out = set()
        for line in text.splitlines():
            if marker in line:
                parts = line.split()
                out.add((int(parts[1]), " ".join(parts[4:])))
        return out

    expected = {(p, f"/bin/echo {marker} {i}") for i, p in enumerate(pids)}
    assert seen(c_out) == expected, c_out
    assert seen(py_out) == expected, py_out
    # the all-ones default ((uid_t)-1: every user) is accepted as -1 as well
    import pybpf

    with pybpf.Object.open(obj) as o:
        o.rodata.targ_uid = -1
        assert o.rodata.targ_uid == 0xFFFFFFFF


def test_mountsnoop_ring_buffer(objdir, tmp_path):
    c, obj = tool("mountsnoop", objdir)
    target = tmp_path / "mnt"
    target.mkdir()
    pair = Pair([c], ["mountsnoop", obj], attachments=4)
    subprocess.run(["unshare", "-m", "sh", "-c",
                    f"mount -t tmpfs none {target} && umount {target}"], check=True)
    c_out, py_out = pair.stop()

    def calls(text: str) -> list[tuple[str, str, str]]:
        out = []
        for line in text.splitlines():
            m = re.search(r"(u?mount)\((?:\"[^\"]*\", )?\"([^\"]*)\".* = (-?\d+)", line)
            if m and str(target) in line:
                out.append((m.group(1), m.group(2), m.group(3)))
        return out

    assert calls(c_out) == [("mount", str(target), "0"), ("umount", str(target), "0")], c_out
    assert calls(py_out) == calls(c_out), py_out


def test_offcputime_stacks_from_an_unsized_map(objdir):
    c, obj = tool("offcputime", objdir)
    w = workload("import select, time\nfor _ in range(20): select.select([], [], [], 0.003)\n"
                 "for _ in range(20): time.sleep(0.002)")
    pair = Pair([c, "-p", str(w.pid)], ["offcputime", obj, str(w.pid)], attachments=1)
    release(w)
    c_out, py_out = pair.stop()

    def stacks(text: str) -> set[tuple[str, ...]]:
        out, cur = set(), []
        for line in text.splitlines():
            s = line.strip()
            if not s:
                continue
            if s.startswith("-"):
                if f"({w.pid})" in s:
                    out.add(tuple(cur))
                cur = []
            elif not s.isdigit() and not s.startswith("[unknown]"):
                cur.append(s)
        return out

    def blocking(found: set[tuple[str, ...]]) -> set[tuple[str, ...]]:
        # the workload's own blocking calls (its exit, at the edge of the two tools'
        # windows, may be seen by one only)
        return {st for st in found if "do_select" in st or "do_nanosleep" in st}

    sc, sp = blocking(stacks(c_out)), blocking(stacks(py_out))
    assert any("do_select" in st for st in sc) and any("do_nanosleep" in st for st in sc), c_out
    assert sp == sc, (c_out, py_out)


def test_opensnoop_perf_buffer_pid_filter(objdir, tmp_path):
    c, obj = tool("opensnoop", objdir)
    paths = [tmp_path / f"f{i}" for i in range(4)]
    code = (f"for p in {[str(p) for p in paths]!r}:\n    open(p, 'w').close()\n"
            f"try:\n    open({str(tmp_path / 'missing')!r})\nexcept OSError:\n    pass\n")
    w = workload(code)
    pair = Pair([c, "-p", str(w.pid)], ["opensnoop", obj, str(w.pid)], attachments=4)
    release(w)
    c_out, py_out = pair.stop()

    def seen(text: str) -> tuple[list[tuple[int, int, int]], list[str]]:
        rows, got_paths = [], []
        for line in text.splitlines()[1:]:
            parts = line.split()
            ints = [int(x) for x in parts[1:] if x.lstrip("-").isdigit()][:2]
            if parts and parts[0] == str(w.pid) and len(ints) == 2:
                rows.append((int(parts[0]), ints[0] >= 0, ints[1]))
                if parts[-1].startswith("/"):
                    got_paths.append(parts[-1])
        return sorted(rows), got_paths

    (c_rows, c_paths), (py_rows, py_paths) = seen(c_out), seen(py_out)
    # the workload's opens: 4 that succeed, then one ENOENT, with their paths
    mine = [str(p) for p in paths] + [str(tmp_path / "missing")]
    assert [p for p in c_paths if p.startswith(str(tmp_path))] == mine, c_out
    assert [p for p in py_paths if p.startswith(str(tmp_path))] == mine, py_out
    assert py_rows == c_rows, (c_out, py_out)   # and the interpreter's own opens


def test_sigsnoop_signal_names_and_filters(objdir):
    c, obj = tool("sigsnoop", objdir)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        code = (f"import signal\nfor s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGUSR1):\n"
                f"    os.kill({sleeper.pid}, 0)\n"
                f"    os.kill({sleeper.pid}, s) if s == signal.SIGUSR2 else None\n")
        w = workload(code)
        usr2 = int(__import__("signal").SIGUSR2)
        pair = Pair([c, "-n", "-p", str(w.pid), "-s", str(usr2)],
                    ["sigsnoop", obj, str(w.pid), str(usr2)], attachments=1)
        release(w)
        c_out, py_out = pair.stop()
    finally:
        sleeper.kill()
        sleeper.wait()

    def seen(text: str) -> list[tuple[str, ...]]:
        return [tuple(ln.split()[1:]) for ln in text.splitlines()[1:] if ln.strip()]

    assert seen(c_out) == [(str(w.pid), "python3", "SIGUSR2", str(sleeper.pid), "0")], c_out
    assert seen(py_out) == seen(c_out), py_out


def test_bashreadline_uretprobe_section_without_binary(objdir):
    import pty

    c, obj = tool("bashreadline", objdir)
    if not os.path.exists("/bin/bash"):
        pytest.skip("no /bin/bash")
    pair = Pair([c], ["bashreadline", obj], attachments=1)
    marker = f"pybpf_rl_{os.getpid()}"
    pid, fd = pty.fork()
    if pid == 0:
        os.execv("/bin/bash", ["bash", "--norc", "--noprofile", "-i"])
    try:
        for cmd in (f"echo {marker}_1", f"echo {marker}_2", "exit"):
            os.write(fd, (cmd + "\n").encode())
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            assert time.monotonic() < deadline, "bash did not exit"
            try:
                os.read(fd, 4096)
            except OSError:
                pass
            time.sleep(0.05)
    finally:
        os.close(fd)
    c_out, py_out = pair.stop()

    def seen(text: str) -> list[tuple[int, str]]:
        return [(int(ln.split()[1]), " ".join(ln.split()[2:])) for ln in text.splitlines()
                if marker in ln or ln.split()[-1:] == ["exit"]]

    expected = [(pid, f"echo {marker}_1"), (pid, f"echo {marker}_2"), (pid, "exit")]
    assert seen(c_out) == expected, c_out
    assert seen(py_out) == expected, py_out
