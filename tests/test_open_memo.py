"""The fast open + global write + close path (benchmarks/bench_open.py's rows):

- facts kept per object bytes (``_validate.Passed.memo``: the BTF after libbpf's open,
  the internal maps' DATASEC ids) are reused only for bytes equal to the ones they
  came from: two objects of one size whose .rodata layouts differ each get their own;
- internal map wrappers built one at a time, before ``obj.maps``, name the right map
  and are the ones ``obj.maps`` hands out later; the kernel sees every write;
- close() of an object never loaded is one C call: Ctrl-C (real signals, at random
  points, many rounds, in a child interpreter) never leaves it half closed, and the
  sealed btf_custom_path copy it owns is closed exactly when libbpf's object is freed;
- close racing writes and other closes from threads: ClosedError naming the object.
"""

from __future__ import annotations

import pytest
from _child import run_child
from elftools.elf.elffile import ELFFile

import pybpf
from pybpf import ClosedError


def _symbol_offsets(path: str, names: tuple[str, ...]) -> dict[str, int]:
    """Where the ELF symbol table (not BTF) puts each global in its section."""
    with open(path, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        return {n: symtab.get_symbol_by_name(n)[0]["st_value"] for n in names}


def _run_copy(obj: pybpf.Object) -> tuple[int, int]:
    obj.load()
    obj.programs["copy"].test_run(ctx=bytes(8), repeat=0)
    return obj.bss.seen_a, obj.bss.seen_b


def test_memo_is_per_bytes_not_per_size(bpf_obj):
    a_path, b_path = bpf_obj("memo_a"), bpf_obj("memo_b")
    a, b = open(a_path, "rb").read(), open(b_path, "rb").read()
    off_a = _symbol_offsets(a_path, ("memo_a", "memo_b"))
    off_b = _symbol_offsets(b_path, ("memo_a", "memo_b"))
    assert off_a["memo_a"] != off_b["memo_a"]  # the layouts differ
    assert len(a) == len(b)  # same size: the memo's first key does not tell them apart
    for first, second in ((a, b), (b, a)):
        for data in (first, second, first):  # each after the other's memo was made
            offsets = off_a if data is a else off_b
            with pybpf.Object.open(data, name="memo") as obj:
                obj.set_rodata("memo_a", 10)
                obj.rodata.memo_b = 20
                raw = obj.maps[obj.rodata.map.name].initial_value()
                got = {n: int.from_bytes(raw[o:o + 4], "little") for n, o in offsets.items()}
                assert got == {"memo_a": 10, "memo_b": 20}, (data is a, got)
                assert _run_copy(obj) == (10, 20)  # what the program read
    # a copy of the bytes (another bytes object, equal) is the same entry: same BTF
    with pybpf.Object.open(bytes(bytearray(a)), name="memo") as x, \
            pybpf.Object.open(a, name="memo") as y:
        assert x.btf is y.btf


def test_internal_maps_wrapped_one_by_one_name_the_right_map(bpf_obj):
    with pybpf.Object.open(bpf_obj("globals")) as obj:
        obj.sections[".rodata.custom"].custom_ro = 11  # wraps that map alone
        obj.set_rodata("ro_val", 3)
        obj.bss.bss_in = 5
        for sec in (".rodata", ".rodata.custom", ".bss"):
            assert obj.sections[sec].map.name.endswith(sec), sec
        early = {sec: obj.sections[sec].map for sec in (".rodata", ".rodata.custom", ".bss")}
        for sec, m in early.items():  # obj.maps adopts the wrappers built before it
            assert obj.maps[m.name] is m, sec
        obj.load()
        obj.programs["step"].test_run(ctx=bytes(8), repeat=0)
        assert obj.bss.bss_out == 5 * 2 + 3 + 80 + 11  # computed by the program


CLOSE_STORM = r"""
import gc, random, pybpf
from _integrity_obj import sigint_storm
data = open(P["path"], "rb").read()
res = {"rounds": 0, "closed_after": 0, "not_started": 0, "late": [], "errors": []}

def memfds():
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += "pybpf-btf_custom_path" in os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return n

def step():
    obj = pool.pop()
    obj.rodata.target_pid = 7
    res["rounds"] += 1
    obj.close()

n = 0
for _ in range(P["pools"]):
    # opened outside the storm (each checks the vmlinux-sized BTF: milliseconds)
    pool = [pybpf.Object.open(data, name="storm", btf_custom_path=P["btf"])
            for _ in range(P["per_pool"])]
    objs = list(pool)  # every one, whatever the storm interrupts
    got, errors = sigint_storm(lambda: step() if pool else None, 1.5, first=0.0001,
                               interval=0.00013, per_step=2)
    n += got
    res["errors"] += errors
    pool.clear()
    for obj in objs:
        if obj.closed:
            res["closed_after"] += 1
        else:  # interrupted before close() began: still whole, closes now
            res["not_started"] += 1
            obj.close()
        try:
            obj.rodata.target_pid = 1
            res["late"].append("write after close")
        except pybpf.ClosedError as e:
            if "'storm'" not in str(e):
                res["late"].append(str(e))
    del objs, obj
gc.collect()
res["memfds"] = memfds()
res["interrupts"] = n
emit(res)  # (rounds: steps begun)
"""


def test_ctrl_c_during_close_of_an_unloaded_object(bpf_obj):
    """Real signals (SIGALRM raising KeyboardInterrupt) land at random points of a
    .rodata write and close(), object after object: every object ends closed (each owns a
    sealed btf_custom_path memfd, closed by the same C call that frees libbpf's object:
    none is left), every later use is a ClosedError naming it."""
    v = run_child(CLOSE_STORM, timeout=240, what="Ctrl-C storm on open/write/close",
                  params={"path": bpf_obj("basic"), "btf": "/sys/kernel/btf/vmlinux",
                          "pools": 4, "per_pool": 150})
    assert v["errors"] == [] and v["late"] == [], v
    assert v["memfds"] == 0, v
    assert v["closed_after"] + v["not_started"] == 4 * 150, v
    assert v["closed_after"] > 0 and v["interrupts"] > 100, v


RACE = r"""
import random, pybpf
data = open(P["path"], "rb").read()
out = {}
for r in range(P["rounds"]):
    obj = pybpf.Object.open(data, name="race")
    go = threading.Barrier(3)
    def write():
        go.wait()
        try:
            for i in range(50):
                obj.rodata.target_pid = i
                obj.set_rodata("neg_default", -i)
            o = "ok"
        except pybpf.ClosedError as e:
            o = "closed" if "'race'" in str(e) else str(e)
        out[o] = out.get(o, 0) + 1
    def close():
        go.wait()
        time.sleep(random.random() * 0.0003)
        obj.close()
    ts = [threading.Thread(target=write), threading.Thread(target=close)]
    for t in ts:
        t.start()
    go.wait()
    obj.close()
    for t in ts:
        t.join()
    assert obj.closed
emit(out)
"""


def test_close_racing_writes_and_closes_before_load(bpf_obj):
    v = run_child(RACE, timeout=120, what="close racing .rodata writes",
                  params={"path": bpf_obj("basic"), "rounds": 300})
    assert set(v) <= {"ok", "closed"} and sum(v.values()) == 300, v
    assert v.get("closed", 0) > 0, v


def test_close_detaches_links_and_attach_after_close_is_closed_error(bpf_obj):
    obj = pybpf.load(bpf_obj("basic"))
    prog = obj.programs["count_exec"]
    link = prog.attach()
    lid = link.info().id
    obj.close()
    assert link.detached
    assert lid not in {li.id for li in pybpf.list_links()}
    with pytest.raises(ClosedError, match="'count_exec'"):
        prog.attach()


def test_set_type_on_one_object_leaves_the_others_codecs_alone(bpf_obj):
    # sections of one layout share the BTF codecs found so far; set_type is per object
    data = open(bpf_obj("globals"), "rb").read()
    with pybpf.Object.open(data) as a, pybpf.Object.open(data) as b:
        assert a.rodata.ro_val == 7 and b.rodata.ro_val == 7  # both use the shared codec
        a.rodata.set_type("ro_val", "s32")
        a.rodata.ro_val = -3
        assert a.rodata.ro_val == -3
        b.rodata.ro_val = -3
        assert b.rodata.ro_val == 0xFFFFFFFD  # still the BTF's __u32 (C's conversion)
        with pybpf.Object.open(data) as c:
            assert c.rodata.codec_of("ro_val") is b.rodata.codec_of("ro_val")
            assert c.rodata.codec_of("ro_val") is not a.rodata.codec_of("ro_val")
