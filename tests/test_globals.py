"""Global variables: .rodata before load, .bss/.data live through the map's mmap,
custom sections; the program (tests/bpf/globals.bpf.c) sees Python's writes and
Python sees the program's."""

from __future__ import annotations

import mmap

import pytest

import pybpf
from pybpf import ClosedError, StateError


@pytest.fixture
def gobj():
    from conftest import compile_test_bpf

    obj = pybpf.Object.open(compile_test_bpf("globals"))
    yield obj
    obj.close()


def _step(obj):
    obj.programs["step"].test_run(ctx=bytes(8), repeat=0)


def test_sections_and_initial_values(gobj):
    assert set(gobj.sections) == {".rodata", ".bss", ".data", ".data.custom", ".rodata.custom"}
    assert gobj.rodata.ro_val == 7
    cfg = gobj.rodata.ro_cfg
    assert (cfg.port, cfg.name.str) == (80, "web")
    assert gobj.data.data_arr == [1, 2, 3, 4]
    assert (gobj.data.data_pt.x, gobj.data.data_pt.y) == (-1, 2)
    assert gobj.sections[".data.custom"].custom_var == 99
    assert gobj.bss.bss_in == 0
    assert sorted(gobj.bss) == ["bss_in", "bss_name_out", "bss_out"]


def test_rodata_before_load_then_frozen(gobj):
    gobj.rodata.ro_val = 11
    gobj.rodata.ro_cfg = {"port": 8080, "name": "api"}
    gobj.sections[".rodata.custom"].custom_ro = 6
    gobj.bss.bss_in = 5  # .bss before load: applied right after load
    gobj.load()
    _step(gobj)
    assert gobj.bss.bss_out == 5 * 2 + 11 + 8080 + 6  # the program saw every write
    assert gobj.bss.bss_name_out.str == "api"
    assert gobj.rodata.ro_val == 11  # readable after load
    with pytest.raises(StateError, match="frozen at load"):
        gobj.rodata.ro_val = 1
    with pytest.raises(StateError, match="only be set before load"):
        gobj.set_rodata("ro_val", 1)


def test_bss_and_data_live_both_ways(gobj):
    gobj.load()
    _step(gobj)
    assert gobj.bss.bss_out == 7 + 80 + 5  # kernel -> Python
    gobj.bss.bss_in = 100  # Python -> kernel, no syscall: the mmap
    gobj.data.data_pt = (40, 2)
    gobj.sections[".data.custom"].custom_var = 1000
    _step(gobj)
    assert gobj.bss.bss_out == 200 + 92
    assert gobj.data.data_arr == [1, 2, 3, 42]
    assert gobj.sections[".data.custom"].custom_var == 1001
    assert gobj.bss._asdict()["bss_in"] == 100
    # the same bytes through the map syscall
    raw = gobj.bss.map.lookup(bytes(4))
    assert int.from_bytes(raw[:8], "little") == 100


def test_set_rodata_still_works(gobj):
    gobj.set_rodata("ro_val", 21)
    assert gobj.rodata.ro_val == 21
    gobj.load()
    _step(gobj)
    assert gobj.bss.bss_out == 21 + 80 + 5


def test_set_rodata_first_builds_only_what_it_writes(gobj):
    """set_rodata as the first thing after open (only the .rodata maps' wrappers are
    built then): both sections reach the kernel, and obj.maps afterwards has one
    wrapper per map, the ones set_rodata wrote through included."""
    gobj.set_rodata("custom_ro", 9)
    gobj.set_rodata("ro_val", 30)
    maps = gobj.maps
    assert len(set(map(id, maps.values()))) == len(maps)
    assert sorted(n[n.index("."):] for n in maps if ".rodata" in n) == [".rodata",
                                                                       ".rodata.custom"]
    assert all(gobj.maps[n] is m for n, m in maps.items())
    gobj.load()
    _step(gobj)
    assert gobj.bss.bss_out == 30 + 80 + 9


def test_negative_values_of_unsigned_globals_convert_as_in_c(gobj):
    """-1 given to an unsigned global is all ones (C's ``(__u32)-1``), the lowest signed
    value is the top bit, before load (attribute and set_rodata) and live (.bss): the
    program computes with what it read."""
    gobj.rodata.ro_val = -1
    gobj.set_rodata("custom_ro", -(1 << 31))
    gobj.load()
    _step(gobj)
    assert gobj.bss.bss_out == 0xFFFFFFFF + 80 + 0x80000000
    gobj.bss.bss_in = -1  # __u64
    _step(gobj)
    assert gobj.bss.bss_out == (2 * (2**64 - 1) + 0xFFFFFFFF + 80 + 0x80000000) % 2**64
    assert gobj.bss.map.lookup(bytes(4))[:8] == b"\xff" * 8


def test_set_rodata_negative_before_load(gobj):
    gobj.set_rodata("ro_val", -7)
    gobj.load()
    _step(gobj)
    assert gobj.bss.bss_out == 2**32 - 7 + 80 + 5


def test_a_one_byte_section_is_mapped_live(bpf_obj):
    """A .data section of 1 byte (tests/bpf/codecs.bpf.c, ``fill`` adds 1): its mmap is
    one page; Python reads what the program wrote and the program adds to Python's."""
    with pybpf.load(bpf_obj("codecs")) as obj:
        sec = obj.sections[".data.one"]
        assert sec.one_byte == 3
        obj.programs["fill"].test_run(ctx=bytes(8), repeat=0)
        assert sec.one_byte == 4
        sec.one_byte = 200
        obj.programs["fill"].test_run(ctx=bytes(8), repeat=0)
        assert sec.one_byte == 201 and sec.map.lookup(bytes(4)) == bytes([201])


def test_set_rodata_bytes_are_padded_with_zeros(gobj):
    """Bytes shorter than the global are zero-padded: the program reads exactly them."""
    gobj.rodata.ro_cfg = {"port": 1, "name": "1234567"}  # non-zero where padding goes
    gobj.set_rodata("ro_cfg", (8080).to_bytes(2, "little") + b"db")
    gobj.set_rodata("ro_val", True)
    with pytest.raises(ValueError, match="'ro_cfg' holds 10 bytes, got 11"):
        gobj.set_rodata("ro_cfg", bytes(11))
    gobj.load()
    _step(gobj)
    assert bytes(gobj.bss.bss_name_out.str, "ascii") == b"db"
    assert gobj.bss.bss_out == 1 + 8080 + 5


def test_bad_globals(gobj):
    with pytest.raises(AttributeError, match="section .bss has no variable 'nope' \\(variables: "
                                             "bss_in, bss_out, bss_name_out\\)"):
        gobj.bss.nope  # noqa: B018
    with pytest.raises(TypeError, match="globals: .data: data_arr: expected a list"):
        gobj.data.data_arr = 5
    # -1 is C's all-ones idiom for an unsigned global (tests/test_foreign.py); below the
    # signed range it is out of range
    with pytest.raises(ValueError, match="globals: .rodata: ro_val: -2147483649 is out of "
                       "range"):
        gobj.rodata.ro_val = -(1 << 31) - 1
    with pytest.raises(ValueError, match="ro_cfg.name: 9 bytes do not fit char\\[8\\]"):
        gobj.rodata.ro_cfg = {"name": "123456789"}
    bss = gobj.bss
    gobj.close()
    with pytest.raises(ClosedError):
        bss.bss_in  # noqa: B018


# --- .bss/.data through an mmap: the README's promise, checked where a syscall can't help
_NO_BPF_SYSCALL = r'''
import ctypes, json, os, platform, sys
import pybpf

NR_BPF = {"x86_64": 321, "aarch64": 280}[platform.machine()]


def deny_bpf_syscall():
    """seccomp: from now on bpf(2) fails with EPERM in this thread; nothing else changes."""
    class Insn(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte),
                    ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]

    insns = (Insn * 4)(Insn(0x20, 0, 0, 0),              # ld [0]: syscall number
                       Insn(0x15, 0, 1, NR_BPF),         # jeq NR_BPF
                       Insn(0x06, 0, 0, 0x00050000 | 1),  # ret ERRNO(EPERM)
                       Insn(0x06, 0, 0, 0x7FFF0000))     # ret ALLOW
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    prog = Prog(4, insns)
    assert libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0, ctypes.get_errno()


obj = pybpf.Object.open(sys.argv[1])
obj.load()
obj.attach()
obj.bss.target_tgid = os.getpid()
out = {"data_before": obj.data.data_in}
deny_bpf_syscall()
bss_map = next(m for m in obj.maps.values() if m.internal and m.name.endswith(".bss"))
try:
    bss_map.lookup(bytes(4))
    out["lookup"] = "worked"
except OSError as e:
    out["lookup"] = e.errno  # the filter works: a map syscall fails
obj.bss.in_val = 1000
obj.data.data_in = 40
os.getppid()
out.update(out_val=obj.bss.out_val, data_in=obj.data.data_in, calls=obj.bss.calls)
print(json.dumps(out), flush=True)
os._exit(0)
'''


def test_bss_and_data_work_with_the_bpf_syscall_denied():
    """After load, writes to .bss/.data reach the running program and its writes come
    back with bpf(2) forbidden (seccomp in a child): through the mmap, no map syscall."""
    import json
    import platform
    import subprocess
    import sys

    from conftest import compile_test_bpf

    if platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip(f"no bpf(2) syscall number for {platform.machine()} in this test")
    with pybpf.load(compile_test_bpf("globals_mmap")) as obj:  # the same steps in-process
        obj.bss.in_val, obj.data.data_in = 2, 3  # (for mutmut's map of tests to code)
        assert (obj.bss.in_val, obj.data.data_in) == (2, 3)
    r = subprocess.run([sys.executable, "-c", _NO_BPF_SYSCALL,
                        compile_test_bpf("globals_mmap")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["data_before"] == 5
    assert out["lookup"] == 1, out  # EPERM: no bpf(2) from here on
    # the program read in_val=1000 and data_in=40 from the mmap; Python read its writes
    assert (out["out_val"], out["data_in"], out["calls"]) == (3040, 41, 1), out


def test_bss_is_a_shared_mapping_of_the_map():
    """/proc/self/maps shows the .bss map mmapped (anon_inode:bpf-map) once it is used,
    and unmapped when the object closes."""
    from conftest import compile_test_bpf

    def bpf_map_mappings():
        with open("/proc/self/maps") as f:
            return {line.split()[0] for line in f if "anon_inode:bpf-map" in line}

    obj = pybpf.load(compile_test_bpf("globals_mmap"))
    try:
        before = bpf_map_mappings()
        obj.bss.in_val = 7
        new = bpf_map_mappings() - before
        assert len(new) == 1, new
        start, end = (int(x, 16) for x in new.pop().split("-"))
        bss_size = obj.btf.datasec(".bss").size
        page = mmap.PAGESIZE
        assert end - start == (bss_size + page - 1) // page * page
        _ = obj.data.data_in
        assert len(bpf_map_mappings() - before) == 2
    finally:
        obj.close()
    assert not bpf_map_mappings() - before


def test_sections_without_mmap_fall_back_to_map_syscalls():
    """A data section whose map is not mmapable (BPF_F_MMAPABLE cleared before load)
    still reads and writes the live map, one syscall per access, neighbours intact."""
    import os

    from conftest import compile_test_bpf

    def bpf_map_mappings():
        with open("/proc/self/maps") as f:
            return {line.split()[0] for line in f if "anon_inode:bpf-map" in line}

    with pybpf.Object.open(compile_test_bpf("globals_mmap")) as obj:
        for m in obj.maps.values():
            if m.internal and m.name.endswith((".bss", ".data")):
                m.flags = m.flags & ~(1 << 10)  # BPF_F_MMAPABLE
        obj.bss.in_val = 9  # before load: kept and applied after load
        obj.load()
        before = bpf_map_mappings()
        obj.attach()
        obj.bss.target_tgid = os.getpid()
        assert obj.bss.in_val == 9
        obj.bss.in_val = 1000
        obj.data.data_in = 40
        os.getppid()
        assert (obj.bss.out_val, obj.data.data_in, obj.bss.calls) == (3040, 41, 1)
        assert obj.bss.target_tgid == os.getpid() and obj.bss.in_val == 1000
        assert bpf_map_mappings() == before  # no mmap was made
        bss = next(m for m in obj.maps.values() if m.internal and m.name.endswith(".bss"))
        raw = bss.lookup(bytes(4))
        var = {v.name: v for v in obj.btf.datasec(".bss").members}
        assert int.from_bytes(raw[var["out_val"].offset:][:8], "little") == 3040


def test_16_byte_integers_both_ways():
    """__int128 globals (the generic int codec: no struct format for 16 bytes): the
    program computes from what Python wrote; Python decodes what it wrote back."""
    import os

    from conftest import compile_test_bpf

    big = (1 << 100) + 12345
    with pybpf.load(compile_test_bpf("globals_mmap")) as obj:
        obj.attach()
        obj.bss.target_tgid = os.getpid()
        obj.bss.wide_in = big
        obj.bss.swide_in = -(1 << 90) - 7
        os.getppid()
        assert obj.bss.wide_out == 2 * big + 1
        assert obj.bss.swide_out == (1 << 90) + 7
        assert obj.bss.swide_in == -(1 << 90) - 7  # decoded signed
        var = {v.name: v for v in obj.btf.datasec(".bss").members}
        raw = next(m for m in obj.maps.values() if m.internal and m.name.endswith(".bss")
                   ).lookup(bytes(4))
        off = var["wide_out"].offset
        assert int.from_bytes(raw[off:off + 16], "little") == 2 * big + 1
        off = var["swide_in"].offset
        assert int.from_bytes(raw[off:off + 16], "little", signed=True) == -(1 << 90) - 7
        with pytest.raises(ValueError, match="out of range"):
            obj.bss.wide_in = 1 << 128
        with pytest.raises(ValueError, match="out of range"):
            obj.bss.swide_in = 1 << 127
        with pytest.raises(TypeError, match="expected int"):
            obj.bss.wide_in = "1"


def test_a_variable_placed_past_its_section_by_bad_btf_is_refused(bpf_obj):
    """Malformed BTF making a .data variable's type larger than what is left of the
    section (struct gpoint's size 8 -> 4096): reading or writing it is a BTFFormatError
    naming the section and variable (it was a struct.error or ValueError from deep in
    the codec); the section's other variables stay usable. In a child: bad BTF."""
    from _child import run_child

    got = run_child("""
        import struct
        import pybpf
        from pybpf.btf import BTF, BTFFormatError
        from elftools.elf.elffile import ELFFile
        data = bytearray(open(P["path"], "rb").read())
        with open(P["path"], "rb") as f:
            sec = ELFFile(f).get_section_by_name(".BTF")
            raw, base = sec.data(), sec["sh_offset"]
        btf = BTF.from_bytes(raw)
        t = btf.find("gpoint")
        at = base + 24 + struct.unpack_from("<HBBIIIII", raw)[4] + btf._offs[t.id - 1]
        assert struct.unpack_from("<III", data, at)[2] == 8
        struct.pack_into("<I", data, at + 8, 4096)
        out = []
        with pybpf.Object.open(bytes(data)) as o:
            for op in ("read", "write"):
                try:
                    if op == "read":
                        o.data.data_pt
                    else:
                        o.data.data_pt = {"x": 1}
                    out.append("ok")
                except BTFFormatError as e:
                    out.append(str(e))
                except Exception as e:
                    out.append(f"{type(e).__name__}: {e}")
            out.append(list(o.data.data_arr))
        emit(out)
    """, params={"path": bpf_obj("globals")}, what="variable past its section")
    msg = ("malformed BTF: object: section .data variable 'data_pt' (gpoint, 4096 bytes at "
           "offset 16) ends past the section's 24 bytes")
    assert got[:2] == [msg, msg]
    assert len(got[2]) == 4


def test_set_type_reads_and_writes_a_variable_as_another_type(gobj):
    """A __u64 global read and written as a struct of two __u32 (a ctypes type): the
    program computes bss_out = 2 * bss_in + 92 from what that type wrote."""
    import ctypes

    class Halves(ctypes.Structure):
        _fields_ = [("lo", ctypes.c_uint32), ("hi", ctypes.c_uint32)]

    gobj.load()
    bss = gobj.bss
    assert bss is gobj.bss and gobj.sections[".bss"] is bss  # one Section per section
    bss.set_type("bss_in", Halves)
    bss.set_type("bss_out", Halves)
    bss.bss_in = {"lo": 1, "hi": 2}
    _step(gobj)
    out = bss.bss_out
    assert (out.lo, out.hi) == (2 + 92, 4)
    assert int.from_bytes(bss.map.lookup(bytes(4))[:8], "little") == (2 << 32) + 1
    with pytest.raises(pybpf.MapValueError, match=r"\.bss variable 'bss_in' is 8 bytes, "
                                                  r"u32 is 4"):
        bss.set_type("bss_in", "u32")
    with pytest.raises(AttributeError, match=r"section \.bss has no variable 'nope' "
                                             r"\(variables: bss_in, bss_out, bss_name_out\)"):
        bss.set_type("nope", "u32")
    with pytest.raises(AttributeError, match="^__nope__$"):
        bss.__nope__  # noqa: B018
    assert (bss.bss_in.lo, bss.bss_in.hi) == (1, 2)  # the refused calls changed nothing


def test_set_rodata_refusals_name_the_variable_and_map(gobj):
    with pytest.raises(pybpf.MapTypeError, match=r"\.rodata: 'ro_cfg' is a struct, not an "
                                                 r"integer") as e:
        gobj.set_rodata("ro_cfg", 5)
    assert e.value.map.endswith(".rodata") and e.value.field == "ro_cfg"
    with pytest.raises(pybpf.MapTypeError, match=r"set_rodata\('ro_val'\): value must be int, "
                                                 r"bool or bytes"):
        gobj.set_rodata("ro_val", 1.5)
    with pytest.raises(KeyError, match="no read-only global named 'nope'"):
        gobj.set_rodata("nope", 1)
    assert gobj.rodata.ro_val == 7  # nothing changed
    gobj.load()
    with pytest.raises(StateError, match=r"cannot set 'ro_val': read-only globals \(\.rodata\) "
                                         r"can only be set before load \(the kernel freezes "
                                         r"them at load\)"):
        gobj.set_rodata("ro_val", 1)


def test_missing_sections_name_what_the_source_lacks(bpf_obj):
    """tests/bpf/codecs.bpf.c has no .data (clang's string constants make a .rodata);
    tests/bpf/typed_layouts.bpf.c has no globals at all."""
    with pybpf.Object.open(bpf_obj("codecs")) as obj:
        with pytest.raises(pybpf.ObjectError, match=r"BPF object 'codecs' has no \.data section "
                           r"\(its source defines no initialized globals\); its sections: "
                           r"\.bss, \.data\.one, \.rodata$"):
            obj.data  # noqa: B018
    with pybpf.Object.open(bpf_obj("typed_layouts")) as obj:
        with pytest.raises(pybpf.ObjectError, match=r"no \.bss section \(its source defines no "
                                                    r"zero-initialized globals\); its sections: "
                                                    r"none$"):
            obj.bss  # noqa: B018
        with pytest.raises(pybpf.ObjectError, match=r"no \.rodata section \(its source defines "
                                                    r"no const volatile globals\)"):
            obj.rodata  # noqa: B018


@pytest.mark.parametrize("first", ["set_rodata", "rodata"])
def test_more_sections_than_one_native_call_collects(first):
    """22 data sections (more than one small array holds: Object reads the internal
    maps' DATASEC ids with room for all of them): each write reaches the kernel whichever
    access comes first, and obj.maps then holds one wrapper per map, the early ones
    adopted."""
    from conftest import compile_test_bpf

    with pybpf.Object.open(compile_test_bpf("many_sections")) as obj:
        if first == "set_rodata":
            obj.set_rodata("ro19", 500)
            obj.rodata.base = 7
        else:
            obj.rodata.base = 7
            obj.set_rodata("ro19", 500)
        obj.sections[".rodata.3"].ro3 = 40
        assert {f".rodata.{i}" for i in range(20)} | {".rodata", ".bss"} == set(obj.sections)
        maps = obj.maps
        assert len(maps) == 22 and len(set(map(id, maps.values()))) == 22
        obj.load()
        obj.programs["sum"].test_run(ctx=bytes(8), repeat=0)
        assert obj.bss.total == 7 + sum(range(20)) - 19 + 500 - 3 + 40


def test_rodata_first_builds_only_the_data_sections_wrappers(gobj):
    """obj.rodata as the first thing after open builds no map wrapper (the write goes to
    the initial value by the map's index; .map builds that one); obj.maps afterwards
    adopts it (the same object), and the write loads."""
    sec = gobj.rodata
    gobj.rodata.ro_val = 11
    maps = gobj.maps
    assert sec.map is maps[next(n for n in maps if n.endswith(".rodata"))]
    assert len(set(map(id, maps.values()))) == len(maps)
    gobj.load()
    _step(gobj)
    assert gobj.bss.bss_out == 11 + 80 + 5
