"""Where events come from and when: the host's identity (the resource every exported
record carries) and kernel timestamps converted to wall-clock time.

BPF programs stamp events with ``bpf_ktime_get_ns()`` (``CLOCK_MONOTONIC``) or
``bpf_ktime_get_boot_ns()`` (``CLOCK_BOOTTIME``); neither counts from the epoch.
:class:`KernelClock` adds the current offset between that clock and
``CLOCK_REALTIME``, re-measured every second so that a clock step (NTP, suspend)
shows in the next events.
"""

from __future__ import annotations

import datetime
import functools
import os
import socket
import time

__all__ = ["KernelClock", "boot_id", "resource_attributes", "rfc3339"]

_CLOCKS = {"monotonic": time.CLOCK_MONOTONIC, "boottime": time.CLOCK_BOOTTIME}


def boot_id() -> str:
    """This boot's id (``/proc/sys/kernel/random/boot_id``), "" if unreadable."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


@functools.cache
def _host() -> tuple[tuple[str, str], ...]:
    u = os.uname()
    return (("host.name", socket.gethostname()), ("host.boot_id", boot_id()),
            ("host.arch", u.machine), ("os.type", "linux"), ("os.version", u.release))


def resource_attributes(service: str | None = None) -> dict[str, str]:
    """The resource of exported records, in OpenTelemetry's names: ``host.name``,
    ``host.boot_id``, ``host.arch``, ``os.type``, ``os.version`` (the kernel release),
    and ``service.name`` when given. Read once per process."""
    out = dict(_host())
    if service:
        out["service.name"] = service
    return out


class KernelClock:
    """Kernel timestamps (nanoseconds of ``clock``: ``"monotonic"`` for
    ``bpf_ktime_get_ns``, ``"boottime"`` for ``bpf_ktime_get_boot_ns``) to wall-clock
    nanoseconds since the epoch. Cost: an addition; the offset is re-measured (three
    clock reads) at most once per ``refresh`` seconds."""

    def __init__(self, clock: str = "monotonic", *, refresh: float = 1.0) -> None:
        if clock not in _CLOCKS:
            raise ValueError(f"clock must be 'monotonic' or 'boottime', not {clock!r}")
        self.clock = clock
        self._id = _CLOCKS[clock]
        self._refresh_ns = int(refresh * 1e9)
        self._offset = 0
        self._next = 0

    def offset(self) -> int:
        """Wall-clock minus kernel clock, in nanoseconds (measured now)."""
        best: tuple[int, int] | None = None
        for _ in range(3):  # keep the read with the narrowest window
            a = time.clock_gettime_ns(self._id)
            wall = time.time_ns()
            b = time.clock_gettime_ns(self._id)
            if best is None or b - a < best[0]:
                best = (b - a, wall - (a + b) // 2)
        assert best is not None
        return best[1]

    def wall_ns(self, ts: int) -> int:
        """Wall-clock nanoseconds since the epoch of kernel timestamp ``ts``."""
        now = time.monotonic_ns()
        if now >= self._next:
            self._offset = self.offset()
            self._next = now + self._refresh_ns
        return ts + self._offset


def rfc3339(wall_ns: int) -> str:
    """``2026-12-03T13:45:50.123456Z`` (UTC, microseconds) for wall-clock nanoseconds."""
    dt = datetime.datetime.fromtimestamp(wall_ns / 1e9, datetime.timezone.utc)
    return dt.isoformat(timespec="microseconds").replace("+00:00", "Z")
