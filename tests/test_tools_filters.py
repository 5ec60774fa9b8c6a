"""The shipped tools' pid and uid filters take only ids the BPF side can filter on.

The probes read ``targ_pid == 0`` as "every process" and ``targ_uid == (u32)-1`` as
"every user", and a negative pid matches nothing: a filter of 0, -5 or 4294967295 would
silently widen or empty the trace. The CLIs refuse them with argparse's exit status 2
and a message naming the argument; the Python front ends raise BPFValueError naming the
parameter, before anything is loaded. A valid filter still works (checked against a
process this test starts).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pybpf.errors import BPFTypeError, BPFValueError
from pybpf.tools import _common, execsnoop, opensnoop, profile, tcpconnect

CLIS = {"execsnoop": execsnoop.main, "opensnoop": opensnoop.main,
        "tcpconnect": tcpconnect.main, "profile": profile.main}
UID_CLIS = ["execsnoop", "opensnoop", "tcpconnect"]
BAD_PIDS = ["0", "-5", "4194305", "99999999999", "x", "1.5", ""]
BAD_UIDS = ["-1", "4294967295", "4294967296", "root", ""]


def _refused(main, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as ei:
        main([*argv, "--duration", "0.1"])
    assert ei.value.code == 2, argv
    return capsys.readouterr().err


@pytest.mark.parametrize("bad", BAD_PIDS)
@pytest.mark.parametrize("tool", list(CLIS))
def test_cli_refuses_a_pid_the_probe_cannot_filter_on(tool, bad, capsys):
    err = _refused(CLIS[tool], [f"--pid={bad}"], capsys)
    assert "argument --pid" in err and (bad == "" or repr(bad) in err or bad in err), err


@pytest.mark.parametrize("bad", BAD_UIDS)
@pytest.mark.parametrize("tool", UID_CLIS)
def test_cli_refuses_a_uid_the_probe_cannot_filter_on(tool, bad, capsys):
    err = _refused(CLIS[tool], [f"--uid={bad}"], capsys)
    assert "argument --uid" in err and (bad == "" or repr(bad) in err or bad in err), err


FRONTS = {"ExecSnoop": execsnoop.ExecSnoop, "OpenSnoop": opensnoop.OpenSnoop,
          "TcpConnect": tcpconnect.TcpConnect, "Profile": profile.Profile}


@pytest.mark.parametrize("pid", [0, -5, 1 << 22 | 1, 1 << 40])
@pytest.mark.parametrize("front", list(FRONTS))
def test_front_ends_refuse_a_pid_before_loading(front, pid):
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(BPFValueError) as ei:
        FRONTS[front](pid=pid)
    assert "pid" in str(ei.value) and str(pid) in str(ei.value), str(ei.value)
    assert set(os.listdir("/proc/self/fd")) <= before  # nothing opened, nothing leaked


@pytest.mark.parametrize("uid", [-1, (1 << 32) - 1, 1 << 32])
@pytest.mark.parametrize("front", ["ExecSnoop", "OpenSnoop", "TcpConnect"])
def test_front_ends_refuse_a_uid_before_loading(front, uid):
    with pytest.raises(BPFValueError) as ei:
        FRONTS[front](uid=uid)
    assert "uid" in str(ei.value) and str(uid) in str(ei.value), str(ei.value)


@pytest.mark.parametrize("value", ["7", 7.0, None.__class__])
def test_a_pid_of_another_type_is_a_type_error(value):
    with pytest.raises(BPFTypeError):
        _common.Scope(pid=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["pid", "root_pid"])
def test_scope_refuses_ids_the_probe_cannot_filter_on(field):
    for bad in (0, -1, (1 << 22) + 1):
        with pytest.raises(BPFValueError) as ei:
            _common.Scope(**{field: bad})
        assert field in str(ei.value), str(ei.value)


def test_the_largest_valid_filters_are_taken_and_filter():
    """uid 4294967294 (no such user) and pid 4194304 (above this machine's pid_max or
    not running) are valid filters: the probes load with them and report nothing of
    this test's exec; the same probe with this process's uid reports it."""
    with execsnoop.ExecSnoop(uid=(1 << 32) - 2) as none, \
            execsnoop.ExecSnoop(pid=_common.PID_MAX_LIMIT) as none2, \
            execsnoop.ExecSnoop(uid=os.getuid()) as mine:
        child = subprocess.run([sys.executable, "-c", "pass"], check=True)
        assert child.returncode == 0
        deadline = time.monotonic() + 10
        seen: list = []
        while time.monotonic() < deadline and not seen:
            mine.poll(0.2)
            seen += [e for e in mine.drain() if e.comm.startswith("python")]
        assert seen, "the uid filter of this process saw no exec"
        assert none.drain() == [] and none2.drain() == []
