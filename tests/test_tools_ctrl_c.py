"""Ctrl-C ends a streaming tool as its banner says: the events seen so far are printed,
the command exits 0 without a traceback, and its probe is detached (no link of it is
left in the kernel). Each tool runs as a child (``python -m pybpf TOOL``) that the
test interrupts with a real SIGINT once it is tracing and has shown the event the test
caused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pybpf

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parent.parent


def _prog_ids_of(pid: int) -> set[int]:
    """Ids of the BPF programs whose fds process ``pid`` holds (from /proc)."""
    ids = set()
    fd_dir = Path(f"/proc/{pid}/fdinfo")
    for info in fd_dir.iterdir():
        try:
            text = info.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("prog_id:"):
                ids.add(int(line.split()[1]))
    return ids


@pytest.mark.parametrize("tool", ["opensnoop", "execsnoop"])
def test_ctrl_c_ends_a_tool_cleanly(tool, tmp_path):
    me = os.getpid()
    mark = tmp_path / f"ctrl-c-{tool}-{me}"
    args = {"opensnoop": ["opensnoop", "--pid", str(me)], "execsnoop": ["execsnoop"]}[tool]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.Popen([sys.executable, "-m", "pybpf", *args, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        banner = proc.stderr.readline()  # type: ignore[union-attr]
        assert "Hit Ctrl-C to end." in banner, banner + proc.stderr.read()  # type: ignore[union-attr]
        progs = _prog_ids_of(proc.pid)
        assert progs  # the probe is loaded and held by the tool
        if tool == "opensnoop":
            mark.write_text("x")
            with open(mark):
                pass
        else:
            subprocess.run(["/bin/true", str(mark)], check=True)
        line = ""
        deadline = time.monotonic() + 10
        while str(mark) not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
        assert str(mark) in line  # the event the test caused
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    attached = {info.prog_id for info in pybpf.list_links()}
    assert not progs & attached  # nothing of the tool's is left attached
