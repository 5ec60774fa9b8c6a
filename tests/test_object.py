"""Object lifecycle: open, inventory, configure, load, attach, close."""

from __future__ import annotations

import os
import struct

import pytest

import pybpf
from pybpf import ClosedError, StateError


def test_libbpf_version():
    major, minor = pybpf.libbpf_version()
    assert (major, minor) >= (1, 0)


def test_open_inventory_without_loading(bpf_obj):
    with pybpf.Object.open(bpf_obj("basic")) as obj:
        assert obj.name == "basic"
        assert list(obj.programs) == ["count_exec", "xdp_pass"]
        prog = obj.programs["count_exec"]
        assert prog.section == "tracepoint/syscalls/sys_enter_execve"
        assert prog.type == "tracepoint"
        assert obj.programs["xdp_pass"].type == "xdp"
        assert prog.autoload is True
        assert prog.instruction_count > 5
        names = list(obj.maps)
        assert names[:3] == ["counts", "arr", "pcpu"]
        internal = {n for n, m in obj.maps.items() if m.internal}
        assert any(n.endswith(".rodata") for n in internal)
        assert any(n.endswith(".bss") for n in internal)
        assert any(n.endswith(".data") for n in internal)
        counts = obj.maps["counts"]
        assert (counts.type, counts.key_size, counts.value_size, counts.max_entries) == (
            "hash", 4, 8, 128)
        with pytest.raises(TypeError):
            obj.programs["x"] = prog  # type: ignore[index]


def test_open_from_bytes_matches_file(bpf_obj):
    path = bpf_obj("basic")
    with open(path, "rb") as f:
        data = f.read()
    with pybpf.Object.open(data, name="frombytes") as a, pybpf.Object.open(path) as b:
        assert a.name == "frombytes"
        assert list(a.programs) == list(b.programs)
        assert [m.name.split(".")[-1] for m in a.maps.values()] == [
            m.name.split(".")[-1] for m in b.maps.values()]


def test_configure_before_load_then_frozen(bpf_obj):
    with pybpf.Object.open(bpf_obj("basic")) as obj:
        obj.maps["counts"].max_entries = 1000
        obj.programs["xdp_pass"].autoload = False
        obj.set_rodata("target_pid", os.getpid())
        obj.set_rodata("neg_default", -7)
        with pytest.raises(ValueError, match="out of range"):
            obj.set_rodata("neg_default", 1 << 20)
        with pytest.raises(KeyError, match="nope"):
            obj.set_rodata("nope", 1)
        obj.load()
        assert obj.maps["counts"].info().max_entries == 1000
        with pytest.raises(StateError, match="not loaded.*autoload is off"):
            _ = obj.programs["xdp_pass"].fd
        with pytest.raises(StateError, match="only be set before load"):
            obj.maps["counts"].max_entries = 5
        with pytest.raises(StateError, match="only be set before load"):
            obj.set_rodata("target_pid", 1)
        rodata = next(m for m in obj.maps.values() if m.name.endswith(".rodata"))
        raw = rodata.lookup(b"\0\0\0\0")
        assert raw is not None
        assert struct.unpack_from("<I", raw, 0)[0] == os.getpid()


def _section_var(obj, section, name, fmt):
    """A global as the kernel holds it: the internal map's bytes (one lookup syscall) at
    the variable's BTF offset, unpacked with ``fmt`` (not through pybpf's codecs)."""
    m = next(m for m in obj.maps.values() if m.internal and m.name.endswith(section))
    raw = m.lookup(b"\0\0\0\0")
    var = next(v for v in obj.btf.datasec(section).members if v.name == name)
    assert struct.calcsize(fmt) == var.size
    return struct.unpack_from(fmt, raw, var.offset)[0]


@pytest.mark.parametrize("value", [-7, -1, -32768, 32767, 0])
def test_set_rodata_signed_values_reach_the_program(bpf_obj, value):
    """set_rodata() of a signed global: the program reads back exactly that value."""
    with pybpf.Object.open(bpf_obj("basic")) as obj:
        obj.set_rodata("neg_default", value)
        obj.load()
        assert _section_var(obj, ".rodata", "neg_default", "<h") == value
        assert obj.programs["xdp_pass"].test_run(bytes(64)).retval == 2  # XDP_PASS
        assert _section_var(obj, ".bss", "neg_seen", "<q") == value  # as the program saw it
        assert obj.rodata.neg_default == value


def test_rodata_default_seen_by_the_program(bpf_obj):
    with pybpf.load(bpf_obj("basic")) as obj:
        obj.programs["xdp_pass"].test_run(bytes(64))
        assert _section_var(obj, ".bss", "neg_seen", "<q") == -5  # the C initializer
        assert _section_var(obj, ".bss", "data_seen", "<I") == 42


def test_load_attach_counts_exec(bpf_obj, trigger_exec):
    with pybpf.load(bpf_obj("basic")) as obj:
        assert obj.loaded
        links = obj.attach()
        assert [lk.program for lk in links] == ["count_exec"]
        child = trigger_exec("/bin/true")
        raw = obj.maps["counts"].lookup(struct.pack("<I", child))
        assert raw is not None and struct.unpack("<Q", raw)[0] == 1
        info = obj.programs["count_exec"].info()
        assert info.id > 0 and len(info.tag) == 16 and info.xlated_size > 0
        assert obj.maps["counts"].info().id in info.map_ids


def test_close_is_idempotent_and_use_after_close_raises(bpf_obj):
    obj = pybpf.load(bpf_obj("basic"))
    counts = obj.maps["counts"]
    prog = obj.programs["count_exec"]
    link = obj.attach()[0]
    link_id = link.info().id
    obj.close()
    obj.close()
    assert obj.closed and link.detached
    assert link_id not in {li.id for li in pybpf.list_links()}
    with pytest.raises(ClosedError):
        _ = counts.fd
    with pytest.raises(ClosedError):
        _ = prog.fd
    with pytest.raises(ClosedError):
        _ = obj.programs
    with pytest.raises(ClosedError):
        obj.load()
    assert isinstance(ClosedError("x"), ValueError)


def test_raw_map_ops(bpf_obj):
    with pybpf.load(bpf_obj("basic")) as obj:
        m = obj.maps["counts"]
        k, v = struct.pack("<I", 7), struct.pack("<Q", 99)
        assert m.lookup(k) is None
        m.update(k, v)
        assert m.lookup(k) == v
        with pytest.raises(KeyError):
            m.update(k, v, pybpf.UpdateFlags.NOEXIST)
        assert list(m.keys_raw()) == [k]
        assert list(m.keys()) == [7]  # typed from BTF (see tests/test_typed_maps.py)
        assert m.delete(k) is True
        assert m.delete(k) is False
        with pytest.raises(ValueError, match="key is 2 bytes, the map's key_size is 4"):
            m.lookup(b"\0\0")
        with pytest.raises(TypeError):
            m.lookup(7)  # type: ignore[arg-type]
        pc = obj.maps["pcpu"]
        raw = pc.lookup(b"\0\0\0\0")
        assert raw is not None and len(raw) == 8 * pybpf.possible_cpus()
