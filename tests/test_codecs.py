"""The Python codecs (pybpf/types.py) on the layouts C does not convert itself: bitfields
(signed, enum, bool, crossing bytes, 40 bits), 128-bit integers, unions of structs and
arrays, anonymous members, arrays of bools/enums/shorts/floats/pointers/bitfield
structs/unions, char matrices, and flat structs whose arrays keep them out of C
(tests/bpf/codecs.bpf.c). Expected values are what the program wrote (the constants of
``fill``) or what this test wrote and the program read back (``readback`` copies every
field into a u64 of ``rb``, unpacked here with :mod:`struct`), never what the code under
test produced."""

from __future__ import annotations

import struct

import pytest

import pybpf
from pybpf.types import CStr, as_codec, codec_for, numpy_dtype, plain

M64 = (1 << 64) - 1


def _f32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def _bf(k: int) -> dict[str, int]:
    """What fill_bf(b, k) writes."""
    return dict(s3=3 if k else -4, u5=0 if k else 31, m=7 if k else 2, flag=not k,
                cross=0x001 if k else 0xABC, s40=(1 << 39) - 1 if k else -(1 << 39),
                u23=1 if k else 0x7FFFFF, last=0 if k else 1)


def _flat(k: int) -> dict[str, object]:
    """What fill_flat(f, k) writes."""
    return dict(a=200 + k, bools=[False, True, bool(k & 1)], modes=[2, 6 + k],
                name=b"flat" + bytes([48 + k]), pairs=[(1 + k, 2), (65535, 4 * k)],
                s=[-2 - k, 300], d=[-1.25, 0.375, 1e300][k], tail=0xDEADBEEF - k)


@pytest.fixture(scope="module")
def co():
    from conftest import compile_test_bpf

    obj = pybpf.load(compile_test_bpf("codecs"))
    obj.programs["fill"].test_run(ctx=bytes(8), repeat=0)
    yield obj
    obj.close()


def _rb(obj: pybpf.Object, i: int) -> int:
    raw = obj.maps["rb"].lookup(struct.pack("<I", i))
    return int(struct.unpack("<Q", raw)[0])


def _s64(x: int) -> int:
    return x - (1 << 64) if x >> 63 else x


def _check_bf(b, k: int) -> None:
    want = _bf(k)
    got = {n: getattr(b, n) for n in want}
    assert got == want
    assert type(got["flag"]) is bool
    assert got["m"].name == ("M_TOP" if k else "M_AUTO")


def _check_gen(g) -> None:
    assert g.tag == 0x5A
    _check_bf(g.b, 0)
    _check_bf(g.bfs[0], 1)
    _check_bf(g.bfs[1], 0)
    assert (g.un.parts.lo, g.un.parts.hi, g.un.whole) == (0x1234, 0xFEDC, 0xFEDC1234)
    assert g.un.sb == b"\x34\x12\xdc\xfe"
    assert g.uns[0].whole == 0x80402010 and g.uns[0].parts.hi == 0x8040
    assert g.uns[1].sb == b"\xff\x00\x7f\x80" and g.uns[1].whole == 0x807F00FF
    assert g._anon5.af == 2.5 and g._anon5.ax == 0x40200000  # anonymous union
    assert g.s128 == -(1 << 100) - 7
    assert g.u128 == (1 << 127) + 5
    assert g.bools == [True, False, True] and all(type(x) is bool for x in g.bools)
    assert g.modes == [7, 5, 1]
    assert g.modes[0].name == "M_TOP" and g.modes[2].name == "M_ON"
    assert type(g.modes[1]) is int  # no enumerator
    assert g.w64 == 0x1FFFFFFFF and g.w64.name == "W_BIG"
    assert g.sg == -128 and g.sg.name == "S_MIN"
    assert g.shorts == [-32768, 32767, -1]
    assert g.floats == [-0.5, _f32(1e30)]
    assert g.ptrs == [M64, 0x1000]
    assert g.sbytes == b"\x80\x7f\x00\x00"
    assert g.chars == [b"ab", b"cdefg"] and isinstance(g.chars[0], CStr)
    assert g.chars[0].str == "ab"


def test_decode_what_the_kernel_wrote(co):
    """Map values, a global (through the mmap), and the codec at an offset into the
    kernel's raw bytes all give what ``fill`` wrote."""
    _check_gen(co.maps["gen_out"][0])
    _check_gen(co.bss.g_gen)
    raw = co.maps["gen_out"].lookup(bytes(4))
    assert len(raw) == _rb_layout(co, 0)
    gen = codec_for(co.btf, co.maps["gen_out"].btf_value_type_id)
    _check_gen(gen.decode(b"\xff" * 5 + raw, 5))
    bf = co.btf["bf"].codec
    off = _rb_layout(co, 1)
    _check_bf(bf.decode(raw[off:off + _rb_layout(co, 6)]), 0)
    _check_bf(bf.decode(b"\xee" * 3 + raw[off:], 3), 0)
    # the fields in plain data, as JSON exporters get them: the anonymous union's
    # members merged in, char arrays as text, enums as ints
    p = plain(co.maps["gen_out"][0])
    assert (p["ax"], p["af"], p["chars"], p["modes"], p["b"]["m"]) == \
        (0x40200000, 2.5, ["ab", "cdefg"], [7, 5, 1], 2)
    assert plain(co.maps["gen_out"][0], enum_names=True)["sg"] == "S_MIN"


def _rb_layout(obj: pybpf.Object, i: int) -> int:
    raw = obj.maps["layout"].lookup(struct.pack("<I", i))
    return int(struct.unpack("<Q", raw)[0])


def test_flat_structs_with_arrays_decode_singly_and_in_batches(co):
    """Structs without bitfields whose arrays keep them out of C: one value, the
    global, and whole batches (items(), values(), keys) give what ``fill`` wrote."""
    fc = co.btf["flat"].codec
    assert fc.size == _rb_layout(co, 7)

    def check(f, k: int) -> None:
        want = _flat(k)
        assert (f.a, f.bools, f.modes, f.name, f.s, f.d, f.tail) == \
            (want["a"], want["bools"], want["modes"], want["name"], want["s"], want["d"],
             want["tail"])
        assert [(p.lo, p.hi) for p in f.pairs] == want["pairs"]
        assert f.modes[0].name == "M_AUTO" and isinstance(f.name, CStr)
        assert all(type(x) is bool for x in f.bools)

    m = co.maps["flat_out"]
    for k in range(3):
        check(m[k], k)
    check(co.bss.g_flat, 0)
    items = dict(m.items())
    assert sorted(items) == [0, 1, 2]
    for k, v in items.items():
        check(v, k)
    assert sorted(v.tail for v in m.values()) == [0xDEADBEEF - 2, 0xDEADBEEF - 1, 0xDEADBEEF]
    raw = m.lookup(struct.pack("<I", 1))
    check(fc.decode(b"\0" * 7 + raw, 7), 1)
    # struct keys (C) with enum values (Python): what fill() put in by_pair
    bp = {(k.lo, k.hi): v for k, v in co.maps["by_pair"].items()}
    assert bp == {(0, 0xA000): 0, (1, 0xA001): 1, (2, 0xA002): 4}
    assert bp[(1, 0xA001)].name == "M_ON" and type(bp[(2, 0xA002)]) is int
    assert sorted(k.hi for k in co.maps["by_pair"]) == [0xA000, 0xA001, 0xA002]


def test_numpy_dtype_reads_the_kernels_bytes(co):
    np = pytest.importorskip("numpy")
    dt = numpy_dtype(co.btf["flat"].codec)
    assert dt.itemsize == _rb_layout(co, 7) and dt.fields["d"][1] == _rb_layout(co, 8)
    raw = b"".join(co.maps["flat_out"].lookup(struct.pack("<I", k)) for k in range(3))
    arr = np.frombuffer(raw, dtype=dt)
    for k in range(3):
        want = _flat(k)
        r = arr[k]
        assert int(r["a"]) == want["a"] and r["name"] == want["name"]
        assert [bool(x) for x in r["bools"]] == want["bools"]
        assert [int(x) for x in r["modes"]] == want["modes"]
        assert [(int(p["lo"]), int(p["hi"])) for p in r["pairs"]] == want["pairs"]
        assert [int(x) for x in r["s"]] == want["s"] and float(r["d"]) == want["d"]
        assert int(r["tail"]) == want["tail"]
    g = co.btf["gen"].codec
    gdt = numpy_dtype(co.btf["pair"].codec)
    assert gdt.names == ("lo", "hi") and gdt.itemsize == 4
    with pytest.raises(TypeError, match="struct 'bf': bitfield member 's3' has no numpy"):
        numpy_dtype(g)
    sb = numpy_dtype(g.members[[m.name for m in g.members].index("sbytes")].codec)
    assert sb == np.dtype(("<i1", (4,)))
    assert numpy_dtype(g.members[[m.name for m in g.members].index("bools")].codec) == \
        np.dtype(("?", (3,)))
    assert numpy_dtype(g.members[[m.name for m in g.members].index("ptrs")].codec) == \
        np.dtype(("<u8", (2,)))
    assert numpy_dtype(g.members[[m.name for m in g.members].index("sg")].codec) == \
        np.dtype("<i4")
    assert numpy_dtype(g.members[[m.name for m in g.members].index("floats")].codec) == \
        np.dtype(("<f4", (2,)))
    with pytest.raises(TypeError, match="__int128 has no numpy equivalent"):
        numpy_dtype(g.members[[m.name for m in g.members].index("s128")].codec)


# what the test writes into gen_in, and what readback must then record for it
GEN_A = {
    "tag": 255,
    "b": {"s3": 3, "u5": 0, "m": "M_TOP", "flag": True, "cross": 0xFFF, "s40": -1,
          "u23": 0x400000, "last": 1},
    "bfs": [{"s3": -4, "u5": 31, "m": 0, "flag": False, "cross": 0x800, "s40": (1 << 39) - 1,
             "u23": 0x7FFFFF, "last": 0},
            {"s3": -1, "u5": 16, "m": 5, "flag": 1, "cross": 1, "s40": -(1 << 39), "u23": 0,
             "last": 1}],
    "un": {"parts": {"lo": 0xAAAA, "hi": 0x5555}},
    "uns": [{"whole": 0x01020304}, {"sb": b"\x80\x7f"}],
    "ax": 0x40490FDB,
    "s128": -(1 << 127), "u128": (1 << 128) - 1,
    "bools": [False, True],
    "modes": ["M_ON", 5],
    "w64": "W_BIG", "sg": -128,
    "shorts": (-1, 0, 32767),
    "floats": [1.5, -2],
    "ptrs": [0, 0xFFFF888000000000],
    "sbytes": [0x80, 1, 2, 3],
    "chars": ["hi", b"12345"],
}


def _bf_rb(b: dict[str, object]) -> list[int]:
    return [int(b["s3"]) & M64, int(b["u5"]), 7 if b["m"] == "M_TOP" else int(b["m"]),
            int(bool(b["flag"])), int(b["cross"]), int(b["s40"]) & M64, int(b["u23"]),
            int(b["last"])]


def _readback(co) -> list[int]:
    co.programs["readback"].test_run(ctx=bytes(8), repeat=0)
    return [_rb(co, i) for i in range(49)]


def test_encode_what_the_kernel_reads(co):
    """Every field of a generic (bitfields, unions) struct written from Python, as the
    program reads it; writing a second value with fields left out zeroes them."""
    co.maps["gen_in"][0] = GEN_A
    got = _readback(co)
    a = GEN_A
    assert got[0] == 255
    assert got[1:9] == _bf_rb(a["b"])
    assert got[9:17] == _bf_rb(a["bfs"][0])
    assert got[17:25] == _bf_rb(a["bfs"][1])
    assert got[25] == 0x5555AAAA and got[26] == 0x01020304 and got[27] == 0x7F80
    assert got[28] == 0x40490FDB
    assert (got[29], got[30]) == (0, 1 << 63)  # -(1 << 127): low and high halves
    assert (got[31], got[32]) == (M64, M64)
    assert got[33] == 0b010 and got[34:37] == [1, 5, 0]
    assert got[37] == 0x1FFFFFFFF and _s64(got[38]) == -128
    assert [_s64(x) for x in got[39:42]] == [-1, 0, 32767]
    assert [struct.unpack("<f", struct.pack("<I", x))[0] for x in got[42:44]] == [1.5, -2.0]
    assert got[44:46] == [0, 0xFFFF888000000000]
    assert got[46] == 0x03020180
    assert got[47] == int.from_bytes(b"hi\0\0", "little") and got[48] == \
        int.from_bytes(b"1234", "little") | ord("5") << 32
    # the same value from the generated class, positional unions and tuples
    Gen, U, Pair = (co.btf[n].pytype for n in ("gen", "u", "pair"))
    co.maps["gen_in"][0] = Gen(tag=1, un=U(Pair(7, 8)), uns=[U((9, 0))],
                               s128=(1 << 127) - 1, shorts=[5])
    got = _readback(co)
    assert got[0] == 1 and got[25] == 0x00080007 and got[26:28] == [9, 0]
    assert (got[29], got[30]) == (M64, M64 >> 1)
    assert [_s64(x) for x in got[39:42]] == [5, 0, 0]
    assert got[1:9] == [0] * 8 and got[28] == 0 and got[31:33] == [0, 0]
    assert got[42:49] == [0] * 7


def test_a_decoded_union_goes_back_as_the_kernels_bytes(co):
    """A union decoded from the kernel and written back unchanged keeps its bytes (no
    member was chosen); one member set afterwards replaces them."""
    g = co.maps["gen_out"][0]
    co.maps["gen_in"][0] = g
    got = _readback(co)
    assert got[25:29] == [0xFEDC1234, 0x80402010, 0x807F00FF, 0x40200000]
    assert got[1:9] == _bf_rb({**_bf(0), "m": 2})
    assert (got[29] | got[30] << 64) == (-(1 << 100) - 7) % (1 << 128)
    g.un.whole = 0x11
    g.uns[1].parts = {"hi": 3}
    co.maps["gen_in"][0] = g
    got = _readback(co)
    assert got[25:28] == [0x11, 0x80402010, 0x00030000]


def test_encode_flat_what_the_kernel_reads(co):
    co.maps["flat_in"][0] = {"a": 9, "bools": [True, False, True], "modes": ["M_TOP", 4],
                             "name": "xyz", "pairs": [(1, 2), {"hi": 9}], "s": [-5],
                             "d": -0.125, "tail": 0xFFFFFFFF}
    co.programs["readback"].test_run(ctx=bytes(8), repeat=0)
    got = [_rb(co, i) for i in range(60, 71)]
    assert got[:4] == [9, 0b101, 7, 4]
    assert got[4] == int.from_bytes(b"xyz\0", "little")
    assert got[5:7] == [0x00020001, 0x00090000]
    assert [_s64(x) for x in got[7:9]] == [-5, 0]
    assert struct.unpack("<d", struct.pack("<Q", got[9]))[0] == -0.125
    assert got[10] == 0xFFFFFFFF
    # a value from the class, then a shorter one: what was left out is zero again
    Flat = co.btf["flat"].pytype
    co.maps["flat_in"][0] = Flat(a=1, name=b"abcdef", bools=(False, True))
    co.programs["readback"].test_run(ctx=bytes(8), repeat=0)
    got = [_rb(co, i) for i in range(60, 71)]
    assert got[:2] == [1, 0b010] and got[4] == int.from_bytes(b"abcdef", "little")
    assert got[2:4] == [0, 0] and got[5:] == [0] * 6


@pytest.mark.parametrize("value,exc,msg", [
    ({"b": {"s3": 4}}, ValueError, r"value\.b\.s3: 4 is out of range for a 3-bit signed "
     r"bitfield \[-4, 3\]"),
    ({"b": {"s3": -5}}, ValueError, r"value\.b\.s3: -5 is out of range"),
    ({"bfs": [{}, {"u5": 32}]}, ValueError, r"value\.bfs\[1\]\.u5: 32 is out of range for a "
     r"5-bit unsigned bitfield \[0, 31\]"),
    ({"b": {"u5": -1}}, ValueError, r"value\.b\.u5: -1 is out of range"),
    ({"b": {"s40": 1 << 39}}, ValueError, r"value\.b\.s40: 549755813888 is out of range for a "
     r"40-bit signed"),
    ({"b": {"cross": "x"}}, TypeError, r"value\.b\.cross: expected int for a 12-bit field, "
     r"got str"),
    ({"b": {"m": "NOPE"}}, ValueError, r"value\.b\.m: 'NOPE' is not an enumerator of mode "
     r"\(M_OFF, M_ON, M_AUTO, M_TOP\)"),
    ({"b": {"m": 8}}, ValueError, r"value\.b\.m: 8 is out of range for a 3-bit unsigned"),
    ({"s128": 1 << 127}, ValueError, r"value\.s128: 170141183460469231731687303715884105728 "
     r"is out of range for __int128"),
    ({"u128": -1}, ValueError, r"value\.u128: -1 is out of range for unsigned __int128 "
     r"\[0, 340282366920938463463374607431768211455\]"),
    ({"u128": 1.0}, TypeError, r"value\.u128: expected int for unsigned __int128, got float"),
    ({"floats": ["a"]}, TypeError, r"value\.floats\[0\]: expected float for float, got str"),
    ({"floats": [0, 1e300]}, ValueError, r"value\.floats\[1\]: 1e\+300 does not fit a float"),
    ({"floats": [0, 0, 0]}, ValueError, r"value\.floats: 3 elements do not fit float\[2\]"),
    ({"floats": 1.0}, TypeError, r"value\.floats: expected a list for float\[2\], got float"),
    ({"modes": ["NOPE"]}, ValueError, r"value\.modes\[0\]: 'NOPE' is not an enumerator"),
    ({"sbytes": [256]}, ValueError, r"value\.sbytes: a list for signed char\[4\] must hold "
     r"ints in \[0, 255\]"),
    ({"sbytes": "ab"}, TypeError, r"value\.sbytes: expected bytes for signed char\[4\], got str"),
    ({"chars": [b"123456"]}, ValueError, r"value\.chars\[0\]: 6 bytes do not fit char\[5\]"),
    ({"chars": [1]}, TypeError, r"value\.chars\[0\]: expected bytes or str for char\[5\], "
     r"got int"),
    ({"un": {"whole": 1, "sb": b""}}, TypeError, r"value\.un: union u: give one member, got "
     r"whole, sb"),
    ({"un": (1, 2)}, TypeError, r"value\.un: 2 values for u, which has 1 field"),
    ({"b": (1,) * 9}, TypeError, r"value\.b: 9 values for bf, which has 8 field"),
    ({"un": 5}, TypeError, r"value\.un: expected u \(instance, dict or tuple\), got int"),
    ({"nope": 1}, TypeError, r"value: struct gen has no field 'nope' \(fields: tag, b, bfs"),
    ({"un": {"nope": 1}}, TypeError, r"value\.un: union u has no field 'nope'"),
    ({"bools": ["x"]}, TypeError, r"value\.bools\[0\]: expected bool, got str"),
])
def test_bad_values_name_the_field_and_reach_nothing(co, value, exc, msg):
    m = co.maps["gen_in"]
    m[0] = GEN_A
    before = m.lookup(bytes(4))
    with pytest.raises(exc, match=r"map 'gen_in': " + msg):
        m[0] = value
    assert m.lookup(bytes(4)) == before


def test_bad_flat_values_name_the_field(co):
    m = co.maps["flat_in"]
    m[0] = {"a": 3}
    before = m.lookup(bytes(4))
    for value, exc, msg in [
            ({"name": "1234567"}, ValueError, r"value\.name: 7 bytes do not fit char\[6\]"),
            ({"bools": [1, 2, 3, 4]}, ValueError, r"value\.bools: 4 elements do not fit"),
            ({"modes": ["NOPE"]}, ValueError, r"value\.modes\[0\]: 'NOPE' is not an enum"),
            ({"pairs": [(1, 2, 3)]}, TypeError, r"value\.pairs\[0\]: 3 values for pair"),
            ({"s": [40000]}, ValueError, r"value\.s\[0\]: 40000 is out of range for short"),
            ({"d": "x"}, TypeError, r"value\.d: expected float for double, got str"),
            ({"a": None}, TypeError, r"value\.a: expected int for unsigned char, got NoneType")]:
        with pytest.raises(exc, match=r"map 'flat_in': " + msg):
            m[0] = value
    assert m.lookup(bytes(4)) == before
    co.programs["readback"].test_run(ctx=bytes(8), repeat=0)
    assert _rb(co, 60) == 3


def test_members_by_name_and_values_of_another_object(co):
    """``v["name"]`` gives the member the kernel wrote; a value of the same C type
    decoded from another load of the object (another BTF, another class) is equal
    field by field, and unequal when a field differs or the type is another."""
    g = co.maps["gen_out"][0]
    assert (g["tag"], g["sbytes"], g["_anon5"].af) == (0x5A, b"\x80\x7f\x00\x00", 2.5)
    with pytest.raises(KeyError, match="gen has no member 'nope'"):
        g["nope"]
    # struct pair from a C declaration: another BTF, another class
    Pair = as_codec("struct pair { unsigned short lo; unsigned short hi; }").cls
    assert Pair is not co.btf["pair"].pytype
    keys = sorted(co.maps["by_pair"], key=lambda k: k.lo)
    assert keys[1] == Pair(1, 0xA001) and not keys[1] != Pair(1, 0xA001)
    assert keys[1] != Pair(1, 0xA002) and keys[1] != Pair(2, 0xA001)
    assert co.maps["by_pair"][Pair(2, 0xA002)] == 4  # and it is a key of the map
    Other = as_codec("struct pair { unsigned short lo; unsigned short hx; }").cls
    assert keys[1] != Other(1, 0xA001)
    assert not keys[1] == co.btf["u"].pytype(keys[1])  # a union holding that pair
    f = co.maps["flat_out"][0]
    assert f.pairs[0] == Pair(1, 2) and f.pairs == [Pair(1, 2), Pair(65535, 0)]


def test_the_unchecked_fast_encoder_writes_what_the_kernel_reads(co):
    """``fast_encode`` (the generated encoder maps use before the validating one) gives
    the bytes the program then reads, for a flat struct with arrays of bools, enums,
    chars and structs: written raw, read back field by field."""
    fc = co.btf["flat"].codec
    Pair = co.btf["pair"].pytype
    value = {"a": 77, "bools": [True, True, False], "modes": [co.btf["mode"].codec.enum.M_ON, 3],
             "name": "fast", "pairs": [Pair(5, 6), Pair(7, 8)], "s": [-32768, 32767],
             "d": 2.5, "tail": 1}
    assert fc.fast_encode is not None
    raw = fc.fast_encode(value)
    co.maps["flat_in"].update(bytes(4), raw)
    co.programs["readback"].test_run(ctx=bytes(8), repeat=0)
    got = [_rb(co, i) for i in range(60, 71)]
    assert got[:4] == [77, 0b011, 1, 3]
    assert got[4] == int.from_bytes(b"fast", "little")
    assert got[5:7] == [0x00060005, 0x00080007]
    assert [_s64(x) for x in got[7:9]] == [-32768, 32767]
    assert struct.unpack("<d", struct.pack("<Q", got[9]))[0] == 2.5 and got[10] == 1
    # short arrays are padded with zeros, as the validating encoder pads them
    raw = fc.fast_encode(fc.cls(a=5, bools=[True], modes=[2], pairs=[(9, 9)], s=(1,)))
    co.maps["flat_in"].update(bytes(4), raw)
    co.programs["readback"].test_run(ctx=bytes(8), repeat=0)
    got = [_rb(co, i) for i in range(60, 71)]
    assert got[:4] == [5, 1, 2, 0] and got[5:7] == [0x00090009, 0]
    assert [_s64(x) for x in got[7:9]] == [1, 0] and got[4] == 0
    for bad in ({"bools": ["x"]}, {"modes": ["M_ON"]}, {"name": 5}, {"s": [1, 2, 3]}):
        with pytest.raises(Exception):  # noqa: B017 - any: encode() explains
            fc.fast_encode(bad)


def test_ipv6_lpm_keys_both_ways(co):
    """IPv6 LPM trie keys: the prefixes ``fill`` inserted decode as networks; prefixes
    written from Python are the ones the program's longest-prefix lookups find."""
    import ipaddress

    r = co.maps["routes6"]
    co.programs["lpm_fill"].test_run(bytes(64))
    net = ipaddress.ip_network
    assert dict(r.items()) == {net("2001:db8::/32"): 1, net("::1/128"): 2}
    assert r.key_type.name == "lpm_key_ipv6"
    r[net("fe80::/10")] = 3
    r["2001:db8:1::/48"] = 4
    r[ipaddress.ip_address("2001:db8:1::5")] = 5  # a /128 host
    co.programs["lpm_probe"].test_run(bytes(64))
    assert (_rb(co, 50), _rb(co, 51)) == (3, 5)
    del r["2001:db8:1::5/128"]
    co.programs["lpm_probe"].test_run(bytes(64))
    assert _rb(co, 51) == 4
    raw = sorted(r.keys_raw())
    assert struct.pack("<I", 10) + bytes([0xFE, 0x80]) + bytes(14) in raw
    assert struct.pack("<I", 48) + bytes.fromhex("20010db80001") + bytes(10) in raw
    with pytest.raises(ValueError, match="map 'routes6': key: 10.0.0.0/8 is IPv4, the map's "
                                         "keys are IPv6"):
        r["10.0.0.0/8"] = 1
    with pytest.raises(ValueError, match="map 'routes6': key: .*does not appear to be"):
        r["2001:zz::/16"] = 1
    with pytest.raises(TypeError, match="map 'routes6': key: expected an IP network, address "
                                        "or str, got int"):
        r[5] = 1
    for k in [k for k in r.keys() if k.prefixlen in (10, 48)]:
        del r[k]


def test_stack_trace_values_are_checked_before_the_kernel_refuses_them(bpf_obj):
    """Stack trace maps are written by the kernel only: a well-formed list of addresses
    reaches the kernel (which refuses it: EINVAL), a malformed one is refused first,
    naming the map."""
    with pybpf.load(bpf_obj("typed_maps")) as obj:
        s = obj.maps["stacks"]
        n = s.value_size // 8
        with pytest.raises(pybpf.MapError, match="map 'stacks': update failed: .*EINVAL"):
            s[1] = [1, 2]
        with pytest.raises(TypeError, match=r"map 'stacks': value: expected a list of "
                                            r"addresses, got str"):
            s[1] = "x"
        with pytest.raises(TypeError, match="expected a list of addresses, got list"):
            s[1] = [1, "2"]
        with pytest.raises(ValueError, match=rf"map 'stacks': value: {n + 1} addresses do not "
                                             rf"fit stack\[{n}\]"):
            s[1] = [1] * (n + 1)


def test_clashing_member_names_and_bool_globals(co):
    """C members ``in``, ``in_`` and ``_fields`` become the attributes ``in_``, ``in__``
    and ``_fields_`` (each its own value, as ``fill`` wrote them); a bool global written
    from Python is what the program tests."""
    co.bss.g_flag = True
    co.programs["fill"].test_run(ctx=bytes(8), repeat=0)
    c = co.bss.g_clash
    assert c._fields == ("in_", "in__", "_fields_")
    assert (c.in_, c.in__, c._fields_) == (1, 2, 3)
    assert (c["in"], c["in_"], c["_fields"]) == (1, 2, 3)
    assert plain(c) == {"in": 1, "in_": 2, "_fields": 3}
    assert co.bss.g_flag_seen == 0xF1
    co.bss.g_flag = False
    co.programs["fill"].test_run(ctx=bytes(8), repeat=0)
    assert co.bss.g_flag_seen == 0xF0 and co.bss.g_flag is False
    with pytest.raises(TypeError, match="g_flag: expected bool, got str"):
        co.bss.g_flag = "yes"


def test_unions_of_another_btf_and_partly_built_subclasses_reach_the_kernel(co):
    """A ``union u`` from a C declaration (another BTF: another class) is written as its
    chosen member, or as its bytes when decoded and unchanged; an instance of a user's
    subclass whose ``__init__`` set one member writes the others as zero."""
    U = as_codec("union u { struct pair { unsigned short lo; unsigned short hi; } parts; "
                 "unsigned int whole; signed char sb[4]; }").cls
    assert U is not co.btf["u"].pytype
    co.maps["gen_in"][0] = {"un": U(whole=0x0A0B0C0D), "uns": [U._from_bytes(b"\x04\x03\x02\x01"),
                                                                  U(parts=(1, 2))]}
    got = _readback(co)
    assert got[25:28] == [0x0A0B0C0D, 0x01020304, 0x00020001]

    class MyBf(co.btf["bf"].pytype):
        __slots__ = ()

        def __init__(self, s3: int) -> None:  # no super().__init__: other slots unset
            self.s3 = s3

    co.maps["gen_in"][0] = {"b": MyBf(-2), "bfs": [MyBf(3)]}
    got = _readback(co)
    assert got[1:9] == [(-2) & M64] + [0] * 7
    assert got[9:17] == [3] + [0] * 7
