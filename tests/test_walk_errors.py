"""Walks (pybpf/_walk.py) whose syscalls the kernel refuses: every walk form raises a
MapError with the kernel's errno, naming the map and the call that failed, and never
ends as if the map had been walked. The refusals are real: a map whose fd cannot read
(created ``BPF_F_WRONLY``), a frozen map (no deletes from user space), socket maps
whose values user space cannot read at this value size (ENOSPC)."""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest

import pybpf
from pybpf import BPFError, BPFPermissionError, MapError
from pybpf.maps import Map, possible_cpus

BPF_F_NO_PREALLOC, BPF_F_WRONLY = 1, 1 << 4


def u32(i: int) -> bytes:
    return struct.pack("<I", i)


def lpm(i: int) -> bytes:
    return struct.pack("<I4B", 24, 10, 0, i, 0)


def _name(tag: str) -> str:
    return f"{tag}{os.getpid() % 100000}"


def refused(f: Callable[[], Any]) -> BPFError:
    """The pybpf error that ``f`` raises (it must raise one)."""
    with pytest.raises(BPFError) as ei:
        f()
    return ei.value


# every way a walk is started, each consumed whole
FORMS: dict[str, Callable[[Any], Any]] = {
    "Map.keys": lambda m: list(Map.keys(m)),
    "items_raw": lambda m: list(m.items_raw()),
    "keys()": lambda m: list(m.keys()),
    "items()": lambda m: list(m.items()),
    "values()": lambda m: list(m.values()),
    "lookup_batch": lambda m: list(m.lookup_batch(chunk=2)),
    "lookup_batch delete": lambda m: list(m.lookup_batch(chunk=2, delete=True)),
    "popitems": lambda m: list(m.popitems()),
    "len": len,
    "bool": bool,
    "clear": lambda m: m.clear(),
}

# kind -> (key size, keys, flags, the call each form's walk makes first). Hash kinds and
# arrays are read by BPF_MAP_LOOKUP_BATCH, the others by GET_NEXT_KEY; bool() of keyed
# kinds is one GET_NEXT_KEY; arrays have no batch lookup-and-delete (a key walk).
GNK = "get_next_key failed"
BATCH = {"Map.keys": "lookup_batch failed", "items_raw": "lookup_batch failed",
         "keys()": "lookup_batch failed", "items()": "lookup_batch failed",
         "values()": "lookup_batch failed", "lookup_batch": "lookup_batch failed",
         "lookup_batch delete": "lookup_and_delete_batch failed",
         "popitems": "lookup_and_delete_batch failed", "len": "lookup_batch failed",
         "bool": GNK, "clear": "lookup_batch failed"}
WRITE_ONLY: dict[str, tuple[int, list[bytes], int, dict[str, str]]] = {
    "hash": (4, [u32(i) for i in range(5)], 0, BATCH),
    "percpu_hash": (4, [u32(i) for i in range(5)], 0, BATCH),
    "lru_hash": (4, [u32(i) for i in range(5)], 0, BATCH),
    "lpm_trie": (8, [lpm(i) for i in range(5)], BPF_F_NO_PREALLOC, dict.fromkeys(FORMS, GNK)),
    "devmap_hash": (4, [u32(i) for i in range(5)], 0, dict.fromkeys(FORMS, GNK)),
    # (len() and bool() of an array are max_entries: no syscall; clear() writes zeros)
    "array": (4, [], 0, {f: ("lookup_batch failed" if w == "lookup_batch failed" else GNK)
                         for f, w in BATCH.items() if f not in ("len", "bool", "clear")}),
}


@pytest.mark.parametrize("kind", list(WRITE_ONLY))
def test_every_walk_of_a_map_user_space_cannot_read_raises_eperm(kind):
    ks, keys, flags, calls = WRITE_ONLY[kind]
    value = struct.pack("<Q", 1) * (possible_cpus() if "percpu" in kind else 1)
    with pybpf.create_map(kind, ks, 8, 8, name=_name("wo"), flags=flags | BPF_F_WRONLY) as m:
        for kb in keys:
            Map.update(m, kb, value)  # writing is allowed: the fd only cannot read
        for form, call in calls.items():
            e = refused(lambda: FORMS[form](m))
            assert isinstance(e, BPFPermissionError) and e.errno == errno.EPERM, (kind, form, e)
            assert f"map {m.name!r}: {call}" in str(e), (kind, form, str(e))
