"""The one table of map-type facts (pybpf/_maptypes.py): every module reads it, and
``bool(m) == (len(m) > 0)`` holds for every kind, empty and with one entry the kernel
accepted (or both raise the same TypeError), by construction.
"""

from __future__ import annotations

import os
import socket

import pytest

import pybpf
from pybpf import _maptypes, codegen, mapkinds, maps
from pybpf._validate import map_prealloc_bytes

# (type, key size, value size, flags, how to add one entry or None)
NO_PREALLOC = 1


def _fill_prog(m: pybpf.Map, env: dict) -> None:
    m[0] = env["prog"]


def _fill_inner(m: pybpf.Map, env: dict) -> None:
    m[0] = env["inner"]


def _fill_sock(m: pybpf.Map, env: dict) -> None:
    m[0] = env["sock"]


CASES = {
    "hash": (4, 8, 0, lambda m, env: m.__setitem__(1, 5)),
    "lru_hash": (4, 8, 0, lambda m, env: m.__setitem__(1, 5)),
    "percpu_hash": (4, 8, 0, lambda m, env: m.__setitem__(1, 5)),
    "lru_percpu_hash": (4, 8, 0, lambda m, env: m.__setitem__(1, 5)),
    "array": (4, 8, 0, None),
    "percpu_array": (4, 8, 0, None),
    "lpm_trie": (8, 4, NO_PREALLOC, lambda m, env: m.__setitem__("10.0.0.0/8", 1)),
    "prog_array": (4, 4, 0, _fill_prog),
    "array_of_maps": (4, 4, 0, _fill_inner),
    "hash_of_maps": (4, 4, 0, _fill_inner),
    "stack_trace": (4, 64, 0, None),
    "devmap": (4, 4, 0, lambda m, env: m.__setitem__(0, 1)),  # lo
    "devmap_hash": (4, 4, 0, lambda m, env: m.__setitem__(0, 1)),
    "cpumap": (4, 4, 0, lambda m, env: m.__setitem__(0, 64)),
    "sockmap": (4, 8, 0, _fill_sock),
    "sockhash": (4, 8, 0, _fill_sock),
    "xskmap": (4, 4, 0, None),
    "queue": (0, 4, 0, None),
    "stack": (0, 4, 0, None),
    "bloom_filter": (0, 4, 0, None),
}
# maps created without BTF take bytes: these kinds get int keys and values
TYPES = {
    **{t: {"key": "u32", "value": "u64"} for t in
       ("hash", "lru_hash", "percpu_hash", "lru_percpu_hash")},
    **{t: {"key": "u32"} for t in ("hash_of_maps", "devmap_hash", "sockhash")},
    "lpm_trie": {"value": "u32"},
}


def test_the_table_names_a_class_for_every_kind_and_the_modules_agree():
    for name, f in _maptypes.TABLE.items():
        cls = maps._kind_for(name)
        assert cls.__name__ == f.kind or (f.kind == "Map" and cls is maps.Map), name
        if f.kind != "Map":
            assert issubclass(cls, mapkinds.TypedMap), name
        assert (name in codegen._KEYLESS) == f.keyless
    # every typed kind the table names is exercised below, except the local storages
    # (which need a BTF value type and an fd of their kernel object)
    typed = {n for n, f in _maptypes.TABLE.items() if f.kind not in ("Map", "LocalStorageMap")}
    assert typed == set(CASES)
    assert _maptypes.facts("no_such_type").kind == "Map"
    assert map_prealloc_bytes("percpu_array", 4, 8, 10, 0, 4) == 10 * 8 * 4
    assert map_prealloc_bytes("devmap", 4, 4, 10, 0, 4) == 80
    assert not _maptypes.facts("ringbuf").dump and _maptypes.facts("hash").dump


def _bool_len(m: pybpf.Map) -> tuple[object, object]:
    def one(fn):  # type: ignore[no-untyped-def]
        try:
            return fn(m)
        except TypeError as e:
            return ("TypeError", str(e))
    return one(bool), one(len)


@pytest.mark.parametrize("type_name", sorted(CASES))
def test_bool_is_len_above_zero_for_every_kind(type_name, bpf_obj):
    ks, vs, flags, fill = CASES[type_name]
    with pybpf.load(bpf_obj("values_c")) as obj:
        inner = pybpf.create_map("array", 4, 4, 1, name=f"inner{os.getpid()}")
        kw = {"inner_map": inner} if type_name.endswith("_of_maps") else {}
        srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        srv.bind(("127.0.0.1", 0))
        env = {"prog": obj.programs["readback"], "inner": inner, "sock": srv}
        try:
            types = TYPES.get(type_name, {})
            m = pybpf.create_map(type_name, ks, vs, 4, flags=flags, **kw, **types)
            with m:
                b, n = _bool_len(m)
                if isinstance(n, tuple):  # a kind without a length: the same TypeError
                    assert b == n and n[0] == "TypeError", (type_name, b, n)
                    return
                assert b == (n > 0), (type_name, b, n)
                facts = _maptypes.facts(type_name)
                assert n == (4 if facts.length == "slots" else 0), (type_name, n)
                if fill is None:
                    return
                fill(m, env)
                b, n = _bool_len(m)
                assert (b, n) == (True, 1), (type_name, b, n)
        finally:
            srv.close()
            inner.close()
