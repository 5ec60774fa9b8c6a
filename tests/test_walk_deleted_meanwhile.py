"""Walks that meet keys another deleter removed meanwhile, made deterministic by the
kernel: tests/bpf/partner_delete.bpf.c deletes key K ^ 1 whenever this process deletes
key K, so half of the keys a walk listed are gone by the time it reaches them. The
expected result is what the program did (its ``partner_deletes`` count) and what the
test wrote, read back as raw bytes."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from conftest import loaded_for_me

import pybpf
from pybpf.errors import MapKeyError

pytestmark = pytest.mark.kernel

PAIRS = 16  # keys 0..31: partners 2i and 2i+1


@pytest.fixture
def pd() -> Iterator[pybpf.Object]:
    with loaded_for_me("partner_delete") as obj:
        yield obj


def _fill(m: pybpf.Map) -> None:
    for k in range(2 * PAIRS):
        m.update(struct.pack("<I", k), struct.pack("<Q", 1000 + k))


def _left(m: pybpf.Map) -> list[int]:
    return [k for k in range(2 * PAIRS) if m.lookup(struct.pack("<I", k)) is not None]


def test_clear_goes_on_past_keys_deleted_meanwhile(pd) -> None:
    m = pd.maps["pairs"]
    _fill(m)
    before = pd.bss.partner_deletes
    m.clear()  # each delete makes the program delete the partner: the walk's list is stale
    assert _left(m) == []
    assert pd.bss.partner_deletes - before == PAIRS  # one partner of every pair


def test_del_of_a_key_deleted_meanwhile_is_a_key_error(pd) -> None:
    m = pd.maps["pairs"]
    _fill(m)
    del m[4]  # the program deletes 5 first
    assert _left(m) == [k for k in range(2 * PAIRS) if k not in (4, 5)]
    with pytest.raises(KeyError):
        del m[5]
    with pytest.raises(MapKeyError) as ei:
        del m[5]
    assert ei.value.errno == 2 and "pairs" in str(ei.value)
