"""tests/bpf/integrity.bpf.c loaded in a child interpreter of the integrity suite."""

from __future__ import annotations

import os

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
