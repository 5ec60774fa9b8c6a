"""Map walks under concurrent writers (pybpf/_walk.py): every key present for the whole
walk comes exactly once, for every map kind with keys, whichever form the walk takes
(raw, typed, batched). The writers are real: another process writing the map by id, or
a BPF program (tests/bpf/walks.bpf.c) run by the kernel in a loop. The expected keys are
the stable keys the test itself put in."""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import random
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from _child import readline

import pybpf
from pybpf import ClosedError, MapError
from pybpf.maps import Map, possible_cpus

REPS = 20
V0, NV = 10000, 512  # volatile keys: V0..V0+NV-1 (the BPF writer's too)


def u32(i: int) -> bytes:
    return struct.pack("<I", i)


def u64(i: int) -> bytes:
    return struct.pack("<Q", i)


def lpm(a: int, b: int, c: int, d: int, plen: int) -> bytes:
    return struct.pack("<I4B", plen, a, b, c, d)


def lpm_net(kb: bytes) -> ipaddress.IPv4Network:
    plen, = struct.unpack_from("<I", kb)
    return ipaddress.IPv4Network((kb[4:8], plen))


@pytest.fixture(scope="module")
def walks_obj(bpf_obj):
    return bpf_obj("walks")


# --- walk forms: each returns the keys one walk returned, in order -----------------
def raw_keys(m: Any) -> list[bytes]:
    return list(Map.keys(m))


def raw_items(m: Any) -> list[bytes]:
    return [k for k, _ in m.items_raw()]


def raw_batches(m: Any) -> list[bytes]:
    ks = m.key_size
    return [bytes(b.keys[i * ks:(i + 1) * ks]) for b in m.lookup_batch(chunk=7)
            for i in range(b.count)]


def typed_keys(m: Any) -> list[Any]:
    return [k for k in m.keys()]


def typed_items(m: Any) -> list[Any]:
    return [k for k, _ in m.items()]


def typed_iter(m: Any) -> list[Any]:
    return [k for k in m]


RAW_FORMS = (raw_items, raw_batches)
TYPED_FORMS = (typed_keys, typed_items, typed_iter)


def check_walk(got: list[Any], stable: set[Any], volatile: set[Any], what: str) -> None:
    assert len(got) == len(set(got)), f"{what}: a key came twice"
    missing = stable - set(got)
    assert not missing, f"{what}: {len(missing)} of {len(stable)} stable keys missing"
    extra = set(got) - stable - volatile
    assert not extra, f"{what}: keys nobody inserted: {sorted(extra)[:5]}"


# --- the kinds, with the stable keys the test puts in and the writer's keys ---------
@dataclass
class Kind:
    type: str
    key_size: int
    value_size: int
    max_entries: int
    stable: list[bytes]            # raw keys the test inserts
    volatile: list[bytes]          # raw keys the writer inserts and deletes
    decode: Callable[[bytes], Any]  # raw key -> the typed key, computed here
    value: Callable[[], bytes] = lambda: b""   # the test's value for stable keys
    writer_values: str = ""        # "fds" (passed), "sockets" (the writer's own), or ""
    index: bool = False            # GET_NEXT_KEY reports every slot 0..max_entries-1
    flags: int = 0
    types: dict[str, Any] = field(default_factory=dict)


def _u32k(b: bytes) -> int:
    return int(struct.unpack("<I", b)[0])


HASH_KEYS = [u32(i) for i in range(300)]
HASH_VOL = [u32(V0 + i) for i in range(NV)]
IDX_STABLE = [u32(i) for i in range(0, 64, 2)]
IDX_VOL = [u32(i) for i in range(1, 64, 2)]


def kinds() -> list[Kind]:
    pcpu = lambda: u64(7) * possible_cpus()  # noqa: E731
    return [
        *(Kind(t, 4, 8, 4096, HASH_KEYS, HASH_VOL, _u32k, (lambda: u64(7)), types={"key": "u32"})
          for t in ("hash", "lru_hash")),
        *(Kind(t, 4, 8, 4096, HASH_KEYS, HASH_VOL, _u32k, pcpu, types={"key": "u32"})
          for t in ("percpu_hash", "lru_percpu_hash")),
        Kind("lpm_trie", 8, 8, 4096, [lpm(10, 0, i, 0, 24) for i in range(200)],
             [lpm(10, 1, (V0 + i) >> 8, (V0 + i) & 0xff, 32) for i in range(NV)], lpm_net,
             lambda: u64(7), flags=1, types={"value": "u64"}),
        Kind("array", 4, 8, 64, [u32(i) for i in range(64)], [], _u32k, lambda: u64(7),
             index=True),
        Kind("percpu_array", 4, 8, 64, [u32(i) for i in range(64)], [], _u32k, pcpu,
             index=True),
        Kind("prog_array", 4, 4, 64, IDX_STABLE, IDX_VOL, _u32k, writer_values="fds",
             index=True),
        Kind("array_of_maps", 4, 4, 64, IDX_STABLE, IDX_VOL, _u32k, writer_values="fds",
             index=True),
        # every change of a map of maps waits for an RCU grace period: fewer keys
        Kind("hash_of_maps", 4, 4, 2048, HASH_KEYS[:40], HASH_VOL[:40], _u32k,
             writer_values="fds"),
        Kind("devmap", 4, 4, 64, IDX_STABLE, IDX_VOL, _u32k, lambda: u32(1), index=True),
        Kind("devmap_hash", 4, 4, 2048, HASH_KEYS, HASH_VOL, _u32k, lambda: u32(1)),
        Kind("sockmap", 4, 8, 64, IDX_STABLE, IDX_VOL, _u32k, writer_values="sockets",
             index=True),
        Kind("sockhash", 4, 8, 2048, HASH_KEYS[:100], HASH_VOL[:128], _u32k,
             writer_values="sockets"),
    ]


KINDS = {k.type: k for k in kinds()}

WRITER = textwrap.dedent("""
    import os, signal, socket, struct, sys
    from pybpf.maps import Map
    m = Map.from_id(int(sys.argv[1]))
    keys = [bytes.fromhex(x) for x in sys.argv[2].split(",")]
    how = sys.argv[3]
    if how == "sockets":
        pairs = [socket.socketpair() for _ in range(8)]
        vals = [struct.pack("<Q", a.fileno()) for a, _ in pairs]
    else:
        vals = [bytes.fromhex(x) for x in how.split(",")]
    n = 0
    def stop(*a):
        print(n, flush=True)
        os._exit(0)
    signal.signal(signal.SIGTERM, stop)
    print("go", flush=True)
    upd, dele = Map.update, Map.delete
    half = len(keys) // 2
    while True:
        # every key in turn is inserted, and deleted half a cycle later
        j = (n >> 1) * 7919 % len(keys)
        if n & 1:
            try:
                dele(m, keys[(j + half) % len(keys)])
            except OSError:
                pass  # arrays cannot delete; sockmap says EINVAL for an empty slot
        else:
            upd(m, keys[j], vals[n % len(vals)])
        n += 1
""")


class Env:
    """What fd-valued kinds need: a program (prog_array), an inner map (maps of maps),
    sockets (sockmap, sockhash)."""

    def __init__(self, obj: pybpf.Object) -> None:
        self.prog = obj.programs["churn"]
        self.inner = pybpf.create_map("array", 4, 4, 1, name=f"inner{os.getpid() % 10000}")
        self.socks = [socket.socketpair() for _ in range(8)]

    def stable_value(self, k: Kind) -> bytes:
        if k.writer_values == "fds":
            return u32(self.prog.fd if k.type == "prog_array" else self.inner.fd)
        if k.writer_values == "sockets":
            return u64(self.socks[0][0].fileno())
        return k.value()

    def pass_fds(self, k: Kind) -> tuple[int, ...]:
        if k.writer_values != "fds":
            return ()
        return (self.prog.fd if k.type == "prog_array" else self.inner.fd,)

    def close(self) -> None:
        self.inner.close()
        for a, b in self.socks:
            a.close()
            b.close()


@pytest.fixture(scope="module")
def env(walks_obj):
    obj = pybpf.load(walks_obj)
    e = Env(obj)
    yield e
    e.close()
    obj.close()


def make(k: Kind, env: Env) -> Any:
    m = pybpf.create_map(k.type, k.key_size, k.value_size, k.max_entries,
                         name=f"w{os.getpid() % 100000}", flags=k.flags,
                         inner_map=env.inner if "of_maps" in k.type else None, **k.types)
    v = env.stable_value(k)
    for kb in k.stable:
        Map.update(m, kb, v)
    return m


def start_writer(m: Any, k: Kind, env: Env) -> subprocess.Popen[str]:
    if k.writer_values == "fds":
        vals = u32(env.pass_fds(k)[0]).hex()
    elif k.writer_values == "sockets":
        vals = "sockets"
    else:
        vals = env.stable_value(k).hex()
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(m.id),
                          ",".join(x.hex() for x in k.volatile), vals],
                         stdout=subprocess.PIPE, text=True, pass_fds=env.pass_fds(k))
    assert p.stdout is not None and readline(p).strip() == "go"
    return p


def stop_writer(p: subprocess.Popen[str]) -> int:
    p.terminate()
    out, _ = p.communicate(timeout=30)
    return int(out.split()[-1])


@pytest.mark.parametrize("kind", [k for k in KINDS if KINDS[k].volatile])
def test_walks_under_a_writer_process_return_every_stable_key_once(kind, env):
    k = KINDS[kind]
    with make(k, env) as m:
        writer = start_writer(m, k, env)
        seen_sets: set[frozenset[bytes]] = set()  # the volatile keys each walk saw
        deadline = time.monotonic() + 60
        rounds = 0
        try:
            # REPS rounds, and on until the walks themselves saw the writer change the
            # map at least 3 times (a map of maps changes slowly: one RCU grace period a change)
            while rounds < REPS or len(seen_sets) < 4 and time.monotonic() < deadline:
                rounds += 1
                stable_raw, vol_raw = set(k.stable), set(k.volatile)
                for form in RAW_FORMS:
                    got = form(m)
                    check_walk(got, stable_raw, vol_raw, f"{kind} {form.__name__}")
                    seen_sets.add(frozenset(got) & vol_raw)
                if k.index:  # the raw key walk: every slot, filled or not, once
                    got = raw_keys(m)
                    assert sorted(got) == [u32(i) for i in range(k.max_entries)], kind
                else:
                    check_walk(raw_keys(m), stable_raw, vol_raw, f"{kind} raw_keys")
                stable, vol = {k.decode(x) for x in k.stable}, {k.decode(x) for x in k.volatile}
                for form in TYPED_FORMS:
                    check_walk(form(m), stable, vol, f"{kind} {form.__name__}")
        finally:
            ops = stop_writer(writer)
        # the premise: the writer changed the map while the walks ran, as they saw
        assert len(seen_sets) >= 4, f"the walks saw {len(seen_sets)} different sets of " \
            f"volatile keys in {rounds} rounds (the writer made {ops} changes)"
        assert ops >= (3 if "of_maps" in kind else 1000), f"the writer made only {ops} changes"
        # the premise: the stable keys were never deleted (nothing evicted them)
        assert all(m.lookup(kb) is not None for kb in k.stable)


def _write_between_steps(m: Any, k: Kind, env: Env, rng: random.Random, current: bytes
                         ) -> None:
    """What a concurrent writer may do between two steps of a walk, made certain: delete
    the walk's current key when it is volatile (the kernel then starts its GET_NEXT_KEY
    walk over), delete another volatile key, insert one."""
    v = env.stable_value(k)
    for kb in ((current,) if current in k.volatile else ()) + (rng.choice(k.volatile),):
        try:
            Map.delete(m, kb)
        except OSError:
            pass  # sockmap: EINVAL for an empty slot
    Map.update(m, rng.choice(k.volatile), v)


STEP_FORMS: dict[str, Callable[[Any], Any]] = {
    "Map.keys": lambda m: ((kb, kb) for kb in Map.keys(m)),
    "items_raw": lambda m: ((kb, kb) for kb, _ in m.items_raw()),
    "lookup_batch": lambda m: ((bytes(b.keys[i * m.key_size:(i + 1) * m.key_size]),) * 2
                               for b in m.lookup_batch(chunk=7) for i in range(b.count)),
    "keys()": lambda m: ((k, None) for k in m.keys()),
    "items()": lambda m: ((k, None) for k, _ in m.items()),
    "iter": lambda m: ((k, None) for k in m),
}


@pytest.mark.parametrize("kind", [k for k in KINDS if KINDS[k].volatile])
def test_writes_between_every_step_of_the_walk(kind, env):
    """Deterministic interleaving: between every two keys a walk returns, the current key
    (when volatile) and another volatile key go and a volatile key comes. Every stable
    key still comes exactly once, in every form of the walk."""
    k = KINDS[kind]
    raw_of = {k.decode(kb): kb for kb in (*k.stable, *k.volatile)}
    rng = random.Random(kind)
    with make(k, env) as m:
        for kb in k.volatile[::2]:
            Map.update(m, kb, env.stable_value(k))
        for name, form in STEP_FORMS.items():
            typed = name in ("keys()", "items()", "iter")
            # each change of a map of maps waits for an RCU grace period: fewer of them
            slow = "of_maps" in kind
            for _ in range(1 if slow else REPS // 4):
                got = []
                for key, kb in form(m):
                    got.append(key)
                    if not slow or len(got) % 8 == 1:
                        _write_between_steps(m, k, env, rng, raw_of[key] if typed else kb)
                if k.index and name == "Map.keys":
                    assert sorted(got) == [u32(i) for i in range(k.max_entries)], kind
                    continue
                dec = k.decode if typed else (lambda x: x)
                check_walk(got, {dec(x) for x in k.stable}, {dec(x) for x in k.volatile},
                           f"{kind} {name}")
        assert all(m.lookup(kb) is not None for kb in k.stable)


def test_arrays_under_a_writer_of_values(env):
    """Array slots are all stable keys: a writer rewriting values changes no walk."""
    for kind in ("array", "percpu_array"):
        k = KINDS[kind]
        with make(k, env) as m:
            k2 = Kind(k.type, 4, 8, 64, k.stable, k.stable[1::2], k.decode, k.value)
            writer = start_writer(m, k2, env)
            try:
                for _ in range(REPS):
                    for form in (*RAW_FORMS, raw_keys):
                        assert sorted(form(m)) == sorted(k.stable), (kind, form.__name__)
                    for form in TYPED_FORMS:
                        assert sorted(form(m)) == list(range(64)), (kind, form.__name__)
            finally:
                stop_writer(writer)


BPF_MAPS = {"h": "hash", "lru": "lru_hash", "pch": "percpu_hash", "lrupc": "lru_percpu_hash",
            "trie": "lpm_trie"}


BPF_WRITER = textwrap.dedent("""
    import sys
    from pybpf._ffi import ffi, lib
    opts = ffi.new("struct bpf_test_run_opts *")
    opts.sz = ffi.sizeof("struct bpf_test_run_opts")
    data = ffi.new("char[64]")
    opts.data_in, opts.data_size_in, opts.repeat = data, 64, 200000
    print("go", flush=True)
    while lib.bpf_prog_test_run_opts(int(sys.argv[1]), opts) == 0:
        pass
    sys.exit("test run failed")
""")


@pytest.mark.parametrize("name", list(BPF_MAPS))
def test_walks_under_a_bpf_program_writer(name, walks_obj):
    """The kernel writes: ``churn`` (BPF_PROG_TEST_RUN with repeat=200000, in a loop in
    another process that holds the program's fd) inserts and deletes volatile keys in
    every map, on the other CPU."""
    k = KINDS[BPF_MAPS[name]]
    with pybpf.load(walks_obj) as obj:
        m = obj.maps[name]
        v = k.value()
        for kb in k.stable:
            Map.update(m, kb, v)
        fd = obj.programs["churn"].fd
        writer = subprocess.Popen([sys.executable, "-c", BPF_WRITER, str(fd)], pass_fds=(fd,),
                                  stdout=subprocess.PIPE, text=True)
        assert writer.stdout is not None and readline(writer).strip() == "go"
        overlapped = walks = 0
        stable, vol = {k.decode(x) for x in k.stable}, {k.decode(x) for x in k.volatile}
        try:
            for _ in range(3 * REPS):
                for form in (*RAW_FORMS, raw_keys, *TYPED_FORMS):
                    raw = form in (*RAW_FORMS, raw_keys)
                    before = obj.bss.churn_calls
                    got = form(m)
                    overlapped += obj.bss.churn_calls != before
                    walks += 1
                    check_walk(got, set(k.stable) if raw else stable,
                               set(k.volatile) if raw else vol, f"{name} {form.__name__}")
        finally:
            writer.kill()
            writer.wait()
        # the kernel really wrote while walks ran (how many overlap depends on how busy the
        # host's CPUs are: on an idle host nearly all do)
        assert overlapped >= 5, f"only {overlapped} of {walks} walks overlapped a write"
        assert all(m.lookup(kb) is not None for kb in k.stable)


@pytest.mark.parametrize("kind", ["hash", "percpu_hash", "lru_hash", "hash_of_maps"])
def test_lookup_batch_with_buckets_larger_than_the_chunk(kind, env):
    """chunk=1 over 3000 entries: buckets hold several entries, the kernel says ENOSPC,
    the walk grows the chunk; every entry comes, once."""
    k = KINDS[kind]
    keys = [u32(i) for i in range(3000)]
    with pybpf.create_map(kind, 4, k.value_size, 4096, name="bigbucket",
                          inner_map=env.inner if "of_maps" in kind else None) as m:
        v = env.stable_value(k)
        if "of_maps" in kind:  # one RCU wait per syscall: one batch update
            assert m.update_batch([(i, env.inner.fd) for i in range(3000)])
        else:
            for kb in keys:
                Map.update(m, kb, v)
        for chunk in (1, 2, 3):
            got = [bytes(b.keys[i * 4:i * 4 + 4]) for b in m.lookup_batch(chunk=chunk)
                   for i in range(b.count)]
            assert len(got) == 3000 and set(got) == set(keys), (chunk, len(got))
        got2 = [bytes(kb[i * 4:i * 4 + 4]) for kb, _, c in m._batches(chunk=1) for i in range(c)]
        assert sorted(got2) == sorted(keys)
        if "of_maps" in kind:
            return  # (lookup-and-delete: one RCU wait per chunk)
        taken = [bytes(b.keys[i * 4:i * 4 + 4]) for b in m.lookup_batch(chunk=1, delete=True)
                 for i in range(b.count)]
        assert sorted(taken) == sorted(keys) and m.lookup(keys[0]) is None


@pytest.mark.parametrize("kind", ["hash", "lpm_trie", "devmap_hash", "sockhash", "hash_of_maps",
                                  "prog_array", "devmap"])
def test_deleting_the_current_key_during_the_walk(kind, env):
    k = KINDS[kind]
    for form in ("raw", "typed"):
        with make(k, env) as m:
            want = {k.decode(kb) for kb in k.stable}
            got = []
            if form == "raw":
                for kb in m.items_raw():
                    got.append(k.decode(kb[0]))
                    assert Map.delete(m, kb[0])
            else:
                for key in m.keys():
                    got.append(key)
                    del m[key]
            assert len(got) == len(want) and set(got) == want, (form, len(got), len(want))
            assert len(m) == 0 and not m


def test_lpm_typed_keys_while_entries_are_deleted(env):
    """A trie walk whose position is deleted again and again (each time the kernel
    starts over from the first key): every stable prefix still comes, once."""
    with pybpf.create_map("lpm_trie", 8, 8, 1024, name="trie_del", flags=1, value="u64") as m:
        stable = {ipaddress.IPv4Network(f"10.0.{i}.0/24") for i in range(250)}
        volatile = {ipaddress.IPv4Network(f"10.0.{i}.128/25") for i in range(250)}
        for net in stable | volatile:
            m[net] = 1
        got = []
        for net in m.keys():
            got.append(net)
            if net in volatile:
                del m[net]  # the walk's position goes: the kernel restarts
        assert len(got) == len(set(got)) == 500 and set(got) == stable | volatile
        assert set(m.keys()) == stable and len(m) == 250


def test_popitems_of_kinds_without_lookup_and_delete_take_everything():
    """LPM tries and devmap_hash have no BPF_MAP_LOOKUP_AND_DELETE_ELEM: popitems() looks
    up and deletes each key instead of skipping it."""
    with pybpf.create_map("lpm_trie", 8, 8, 64, name="poptrie", flags=1, value="u64") as m:
        nets = {ipaddress.IPv4Network(f"10.0.{i}.0/24"): i for i in range(20)}
        m.update(nets)
        assert dict(m.popitems()) == nets and len(m) == 0
    with pybpf.create_map("devmap_hash", 4, 4, 64, name="popdev") as d:
        for i in range(10):
            Map.update(d, u32(i), u32(1))
        assert dict(d.popitems()) == {i: 1 for i in range(10)} and not d


def test_walk_that_cannot_finish_raises_naming_the_map(tmp_path):
    """A writer that deletes the walk's position and inserts a new key at every step
    never lets a GET_NEXT_KEY walk end: it raises MapError (EAGAIN) naming the map."""
    code = textwrap.dedent("""
        import errno, ipaddress, pybpf
        m = pybpf.create_map("lpm_trie", 8, 8, 64, name="endless", flags=1, value="u64")
        m["10.2.0.0/32"] = 1
        i = 0
        try:
            for net in m.keys():
                del m[net]
                i += 1
                m[ipaddress.IPv4Network((0x0a020000 + i, 32))] = 1
        except pybpf.MapError as e:
            assert e.errno == errno.EAGAIN and "'endless'" in str(e), e
            print("raised", i, e)
        else:
            print("ended", i)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("raised"), r.stdout


CLOSED_CHILD = textwrap.dedent("""
    import json, os, sys, ipaddress
    import pybpf
    from pybpf.maps import Map
    path = sys.argv[1]
    obj = pybpf.load(path)
    h, trie = obj.maps["h"], obj.maps["trie"]
    h.update({i: i for i in range(3000)})
    for i in range(300):
        trie[ipaddress.IPv4Network((0x0a000000 + (i << 8), 24))] = i
    big = pybpf.create_map("hash", 4, 8, 16384, name="big", key="u32", value="u64")
    big.update({i: i for i in range(10000)})
    walks = {
        "keys_raw": big.keys_raw(), "Map.keys": Map.keys(big), "items_raw": big.items_raw(),
        "typed items": iter(big.items()), "typed keys": iter(big.keys()),
        "values": iter(big.values()), "lookup_batch": big.lookup_batch(chunk=64),
        "lookup_batch delete": big.lookup_batch(chunk=64, delete=True),
        "object map lookup_batch": h.lookup_batch(chunk=64),
        "lpm keys": iter(trie.keys()), "lpm items_raw": trie.items_raw(),
        "lpm lookup_batch": trie.lookup_batch(chunk=16),
    }
    for it in walks.values():
        next(it)
    nums = {h.owner.get(), trie.owner.get(), big.owner.get()}
    obj.close()
    big.close()
    # other objects get the walks' fd numbers
    others = [pybpf.load(path) for _ in range(3)]
    spare = []
    while not all(os.path.exists(f"/proc/self/fd/{n}") for n in nums) and len(spare) < 64:
        spare.append(pybpf.create_map("hash", 4, 8, 16384, key="u32", value="u64"))
    for o in [*(o.maps["h"] for o in others), *spare]:
        o.update({i: i for i in range(3000)})
    reused = all(os.path.exists(f"/proc/self/fd/{n}") for n in nums)
    out = {}
    for name, it in walks.items():
        try:
            n = sum(1 for _ in it)
            out[name] = f"ended after {n} more"
        except pybpf.ClosedError as e:
            out[name] = "ClosedError" if any(f"'{x}'" in str(e) for x in ("h", "trie", "big")) \\
                else str(e)
        except Exception as e:
            out[name] = f"{type(e).__name__}: {e}"
    print(json.dumps({"reused": reused, "out": out}))
""")


def test_walks_resumed_after_close_and_fd_reuse_raise_closed(walks_obj):
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", CLOSED_CHILD, walks_obj], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        res = json.loads(r.stdout)
        assert res["reused"], "no other object got the walks' fd numbers"
        assert res["out"] == {k: "ClosedError" for k in res["out"]}, res["out"]


def _bool_len(m: Any) -> tuple[Any, Any]:
    def outcome(f: Callable[[], Any]) -> Any:
        try:
            return f()
        except (TypeError, MapError) as e:
            return type(e).__name__

    return outcome(lambda: bool(m)), outcome(lambda: len(m) > 0)


def test_bool_is_len_above_zero_for_every_kind(env, walks_obj):
    filled = {}
    for kind, k in KINDS.items():
        if k.type in ("array", "percpu_array"):
            continue  # never empty: below
        with make(k, env) as m:
            assert _bool_len(m) == (True, True), kind
            filled[kind] = len(m)
            for kb in k.stable:
                Map.delete(m, kb)
            assert _bool_len(m) == (False, False), kind
    assert filled == {t: len(k.stable) for t, k in KINDS.items() if k.type in filled}
    for kind in ("array", "percpu_array"):
        with pybpf.create_map(kind, 4, 8, 3) as m:
            assert _bool_len(m) == (True, True) and len(m) == 3
    with pybpf.create_map("cpumap", 4, 4, possible_cpus()) as m:
        assert _bool_len(m) == (False, False)
        m[0] = 192
        assert _bool_len(m) == (True, True) and list(m.keys()) == [0]
        del m[0]
        assert _bool_len(m) == (False, False)
    with pybpf.load(walks_obj) as obj:
        st = obj.maps["stacks"]
        assert _bool_len(st) == (False, False)
        link = obj.programs["stacker"].attach()
        try:
            obj.bss.target_tgid = os.getpid()
            os.getppid()
        finally:
            link.detach()
        sid = obj.data.stack_id
        assert sid >= 0 and _bool_len(st) == (True, True) and list(st.keys()) == [sid]
        del st[sid]
        assert _bool_len(st) == (False, False)
    for kind, ks, vs in (("queue", 0, 8), ("stack", 0, 8), ("bloom_filter", 0, 8),
                         ("xskmap", 4, 4)):
        with pybpf.create_map(kind, ks, vs, 4) as m:
            # the same refusal for both: a pybpf error naming the map, also a TypeError
            assert _bool_len(m) == ("MapTypeError", "MapTypeError"), kind
            with pytest.raises(TypeError, match=f"map '{m.name}'|{kind}"):
                len(m)


@pytest.mark.parametrize("kind, ks, vs, n", [("queue", 0, 8, 4), ("stack", 0, 8, 4),
                                            ("bloom_filter", 0, 8, 4),
                                            ("ringbuf", 0, 0, 4096)])
def test_keyless_maps_have_no_raw_key_walk(kind, ks, vs, n):
    """Every raw walk of a kind without keys: MapError EINVAL naming the map (its
    ``map`` attribute too)."""
    with pybpf.create_map(kind, ks, vs, n, name=f"kl{os.getpid() % 100000}") as q:
        for walk in (Map.keys, lambda m: list(Map.items_raw(m))):
            with pytest.raises(MapError) as ei:
                walk(q)
            assert ei.value.errno == errno.EINVAL and "has no keys" in str(ei.value)
            assert ei.value.map == q.name and f"map {q.name!r}" in str(ei.value), kind


def test_clear_under_a_writer_leaves_no_stable_key(env):
    k = KINDS["lpm_trie"]
    with make(k, env) as m:
        writer = start_writer(m, k, env)
        try:
            m.clear()
        finally:
            stop_writer(writer)
        assert all(m.lookup(kb) is None for kb in k.stable)


def test_closed_walk_in_process_raises_for_gnk_walks():
    """The per-key walk borrows the owner for every syscall, in process too."""
    m = pybpf.create_map("lpm_trie", 8, 8, 64, name="closedwalk", flags=1, value="u64")
    for i in range(10):
        m[f"10.0.{i}.0/24"] = i
    it = iter(m.keys())
    next(it)
    m.close()
    with pytest.raises(ClosedError):
        next(it)
    with pytest.raises(ClosedError):
        bool(m)


def test_cli_map_dump_under_a_bpf_program_writer(walks_obj):
    """``pybpf map dump`` (another process) walks a hash and an LPM trie while the kernel
    churns them: every stable key is printed exactly once."""
    with pybpf.load(walks_obj) as obj:
        for name in ("h", "trie"):
            k = KINDS[BPF_MAPS[name]]
            for kb in k.stable:
                Map.update(obj.maps[name], kb, k.value())
        fd = obj.programs["churn"].fd
        writer = subprocess.Popen([sys.executable, "-c", BPF_WRITER, str(fd)], pass_fds=(fd,),
                                  stdout=subprocess.PIPE, text=True)
        assert writer.stdout is not None and readline(writer).strip() == "go"
        try:
            for _ in range(5):
                for name in ("h", "trie"):
                    before = obj.bss.churn_calls
                    r = subprocess.run([sys.executable, "-m", "pybpf", "map", "dump",
                                        str(obj.maps[name].id), "--json"], capture_output=True,
                                       text=True, timeout=60)
                    assert r.returncode == 0, r.stderr
                    rows = json.loads(r.stdout)
                    if name == "h":
                        got = [struct.pack("<I", e["key"]) for e in rows]
                    else:
                        got = [lpm(*bytes.fromhex(e["key"]["data"]), e["key"]["prefixlen"])
                               for e in rows]
                    assert obj.bss.churn_calls != before, "the kernel did not write meanwhile"
                    kind = KINDS[BPF_MAPS[name]]
                    check_walk(got, set(kind.stable), set(kind.volatile), f"map dump {name}")
        finally:
            writer.kill()
            writer.wait()


@pytest.mark.parametrize("data_size", [4, 16, 3])
def test_trie_walk_returns_every_prefix_in_the_kernels_order(data_size):
    """A quiet trie of random prefixes of every length: the walk (which tells a restart
    from a step by where a prefix falls in the trie's order) returns exactly the
    kernel's own GET_NEXT_KEY sequence, for IPv4, IPv6 and an odd address size."""
    from pybpf._ffi import ffi, lib

    rng = random.Random(data_size)
    bits = 8 * data_size
    ks = 4 + data_size
    put = set()
    for _ in range(1500):
        plen = rng.choice([0, 1, 2, bits - 1, bits, rng.randint(0, bits)])
        addr = rng.getrandbits(bits) >> (bits - plen) << (bits - plen) if plen else 0
        put.add(struct.pack("<I", plen) + addr.to_bytes(data_size, "big"))
    with pybpf.create_map("lpm_trie", ks, 8, 4096, name=f"ord{os.getpid() % 100000}",
                          flags=1) as m:
        for kb in put:
            Map.update(m, kb, u64(1))
        kernel: list[bytes] = []  # the kernel's order, step by step
        cur, nxt = ffi.NULL, ffi.new("char[]", ks)
        while lib.bpf_map_get_next_key(m.fd, cur, nxt) == 0:
            kernel.append(bytes(ffi.buffer(nxt)))
            cur = ffi.new("char[]", kernel[-1])
        assert sorted(kernel) == sorted(put)
        assert list(Map.keys(m)) == kernel
        assert [k for k, _ in m.items_raw()] == kernel


def test_lookup_batch_of_a_key_walked_kind_gives_each_keys_value():
    """lookup_batch() of a kind without kernel batches (an LPM trie) gathers the key walk
    into chunks: every chunk's values are its keys' own, in order."""
    with pybpf.create_map("lpm_trie", 8, 8, 256, name=f"lb{os.getpid() % 100000}",
                          flags=1) as m:
        want = {lpm(10, 0, i, 0, 24): u64(1000 + i) for i in range(50)}
        for kb, vb in want.items():
            Map.update(m, kb, vb)
        got = {}
        for b in m.lookup_batch(chunk=7):
            assert 0 < b.count <= 7
            kb, vb = bytes(b.keys), bytes(b.values)
            for i in range(b.count):
                got[kb[8 * i:8 * i + 8]] = vb[8 * i:8 * i + 8]
        assert got == want
