"""Global variables: .rodata before load, .bss/.data live through the map's mmap,
custom sections; the program (tests/bpf/globals.bpf.c) sees Python's writes and
Python sees the program's."""

from __future__ import annotations

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


def test_bad_globals(gobj):
    with pytest.raises(AttributeError, match="section .bss has no variable 'nope' \\(variables: "
                                             "bss_in, bss_out, bss_name_out\\)"):
        gobj.bss.nope  # noqa: B018
    with pytest.raises(TypeError, match="globals: .data: data_arr: expected a list"):
        gobj.data.data_arr = 5
    with pytest.raises(ValueError, match="globals: .rodata: ro_val: -1 is out of range"):
        gobj.rodata.ro_val = -1
    with pytest.raises(ValueError, match="ro_cfg.name: 9 bytes do not fit char\\[8\\]"):
        gobj.rodata.ro_cfg = {"name": "123456789"}
    bss = gobj.bss
    gobj.close()
    with pytest.raises(ClosedError):
        bss.bss_in  # noqa: B018
