"""Timing promises of the event readers, apart from the functional tests: Ctrl-C
interrupts a blocking wait at once (asserted with a wide margin)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from _child import readline

import pybpf

pytestmark = pytest.mark.kernel


ROUNDS = 3


@pytest.mark.parametrize("kind,how", [("ring", "poll"), ("ring", "read"), ("ring", "events"),
                                      ("perf", "poll"), ("perf", "read")])
def test_ctrl_c_interrupts_a_blocking_wait_at_once(bpf_obj, kind: str, how: str) -> None:
    """A wait with no timeout, interrupted ROUNDS times in one process (the reader stays
    usable after each): every wait ends within 2 s of the SIGINT and the quickest within
    0.5 s (margins for a loaded shared machine; a wait that does not wake on the signal
    blocks for ever), and each had really blocked until then."""
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
            for round in range({ROUNDS}):
                t0 = time.monotonic()  # before the parent can know: it sleeps after this
                print("waiting", prog_id, flush=True)
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
                    if round == {ROUNDS} - 1:
                        r.close()
                        raise
    """)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(pybpf.__file__)))
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    assert p.stdout is not None
    took: list[float] = []
    # a wait that never ends would block the readline()s below for ever: the child is
    # killed after 60 s, its stdout ends and the test fails with what it printed
    watchdog = threading.Timer(60, p.kill)
    watchdog.start()
    try:
        for _ in range(ROUNDS):
            line = readline(p).split()
            assert line and line[0] == "waiting", p.stderr.read() if p.stderr else ""
            prog_id = int(line[1])
            time.sleep(0.3)
            sent = time.monotonic()
            p.send_signal(signal.SIGINT)
            first = readline(p)  # the handler's line, printed as the wait ended
            took.append(time.monotonic() - sent)
            assert first.startswith("interrupted after"), first
            assert float(first.split()[2]) >= 0.29  # it did block until the signal
        _, err = p.communicate(timeout=10)
    finally:
        watchdog.cancel()
        if p.poll() is None:
            p.kill()
            p.wait()
    assert max(took) < 2.0 and min(took) < 0.5, f"Ctrl-C took {took} s to end the waits"
    assert "KeyboardInterrupt" in err and p.returncode != 0
    ids = {pr.id for pr in pybpf.list_programs()}
    assert prog_id not in ids  # the program went away with the process's object
