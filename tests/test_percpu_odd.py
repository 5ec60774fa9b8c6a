"""Per-CPU values whose size is not a multiple of 8, as the kernel wrote them on each CPU
(tests/bpf/percpu_odd.bpf.c): the kernel gives user space each CPU's value in an 8-byte
aligned slot (a __u32 in 8 bytes, a 12-byte struct in 16), so a reader that steps by the
value size reads padding as the next CPU's value. The test pins itself to each CPU in turn
and calls getppid() a different number of times there: the expected per-CPU values are
those counts, and the raw bytes are unpacked here, not by pybpf's codecs.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator

import pytest
from conftest import loaded_for_me

import pybpf
from pybpf import possible_cpus

pytestmark = pytest.mark.kernel

ODD = struct.Struct("<IIhbB")  # struct odd: calls, cpu1, neg, neg8, spare (12 bytes)


@pytest.fixture(scope="module")
def counted() -> Iterator[tuple[pybpf.Object, dict[int, int]]]:
    """The loaded object after getppid() ran ``calls[cpu]`` times on each allowed CPU."""
    with loaded_for_me("percpu_odd") as obj:
        calls: dict[int, int] = {}
        old = os.sched_getaffinity(0)
        try:
            for i, cpu in enumerate(sorted(old)):
                os.sched_setaffinity(0, {cpu})
                assert os.sched_getaffinity(0) == {cpu}
                calls[cpu] = i + 2  # a different count on every CPU
                for _ in range(calls[cpu]):
                    os.getppid()
        finally:
            os.sched_setaffinity(0, old)
        yield obj, calls


def _expected_u32(calls: dict[int, int]) -> list[int]:
    return [calls.get(cpu, 0) for cpu in range(possible_cpus())]


def _expected_odd(calls: dict[int, int]) -> list[tuple[int, int, int, int, int]]:
    return [(n, cpu + 1, -1000 * n, -n, 0) if n else (0, 0, 0, 0, 0)
            for cpu, n in ((c, calls.get(c, 0)) for c in range(possible_cpus()))]


def test_raw_layout_is_one_8_byte_slot_per_cpu(counted):
    """The premise, checked on the raw bytes (pybpf decodes nothing here)."""
    obj, calls = counted
    raw = obj.maps["pc32"].lookup(struct.pack("<I", 0))
    assert raw is not None and len(raw) == 8 * possible_cpus()
    assert [struct.unpack_from("<I", raw, 8 * i)[0] for i in range(possible_cpus())] == \
        _expected_u32(calls)
    raw = obj.maps["pch"].lookup(struct.pack("<I", 7))
    assert raw is not None and len(raw) == 16 * possible_cpus()
    assert [ODD.unpack_from(raw, 16 * i) for i in range(possible_cpus())] == _expected_odd(calls)


def test_u32_per_cpu_values_lookup_and_walk(counted):
    obj, calls = counted
    m = obj.maps["pc32"]
    want = _expected_u32(calls)
    assert m[0] == want  # a lookup (C splits the CPUs' slots)
    assert m[1] == [0] * possible_cpus()
    assert dict(m.items()) == {0: want, 1: [0] * possible_cpus()}  # a batch walk
    assert m.sum(0) == sum(calls.values())
    assert list(m.values()) == [want, [0] * possible_cpus()]


def _as_tuple(v) -> tuple[int, int, int, int, int]:
    return (v.calls, v.cpu1, v.neg, v.neg8, v.spare)


def test_odd_struct_per_cpu_values_lookup_and_walk(counted):
    """A 12-byte struct with signed 16- and 8-bit members, one per CPU."""
    obj, calls = counted
    m = obj.maps["pch"]
    want = _expected_odd(calls)
    assert [_as_tuple(v) for v in m[7]] == want
    walked = dict(m.items())
    assert list(walked) == [7]
    assert [_as_tuple(v) for v in walked[7]] == want
    batched = [(k, [_as_tuple(v) for v in vs]) for k, vs in m.items_batched()]
    assert batched == [(7, want)]


def test_one_value_written_for_every_cpu_reaches_each(counted):
    """``m[k] = v`` on a per-CPU map stores v on every possible CPU: read back raw."""
    obj, _ = counted
    m = obj.maps["pc32"]
    m[1] = 0xA5A5A5A5
    try:
        raw = m.lookup(struct.pack("<I", 1))
        assert raw is not None
        assert [struct.unpack_from("<I", raw, 8 * i)[0] for i in range(possible_cpus())] == \
            [0xA5A5A5A5] * possible_cpus()
    finally:
        m[1] = 0


def test_cli_map_dump_splits_cpus_at_the_8_byte_slot(counted, icli):
    obj, calls = counted
    for name, want in (("pc32", {0: _expected_u32(calls)}),
                       ("pch", {7: [dict(zip(("calls", "cpu1", "neg", "neg8", "spare"), t))
                                    for t in _expected_odd(calls)]})):
        r = icli("map", "dump", str(obj.maps[name].info().id), "--json")
        assert r.returncode == 0, r.stderr
        got = {e["key"]: e["value"] for e in json.loads(r.stdout)}
        for key, value in want.items():
            assert got[key] == value, name


def test_out_of_range_small_signed_members_are_refused(counted):
    """-128..127 for a __s8, -32768..32767 for a __s16: 200 or 40000 would be stored as
    a different number. The refusal names the member; the kernel's values stay."""
    obj, calls = counted
    m = obj.maps["pch"]
    before = obj.maps["pch"].lookup(struct.pack("<I", 7))
    for member, bad in (("neg8", 200), ("neg8", -129), ("neg", 40000), ("neg", -32769)):
        with pytest.raises(pybpf.MapValueError, match=member):
            m[7] = {"calls": 1, member: bad}
    assert obj.maps["pch"].lookup(struct.pack("<I", 7)) == before
    m[8] = {"neg8": -128, "neg": -32768}  # the edges are fine
    try:
        raw = obj.maps["pch"].lookup(struct.pack("<I", 8))
        assert raw is not None
        assert {ODD.unpack_from(raw, 16 * i)[2:4] for i in range(possible_cpus())} == \
            {(-32768, -128)}
    finally:
        del m[8]


def test_char_array_text_ends_at_its_first_nul(counted, icli):
    """``char label[16] = "odd\\0padding"``: the C string is "odd" wherever a char
    array becomes text (``.str``, plain values, the CLI's JSON)."""
    obj, _ = counted
    data = next(m for name, m in obj.maps.items() if name.endswith(".data"))
    raw = data.lookup(struct.pack("<I", 0))
    assert raw is not None and raw[:12] == b"odd\0padding\0"  # the premise
    assert obj.data.label.str == "odd"
    r = icli("map", "dump", str(data.info().id), "--json")
    assert r.returncode == 0, r.stderr
    assert [e["value"]["label"] for e in json.loads(r.stdout)] == ["odd"]
