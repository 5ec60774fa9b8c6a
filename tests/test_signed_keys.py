"""Signed integer keys (__s32, __s64) as the kernel wrote them (tests/bpf/signed_keys.bpf.c):
negative keys come back negative from every walk and lookup form, and a negative key
given in Python reaches the kernel as the same bits. The raw bytes are packed and
unpacked here, not by pybpf's codecs."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import pytest
from conftest import loaded_for_me

import pybpf

pytestmark = pytest.mark.kernel

S32 = [-1, -7, -2**31, 5]
S64 = [-1, -2**63, 3]


@pytest.fixture
def sk() -> Iterator[pybpf.Object]:
    with loaded_for_me("signed_keys") as obj:
        os.getppid()  # the program writes its keys
        yield obj


@pytest.mark.parametrize("name,keys,fmt,vfmt", [("s32k", S32, "<i", "<I"),
                                                ("s64k", S64, "<q", "<Q")])
def test_negative_keys_the_kernel_wrote(sk, name, keys, fmt, vfmt):
    m = sk.maps[name]
    bits = 8 * struct.calcsize(fmt)
    want = {k: k % 2**bits for k in keys}
    # the premise, raw: the kernel's keys are there as signed bytes
    raw = {struct.unpack(fmt, k)[0]: struct.unpack(vfmt, v)[0] for k, v in m.items_raw()}
    assert raw == want
    assert dict(m.items()) == want  # a batch walk
    assert sorted(m.keys()) == sorted(keys)
    assert dict(m.items_batched()) == want
    assert {k: m[k] for k in keys} == want  # lookups
    assert all(k in m for k in keys) and (keys[0] - 1) not in m


@pytest.mark.parametrize("name,fmt", [("s32k", "<i"), ("s64k", "<q")])
def test_negative_keys_from_python_reach_the_kernel(sk, name, fmt):
    m = sk.maps[name]
    m[-2] = 11
    assert m.lookup(struct.pack(fmt, -2)) is not None
    del m[-1]
    assert m.lookup(struct.pack(fmt, -1)) is None
    assert m.pop(-2) == 11 and m.lookup(struct.pack(fmt, -2)) is None


@pytest.mark.parametrize("name,bits,present", [("s32k", 32, -2**31), ("s64k", 64, -2**63)])
def test_keys_past_the_signed_range_are_refused_not_aliased(sk, name, bits, present):
    """2**31 has the bits of the kernel's key -2**31 (and 2**32 - 1 those of -1): a
    signed key type refuses them, naming the map and the range, instead of finding the
    negative key's value."""
    m = sk.maps[name]
    for bad in (2**(bits - 1), 2**bits - 1):
        with pytest.raises(pybpf.MapValueError, match=f"map '{name}'.*out of range"):
            m[bad]
        with pytest.raises(pybpf.MapValueError, match="out of range"):
            m[bad] = 1
        with pytest.raises(pybpf.MapValueError, match="out of range"):
            bad in m  # noqa: B015 - the lookup is what is tested
    assert m[present] == present % 2**bits and m[-1] == 2**bits - 1  # the kernel's, unchanged
