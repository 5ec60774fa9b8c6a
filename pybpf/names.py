"""Names users expect beside numbers: system calls, errnos and signals.

    >>> from pybpf import names
    >>> names.syscall_name(59), names.syscall_number("openat")    # on x86_64
    ('execve', 257)
    >>> names.errno_name(2), names.signal_name(9)
    ('ENOENT', 'SIGKILL')

The syscall tables come from the kernel's uapi headers (x86_64, and the generic
table of aarch64, riscv64, loongarch64 ...), built into pybpf: no file is read and
no tool (``ausyscall``) is run. Every call is a dict lookup.
"""

from __future__ import annotations

import os
import signal as _signal

from . import _syscalls
from .errors import errno_name

__all__ = ["syscall_name", "syscall_number", "syscall_table", "errno_name", "signal_name"]

_TABLES = {"x86_64": _syscalls.X86_64}


def syscall_table(machine: str | None = None) -> dict[int, str]:
    """Number -> name of the system calls of ``machine`` (``os.uname().machine`` by
    default; x86_64, else the kernel's generic table)."""
    return _TABLES.get(machine or os.uname().machine, _syscalls.GENERIC)


def syscall_name(number: int, machine: str | None = None) -> str:
    """``"openat"`` for its number on this machine (``"[unknown: 999]"`` when there is
    none, as libbpf-tools' syscount prints)."""
    return syscall_table(machine).get(number, f"[unknown: {number}]")


def syscall_number(name: str, machine: str | None = None) -> int:
    """The number of system call ``name`` (``"openat"``, ``"sys_openat"`` also works);
    KeyError naming it when this machine has none."""
    base = name[4:] if name.startswith("sys_") else name
    for nr, n in syscall_table(machine).items():
        if n == base:
            return nr
    raise KeyError(f"no system call named {name!r} on {machine or os.uname().machine}")


def signal_name(number: int) -> str:
    """``"SIGKILL"`` for 9; real-time signals as ``"SIGRTMIN+3"``; ``"signal 99"``
    for a number no signal has."""
    try:
        return _signal.Signals(number).name
    except ValueError:
        pass
    if _signal.SIGRTMIN <= number <= _signal.SIGRTMAX:
        return f"SIGRTMIN+{number - _signal.SIGRTMIN}"
    return f"signal {number}"
