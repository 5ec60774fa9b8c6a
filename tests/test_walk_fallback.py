"""Walks on a kernel that refuses some map commands: the fallbacks of pybpf/_walk.py.

A seccomp filter in a child interpreter makes bpf(2) fail for chosen commands (the
first argument) with a chosen errno, exactly as a kernel without those commands does
(an unknown command is EINVAL; a kind without the operation says ENOTSUPP or
EOPNOTSUPP). Every other command still reaches the kernel. Then:

- without BPF_MAP_LOOKUP_BATCH / LOOKUP_AND_DELETE_BATCH, every walk form falls back to
  the GET_NEXT_KEY walk and still returns every entry the test wrote, once, with its
  value; ``lookup_batch(chunk=n)`` still hands out chunks of exactly ``n`` entries (the
  last one the rest); the deleting forms still empty the map;
- without BPF_MAP_LOOKUP_AND_DELETE_ELEM too, the deleting walk looks up then deletes;
- a refusal that does not mean "not supported" (EPERM) is raised as a MapError with
  that errno, naming the map and the call, and is never taken for a missing feature;
- a trie walk whose value lookups fail after GET_NEXT_KEY worked raises that errno
  (``items()``), while its key walk still returns every key; lookups saying ENOENT mean
  "deleted meanwhile": those entries are left out, never returned with a made-up value.

Expected entries are the ones the test wrote; expected errors are the errnos the filter
returns.
"""

from __future__ import annotations

import errno
import os
import platform
import struct

import pytest
from _child import run_child

import pybpf
from pybpf.maps import Map

if platform.machine() not in ("x86_64", "aarch64"):
    pytest.skip(f"no bpf(2) syscall number for {platform.machine()} in this test",
                allow_module_level=True)

NR_BPF = {"x86_64": 321, "aarch64": 280}[platform.machine()]
LOOKUP_ELEM, DELETE_ELEM, GET_NEXT_KEY = 1, 3, 4
LOOKUP_AND_DELETE_ELEM, LOOKUP_BATCH, LOOKUP_AND_DELETE_BATCH = 21, 24, 25
UPDATE_BATCH, DELETE_BATCH = 26, 27
ENOTSUPP = 524  # the kernel's own "not supported" (not in errno)
N, CHUNK = 300, 64
BPF_F_NO_PREALLOC = 1

_CHILD = r"""
import ctypes
import pybpf
from pybpf.maps import Map

def deny(nr_bpf, rules):
    # seccomp: bpf(2) with command CMD fails with ERRNO, for each [cmd, errno] in rules
    class Insn(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte),
                    ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]
    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]
    body = []
    for cmd, err in rules:
        body += [Insn(0x15, 0, 1, cmd), Insn(0x06, 0, 0, 0x00050000 | err)]  # jeq; ERRNO
    insns = [Insn(0x20, 0, 0, 0),                    # ld [0]: syscall number
             Insn(0x15, 0, len(body) + 1, nr_bpf),  # not bpf(2): allow
             Insn(0x20, 0, 0, 16)] + body + [       # ld [16]: the bpf command
             Insn(0x06, 0, 0, 0x7FFF0000)]          # ret ALLOW
    arr = (Insn * len(insns))(*insns)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(22, 2, ctypes.byref(Prog(len(insns), arr)), 0, 0) == 0, ctypes.get_errno()

def outcome(f):
    try:
        return {"ok": f()}
    except pybpf.BPFError as e:
        return {"errno": e.errno, "msg": str(e), "map": getattr(e, "map", None)}

kind, ks, vs, n, chunk, flags = P["kind"], P["ks"], P["vs"], P["n"], P["chunk"], P["flags"]
entries = [(bytes.fromhex(k), bytes.fromhex(v)) for k, v in P["entries"]]
# room for 4n: an LRU map evicts when close to full
m = pybpf.create_map(kind, ks, vs, 4 * n, name=P["name"], flags=flags)

def fill():
    for k, v in entries:
        Map.update(m, k, v)

def pairs(it):
    return sorted([k.hex(), v.hex()] for k, v in it)

def chunks(delete):
    out = []
    for b in m.lookup_batch(chunk=chunk, delete=delete):
        c = b.count
        out.append([c, bytes(b.keys)[:ks * c].hex(), bytes(b.values)[:vs * c].hex()])
    return out

fill()
deny(P["nr_bpf"], P["rules"])
res = {}
res["keys"] = outcome(lambda: sorted(k.hex() for k in Map.keys(m)))
res["items"] = outcome(lambda: pairs(m.items_raw()))
res["len"] = outcome(lambda: len(m))
res["chunks"] = outcome(lambda: chunks(False))
for form, take in (("chunks_delete", lambda: chunks(True)),
                   ("popitems", lambda: pairs(m.popitems())),
                   ("clear", lambda: m.clear())):
    res[form] = outcome(take)
    res[form + "_left"] = (outcome(lambda: sorted(k.hex() for k, _ in Map.items_raw(m)))
                           if "ok" in res[form] else None)
    fill()

def empty():
    for k, _ in entries:
        try:
            Map.delete(m, k)
        except KeyError:
            pass

def contents():
    return outcome(lambda: pairs(m.items_raw()))

# the batch writes, and the single take, each from its own starting state
empty()
res["update_batch"] = outcome(lambda: m.update_batch(entries))
res["update_batch_left"] = contents()
empty()
res["update"] = outcome(lambda: m.update(dict(entries)))
res["update_left"] = contents()
fill()
every_key = [k for k, _ in entries] + [bytes.fromhex(P["absent"])]
res["delete_batch"] = outcome(lambda: m.delete_batch(every_key))
res["delete_batch_left"] = contents()
fill()
res["pop"] = outcome(lambda: sorted([k.hex(), m.pop(k).hex()] for k, _ in entries))
res["pop_left"] = contents()
emit(res)
"""


def _u32(i: int) -> bytes:
    return struct.pack("<I", i)


def _lpm(i: int) -> bytes:
    return struct.pack("<I4B", 24, 10, i // 256, i % 256, 0)


def _u64(i: int) -> bytes:
    return struct.pack("<Q", 7 * i + 1)


def _run(kind: str, rules: list[tuple[int, int]], *, n: int = N, key=_u32, value=_u64,
         flags: int = 0) -> tuple[dict, list[tuple[bytes, bytes]]]:
    """Fill a new map of ``kind`` with ``n`` entries, deny ``rules`` ([cmd, errno]) in a
    child, walk it there every way: (the child's outcomes, the entries written)."""
    entries = [(key(i), value(i)) for i in range(n)]
    ks, vs = len(entries[0][0]), len(entries[0][1])
    name = f"wf{os.getpid() % 100000}"
    # the same map and walk in this process too (mutmut maps tests to code in-process)
    with pybpf.create_map(kind, ks, vs, 4 * n, name=name, flags=flags) as m:
        for k, v in entries[:3]:
            Map.update(m, k, v)
        assert sorted(m.items_raw()) == sorted(entries[:3])
    res = run_child(_CHILD, timeout=120, params={
        "kind": kind, "ks": ks, "vs": vs, "n": n, "chunk": CHUNK, "flags": flags,
        "name": name, "entries": [(k.hex(), v.hex()) for k, v in entries],
        "nr_bpf": NR_BPF, "rules": rules, "absent": key(n + 1).hex()})
    return res, entries


def _pairs(entries: list[tuple[bytes, bytes]]) -> list[list[str]]:
    return sorted([k.hex(), v.hex()] for k, v in entries)


def _check_chunks(got: list, entries: list[tuple[bytes, bytes]]) -> None:
    vs = len(entries[0][1])
    counts = [c for c, _, _ in got]
    assert counts == [CHUNK] * (len(entries) // CHUNK) + [len(entries) % CHUNK], counts
    ks = len(entries[0][0])
    flat_k = "".join(k for _, k, _ in got)
    flat_v = "".join(v for _, _, v in got)
    pairs = sorted([flat_k[2 * ks * i:2 * ks * (i + 1)], flat_v[2 * vs * i:2 * vs * (i + 1)]]
                   for i in range(len(entries)))
    assert pairs == _pairs(entries)


NOT_SUPPORTED = {"EINVAL": errno.EINVAL, "ENOTSUPP": ENOTSUPP, "EOPNOTSUPP": errno.EOPNOTSUPP,
                 "ENOSYS": errno.ENOSYS}


@pytest.mark.parametrize("err", list(NOT_SUPPORTED))
@pytest.mark.parametrize("kind", ["hash", "lru_hash"])
def test_walks_without_batch_commands_fall_back_and_miss_nothing(kind, err):
    e = NOT_SUPPORTED[err]
    res, entries = _run(kind, [(LOOKUP_BATCH, e), (LOOKUP_AND_DELETE_BATCH, e)])
    want = _pairs(entries)
    assert res["keys"] == {"ok": sorted(k.hex() for k, _ in entries)}
    assert res["items"] == {"ok": want}
    assert res["len"] == {"ok": N}
    assert "ok" in res["chunks"], res["chunks"]
    _check_chunks(res["chunks"]["ok"], entries)
    assert "ok" in res["chunks_delete"], res["chunks_delete"]
    _check_chunks(res["chunks_delete"]["ok"], entries)
    assert res["popitems"] == {"ok": want}
    assert res["clear"] == {"ok": None}
    for form in ("chunks_delete", "popitems", "clear"):
        assert res[form + "_left"] == {"ok": []}, form


def test_a_deleting_walk_without_lookup_and_delete_looks_up_then_deletes():
    """No batch commands and no BPF_MAP_LOOKUP_AND_DELETE_ELEM (before 5.14 for hash
    maps): each entry is looked up, then deleted; all of them, with their values."""
    e = errno.EINVAL
    res, entries = _run("hash", [(LOOKUP_BATCH, e), (LOOKUP_AND_DELETE_BATCH, e),
                                 (LOOKUP_AND_DELETE_ELEM, ENOTSUPP)])
    _check_chunks(res["chunks_delete"]["ok"], entries)
    assert res["popitems"] == {"ok": _pairs(entries)}
    assert res["chunks_delete_left"] == res["popitems_left"] == {"ok": []}


@pytest.mark.parametrize("cmd", [LOOKUP_BATCH, LOOKUP_AND_DELETE_BATCH])
def test_a_batch_refusal_that_is_not_unsupported_is_raised(cmd):
    """EPERM from a batch command is the kernel saying no, not "no such command": the
    walk raises it, naming the map and the call; nothing is taken out."""
    res, entries = _run("hash", [(cmd, errno.EPERM)], n=40)
    call = "lookup_batch failed" if cmd == LOOKUP_BATCH else "lookup_and_delete_batch failed"
    forms = (["keys", "items", "len", "chunks", "clear"] if cmd == LOOKUP_BATCH
             else ["chunks_delete", "popitems"])
    for form in forms:
        got = res[form]
        assert got.get("errno") == errno.EPERM, (form, got)
        assert got["map"] and f"map {got['map']!r}: {call}" in got["msg"], (form, got)
    if cmd == LOOKUP_AND_DELETE_BATCH:  # reading still works; the refused takes took nothing
        assert res["items"] == {"ok": _pairs(entries)}
        assert res["chunks_delete_left"] is None and res["popitems_left"] is None


@pytest.mark.parametrize("err", ["EPERM", "EACCES"])
@pytest.mark.parametrize("kind", ["lpm_trie", "devmap_hash"])
def test_value_lookups_refused_after_get_next_key_raise_with_the_errno(kind, err):
    """GET_NEXT_KEY works, value lookups fail: items() raises that errno naming the map
    and "lookup failed"; the key walk alone still returns every key."""
    e = errno.EPERM if err == "EPERM" else errno.EACCES
    if kind == "lpm_trie":
        res, entries = _run(kind, [(LOOKUP_ELEM, e)], n=40, key=_lpm, flags=BPF_F_NO_PREALLOC)
    else:  # a devmap_hash value is an ifindex: lo's
        res, entries = _run(kind, [(LOOKUP_ELEM, e)], n=40, value=lambda i: _u32(1))
    assert res["keys"] == {"ok": sorted(k.hex() for k, _ in entries)}
    for form in ("items", "chunks"):
        got = res[form]
        assert got.get("errno") == e, (form, got)
        assert f"map {got['map']!r}: lookup failed" in got["msg"], (form, got)


@pytest.mark.parametrize("kind", ["lpm_trie", "hash"])
def test_entries_whose_lookup_says_enoent_are_left_out(kind):
    """A lookup saying ENOENT after GET_NEXT_KEY returned the key means "deleted
    meanwhile": the walks that read values leave every such entry out (the hash map is
    walked by keys: no batch commands); a trie's key walk alone returns them all."""
    e = errno.EINVAL
    rules = [(LOOKUP_ELEM, errno.ENOENT)]
    if kind == "hash":
        rules += [(LOOKUP_BATCH, e), (LOOKUP_AND_DELETE_BATCH, e)]
    key = _lpm if kind == "lpm_trie" else _u32
    flags = BPF_F_NO_PREALLOC if kind == "lpm_trie" else 0
    res, entries = _run(kind, rules, n=40, key=key, flags=flags)
    # a trie's key walk makes no lookups; a hash map's fallback reads each entry whole
    assert res["keys"] == {"ok": sorted(k.hex() for k, _ in entries) if kind == "lpm_trie"
                           else []}
    assert res["items"] == {"ok": []}
    assert res["chunks"] == {"ok": []}


@pytest.mark.parametrize("err", ["EINVAL", "ENOTSUPP"])
def test_batch_writes_without_the_commands_fall_back(err):
    """No BPF_MAP_UPDATE_BATCH / DELETE_BATCH: ``update_batch()`` says False and wrote
    nothing; ``update(many)`` writes every entry one by one; ``delete_batch()`` deletes
    every key one by one and counts only those that were there; without
    BPF_MAP_LOOKUP_AND_DELETE_ELEM, ``pop()`` looks up then deletes."""
    e = NOT_SUPPORTED[err]
    res, entries = _run("hash", [(UPDATE_BATCH, e), (DELETE_BATCH, e),
                                 (LOOKUP_AND_DELETE_ELEM, e)], n=100)
    want = _pairs(entries)
    assert res["update_batch"] == {"ok": False} and res["update_batch_left"] == {"ok": []}
    assert res["update"] == {"ok": None} and res["update_left"] == {"ok": want}
    assert res["delete_batch"] == {"ok": len(entries)}
    assert res["delete_batch_left"] == {"ok": []}
    assert res["pop"] == {"ok": want} and res["pop_left"] == {"ok": []}


def test_batch_writes_refused_raise_and_change_nothing_more():
    """EPERM from the batch write commands is raised (naming the map and the call),
    never taken for a missing command: ``update_batch`` wrote nothing, ``delete_batch``
    deleted nothing."""
    res, entries = _run("hash", [(UPDATE_BATCH, errno.EPERM), (DELETE_BATCH, errno.EPERM)],
                        n=40)
    for form, call in (("update_batch", "update_batch failed"), ("update", "update_batch failed"),
                       ("delete_batch", "delete_batch failed")):
        got = res[form]
        assert got.get("errno") == errno.EPERM, (form, got)
        assert f"map {got['map']!r}: {call}" in got["msg"], (form, got)
    assert res["update_batch_left"] == res["update_left"] == {"ok": []}
    assert res["delete_batch_left"] == {"ok": _pairs(entries)}
    assert res["pop"] == {"ok": _pairs(entries)}  # lookup-and-delete itself is there
