"""Maps as typed Python mappings, checked against what BPF programs read and write
(tests/bpf/typed_maps.bpf.c)."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time

import pytest
from _child import readline

import pybpf
from pybpf import MapError
from pybpf.mapkinds import (
    ArrayMap,
    ArrayOfMapsMap,
    BloomFilterMap,
    HashMap,
    LPMTrieMap,
    PerCPUArrayMap,
    PerCPUHashMap,
    ProgArrayMap,
    QueueMap,
    StackTraceMap,
)

PKT = bytes(64)


@pytest.fixture
def tm():
    from conftest import compile_test_bpf

    obj = pybpf.load(compile_test_bpf("typed_maps"))
    yield obj
    obj.close()


def _results(obj):
    return dict(obj.maps["results"].items())


def test_kinds_are_registered(tm):
    kinds = {n: type(m) for n, m in tm.maps.items()}
    assert kinds["vals"] is HashMap and kinds["lru"] is HashMap
    assert kinds["results"] is ArrayMap and kinds["pc_arr"] is PerCPUArrayMap
    assert kinds["pc_hash"] is PerCPUHashMap and kinds["fifo"] is QueueMap
    assert kinds["lifo"] is QueueMap and kinds["routes"] is LPMTrieMap
    assert kinds["bloom"] is BloomFilterMap and kinds["jmp"] is ProgArrayMap
    assert kinds["outer_arr"] is ArrayOfMapsMap and kinds["stacks"] is StackTraceMap


def test_hash_dict_interface_and_kernel_roundtrip(tm):
    m = tm.maps["vals"]
    Val = tm.btf["val"].pytype
    assert len(m) == 0 and 1 not in m and m.get(1) is None
    m[1] = {"count": 5, "bytes": 10, "pid": 3, "flags": 1, "stamp": 99}
    assert m[1] == Val(5, 10, 3, 1, 99)
    tm.programs["derive"].test_run(PKT)
    # the kernel read our encoding and wrote its own struct: decode it
    assert m[2] == Val(count=10, bytes=11, pid=3, flags=0x101, stamp=99)
    assert sorted(m) == [1, 2] and len(m) == 2 and 2 in m
    assert dict(m.items()) == {1: Val(5, 10, 3, 1, 99), 2: Val(10, 11, 3, 0x101, 99)}
    assert [v.count for v in m.values()] in ([5, 10], [10, 5])
    with pytest.raises(KeyError):
        m[3]
    with pytest.raises(KeyError):
        m.update({1: Val()}, only_if_absent=True)
    with pytest.raises(KeyError):
        m.update(3, Val(), only_if_present=True)
    m.update({3: (1,), 4: Val(count=4)})  # several entries: one batch syscall
    assert m[3].count == 1 and m[4].count == 4
    m.set(6, count=66, pid=6)  # keyword fields
    assert m[6] == Val(count=66, pid=6)
    with pytest.raises(TypeError, match="map 'vals': value: struct val has no field 'cnt'"):
        m.set(6, cnt=1)
    del m[6]
    assert m.setdefault(5, Val(count=55)).count == 55
    assert m.setdefault(5, Val(count=66)).count == 55
    assert m.pop(5).count == 55 and m.pop(5, "gone") == "gone"
    del m[4]
    with pytest.raises(KeyError):
        del m[4]
    assert m.to_dict().keys() == {1, 2, 3}
    m.clear()
    assert len(m) == 0
    # raw byte methods still work on the typed map
    m.update(b"\x07\0\0\0", bytes(Val(count=7)))
    assert m[7].count == 7 and m.lookup(b"\x07\0\0\0") == bytes(Val(count=7))
    assert list(m.keys_raw()) == [b"\x07\0\0\0"]


def test_lru_hash_evicts(tm):
    m = tm.maps["lru"]
    for i in range(500):
        m[i] = i
    assert 0 < len(m) <= 64 + 2 * os.cpu_count()
    assert m[499] == 499


def test_per_cpu_values_and_sum(tm):
    m = tm.maps["pc_arr"]
    ncpu = pybpf.possible_cpus()
    assert m[0] == [0] * ncpu and len(m) == 2
    for _ in range(5):
        tm.programs["derive"].test_run(PKT)
    assert len(m[0]) == ncpu and m.sum(0) == 5
    m[1] = list(range(ncpu))
    assert m[1] == list(range(ncpu)) and m.sum(1) == sum(range(ncpu))
    with pytest.raises(ValueError, match=f"needs {ncpu} values"):
        m[1] = [1] * (ncpu + 1)
    h = tm.maps["pc_hash"]
    h[9] = {"count": 2, "pid": 1}  # the same value on every CPU
    assert [v.count for v in h[9]] == [2] * ncpu
    total = h.sum(9)
    assert (total.count, total.pid) == (2 * ncpu, ncpu)
    # batched walks carry every CPU's value too
    assert [v.count for v in dict(h.items())[9]] == [2] * ncpu
    assert dict(m.items())[1] == list(range(ncpu)) and len(list(m.values())) == 2


def test_queue_and_stack_with_the_kernel(tm):
    fifo, lifo = tm.maps["fifo"], tm.maps["lifo"]
    fifo.push(5)
    lifo.push(6)
    lifo.push(7)
    tm.programs["derive"].test_run(PKT)
    r = _results(tm)
    assert (r[0], r[1]) == (5, 7)  # the kernel popped what Python pushed
    assert fifo.peek() == 100
    assert fifo.drain() == [100, 101, 102]
    assert lifo.pop() == 102 and lifo.drain() == [101, 100, 6]
    with pytest.raises(IndexError, match="'fifo' \\(queue\\) is empty"):
        fifo.pop()
    assert fifo.pop(default=None) is None
    for i in range(8):
        fifo.push(i)
    with pytest.raises(MapError, match="full"):
        fifo.push(8)
    fifo.push(8, overwrite=True)
    assert fifo.drain() == list(range(1, 9))
    with pytest.raises(TypeError, match="has no keys"):
        fifo[0]


def test_lpm_trie_networks(tm):
    r = tm.maps["routes"]
    r["10.0.0.0/8"] = 1
    r[ipaddress.ip_network("10.1.0.0/16")] = 2
    r["10.1.2.0/24"] = 3
    r["192.168.0.0/16"] = 4
    assert r["10.1.2.3"] == 3 and r["10.1.9.9"] == 2 and r[ipaddress.ip_address("10.9.9.9")] == 1
    assert "11.0.0.1" not in r
    assert dict(r.items())[ipaddress.ip_network("10.1.0.0/16")] == 2
    tm.programs["derive"].test_run(PKT)
    assert _results(tm)[2] == 3  # the kernel matched 10.1.2.3 against our prefixes
    del r["10.1.2.0/24"]
    tm.programs["derive"].test_run(PKT)
    assert _results(tm)[2] == 2
    with pytest.raises(ValueError, match="map 'routes': key: .*IPv6"):
        r["::1/128"] = 1
    with pytest.raises(ValueError, match="map 'routes': key"):
        r["10.0.0.300/8"] = 1


def test_bloom_filter(tm):
    b = tm.maps["bloom"]
    assert 42 not in b
    b.add(42)
    assert 42 in b
    tm.programs["derive"].test_run(PKT)
    r = _results(tm)
    assert (r[3], r[4]) == (1, 0)  # the kernel sees 42, not 43


def test_maps_of_maps(tm):
    outer = tm.maps["outer_arr"]
    inner_a, inner_b = tm.maps["inner_a"], tm.maps["inner_b"]
    assert outer.inner_id(0) == inner_a.id  # set by the object's initializer
    inner_a[0] = 555
    oh = tm.maps["outer_hash"]
    oh[7] = inner_b
    inner_b[0] = 888
    tm.programs["derive"].test_run(PKT)
    r = _results(tm)
    assert (r[5], r[6]) == (555, 888)
    assert inner_a[1] == 77  # written by the kernel through the outer map
    with outer[0] as opened:  # opened by id: a new fd, typed from kernel BTF
        assert opened.id == inner_a.id and opened[1] == 77
    assert list(oh.keys()) == [7]
    # an inner map created from Python
    with pybpf.create_map("array", 4, 8, 4, name="py_inner", value="u64") as mine:
        mine[0] = 4242
        outer[0] = mine
        tm.programs["derive"].test_run(PKT)
        assert _results(tm)[5] == 4242 and mine[1] == 77
    del oh[7]
    assert list(oh.keys()) == []


def test_prog_array_tail_call(tm):
    entry, target = tm.programs["tail_entry"], tm.programs["tail_target"]
    jmp = tm.maps["jmp"]
    assert entry.test_run(PKT).retval == 2  # XDP_PASS: empty slot, fell through
    assert _results(tm)[7] == 1
    jmp[0] = target
    assert jmp[0] == target.info().id and list(jmp.keys()) == [0]
    assert entry.test_run(PKT).retval == 1  # XDP_DROP from the tail-called program
    assert _results(tm)[7] == 2
    del jmp[0]
    assert entry.test_run(PKT).retval == 2 and len(jmp) == 0


def test_stack_traces_symbolized(tm):
    link = tm.programs["stacker"].attach()
    try:
        tm.bss.target_tgid = os.getpid()
        os.getppid()
    finally:
        link.detach()
    assert tm.bss.stacker_calls == 1  # one getppid(2) of this process, one pair of ids
    kid, uid = tm.data.kstack_id, tm.data.ustack_id
    # bpf_get_stackid() returns -errno on failure: an id is below max_entries (64)
    assert kid < 64, f"kernel stack: bpf_get_stackid gave -{(1 << 32) - kid}"
    assert uid < 64, f"user stack: bpf_get_stackid gave -{(1 << 32) - uid}"
    stacks, ustacks = tm.maps["stacks"], tm.maps["ustacks"]
    assert list(stacks.keys()) == [kid] and list(ustacks.keys()) == [uid]
    assert len(stacks[kid]) >= 2 and len(ustacks[uid]) >= 2
    kframes = stacks.symbolize(kid)
    assert any("syscall" in f.lower() or "sys_getppid" in f for f in kframes), kframes
    uframes = ustacks.symbolize(uid, pid=os.getpid())
    assert any(f.startswith("getppid+") for f in uframes), uframes


def test_iteration_under_a_concurrent_kernel_writer(tm):
    churn = tm.maps["churn"]
    stable = {i: i * 3 for i in range(300)}
    churn.update(stable)
    writer = subprocess.Popen([sys.executable, "-c",
                               "import os, sys\nsys.stdout.write('go\\n'); sys.stdout.flush()\n"
                               "while True: os.getpgid(0)"], stdout=subprocess.PIPE)
    link = tm.programs["churner"].attach()
    try:
        tm.bss.target_tgid = writer.pid
        readline(writer)
        deadline = time.monotonic() + 0.3
        while _calls(tm) < 2000 and time.monotonic() < deadline + 5:
            time.sleep(0.01)
        for _ in range(20):
            for walk in (list(churn.items()), [(k, churn.get(k)) for k in churn._walk_raw_keys()]):
                keys = [k for k, _ in walk]
                assert len(keys) == len(set(keys)), "a key appeared twice"
                got = dict(walk)
                for k, v in stable.items():
                    assert got[k] == v
                assert all(k in stable or 10000 <= k < 10500 for k in got)
        assert _calls(tm) > 2000  # the kernel really wrote meanwhile
    finally:
        link.detach()
        writer.kill()
        writer.wait()


def _calls(tm):
    return tm.bss.churn_calls


def test_batches_and_fallback(tm):
    m = tm.maps["vals"]
    Val = tm.btf["val"].pytype
    assert m.update_batch([(i, Val(count=i)) for i in range(1000)])
    assert len(m) == 1000
    chunks = list(m._batches(chunk=64))
    assert sum(c for _, _, c in chunks) == 1000 and len(chunks) >= 1000 // 64
    assert sorted(k for k, _ in m.items()) == list(range(1000))
    assert m.delete_batch(range(500, 1000)) == 500 and len(m) == 500
    drained = dict(m.popitems())
    assert sorted(drained) == list(range(500)) and drained[7].count == 7 and len(m) == 0
    # LPM tries have no batch ops: the per-key walk is used transparently
    r = tm.maps["routes"]
    assert r._batches() is None
    r.update({"10.0.0.0/8": 1, "172.16.0.0/12": 2})
    assert sorted(r.values()) == [1, 2] and len(r) == 2


def test_devmap_and_sockhash(tm):
    d = tm.maps["devs"]
    d[0] = "lo"
    assert d[0] == socket.if_nametoindex("lo") and list(d.keys()) == [0]
    s = tm.maps["socks"]
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    cli = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    try:
        s[1] = cli
        cookie = int.from_bytes(cli.getsockopt(socket.SOL_SOCKET, 57, 8), "little")  # SO_COOKIE
        assert s[1] == cookie and 1 in s
        del s[1]
        assert 1 not in s
        with pytest.raises(TypeError, match="expected a socket or an fd"):
            s[2] = "nope"
    finally:
        for x in (cli, conn, srv):
            x.close()


def test_pin_open_pinned_from_id_with_kernel_btf(tm):
    m = tm.maps["vals"]
    Val = tm.btf["val"].pytype
    m[1] = Val(count=123, pid=9)
    path = f"/sys/fs/bpf/pybpf-test-typed-{os.getpid()}"
    m.pin(path)
    try:
        with pybpf.Map.open_pinned(path) as p:
            assert isinstance(p, HashMap)
            v = p[1]  # typed from the kernel's copy of the object's BTF
            assert type(v).__name__ == "val" and (v.count, v.pid) == (123, 9)
            p[2] = {"count": 5}
            assert m[2].count == 5
        with pybpf.Map.from_id(m.id) as q:
            assert q[1]._asdict() == Val(count=123, pid=9)._asdict()
    finally:
        m.unpin(path)
    assert not os.path.exists(path)
    with pytest.raises(pybpf.BPFError, match="not inside a bpffs mount"):
        m.pin("/tmp/pybpf-not-bpffs")


def test_pinned_map_reused_by_a_new_object(tm):
    from conftest import compile_test_bpf

    path = f"/sys/fs/bpf/pybpf-test-reuse-{os.getpid()}"
    a = pybpf.Object.open(compile_test_bpf("typed_maps"))
    b = pybpf.Object.open(compile_test_bpf("typed_maps"))
    try:
        a.maps["vals"].pin_path = path
        b.maps["vals"].pin_path = path
        a.load()
        a.maps["vals"][5] = {"count": 55}
        b.load()  # libbpf reuses the pinned map
        assert b.maps["vals"].id == a.maps["vals"].id and b.maps["vals"][5].count == 55
    finally:
        a.close()
        b.close()
        if os.path.exists(path):
            os.unlink(path)


def test_create_map_without_btf(tm):
    with pybpf.create_map("hash", 8, 4, 16, name="pyhash") as m:
        m[b"abcdefgh"] = b"wxyz"  # no BTF: bytes
        assert m[b"abcdefgh"] == b"wxyz"
        m.set_types(key="u64", value=tm.btf["val"] if False else "u32")
        m[5] = 6
        assert m[5] == 6 and m.key_type.name == "u64"
        with pytest.raises(ValueError, match="u16 is 2 bytes, the map's size is 4"):
            m.set_types(value="u16")
    with pytest.raises(pybpf.BPFError, match="cannot create hash map"):
        pybpf.create_map("hash", 0, 4, 16)


def test_typed_access_after_close_raises(bpf_obj):
    obj = pybpf.load(bpf_obj("typed_maps"))
    m = obj.maps["vals"]
    m[1] = {"count": 1}
    assert m[1].count == 1  # the fast path now caches the fd
    obj.close()
    with pytest.raises(pybpf.ClosedError):
        m[1]
    with pytest.raises(pybpf.ClosedError):
        m[1] = {"count": 2}


def test_task_local_storage_keyed_by_pidfd(tm):
    ts = tm.maps["tstore"]
    assert type(ts).__name__ == "LocalStorageMap"
    pidfd = os.pidfd_open(os.getpid())
    try:
        ts[pidfd] = {"bytes": 77}
        tm.bss.target_tgid = os.getpid()
        link = tm.programs["task_store"].attach()
        try:
            os.getppid()
        finally:
            link.detach()
        assert _results(tm)[8] == 77  # the kernel read what Python stored for this task
        v = ts[pidfd]
        assert (v.count, v.pid, v.bytes) == (1, os.getpid(), 77)
        del ts[pidfd]
        assert pidfd not in ts
        with pytest.raises(TypeError, match="cannot be iterated"):
            list(ts)
        with pytest.raises(TypeError, match="the key is an fd"):
            ts["x"]
    finally:
        os.close(pidfd)


def test_cpumap_and_bool(tm):
    with pybpf.create_map("cpumap", 4, 4, 1, name="pycpumap") as cm:
        cm[0] = 192  # queue size for CPU 0
        assert cm[0] == 192 and list(cm.keys()) == [0]
    vals = tm.maps["vals"]
    assert not vals
    vals[3] = {}
    assert vals
    assert tm.maps["results"]  # arrays always have their slots


def test_pin_root_path_shares_a_map_between_objects(bpf_obj):
    root = f"/sys/fs/bpf/pybpf-test-root-{os.getpid()}"
    os.makedirs(root)
    try:
        with pybpf.load(bpf_obj("pinned"), pin_root_path=root) as a:
            a.maps["shared"][1] = {"hits": 10, "who": "a"}
            assert os.path.exists(f"{root}/shared")
            with pybpf.load(bpf_obj("pinned"), pin_root_path=root) as b:
                assert b.maps["shared"].id == a.maps["shared"].id  # reused, not created
                b.programs["bump"].test_run(ctx=bytes(8), repeat=0)
                v = a.maps["shared"][1]
                assert (v.hits, v.who.str) == (11, "a")
        with pybpf.Map.open_pinned(f"{root}/shared") as m:  # outlives both objects
            assert m[1].hits == 11 and type(m[1]).__name__ == "shared_val"
    finally:
        if os.path.exists(f"{root}/shared"):
            os.unlink(f"{root}/shared")
        os.rmdir(root)


def test_typed_access_from_several_threads(tm):
    import threading

    m = tm.maps["vals"]
    m.update({i: {"count": i, "pid": i * 2} for i in range(64)})
    errors: list[str] = []

    def worker(seed: int) -> None:
        for j in range(1500):
            k = (seed * 7 + j) % 64
            v = m[k]
            if (v.count, v.pid) != (k, 2 * k):
                errors.append(f"{k}: {v}")
            if j % 50 == 0:
                m[k] = {"count": k, "pid": 2 * k}

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
