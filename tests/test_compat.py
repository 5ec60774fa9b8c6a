"""Objects as other toolchains build them: externs, string sections, no BTF, legacy maps."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile

import pybpf
from pybpf import ObjectError, toolchain


def _bss(obj: pybpf.Object, section: str) -> dict[str, int]:
    """Variables of an internal map, decoded as little-endian ints via the object's BTF."""
    m = next(m for m in obj.maps.values() if m.internal and m.name.endswith(section))
    raw = m.lookup(b"\0\0\0\0")
    assert raw is not None
    sec = obj.btf.datasec(section)
    assert sec is not None
    return {v.name: int.from_bytes(raw[v.offset:v.offset + v.size], "little")
            for v in sec.members}


def test_kconfig_ksym_and_string_sections(bpf_obj):
    obj = pybpf.Object.open(bpf_obj("compat"), kconfig={"CONFIG_PYBPF_TEST_VALUE": 5})
    with obj:
        names = [m.name for m in obj.maps.values() if m.internal]
        assert any(".rodata.str1" in n for n in names), names  # a string literal's section
        assert any(n.endswith(".kconfig") for n in names), names
        assert any(n.endswith(".data.custom") for n in names), names
        obj.load()
        obj.attach()
        os.getpid()
        os.getppid()
        bss = _bss(obj, ".bss")
        rel = os.uname().release.split("-")[0].split(".")
        major, minor, patch = (int(x) for x in (rel + ["0"])[:3])
        assert bss["seen_version"] == (major << 16) + (minor << 8) + min(patch, 255)
        assert bss["seen_bpf_syscall"] == 1
        assert bss["seen_test_value"] == 5
        assert bss["seen_init_task"] != 0
        assert _bss(obj, ".data.custom")["custom_counter"] >= 8


def test_inventory_matches_the_elf(bpf_obj):
    path = bpf_obj("compat")
    with open(path, "rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        progs = set()
        maps = set()
        for sym in symtab.iter_symbols():
            shndx = sym["st_shndx"]
            if not isinstance(shndx, int):
                continue
            sec = elf.get_section(shndx)
            if (sym["st_info"]["type"] == "STT_FUNC" and sec["sh_flags"] & SH_FLAGS.SHF_EXECINSTR
                    and sec.name != ".text"):
                progs.add(sym.name)
            if sec.name == ".maps":
                maps.add(sym.name)
    with pybpf.Object.open(path) as obj:
        assert set(obj.programs) == progs == {"prog_a", "prog_b", "prog_c"}
        assert {m for m in obj.maps if not obj.maps[m].internal} == maps


def test_object_without_btf(tmp_path):
    src = os.path.join(os.path.dirname(__file__), "bpf", "nobtf.bpf.c")
    out = tmp_path / "nobtf.bpf.o"
    subprocess.run([toolchain.find_clang(), "-target", "bpf", "-O2", "-I",
                    f"/usr/include/{os.uname().machine}-linux-gnu", "-c", src, "-o", str(out)],
                   check=True)
    with pybpf.load(out) as obj:
        prog = obj.programs["accept_all"]
        assert prog.type == "socket_filter"
        assert prog.fd >= 0
        with pytest.raises(ObjectError, match="has no BTF"):
            _ = obj.btf


def test_legacy_maps_refused_with_libbpf_reason(bpf_obj):
    with pytest.raises(ObjectError) as ei:
        pybpf.Object.open(bpf_obj("legacy_maps"))
    text = str(ei.value)
    assert "legacy_maps.bpf.o" in text
    assert ei.value.errno == errno.EOPNOTSUPP and "ENOTSUP" in text
    # libbpf's own reason, carried into the exception
    assert "legacy map definitions in 'maps' section are not supported" in text


def test_run_stats(bpf_obj):
    with pybpf.load(bpf_obj("compat")) as obj:
        obj.attach()
        with pybpf.enable_stats():
            for _ in range(5):
                os.getppid()
            info = obj.programs["prog_b"].info()
        assert info.run_count >= 5
        assert info.run_time_ns > 0


def test_many_objects_and_names(bpf_obj):
    """Five copies of one object load side by side: each its own programs and maps, named
    as asked (the kernel's program info shows the name's prefix on its maps)."""
    objs = [pybpf.Object.open(bpf_obj("compat"), name=f"c{i}") for i in range(5)]
    try:
        assert [o.name for o in objs] == [f"c{i}" for i in range(5)]
        for o in objs:
            o.load()
        ids = [o.programs["prog_a"].info().id for o in objs]
        assert len(set(ids)) == 5
        for i, o in enumerate(objs):
            internal = [m for m in o.maps.values() if m.internal and m.name.endswith(".bss")]
            assert [m.info().name for m in internal] == [f"c{i}.bss"]
            map_ids = set(o.programs["prog_b"].info().map_ids)
            assert {m.info().id for m in o.maps.values() if m.internal} & map_ids
            for other in objs[:i]:
                assert not map_ids & set(other.programs["prog_b"].info().map_ids)
    finally:
        for o in objs:
            o.close()
    assert not {p.id for p in pybpf.list_programs()} & set(ids)  # closed: all unloaded
