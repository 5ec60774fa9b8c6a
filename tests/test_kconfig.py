"""``Object.open(kconfig=...)``: the values reach the program's ``__kconfig`` externs
(what tests/bpf/compat.bpf.c copied into .bss after a syscall it watches), and every
entry libbpf could not take as meant is refused at open, naming the entry, with nothing
left open: a value carrying a newline (a second setting smuggled in), a name that is
not CONFIG_*, a word libbpf cannot parse, a number beyond 64 bits, a wrong type."""

from __future__ import annotations

import os

import pytest

import pybpf
from pybpf.errors import BPFTypeError, BPFValueError


def _seen(obj: pybpf.Object) -> dict[str, int]:
    m = next(m for m in obj.maps.values() if m.internal and m.name.endswith(".bss"))
    raw = m.lookup(b"\0\0\0\0")
    sec = obj.btf.datasec(".bss")
    return {v.name: int.from_bytes(raw[v.offset:v.offset + v.size], "little")
            for v in sec.members}


@pytest.mark.parametrize("kconfig, value, syscall", [
    ({"CONFIG_PYBPF_TEST_VALUE": 5}, 5, 1),
    ({"CONFIG_PYBPF_TEST_VALUE": "0x1f"}, 31, 1),
    ({"CONFIG_PYBPF_TEST_VALUE": "010", "CONFIG_BPF_SYSCALL": False}, 8, 0),
    ("# a .config\n\nCONFIG_PYBPF_TEST_VALUE=77\nCONFIG_BPF_SYSCALL=n", 77, 0),
    ({"CONFIG_PYBPF_TEST_VALUE": 2**31 - 1, "CONFIG_BPF_SYSCALL": True}, 2**31 - 1, 1),
])
def test_kconfig_values_reach_the_program(bpf_obj, kconfig, value, syscall):
    with pybpf.Object.open(bpf_obj("compat"), kconfig=kconfig) as obj:
        obj.load()
        obj.attach()
        os.getpid()
        seen = _seen(obj)
    assert seen["seen_test_value"] == value
    assert seen["seen_bpf_syscall"] == syscall


BAD = {
    "newline in a value": ({"CONFIG_PYBPF_TEST_VALUE": "5\nCONFIG_BPF_SYSCALL=n"},
                           BPFValueError, "CONFIG_PYBPF_TEST_VALUE"),
    "not a CONFIG_ name": ({"PYBPF_TEST_VALUE": 5}, BPFValueError, "PYBPF_TEST_VALUE"),
    "a name with a newline": ({"CONFIG_A\nCONFIG_B": 5}, BPFValueError, "CONFIG_A"),
    "a word": ({"CONFIG_PYBPF_TEST_VALUE": "five"}, BPFValueError, "'five'"),
    "an unquoted string": ({"CONFIG_PYBPF_TEST_VALUE": "a b"}, BPFValueError, "'a b'"),
    "beyond 64 bits": ({"CONFIG_PYBPF_TEST_VALUE": 1 << 64}, BPFValueError, str(1 << 64)),
    "a hex beyond 64 bits": ({"CONFIG_PYBPF_TEST_VALUE": "0x1" + "0" * 16}, BPFValueError,
                             "64 bits"),
    "None": ({"CONFIG_PYBPF_TEST_VALUE": None}, BPFTypeError, "NoneType"),
    "a float": ({"CONFIG_PYBPF_TEST_VALUE": 1.5}, BPFTypeError, "float"),
    "a name that is not str": ({5: 5}, BPFTypeError, "5"),
    "text without =": ("CONFIG_PYBPF_TEST_VALUE 5\n", BPFValueError, "NAME=VALUE"),
    "text with a bad value": ("CONFIG_PYBPF_TEST_VALUE=09\n", BPFValueError, "'09'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_kconfig_entries_libbpf_cannot_take_are_refused_at_open(bpf_obj, case):
    kconfig, exc, named = BAD[case]
    path = bpf_obj("compat")
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(exc) as ei:
        pybpf.Object.open(path, kconfig=kconfig)
    assert "kconfig" in str(ei.value) and named in str(ei.value), str(ei.value)
    assert path in str(ei.value)  # the object file
    assert set(os.listdir("/proc/self/fd")) <= before
