"""Map views (keys/values/items like dict's) and the fd-valued and local-storage map
kinds: xskmap with a real AF_XDP socket, sk_storage on a loopback TCP connection,
cgrp_storage keyed by a cgroup fd, inode_storage (tests/bpf/mapkinds_more.bpf.c)."""

from __future__ import annotations

import collections.abc as cabc

import pytest

import pybpf
from pybpf.mapkinds import MapItemsView, MapKeysView, MapValuesView

PKT = bytes(64)


@pytest.fixture
def tm(bpf_obj):
    obj = pybpf.load(bpf_obj("typed_maps"))
    yield obj
    obj.close()


# --- keys()/values()/items() are views -------------------------------------------------

def test_views_are_live_reiterable_and_sized(tm):
    m = tm.maps["vals"]
    Val = tm.btf["val"].pytype
    ks, vs, its = m.keys(), m.values(), m.items()
    assert isinstance(ks, MapKeysView) and isinstance(ks, cabc.KeysView)
    assert isinstance(vs, MapValuesView) and isinstance(vs, cabc.ValuesView)
    assert isinstance(its, MapItemsView) and isinstance(its, cabc.ItemsView)
    assert len(ks) == len(vs) == len(its) == 0 and list(ks) == [] and 1 not in ks
    m[1] = Val(count=5)
    tm.programs["derive"].test_run(PKT)  # the kernel adds key 2 = f(key 1)
    # the views made before the inserts see them (live, like dict views) ...
    assert len(ks) == 2 and sorted(ks) == [1, 2] and 2 in ks and 3 not in ks
    # ... and can be iterated again and again (each iteration walks the map afresh)
    assert sorted(ks) == sorted(ks) == [1, 2]
    assert sorted(v.count for v in vs) == [5, 10] and Val(count=5) in vs
    assert dict(its) == {1: Val(count=5), 2: m[2]} and (1, Val(count=5)) in its
    assert (1, Val(count=6)) not in its and (9, Val()) not in its and "x" not in its
    # set behaviour of keys views, as for dict.keys()
    assert ks == {1, 2} and ks & {2, 3} == {2} and ks | {7} == {1, 2, 7} and ks - {1} == {2}
    assert isinstance(ks & {2}, set) and ks.isdisjoint({8, 9})
    del m[1]
    assert list(ks) == [2] and len(its) == 1
    assert repr(ks) == "MapKeysView(<map 'vals' (hash)>)"


def test_items_view_of_a_big_map_uses_batches(tm):
    m = tm.maps["churn"]  # u32 -> u64 hash, 4096 entries
    m.update({i: i * 3 for i in range(3000)})
    calls = []
    batches = m._batches

    def counting(**kw):
        it = batches(**kw)
        calls.append(kw)
        return it

    m._batches = counting  # spy on our own walk: which path the view takes
    items = m.items()
    assert sum(1 for _ in items) == 3000 and len(calls) == 1
    got = dict(items)  # a second pass over the same view, batched again
    assert len(calls) == 2 and got == {i: i * 3 for i in range(3000)}
    assert sum(m.values()) == 3 * sum(range(3000)) and len(calls) == 3
    assert len(m.keys()) == 3000


def test_views_of_sparse_and_keyless_kinds(tm):
    with pybpf.create_map("cpumap", 4, 4, 2, name="pyviewcpu") as cm:
        cm[1] = 256
        assert list(cm.keys()) == [1] and list(cm.items()) == [(1, 256)]
        assert list(cm.values()) == [256] and 1 in cm.keys() and 0 not in cm.keys()
    with pytest.raises(TypeError, match="has no keys"):
        tm.maps["fifo"].keys()
    with pytest.raises(TypeError, match="cannot be iterated"):
        tm.maps["tstore"].items()
