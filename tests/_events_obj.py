"""The object tests/bpf/events.bpf.c, loaded for this process (shared by event-stream tests)."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import pybpf

MODE_RB, MODE_RB2, MODE_PERF, MODE_MIXED, MODE_DISCARD = 0, 1, 2, 3, 4
EVENT = struct.Struct("<QIIQQ")  # seq, pid, kind, cookie, square


class Events:
    """The loaded object and how to make it emit: ``emit(count, mode)`` runs getppid()."""

    def __init__(self, obj: pybpf.Object) -> None:
        self.obj = obj
        self.maps = obj.maps

    def configure(self, count: int, mode: int = MODE_RB, cookie: int = 7) -> None:
        self.maps["cfg"].update(b"\0" * 4, struct.pack("<IIQ", count, mode, cookie))

    def emit(self, count: int, mode: int = MODE_RB, cookie: int = 7) -> None:
        """Make the program emit ``count`` records (one getppid() call)."""
        self.configure(count, mode, cookie)
        os.getppid()

    def next_seq(self) -> int:
        raw = self.maps["seq"].lookup(b"\0" * 4)
        assert raw is not None
        return int.from_bytes(raw, "little")

    def drops(self) -> int:
        return sum(self.drops_by_cpu())

    def drops_by_cpu(self) -> list[int]:
        """The program's failed outputs, per CPU (its per-CPU ``pybpf_count_drop()``)."""
        raw = self.maps["pybpf_ringbuf_drops"].lookup(b"\0" * 4)
        assert raw is not None
        return [v for (v,) in struct.iter_unpack("<Q", raw)]

    @contextmanager
    def on_cpu(self, cpu: int) -> Iterator[None]:
        """This thread pinned to ``cpu`` (so its emits all go to that CPU's buffer)."""
        old = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpu})
        try:
            assert os.sched_getaffinity(0) == {cpu}
            yield
        finally:
            os.sched_setaffinity(0, old)


@contextmanager
def events_object(path: str) -> Iterator[Events]:
    obj = pybpf.Object.open(path)
    try:
        obj.set_rodata("target_pid", os.getpid())
        obj.load()
        obj.attach()
        yield Events(obj)
    finally:
        obj.close()
