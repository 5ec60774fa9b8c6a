"""The single-key operations in C (pybpf/_fastpath.c, used by TypedMap for m[k], m[k] = v,
del m[k], get, in and raw lookup): values decoded and encoded there must be exactly
what the kernel side wrote and reads, and whatever C does not take must go through
the validating Python path with its errors, before any syscall.
"""

from __future__ import annotations

import struct

import pytest

import pybpf
from pybpf import _fastpath

PKT = bytes(64)
EXTREMES = dict(u8=255, s8=-128, u16=65535, s16=-32768, u32=2**32 - 1, s32=-2**31,
                u64=2**64 - 1, s64=-2**63, flag=True, f32=1.5, f64=-2.25)


@pytest.fixture
def mo(bpf_obj):
    with pybpf.load(bpf_obj("mapops")) as obj:
        yield obj


def test_c_path_is_used(mo):
    scal, cnt = mo.maps["scal"], mo.maps["cnt"]
    assert 1 not in scal and cnt.get(7) is None
    assert isinstance(scal._ops, _fastpath.MapOps) and isinstance(cnt._ops, _fastpath.MapOps)


def test_decodes_what_the_kernel_wrote(mo):
    scal, cnt = mo.maps["scal"], mo.maps["cnt"]
    assert mo.programs["fill"].test_run(PKT).retval == 2  # XDP_PASS
    v = scal[1]
    assert type(v) is mo.btf["scal"].pytype
    for name, want in EXTREMES.items():
        got = getattr(v, name)
        assert got == want and type(got) is type(want), (name, got, want)
    color = mo.btf["mo_color"].pytype
    assert v.color is color.MO_BLUE
    assert cnt[7] == -1234567890123 and cnt.get(7) == -1234567890123
    # the same bytes through the Python member-by-member decoder
    raw = scal.lookup(struct.pack("<I", 1))
    assert raw is not None
    assert scal.value_type._decode_generic(raw, 0) == v
    # an enum value without a member stays an int
    raw = bytearray(raw)
    struct.pack_into("<I", raw, scal.value_type.members[9].byte_off, 77)
    scal.update(struct.pack("<I", 3), bytes(raw))
    assert scal[3].color == 77 and type(scal[3].color) is int


def test_kernel_reads_what_c_encoded(mo):
    scal, back = mo.maps["scal"], mo.maps["back"]
    Scal = mo.btf["scal"].pytype
    scal[2] = Scal(color="MO_RED", **EXTREMES)  # instance: C writes the slots
    assert mo.programs["readback"].test_run(PKT).retval == 2
    got = [back[i] for i in range(12)]
    ints = [EXTREMES[n] for n in ("u8", "s8", "u16", "s16", "u32", "s32", "u64", "s64")]
    assert got[:8] == [x % 2**64 for x in ints]
    assert got[8:10] == [1, 1]
    assert got[10] == struct.unpack("<I", struct.pack("<f", 1.5))[0]
    assert got[11] == struct.unpack("<Q", struct.pack("<d", -2.25))[0]


def test_other_value_forms_fall_back(mo):
    scal, cnt = mo.maps["scal"], mo.maps["cnt"]
    scal[4] = {"u8": 9, "color": "MO_BLUE"}  # dict with an enum by name
    assert scal[4].u8 == 9 and scal[4].color == 300
    scal[5] = (1, -1)  # tuple
    assert (scal[5].u8, scal[5].s8) == (1, -1)
    cnt[8] = True  # bool is an int
    assert cnt[8] == 1


@pytest.mark.parametrize("field,value,exc,msg", [
    ("u8", 256, ValueError, "out of range"),
    ("s8", -129, ValueError, "out of range"),
    ("u32", -1, ValueError, "out of range"),
    ("u64", 2**64, ValueError, "out of range"),
    ("s64", 2**63, ValueError, "out of range"),
    ("u16", "x", TypeError, "expected int"),
    ("f32", 1e300, ValueError, "does not fit"),
    ("color", "MO_GREEN", ValueError, "not an enumerator"),
])
def test_bad_values_name_map_and_field_and_write_nothing(mo, field, value, exc, msg):
    scal = mo.maps["scal"]
    Scal = mo.btf["scal"].pytype
    scal[6] = Scal(u8=1)
    bad = Scal(u8=2)
    object.__setattr__(bad, field, value)  # an instance with a bad slot
    for v in (bad, {field: value}):
        with pytest.raises(exc, match=rf"^map 'scal': value\.{field}: .*{msg}"):
            scal[6] = v
    assert scal[6].u8 == 1  # untouched


def test_keys(mo):
    scal, cnt = mo.maps["scal"], mo.maps["cnt"]
    with pytest.raises(KeyError) as ei:
        scal[12345]
    assert ei.value.args == (12345,)
    with pytest.raises(KeyError):
        del cnt[2**64 - 1]
    for bad, exc in ((-1, ValueError), (2**32, ValueError), ("1", TypeError),
                     (b"\1\0\0\0", TypeError), (1.0, TypeError)):
        with pytest.raises(exc, match="map 'scal'"):
            scal[bad]
    with pytest.raises(TypeError, match="map 'scal'"):
        scal.get("1", "default")  # a bad key is an error, not a miss
    with pytest.raises(ValueError, match="map 'scal'.*4"):
        scal.lookup(b"\1\0\0")  # raw: key bytes of the wrong size
    assert scal.lookup(b"\1\0\0\0") is None
    with pytest.raises(TypeError, match="map 'cnt'"):
        "1" in cnt  # noqa: B015


def test_errors_other_than_enoent_name_the_map(mo):
    arr = mo.maps["back"]  # array of 12: index 12 does not exist
    with pytest.raises(KeyError):
        arr[12]
    with pytest.raises(pybpf.MapError, match="map 'back'"):
        arr[12] = 1
    with pytest.raises(KeyError):
        del mo.maps["scal"][999]


def test_closed_and_retyped(mo, bpf_obj):
    cnt = mo.maps["cnt"]
    cnt[1] = 5
    cnt.set_types(value="u64")  # the C state is rebuilt for the new types
    assert cnt._ops is None
    assert cnt[1] == 5 and isinstance(cnt._ops, _fastpath.MapOps)
    cnt[2] = 2**64 - 1
    assert cnt[2] == 2**64 - 1
    mo.close()
    with pytest.raises(pybpf.ClosedError):
        cnt[1]


@pytest.mark.parametrize("kind", ["hash", "percpu_hash", "lru_hash"])
def test_lookup_batch_raw(kind):
    """Raw chunks of a filled map: every entry once, keys and values as written, then
    all of them taken by the delete form."""
    from pybpf import create_map, possible_cpus

    n, vs = 10_000, 8
    cap = 2 * n if kind == "lru_hash" else n  # an LRU evicts before it is full
    with create_map(kind, 4, vs, cap, name="rawb", key="u32", value="u64") as m:
        ncpu = possible_cpus() if kind.startswith("percpu") else 1
        assert m.update_batch([(i, [i * 3] * ncpu if ncpu > 1 else i * 3)
                               for i in range(n)])
        got: dict[int, int] = {}
        sizes = []
        for b in m.lookup_batch(chunk=1000):
            keys, vals, c = b
            assert len(keys) == 4 * c and len(vals) == vs * ncpu * c
            ks = struct.unpack(f"<{c}I", keys)
            vv = struct.unpack(f"<{c * ncpu}Q", vals)[::ncpu]
            got.update(zip(ks, vv))
            sizes.append(c)
        assert got == {i: i * 3 for i in range(n)} and sum(sizes) == n
        assert max(sizes) <= 1000
        with pytest.raises(ValueError, match="map 'rawb': chunk"):
            next(m.lookup_batch(chunk=0))
        taken = sum(b.count for b in m.lookup_batch(chunk=4096, delete=True))
        assert taken == n and len(m) == 0


def test_lookup_batch_walk_fallback(bpf_obj):
    """A map type without batch ops (LPM trie) is walked key by key into chunks."""
    with pybpf.load(bpf_obj("typed_maps")) as obj:
        routes = obj.maps["routes"]
        import ipaddress
        nets = [ipaddress.ip_network(f"10.{i}.0.0/16") for i in range(5)]
        for i, net in enumerate(nets):
            routes[net] = i
        chunks = list(routes.lookup_batch(chunk=2))
        assert [b.count for b in chunks] == [2, 2, 1]
        ks = routes.key_size
        keys = {bytes(b.keys[j * ks:(j + 1) * ks]) for b in chunks for j in range(b.count)}
        assert keys == {routes.key_type.encode(net) for net in nets}


def test_items_decoded_in_c_match_single_lookups(mo):
    """items() of a struct map decodes each batch in C (the codec's Decoder): the
    same values as single lookups, enum members and extremes included."""
    scal = mo.maps["scal"]
    Scal = mo.btf["scal"].pytype
    assert mo.programs["fill"].test_run(PKT).retval == 2
    for i in range(2, 12):
        scal[i] = Scal(u8=i, s64=-i, color=1 if i % 2 else 300, f64=i / 4)
    items = dict(scal.items())
    assert sorted(items) == list(range(1, 12))
    for k, v in items.items():
        assert v == scal[k] and type(v) is Scal and type(v.color) is type(scal[k].color)
    dec = scal.value_type.cdecoder  # the struct codec decodes in C (any buffer)
    size = Scal._size
    raw = bytes(Scal(u8=7, color=300)) * 3
    assert [v.u8 for v in dec.decode_array(raw, 3)] == [7, 7, 7]
    assert dec.decode(memoryview(raw), size).color is mo.btf["mo_color"].pytype.MO_BLUE
    assert dec.decode_array(raw, 1, size, 2 * size)[0] == Scal(u8=7, color=300)
    with pytest.raises(ValueError, match=f"scal: need {2 * size} bytes, got {size}"):
        dec.decode_array(bytes(Scal()), 2)
    with pytest.raises(ValueError, match=f"scal: need {size + 1} bytes"):
        dec.decode(raw[:size], 1)
    with pytest.raises(ValueError, match="offset must be >= 0"):
        dec.decode(raw, -1)
    with pytest.raises(ValueError, match="bad stride"):
        dec.decode_array(raw, 2, 1)


def test_kinds_with_their_own_codecs_go_through_c_too(bpf_obj):
    """Per-CPU values (the kind's _dval/_eval) and fd keys (LocalStorageMap._ekey) are
    converted by the kind's methods, called from the C operations; what they reject
    still comes back with the validating path's message."""
    import os

    from pybpf import possible_cpus

    ncpu = possible_cpus()
    with pybpf.load(bpf_obj("typed_maps")) as obj:
        pc, ts = obj.maps["pc_hash"], obj.maps["tstore"]
        Val = obj.btf["val"].pytype
        pc[3] = [Val(count=i) for i in range(ncpu)]
        assert isinstance(pc._ops, _fastpath.MapOps)
        assert [v.count for v in pc[3]] == list(range(ncpu)) and pc.sum(3).count == \
            sum(range(ncpu))
        assert 3 in pc and pc.get(4) is None
        with pytest.raises(ValueError, match=f"map 'pc_hash': per-CPU value needs {ncpu}"):
            pc[3] = [Val()] * (ncpu + 1)
        with pytest.raises(TypeError, match=r"map 'pc_hash': value\[0\]"):
            pc[3] = ["x"] * ncpu
        assert [v.count for v in pc[3]] == list(range(ncpu))  # untouched
        del pc[3]
        assert 3 not in pc
        pidfd = os.pidfd_open(os.getpid())
        try:
            ts[pidfd] = {"count": 5}
            assert isinstance(ts._ops, _fastpath.MapOps)
            assert ts[pidfd].count == 5 and pidfd in ts
            del ts[pidfd]
            assert ts.get(pidfd) is None
        finally:
            os.close(pidfd)


def test_record_batches_decode_in_one_c_call(mo):
    """RecordBatch.decoded() with a BTF struct decoder: the whole fixed-size batch in
    one Decoder.decode_array call, same values as record by record; records shorter
    than the struct still raise, naming it."""
    from pybpf import RecordBatch
    from pybpf._events import btf_decoder

    Scal = mo.btf["scal"].pytype
    dec = btf_decoder(mo.btf, "scal")
    recs = [bytes(Scal(u32=i, color=300, f64=i / 2)) + b"\xff" * 4 for i in range(50)]
    batch = RecordBatch(b"".join(recs), None, None, None, n=50, fixed=len(recs[0]),
                        decoders=[dec])
    got = batch.decoded()
    assert got == [dec(r) for r in recs] and [v.u32 for v in got] == list(range(50))
    short = RecordBatch(b"\0" * 30, None, None, None, n=3, fixed=10, decoders=[dec])
    with pytest.raises(ValueError, match=f"scal: need {Scal._size} bytes, got 10"):
        short.decoded()
