"""Integrity (issue 11): listing kernel objects while other processes attach and detach.

`list_links()`/`list_programs()`/`list_maps()` walk ids and open each object; a link that
another process is creating or tearing down right then is reported by the kernel as
EAGAIN. The listing must neither fail nor drop an object that stayed for the whole walk."""

from __future__ import annotations

import subprocess
import sys

import pytest
from _child import TESTS, readline, run_child

pytestmark = pytest.mark.kernel

CHURN = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
import _integrity_obj as io
obj = io.load(sys.argv[1], tag=7, attach=False)
prog = next(iter(obj.programs.values()))
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    link = prog.attach()
    link.close()
"""

LIST = r"""
import pybpf, _integrity_obj as io
obj = io.load(P["path"], tag=8)
prog_ids = {p.info().id for p in obj.programs.values()}
errors, missing, walks = [], 0, 0
end = time.monotonic() + P["seconds"]
while time.monotonic() < end:
    walks += 1
    try:
        links = pybpf.list_links()
        progs = {p.id for p in pybpf.list_programs()}
    except pybpf.BPFError as e:
        errors.append(f"{type(e).__name__}: {e}")
        continue
    if not prog_ids <= progs:
        missing += 1
    if not any(l.prog_id in prog_ids for l in links):
        missing += 1
emit({"errors": errors[:5], "n_errors": len(errors), "missing": missing, "walks": walks})
"""


def test_listing_while_other_processes_attach_and_detach(bpf_obj):
    path = bpf_obj("integrity")
    churners = [subprocess.Popen([sys.executable, "-c", CHURN, path, str(TESTS), "7"],
                                 stdout=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        for c in churners:
            assert c.stdout is not None and readline(c).strip() == "ready"
        v = run_child(LIST, timeout=60, what="list_links under churn",
                      params={"path": path, "seconds": 5.0})
    finally:
        for c in churners:
            c.wait(timeout=30)
    assert v["walks"] >= 20, v
    assert v["n_errors"] == 0, v
    assert v["missing"] == 0, v
