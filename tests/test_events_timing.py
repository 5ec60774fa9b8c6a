"""Timing promises of the event readers, apart from the functional tests: Ctrl-C
interrupts a blocking wait at once (asserted with a wide margin)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import pybpf

pytestmark = pytest.mark.kernel


@pytest.mark.parametrize("kind,how", [("ring", "poll"), ("ring", "read"), ("ring", "events"),
                                      ("perf", "poll"), ("perf", "read")])
def test_ctrl_c_interrupts_a_blocking_wait_at_once(bpf_obj, kind: str, how: str) -> None:
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        from _events_obj import events_object
        import pybpf
        with events_object({bpf_obj("events")!r}) as ev:
            if {kind!r} == "perf":
                r = pybpf.PerfBuffer(ev.maps["pb"], callback=print)
            else:
                r = pybpf.RingBuffer(ev.maps["rb"], callback=print)
            prog_id = ev.obj.programs["emit"].info().id
            print("waiting", prog_id, flush=True)
            t0 = time.monotonic()
            try:
                if {how!r} == "poll":
                    r.poll(None)
                elif {how!r} == "read":
                    r.read(None)
                else:
                    for _ in r.events(None):
                        pass
            except KeyboardInterrupt:
                print("interrupted after %.3f" % (time.monotonic() - t0), flush=True)
                r.poll(0)  # still usable
                r.close()
                raise
    """)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(pybpf.__file__)))
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    assert p.stdout is not None
    line = p.stdout.readline().split()
    assert line and line[0] == "waiting", p.stderr.read() if p.stderr else ""
    time.sleep(0.3)
    sent = time.monotonic()
    p.send_signal(signal.SIGINT)
    first = p.stdout.readline()  # the handler's line, printed as soon as the wait ended
    took = time.monotonic() - sent
    rest, err = p.communicate(timeout=10)
    out = first + rest
    assert "interrupted after" in out, err
    assert float(out.split("interrupted after")[1].split()[0]) >= 0.25  # it did block
    assert took < 1.0, f"Ctrl-C took {took:.2f}s to end the wait"  # "at once"
    assert "KeyboardInterrupt" in err and p.returncode != 0
    ids = {pr.id for pr in pybpf.list_programs()}
    assert int(line[1]) not in ids  # the program went away with the process's object
