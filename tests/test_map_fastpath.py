"""The typed maps' single-key hot path (pybpf.mapkinds.TypedMap._make_ops): integer keys
passed by value to C, other keys through the unchecked encoder, and everything either
rejects through the validating encoders, with the same results and messages.

Keys written by one path are read by the others (and by the kernel in
test_typed_maps.py), so a byte-order or size mix-up between them shows up here.
"""

from __future__ import annotations

import enum
import struct

import pytest

import pybpf
from pybpf import MapError


@pytest.fixture
def tm():
    from conftest import compile_test_bpf

    obj = pybpf.load(compile_test_bpf("typed_maps"))
    yield obj
    obj.close()


def test_int_keys_by_value_agree_with_encoded_keys(tm):
    vals, lru = tm.maps["vals"], tm.maps["lru"]  # __u32 and __u64 keys
    Val = tm.btf["val"].pytype
    vals[0xDEADBEEF] = Val(count=1, pid=7)
    lru[0x0102030405060708] = 5
    # the raw (encoded) paths see the same key bytes the C helpers wrote
    assert list(vals.keys_raw()) == [struct.pack("<I", 0xDEADBEEF)]
    assert vals.lookup(struct.pack("<I", 0xDEADBEEF)) == bytes(Val(count=1, pid=7))
    assert lru.lookup(struct.pack("<Q", 0x0102030405060708)) == struct.pack("<I", 5)
    # and the other way round: raw writes, by-value reads, batch decode
    lru.update(struct.pack("<Q", 2**64 - 1), struct.pack("<I", 9))
    assert lru[2**64 - 1] == 9 and 2**64 - 1 in lru and lru.get(2**64 - 1) == 9
    assert dict(lru.items()) == {0x0102030405060708: 5, 2**64 - 1: 9}
    del lru[2**64 - 1]
    assert lru.lookup(struct.pack("<Q", 2**64 - 1)) is None


def test_int_like_keys(tm):
    class Color(enum.IntEnum):
        RED = 3

    class Index:
        def __index__(self) -> int:
            return 4

    m = tm.maps["vals"]
    m[Color.RED] = {"count": 3}
    m[True] = {"count": 1}
    m[Index()] = {"count": 4}  # cffi refuses it; the encoder's struct call takes it
    assert sorted(m) == [1, 3, 4]
    assert m[3].count == 3 and m[Index()].count == 4 and Color.RED in m
    del m[Index()]
    with pytest.raises(KeyError):
        del m[Index()]


@pytest.mark.parametrize("key, exc, msg", [
    (2**32, ValueError, "map 'vals': key: 4294967296 is out of range for unsigned int "
                        "[0, 4294967295]"),
    (-1, ValueError, "map 'vals': key: -1 is out of range for unsigned int [0, 4294967295]"),
    (1.5, TypeError, "map 'vals': key: expected int for unsigned int, got float 1.5"),
    ("x", TypeError, "map 'vals': key: expected int for unsigned int, got str 'x'"),
    (b"\x01", TypeError, "map 'vals': key: expected int for unsigned int, got bytes"),
])
def test_bad_keys_are_explained_by_every_operation(tm, key, exc, msg):
    m = tm.maps["vals"]
    ops = [lambda: m[key], lambda: m.get(key), lambda: key in m,
           lambda: m.__setitem__(key, {"count": 1}), lambda: m.__delitem__(key)]
    for op in ops:
        with pytest.raises(exc) as e:
            op()
        assert str(e.value).startswith(msg)
    assert len(m) == 0  # nothing reached the kernel


def test_bad_values_are_explained(tm):
    m = tm.maps["vals"]
    with pytest.raises(ValueError, match=r"map 'vals': value\.count: -1 is out of range"):
        m[1] = {"count": -1}
    with pytest.raises(TypeError, match="map 'vals': value: expected val \\(instance, dict or "
                                        "tuple\\), got int"):
        m[1] = 5
    with pytest.raises(ValueError, match="map 'lru': key: 18446744073709551616 is out of range"):
        tm.maps["lru"][2**64] = 1
    assert 1 not in m


def test_kernel_errors_through_the_fast_path(tm):
    m = tm.maps["vals"]  # max_entries 1024
    m.update({i: {"count": i} for i in range(1024)})
    with pytest.raises(MapError, match="map 'vals' is full \\(1024 entries\\)"):
        m[5000] = {"count": 1}
    with pytest.raises(KeyError):
        m[5000]
    assert m.get(5000, "absent") == "absent" and 5000 not in m
    results = tm.maps["results"]  # array of 16: an index past the end is absent
    with pytest.raises(KeyError):
        results[16]


def test_buffers_are_not_shared_between_values(tm):
    m = tm.maps["vals"]
    m.update({1: {"count": 1}, 2: {"count": 2}})
    a, b = m[1], m[2]
    raw = m.lookup(struct.pack("<I", 1))
    m[1] = {"count": 100}
    # values already returned are copies, not views of a reused buffer
    assert (a.count, b.count, m[1].count) == (1, 2, 100)
    assert raw is not None and struct.unpack_from("<Q", raw)[0] == 1


def test_fast_path_dropped_on_close(bpf_obj):
    obj = pybpf.load(bpf_obj("typed_maps"))
    m = obj.maps["vals"]
    m[1] = {"count": 1}
    assert m[1].count == 1
    obj.close()
    for op in (lambda: m[1], lambda: m.__setitem__(1, {"count": 1}), lambda: m.__delitem__(1),
               lambda: 1 in m, lambda: m.lookup(b"\x01\0\0\0")):
        with pytest.raises(pybpf.ClosedError):
            op()


def test_cached_state_keeps_no_reference_cycle(tm):
    import gc
    import os
    import weakref

    pidfd = os.pidfd_open(os.getpid())
    gc.disable()
    try:
        # a kind with its own key encoder (fds): the cached state refers to it weakly
        m = pybpf.Map.from_id(tm.maps["tstore"].id)
        m[pidfd] = {"count": 3}
        assert m[pidfd].count == 3 and tm.maps["tstore"][pidfd].count == 3
        with pytest.raises(TypeError, match="the key is an fd"):
            m["x"]
        fd, ref = m.fd, weakref.ref(m)
        del m
        # freed by reference counting alone: its fd is closed at once, not at a GC pass
        assert ref() is None and not os.path.exists(f"/proc/self/fd/{fd}")
    finally:
        gc.enable()
        os.close(pidfd)


def test_raw_lookup_in_c_takes_what_map_lookup_takes(tm):
    """m.lookup(key) of a typed map is one C call (MapBase.lookup); every other form
    reaches Map.lookup, with its errors naming the map."""
    m = tm.maps["vals"]
    m[7] = {"count": 41}
    k = struct.pack("<I", 7)
    for got in (m.lookup(k), m.lookup(key=k), m.lookup(k, flags=0), m.lookup(flags=0, key=k)):
        assert got is not None and struct.unpack_from("<Q", got)[0] == 41
    assert m.lookup(struct.pack("<I", 8)) is None
    with pytest.raises(pybpf.MapValueError, match="map 'vals': key is 1 bytes"):
        m.lookup(b"x")
    with pytest.raises(pybpf.MapTypeError, match="map 'vals': raw key must be bytes"):
        m.lookup("abcd")  # type: ignore[arg-type]
    with pytest.raises(MapError, match="map 'vals': lookup failed: .*EINVAL"):
        m.lookup(k, flags=4)  # BPF_F_LOCK on a map without a spin lock: Map.lookup's path
    for args, kw in (((), {}), ((k, k), {}), ((k,), {"flag": 0}), ((k,), {"key": k})):
        with pytest.raises(TypeError, match="lookup"):
            m.lookup(*args, **kw)
