"""Run a Python snippet in a child interpreter, so a crash or a hang fails one test.

``run_child(code, timeout=...)`` runs ``code`` with ``sys.executable -c`` (PYTHONPATH
inherited, the tests directory added so the snippet can import the test helpers) and
turns what happened into one of three outcomes:

- killed by a signal (SIGSEGV, SIGABRT, SIGBUS...): ``pytest.fail`` naming the signal,
  with the tail of stderr;
- still running after ``timeout`` seconds: ``pytest.fail`` ("hang"), with the stderr tail
  (the child's ``faulthandler`` dumps its threads' stacks there just before the limit);
- otherwise the snippet's own verdict: the last line of stdout that starts with
  ``RESULT `` is decoded as JSON and returned (``emit(obj)`` in the snippet writes it).
  A non-zero exit without a verdict fails with the stderr tail.

Snippets get a prelude: ``P`` (the ``params`` given), ``emit``, ``faulthandler``
armed to dump stacks before the hang limit, and ``os``, ``sys``, ``json``,
``threading``, ``signal``, ``time`` imported.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent

PRELUDE = """\
import faulthandler, json, os, signal, sys, threading, time
faulthandler.dump_traceback_later({dump_after}, exit=False)
faulthandler.enable()
def emit(obj):
    sys.stdout.write("RESULT " + json.dumps(obj) + "\\n")
    sys.stdout.flush()
"""


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_child(code: str, *, timeout: float = 30.0, env: dict[str, str] | None = None,
              what: str = "snippet", params: dict[str, Any] | None = None) -> Any:
    """Run ``code`` in a child interpreter; return its verdict (see the module doc).

    ``params`` (JSON-able) is visible to the snippet as the dict ``P``."""
    body = (PRELUDE.format(dump_after=max(1.0, timeout - 2.0))
            + f"P = json.loads({json.dumps(json.dumps(params or {}))})\n"
            + textwrap.dedent(code))
    child_env = dict(os.environ if env is None else env)
    paths = [str(TESTS), child_env.get("PYTHONPATH", "")]
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    try:
        p = subprocess.run([sys.executable, "-c", body], capture_output=True, text=True,
                           timeout=timeout, env=child_env, cwd=str(TESTS.parent))
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail(f"{what}: HANG (no exit within {timeout:.0f} s)\n{_tail(err, 60)}")
    if p.returncode < 0:
        name = signal.Signals(-p.returncode).name
        pytest.fail(f"{what}: CRASH ({name})\n{_tail(p.stderr, 40)}")
    verdict = None
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            verdict = json.loads(line[len("RESULT "):])
    if p.returncode != 0:
        pytest.fail(f"{what}: exit status {p.returncode}, verdict {verdict!r}\n"
                    f"{_tail(p.stderr, 40)}")
    if verdict is None:
        pytest.fail(f"{what}: no verdict on stdout\n{_tail(p.stdout)}\n{_tail(p.stderr)}")
    return verdict


def readline(proc: subprocess.Popen, stream: Any = None, *, timeout: float = 60.0,
             what: str = "child") -> str:
    """One line from ``proc``'s ``stream`` (default: its stdout), or fail the test: a
    child that prints nothing for ``timeout`` seconds is killed (its pipe then ends),
    so a stuck child fails this test instead of hanging the run. Works with Python's
    buffered pipes (a timer kills the child; no select on the fd)."""
    import threading

    stream = proc.stdout if stream is None else stream
    assert stream is not None, f"{what}: no pipe to read"
    fired = threading.Event()

    def kill() -> None:
        fired.set()
        proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    try:
        line = stream.readline()
    finally:
        timer.cancel()
    if fired.is_set():
        pytest.fail(f"{what}: no line within {timeout:.0f} s (killed); got {line!r:.200}")
    return line
