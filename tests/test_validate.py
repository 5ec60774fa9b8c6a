"""The pre-libbpf validator, one structure at a time: each crafted defect -> ObjectError.

Each case edits one field of a real object (the shipped execsnoop probe: CO-RE
relocations, func/line info, .maps, .rodata) at the place the ELF/BTF layout
puts it, and checks pybpf refuses the object at open with a message naming
the structure. Opening goes through a fuzz worker subprocess so that a
validator gap shows up as a failed test, not a crashed pytest.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import pybpf
from pybpf import _validate

TESTS = Path(__file__).resolve().parent

if "fuzz_objects" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("fuzz_objects",
                                                   TESTS / "fuzz" / "fuzz_objects.py")
    assert _spec is not None and _spec.loader is not None
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules["fuzz_objects"] = _mod
    _spec.loader.exec_module(_mod)
fuzz = sys.modules["fuzz_objects"]


class Layout:
    """Where things are in an object's bytes (file offsets), from the validator's parse."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)
        c = _validate._Checker(data)
        c.run()
        self.c = c
        self.shoff = struct.unpack_from("<Q", data, 0x28)[0]
        btf = c.by_name[".BTF"]
        self.btf_off = btf.offset
        self.btf = _validate._BTFChecker(btf.data)
        self.btf.run()
        hdr_len, type_off = struct.unpack_from("<II", btf.data, 4)[0], struct.unpack_from(
            "<I", btf.data, 8)[0]
        self.types_off = self.btf_off + hdr_len + type_off
        ext = c.by_name[".BTF.ext"]
        self.ext_off = ext.offset
        self.ext_hdr_len = struct.unpack_from("<I", ext.data, 4)[0]

    def sec(self, name: str) -> _validate._Section:
        return self.c.by_name[name]

    def shdr(self, name: str) -> int:
        return self.shoff + 64 * self.sec(name).idx

    def type_hdr(self, tid: int) -> int:
        """File offset of BTF type ``tid``'s 12-byte header."""
        return self.btf_off + self.btf.info_pos[tid] - 12

    def first(self, kind: int) -> int:
        return self.btf.kind.index(kind)

    def ext_record(self, part: int) -> int:
        """File offset of the first record of BTF.ext part 0 (func), 1 (line), 2 (CO-RE)."""
        off = struct.unpack_from("<I", self.data, self.ext_off + 8 + 8 * part)[0]
        return self.ext_off + self.ext_hdr_len + off + 4 + 8  # rec_size, section header

    def u32(self, off: int, value: int) -> None:
        struct.pack_into("<I", self.data, off, value)

    def u16(self, off: int, value: int) -> None:
        struct.pack_into("<H", self.data, off, value)

    def u64(self, off: int, value: int) -> None:
        struct.pack_into("<Q", self.data, off, value)


def _rel(lo: Layout) -> int:
    name = next(n for n in lo.c.by_name if n.startswith(".reltracepoint"))
    return lo.sec(name).offset


def _sym(lo: Layout, i: int) -> int:
    return lo.sec(".symtab").offset + 24 * i


K = _validate  # kind constants
CASES: dict[str, tuple[Callable[[Layout], None], str]] = {
    "section data past the end": (
        lambda lo: lo.u64(lo.shdr(".rodata") + 32, 1 << 40), "runs past the end of the file"),
    "section name offset": (
        lambda lo: lo.u32(lo.shdr(".maps"), 0xFFFFFF), "name of section"),
    "section link index": (
        lambda lo: lo.u32(lo.shdr(".symtab") + 40, 999), "links to section 999"),
    "relocation applies to no section": (
        lambda lo: lo.u32(lo.shdr(next(n for n in lo.c.by_name if n.startswith(".reltra")))
                          + 44, 999), "applies to section 999"),
    "two symbol tables": (
        lambda lo: lo.u32(lo.shdr(".rodata") + 4, 2), "2 symbol tables"),
    "symbol name offset": (
        lambda lo: lo.u32(_sym(lo, 2), 0xFFFFFF), "name of symbol 2"),
    "symbol section index": (
        lambda lo: lo.u16(_sym(lo, 2) + 6, 200), "is in section 200"),
    "data symbol past its section": (
        lambda lo: lo.u64(_sym(lo, 2) + 8, 1 << 20), "run past its"),
    "relocation symbol index": (
        lambda lo: lo.u32(_rel(lo) + 12, 0xFFFF), "symbol index 65535"),
    "relocation offset past the code": (
        lambda lo: lo.u64(_rel(lo), 1 << 20), "is not an instruction"),
    "relocation offset not an instruction": (
        lambda lo: lo.u64(_rel(lo), 12), "is not an instruction"),
    "license not NUL-terminated": (
        lambda lo: lo.u32(lo.sec("license").offset, 0x4C504C47), "license section"),
    "BTF string section past the end": (
        lambda lo: lo.u32(lo.btf_off + 20, 1 << 24), "out of bounds"),
    "BTF type name offset": (
        lambda lo: lo.u32(lo.type_hdr(lo.first(K._STRUCT)), 0xFFFFFF), "names string offset"),
    "BTF unknown kind": (
        lambda lo: lo.u32(lo.type_hdr(lo.first(K._INT)) + 4, 25 << 24), "unknown kind 25"),
    "BTF pointer target past the last type": (
        lambda lo: lo.u32(lo.type_hdr(lo.first(K._PTR)) + 8, 0xFFFF0), "refers to type"),
    "BTF typedef refers to itself": (
        lambda lo: lo.u32(lo.type_hdr(lo.first(K._TYPEDEF)) + 8, lo.first(K._TYPEDEF)),
        "refers to itself"),
    "BTF struct contains itself": (
        lambda lo: lo.u32(lo.type_hdr(lo.first(K._STRUCT)) + 12 + 4, lo.first(K._STRUCT)),
        "refers to itself"),
    "BTF integer of size 0": (
        lambda lo: lo.u32(lo.type_hdr(lo.first(K._INT)) + 8, 0), "not a C integer"),
    "BTF struct member of type void": (
        lambda lo: lo.u32(lo.type_hdr(lo.first(K._STRUCT)) + 12 + 4, 0), "which is void"),
    "BTF function with a non-prototype type": (
        lambda lo: lo.u32(lo.type_hdr(lo.first(K._FUNC)) + 8, lo.first(K._INT)),
        "not a function prototype"),
    "BTF section lists a non-variable": (
        lambda lo: lo.u32(lo.type_hdr(lo.first(K._DATASEC)) + 12, lo.first(K._INT)),
        "not a variable"),
    "BTF map variable outside .maps": (
        lambda lo: lo.u32(lo.type_hdr(next(t for t in lo.btf.datasecs
                                           if lo.btf.name(t) == ".maps")) + 16, 4096),
        "not inside the .maps section"),
    "BTF.ext func_info instruction offset": (
        lambda lo: lo.u32(lo.ext_record(0), 1 << 20), "instruction offset"),
    "BTF.ext func_info type is not a function": (
        lambda lo: lo.u32(lo.ext_record(0) + 4, lo.first(K._INT)), "expected 12"),
    "BTF.ext line_info file name offset": (
        lambda lo: lo.u32(lo.ext_record(1) + 4, 0xFFFFFF), "string offset"),
    "BTF.ext section name offset": (
        lambda lo: lo.u32(lo.ext_record(2) - 8, 0xFFFFFF), "section name"),
    "BTF.ext record count past the end": (
        lambda lo: lo.u32(lo.ext_record(2) - 4, 0xFFFF), "records do not fit"),
    "BTF.ext CO-RE type id": (
        lambda lo: lo.u32(lo.ext_record(2) + 4, 0xFFFF), "BTF type id 65535"),
    "BTF.ext CO-RE access string": (
        lambda lo: lo.u32(lo.ext_record(2) + 8, lo.btf.name_off[lo.first(K._STRUCT)]),
        "malformed CO-RE access string"),
    "BTF.ext CO-RE relocation kind": (
        lambda lo: lo.u32(lo.ext_record(2) + 12, 99), "unknown CO-RE relocation kind 99"),
    "BTF.ext CO-RE instruction offset unaligned": (
        lambda lo: lo.u32(lo.ext_record(2), 4), "instruction offset 4"),
}


@pytest.fixture(scope="module")
def original() -> bytes:
    return Path(pybpf.probe_path("execsnoop")).read_bytes()


@pytest.fixture(scope="module")
def worker():
    w = fuzz.Worker(timeout=30)
    yield w
    w.close()


def test_original_passes(original):
    _validate.check_object(original, "execsnoop")


def test_a_file_changed_in_place_is_checked_again(original, tmp_path):
    """An object that passed is remembered by its bytes, never by its name, size or
    mtime: the same file rewritten in place with a defect (same size, same mtime) is
    refused on its next open, in this process."""
    edit, message = CASES[sorted(CASES)[0]]
    lo = Layout(original)
    edit(lo)
    bad = bytes(lo.data)
    assert len(bad) == len(original) and bad != original
    path = tmp_path / "probe.bpf.o"
    path.write_bytes(original)
    st = path.stat()
    pybpf.Object.open(path).close()
    pybpf.Object.open(path).close()  # remembered: passes again
    with open(path, "r+b") as f:  # in place: same inode
        f.write(bad)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    st2 = path.stat()
    assert (st2.st_ino, st2.st_size, st2.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    with pytest.raises(pybpf.ObjectError, match="malformed BPF object") as exc:
        pybpf.Object.open(path)
    assert message in str(exc.value)
    # the same bytes from memory are refused too, and the good ones still pass
    with pytest.raises(pybpf.ObjectError, match="malformed BPF object"):
        pybpf.Object.open(bad)
    pybpf.Object.open(bytes(bytearray(original))).close()


def test_objects_opened_from_the_same_bytes_share_their_btf(original):
    with pybpf.Object.open(original) as a, pybpf.Object.open(bytes(bytearray(original))) as b:
        assert a.btf is b.btf
        a.set_rodata("targ_pid", 7)
        b.set_rodata("targ_pid", 9)  # the values are each object's own
        assert a.rodata.targ_pid == 7 and b.rodata.targ_pid == 9
    other = Path(pybpf.probe_path("opensnoop")).read_bytes()
    with pybpf.Object.open(original) as a, pybpf.Object.open(other) as c:
        assert a.btf is not c.btf


@pytest.mark.parametrize("case", sorted(CASES))
def test_defect_is_refused_at_open(case, original, worker):
    edit, message = CASES[case]
    lo = Layout(original)
    edit(lo)
    data = bytes(lo.data)
    assert data != original
    res = worker.run(data)
    assert res["r"] == "pybpf", f"{case}: {res}"
    assert (res["stage"], res["exc"]) == ("open", "ObjectError"), res
    assert "malformed BPF object" in res["msg"] and message in res["msg"], res["msg"]


# --- maps that would take the machine's memory or minutes of kernel time -----------------

def test_map_memory_estimate_refuses_what_cannot_fit():
    # 2^32-1 entries of 4 KiB: 16 TiB of array, on any machine more than half its memory
    with pytest.raises(pybpf.LoadError, match=r"map 'big' \(array, 4294967295 entries") as ei:
        _validate.check_map_memory([("small", "hash", 4, 8, 1024, 0),
                                    ("big", "array", 4, 4096, (1 << 32) - 1, 0)], "obj", 2)
    assert ei.value.errno == 12 and ei.value.map == "big"
    # the same entries on demand (no preallocation) cost only the buckets
    _validate.check_map_memory([("lazy", "hash", 4, 4096, 1 << 20, 1)], "obj", 2)
    assert _validate.map_prealloc_bytes("lpm_trie", 8, 8, 1 << 30, 1, 64) == 0
    assert _validate.map_prealloc_bytes("percpu_array", 4, 12, 10, 0, 4) == 10 * 16 * 4


def test_huge_percpu_map_is_refused_before_any_map_is_created(bpf_obj):
    """A per-CPU array of 5 million elements: refused at once, not 8 s of kernel time."""
    import time

    with pybpf.Object.open(bpf_obj("hardening")) as obj:
        obj.maps["pybpf_ringbuf_drops"].max_entries = 5_000_000
        before = {m.id for m in pybpf.list_maps()}
        t0 = time.monotonic()
        with pytest.raises(pybpf.LoadError, match="5000000 per-CPU elements") as ei:
            obj.load()
        assert time.monotonic() - t0 < 1.0
        assert ei.value.map == "pybpf_ringbuf_drops" and ei.value.errno == 7
        created = {m.name for m in pybpf.list_maps() if m.id not in before}
        assert not any(n.startswith(("hardenin", "events", "pybpf_ringbuf")) for n in created)
    with pybpf.Object.open(bpf_obj("hardening")) as obj:  # the usual size still loads
        obj.maps["pybpf_ringbuf_drops"].max_entries = 1024
        obj.load()
