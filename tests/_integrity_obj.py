"""tests/bpf/integrity.bpf.c loaded in a child interpreter of the integrity suite."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from typing import Any

import pybpf


def load(path: str, tag: int = 1, attach: bool = True) -> pybpf.Object:
    """Open, configure for this process, load and (by default) attach the object."""
    obj = pybpf.Object.open(path)
    obj.set_rodata("target_pid", os.getpid())
    obj.set_rodata("tag", tag)
    obj.load()
    if attach:
        obj.attach()
    return obj


def mark() -> None:
    """Make every attached copy record one hit (one getppid())."""
    os.getppid()


def open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def sigint_storm(step: Callable[[], object], seconds: float, *, first: float = 0.0005,
                 interval: float = 0.0003, max_errors: int = 5,
                 where: Callable[[Any], bool] | None = None,
                 per_step: int = 1) -> tuple[int, list[str]]:
    """Call ``step()`` again and again for ``seconds`` while SIGALRM (setitimer) raises
    KeyboardInterrupt at random points inside it; returns (interrupts, other errors).

    The handler raises only while armed, and only the loop's try block arms it: an
    interrupt never lands in the test's own bookkeeping, so the storm ends cleanly.
    ``where(frame)`` (optional) says whether an interrupt may land in that frame (the
    innermost one when the handler runs); when it says no, the handler stays armed and
    the next tick tries again.  ``per_step``: up to that many interrupts per step (a
    second one can land in the first one's clean-up)."""
    armed = [0]
    count = [0]

    def handler(signum: int, frame: Any) -> None:
        if armed[0] > 0 and (where is None or where(frame)):
            armed[0] -= 1
            count[0] += 1
            raise KeyboardInterrupt

    errors: list[str] = []
    old = signal.signal(signal.SIGALRM, handler)
    deadline = time.monotonic() + seconds
    signal.setitimer(signal.ITIMER_REAL, first, interval)
    try:
        while time.monotonic() < deadline and len(errors) <= max_errors:
            try:
                armed[0] = random.randint(1, per_step)
                step()
                armed[0] = 0
            except KeyboardInterrupt:
                armed[0] = 0
            except BaseException as e:  # noqa: BLE001 - reported to the test
                armed[0] = 0
                errors.append(f"during the storm: {type(e).__name__}: {e}")
    finally:
        armed[0] = 0
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)
    return count[0], errors
