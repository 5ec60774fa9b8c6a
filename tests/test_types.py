"""BTF type model: decode what the kernel wrote, encode what the kernel reads back,
and offsets/sizes exactly as clang laid them out (tests/bpf/typed_layouts.bpf.c)."""

from __future__ import annotations

import struct

import pytest

import pybpf
from pybpf.types import CStr, Struct, codec_for


@pytest.fixture(scope="module")
def layouts():
    from conftest import compile_test_bpf

    obj = pybpf.load(compile_test_bpf("typed_layouts"))
    obj.programs["fill"].test_run(ctx=bytes(8), repeat=0)
    yield obj
    obj.close()


def _u64(obj, mapname, i):
    return struct.unpack("<Q", obj.maps[mapname].lookup(struct.pack("<I", i)))[0]


def test_offsets_match_clang(layouts):
    big = codec_for(layouts.btf, layouts.maps["out"].btf_value_type_id)
    off = {m.cname: m.byte_off for m in big.members}
    names = ["u16", "u32", "u64", "flag", "comm", "mac", "color", "sneg", "f32", "f64", "ptr",
             "in", "arr", "grid", "names", "un", "bits", "odd", "tail"]
    assert big.size == _u64(layouts, "layout", 0) == 184
    assert [off[n] for n in names] == [_u64(layouts, "layout", i + 1) for i in range(len(names))]
    btf = layouts.btf
    assert btf["inner"].codec.size == _u64(layouts, "layout", 20)
    assert btf["flags"].codec.size == _u64(layouts, "layout", 21)
    pkey = btf["pkey"].codec
    assert pkey.size == _u64(layouts, "layout", 22)
    assert {m.name: m.byte_off for m in pkey.members}["port"] == _u64(layouts, "layout", 23)
    assert {m.name: m.byte_off for m in btf["inner"].codec.members}["val"] == \
        _u64(layouts, "layout", 24)


def test_decode_what_the_kernel_wrote(layouts):
    b = layouts.maps["out"][0]
    assert isinstance(b, Struct) and type(b).__name__ == "big"
    assert (b.u8, b.s8, b.u16, b.s16, b.u32, b.s32) == (250, -100, 65000, -30000, 4000000000,
                                                         -2000000000)
    assert (b.u64, b.s64) == (18000000000000000000, -9000000000000000000)
    assert b.flag is True
    assert b.comm == b"kernel-side" and isinstance(b.comm, CStr) and b.comm.str == "kernel-side"
    assert b.mac == b"\xde\xad\x00\x00\xbe\x00"  # u8[6]: full length, zeros kept
    assert b.color == 300 and b.color.name == "BLUE" and type(b.color).__name__ == "color"
    assert b.sneg == -5 and b.sneg.name == "NEG"
    assert (b.f32, b.f64) == (1.5, -2.25)
    assert b.ptr == 0xffff888012345678
    assert (b.in_.tag, b.in_.val) == (7, 0xdeadbeef)  # C field "in" is a keyword
    assert [(x.tag, x.val) for x in b.arr] == [(1, 1000), (2, 2000), (3, 3000)]
    assert b.grid == [[0, 1, 2], [10, 11, 12]]
    assert [n.str for n in b.names] == ["alpha", "beta"]
    assert (b.un.i, b.un.f, b.un.b) == (0x3FC00000, 1.5, b"\x00\x00\xc0\x3f")
    assert (b.bits.a, b.bits.b, b.bits.c, b.bits.d, b.bits.e) == (5, 17, -3, 0xABCDEF1234, 1)
    assert b.odd == [1, 2, 65535] and b.tail == 0x42
    # encoding the decoded value gives back the kernel's bytes exactly
    raw = layouts.maps["out"].lookup(bytes(4))
    assert bytes(b) == raw
    assert layouts.btf["big"].decode(raw) == b
    assert b._asdict()["in_"] == {"tag": 7, "val": 0xdeadbeef}
    assert b._astuple()[0] == 250
    assert "comm=b'kernel-side'" in repr(b)
    # struct key with padding, written by the kernel: exactly one entry, as fill() wrote it
    items = list(layouts.maps["byport"].items())
    assert len(items) == 1, items
    (k, v), = items
    assert type(k).__name__ == "pkey" and type(v).__name__ == "inner"
    assert (k.proto, k.addr, k.port, v.tag, v.val) == (6, 0x0100007F, 443, 9, 12345)
    # the key's bytes are the kernel's (padding zeroed by the program's "= {}")
    assert list(layouts.maps["byport"].keys_raw()) == [bytes(k)]
    assert layouts.maps["byport"][k] == v and layouts.maps["byport"][(6, 0x0100007F, 443)] == v


def test_encode_what_the_kernel_reads(layouts):
    Big = layouts.btf["big"].pytype
    Inner = layouts.btf["inner"].pytype
    v = Big(u8=1, s8=-2, u16=3, s16=-4, u32=5, s32=-6, u64=1 << 63, s64=-(1 << 62), flag=True,
            comm="abcdefgh", mac=b"\1\2\3\4\5\6", color="GREEN", sneg=-5, f32=0.5, f64=3.75,
            ptr=0x1234, arr=[Inner(), {"tag": 0}, (9, 99)], grid=[[0, 0, 0], [0, 0, 4242]],
            names=[b"x", "yz"], un={"i": 0xCAFE}, odd=[0, 0, 7], tail=200)
    v.in_ = {"tag": 1, "val": 31337}
    v.bits = {"a": 7, "b": 31, "c": -8, "d": (1 << 40) - 1, "e": 1}
    layouts.maps["in"][0] = v
    layouts.programs["readback_in"].test_run(ctx=bytes(8), repeat=0)
    got = [_u64(layouts, "readback", i) for i in range(29)]

    def s64(x):
        return x - (1 << 64) if x >> 63 else x

    assert got[0] == 1 and s64(got[1]) == -2 and got[2] == 3 and s64(got[3]) == -4
    assert got[4] == 5 and s64(got[5]) == -6 and got[6] == 1 << 63 and s64(got[7]) == -(1 << 62)
    assert got[8] == 1
    assert struct.pack("<Q", got[9]) == b"abcdefgh"
    assert got[10] == 6 and got[11] == 2 and s64(got[12]) == -5
    assert got[13] == 31337 and (got[14], got[15]) == (9, 99) and got[16] == 4242
    assert struct.pack("<Q", got[17]) == b"yz\0\0\0\0\0\0"
    assert got[18] == 0xCAFE
    assert (got[19], got[20], s64(got[21]), got[22], got[23]) == (7, 31, -8, (1 << 40) - 1, 1)
    assert (got[24], got[25], got[26]) == (7, 200, 0x1234)
    assert struct.unpack("<f", struct.pack("<I", got[27]))[0] == 0.5
    assert struct.unpack("<d", struct.pack("<Q", got[28]))[0] == 3.75
    back = layouts.maps["in"][0]  # what the kernel holds, decoded again
    assert (back.un.i, back.bits.c, back.in_.val, back.comm.str) == (0xCAFE, -8, 31337, "abcdefgh")
    assert bytes(back) == layouts.maps["in"].lookup(bytes(4))


@pytest.mark.parametrize("field,value,exc,msg", [
    ("u8", 256, ValueError, r"value\.u8: 256 is out of range for __u8|value\.u8: 256 is out"),
    ("s16", -40000, ValueError, r"value\.s16: -40000 is out of range"),
    ("comm", "x" * 17, ValueError, r"value\.comm: 17 bytes do not fit char\[16\]"),
    ("mac", b"1234567", ValueError, r"value\.mac: 7 bytes do not fit"),
    ("u32", "7", TypeError, r"value\.u32: expected int"),
    ("color", "PURPLE", ValueError, r"value\.color: 'PURPLE' is not an enumerator of color"),
    ("grid", [[1, 2, 3, 4]], ValueError, r"value\.grid\[0\]: 4 elements do not fit"),
    ("bits", {"a": 8}, ValueError, r"value\.bits\.a: 8 is out of range for a 3-bit"),
    ("in_", {"nope": 1}, TypeError, r"value\.in_: struct inner has no field 'nope'"),
    ("un", {"i": 1, "f": 2.0}, TypeError, r"value\.un: union num: give one member"),
])
def test_bad_values_name_map_and_field(layouts, field, value, exc, msg):
    m = layouts.maps["in"]
    before = m.lookup(bytes(4))
    with pytest.raises(exc, match=r"map 'in': " + msg):
        m[0] = {field: value}
    assert m.lookup(bytes(4)) == before  # nothing reached the kernel


def test_bad_keys(layouts):
    m = layouts.maps["out"]
    with pytest.raises(ValueError, match=r"map 'out': key: -1 is out of range for unsigned int"):
        m[-1]
    with pytest.raises(TypeError, match=r"map 'out': key: expected int"):
        m["0"]
    with pytest.raises(TypeError, match=r"map 'out': value: struct big has no field 'bogus'"):
        m[0] = {"bogus": 1}
    with pytest.raises(TypeError, match="big has no field 'bogus'"):
        layouts.btf["big"].pytype(bogus=1)


def test_struct_class_behaviour(layouts):
    Inner = layouts.btf["inner"].pytype
    a = Inner(1, 2)
    assert a == Inner(tag=1, val=2) and a != Inner(1, 3)
    assert repr(a) == "inner(tag=1, val=2)"
    assert bytes(a) == b"\x01\0\0\0\x02\0\0\0"  # 3 bytes of padding
    assert Inner._from_bytes(bytes(a)) == a
    assert a._astuple() == (1, 2) and a._asdict() == {"tag": 1, "val": 2}
    with pytest.raises(ValueError, match="need 8 bytes, got 3"):
        Inner._from_bytes(b"abc")
    with pytest.raises(TypeError):
        hash(a)
    assert layouts.btf["pkey"].encode((6, 1, 2)) == bytes([6, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0])


def test_enum_value_without_an_enumerator(layouts):
    """A value the enum does not name (the kernel may hold any int) decodes as that int."""
    raw = bytearray(layouts.maps["out"].lookup(bytes(4)))
    off = _u64(layouts, "layout", 7)  # offsetof(struct big, color), from the program
    raw[off:off + 4] = (12345).to_bytes(4, "little")  # C enums are int-sized
    layouts.maps["in"].update(bytes(4), bytes(raw))
    b = layouts.maps["in"][0]
    assert b.color == 12345 and int(b.color) == 12345
    assert b.sneg == -5 and b.sneg.name == "NEG"  # its neighbour still named


def test_one_bitfield_written_leaves_its_neighbours(layouts):
    """A bitfield set alone (on what the kernel wrote) changes its own bits only: the
    neighbours the program wrote come back unchanged through the program's readback."""
    layouts.programs["fill"].test_run(ctx=bytes(8), repeat=0)
    v = layouts.maps["out"][0]  # a=5, b=17, c=-3, d=0xabcdef1234, e=1 (from `fill`)
    assert (v.bits.a, v.bits.b, v.bits.c, v.bits.d, v.bits.e) == (5, 17, -3, 0xABCDEF1234, 1)
    bits = v.bits
    bits.a = 0  # b's lowest bit is 1, just above a's
    bits.c = 0  # d's lowest bit is 0 here: set it first so a clobbered bit shows
    bits.d = 0xABCDEF1235
    bits.c = 1
    v.bits = bits
    layouts.maps["in"][0] = v
    layouts.programs["readback_in"].test_run(ctx=bytes(8), repeat=0)
    got = [_u64(layouts, "readback", i) for i in range(19, 24)]
    assert got == [0, 17, 1, 0xABCDEF1235, 1]


def test_values_by_c_name_and_positional_unions_reach_the_kernel(layouts):
    """A dict keyed by C names (the member ``in``, attribute ``in_``, as plain() writes
    it) and a union built from one positional value (its first member) are encoded as
    the program then reads them."""
    Num = layouts.btf["num"].pytype
    layouts.maps["in"][0] = {"u8": 9, "in": {"tag": 1, "val": 4242}, "un": Num(0xCAFE),
                             "bits": {"a": 1, "b": 2, "c": -1, "d": 3, "e": 0}}
    layouts.programs["readback_in"].test_run(ctx=bytes(8), repeat=0)
    got = [_u64(layouts, "readback", i) for i in range(29)]
    assert got[0] == 9 and got[13] == 4242 and got[18] == 0xCAFE
    assert (got[19], got[20], got[21] - (1 << 64), got[22], got[23]) == (1, 2, -1, 3, 0)
    assert layouts.maps["in"][0].in_.val == 4242
