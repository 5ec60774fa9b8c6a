"""Walks (pybpf/_walk.py) whose syscalls the kernel refuses: every walk form raises a
MapError with the kernel's errno, naming the map and the call that failed, and never
ends as if the map had been walked. The refusals are real: a map whose fd cannot read
(created ``BPF_F_WRONLY``), a frozen map (no deletes from user space), socket maps
whose values user space cannot read at this value size (ENOSPC)."""

from __future__ import annotations

import errno
import itertools
import os
import re
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
            e = refused(lambda form=form: FORMS[form](m))
            assert isinstance(e, BPFPermissionError) and e.errno == errno.EPERM, (kind, form, e)
            assert f"map {m.name!r}: {call}" in str(e), (kind, form, str(e))


FROZEN = {"hash": (4, [u32(i) for i in range(40)], 0, "lookup_and_delete_batch failed"),
          "lpm_trie": (8, [lpm(i) for i in range(40)], BPF_F_NO_PREALLOC,
                       "lookup_and_delete failed"),
          "devmap_hash": (4, [u32(i) for i in range(40)], 0, "lookup_and_delete failed")}


@pytest.mark.parametrize("kind", list(FROZEN))
def test_walks_that_delete_from_a_frozen_map_raise_eperm_and_take_nothing(kind):
    """A frozen map refuses deletes from user space: clear(), popitems() and
    lookup_batch(delete=True) raise EPERM naming the call, and every entry is still
    there (lpm_trie and devmap_hash have no lookup-and-delete: look up, then delete)."""
    ks, keys, flags, take = FROZEN[kind]
    with pybpf.create_map(kind, ks, 4, 64, name=_name("fz"), flags=flags) as m:
        # (a devmap's values are ifindexes: lo's)
        vals = [u32(1 if kind == "devmap_hash" else 1000 + i) for i in range(len(keys))]
        for kb, vb in zip(keys, vals):
            Map.update(m, kb, vb)
        m.freeze()
        for form, call in (("clear", "delete failed"), ("popitems", take),
                           ("lookup_batch delete", take)):
            e = refused(lambda form=form: FORMS[form](m))
            assert isinstance(e, BPFPermissionError) and e.errno == errno.EPERM, (form, e)
            assert f"map {m.name!r}: {call}" in str(e), (form, str(e))
            assert [Map.lookup(m, kb) for kb in keys] == vals
        assert sorted(Map.keys(m)) == sorted(keys)  # reading is still allowed


@pytest.mark.parametrize("kind", ["sockmap", "sockhash"])
def test_walks_of_socket_values_user_space_cannot_read_raise_enospc(kind):
    """The kernel reads a socket map's value (the socket's cookie) to user space only
    when the value is 8 bytes; at 4 it says ENOSPC. Walks that read values raise that
    MapError naming the map and the call; the key walk alone works."""
    a, b = socket.socketpair()
    with a, b, pybpf.create_map(kind, 4, 4, 8, name=_name("sk")) as m:
        Map.update(m, u32(3), u32(a.fileno()))
        for form, call in (("items_raw", "lookup failed"), ("items()", "lookup failed"),
                           ("values()", "lookup failed"), ("lookup_batch", "lookup failed"),
                           ("popitems", "lookup_and_delete failed"),
                           ("lookup_batch delete", "lookup_and_delete failed")):
            e = refused(lambda form=form: FORMS[form](m))
            assert type(e) is MapError and e.errno == errno.ENOSPC, (form, e)
            assert f"map {m.name!r}: {call}" in str(e) and e.map == m.name, (form, str(e))
        # nothing was taken; a sockmap's key walk reports every slot
        got = list(Map.keys(m))
        assert got == ([u32(3)] if kind == "sockhash" else [u32(i) for i in range(8)])


ABANDON = re.compile(r"walk abandoned after (\d+) restarts and (\d+) keys: other writers "
                     r"delete its position or insert new keys faster than it advances")


def _endless(m: Any, walk: Any, key: Callable[[int], bytes], stable: set[bytes]
             ) -> tuple[MapError, int, int]:
    """Walk ``m`` deleting every non-stable key the walk shows (its position: the kernel
    then starts over from the first key) and inserting a new key ranked after it. The
    walk never ends: it must raise. (the error, keys shown, positions deleted)"""
    shown = deleted = 0
    with pytest.raises(MapError) as ei:
        for kb in walk:
            shown += 1
            if bytes(kb) not in stable:
                Map.delete(m, kb)
                deleted += 1
            Map.update(m, key(shown), u32(1))
    return ei.value, shown, deleted


def test_a_trie_walk_that_cannot_finish_raises_eagain_with_its_counts():
    """The stable key 0.0.0.0/32 ranks first in the trie's order: every deletion of the
    walk's position makes the kernel start over there, one restart each."""
    first = struct.pack("<I4B", 32, 0, 0, 0, 0)
    with pybpf.create_map("lpm_trie", 8, 4, 16, name=_name("ab"), flags=BPF_F_NO_PREALLOC) as m:
        Map.update(m, first, u32(1))
        e, shown, deleted = _endless(
            m, Map.keys(m), lambda i: struct.pack("<I", 32) + (0x0a020000 + i).to_bytes(4, "big"),
            {first})
        _check_abandoned(m, e, shown, deleted)
        assert deleted == shown - 1


def _check_abandoned(m: Any, e: MapError, shown: int, restarts_caused: int) -> None:
    assert e.errno == errno.EAGAIN and e.map == m.name, e
    found = ABANDON.search(str(e))
    assert found and f"map {m.name!r}" in str(e), str(e)
    restarts, keys = map(int, found.groups())
    assert keys in (shown, shown + 1) and restarts == restarts_caused, \
        (str(e), shown, restarts_caused)


def test_a_next_key_walk_that_cannot_finish_raises_eagain_with_its_counts():
    """devmap_hash, walked by GET_NEXT_KEY in bucket order (bucket = key mod max_entries
    here). Key 0 stays; every new key goes after it. Each deletion of the walk's
    position makes the kernel start over at key 0, already returned: one restart each.
    The walk stops for the number of keys it returned."""
    with pybpf.create_map("devmap_hash", 4, 4, 8, name=_name("ab")) as m:
        Map.update(m, u32(0), u32(1))
        e, shown, deleted = _endless(m, Map.keys(m), lambda n: u32(8 * (n // 7) + 1 + n % 7),
                                     {u32(0)})
        _check_abandoned(m, e, shown, deleted)
        assert deleted == shown - 1


def test_a_next_key_walk_going_over_its_keys_again_and_again_raises_eagain():
    """The walk resumes after a restart from the newest key it returned that is still
    there; here none is (the walker deletes 64 keys at once, then each key it is shown),
    so it goes over the 100 stable keys again after every restart: it stops for the
    work it does (GET_NEXT_KEY walk, devmap_hash in bucket order: key mod 256)."""
    nb, nstable = 256, 100
    with pybpf.create_map("devmap_hash", 4, 4, nb, name=_name("ab")) as m:
        stable = {u32(i) for i in range(nstable)}
        batch = [u32(nstable + i) for i in range(64)]
        for kb in (*stable, *batch):
            Map.update(m, kb, u32(1))
        fresh = (u32(nb * (n // (nb - nstable)) + nstable + n % (nb - nstable))
                 for n in itertools.count(nb))
        shown = caused = 0
        with pytest.raises(MapError) as ei:
            for kb in Map.keys(m):
                shown += 1
                if kb == batch[-1]:
                    for k in batch:
                        Map.delete(m, k)
                elif kb not in stable and kb not in batch:
                    Map.delete(m, kb)
                else:
                    continue
                caused += 1  # the walk's position is gone
                Map.update(m, next(fresh), u32(1))
        _check_abandoned(m, ei.value, shown, caused)
        assert caused > 64 and set(Map.keys(m)) >= stable


@pytest.mark.parametrize("kind", ["array", "percpu_array"])
def test_lookup_batch_chunks_are_as_large_as_asked(kind):
    """An array's batch lookup fills each chunk (the kernel copies ``count`` slots, it
    has no buckets to keep whole): chunks of exactly ``chunk`` entries, the last one
    the rest, each slot's own value."""
    n = 64
    cpus = possible_cpus() if "percpu" in kind else 1
    with pybpf.create_map(kind, 4, 8, n, name=_name("ch")) as m:
        for i in range(n):
            Map.update(m, u32(i), struct.pack("<Q", 100 + i) * cpus)
        for chunk in (1, 7, n, 1000):
            size = min(chunk, n)
            got = [(b.count, bytes(b.keys)[:4 * b.count], bytes(b.values)[:8 * cpus * b.count])
                   for b in m.lookup_batch(chunk=chunk)]
            assert [c for c, _, _ in got] == [size] * (n // size) + [n % size] * (n % size > 0)
            assert b"".join(k for _, k, _ in got) == b"".join(u32(i) for i in range(n))
            assert b"".join(v for _, _, v in got) == b"".join(
                struct.pack("<Q", 100 + i) * cpus for i in range(n))
