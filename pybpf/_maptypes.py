"""Every fact pybpf uses about a BPF map type, in one table: one record per type.

``maps`` (which class a map gets, per-CPU values), ``mapkinds`` (batch operations,
what ``len()`` and ``bool()`` count), ``_walk`` (how keys are walked), ``codegen``
(annotations) and ``_validate`` (the memory a map preallocates) all read :func:`facts`;
none keeps a set of type names of its own. A type missing here is a plain
:class:`pybpf.maps.Map` of raw bytes.

``length`` says what ``len(m)`` counts, and ``bool(m)`` is derived from it for every
kind (``bool(m) == (len(m) > 0)`` by construction):

* ``"keys"``: the keys present (a walk; ``bool`` stops at the first key);
* ``"slots"``: every slot is present (arrays): ``max_entries``;
* ``"filled"``: the filled slots of an array of fds or pointers (a walk with a lookup
  per slot; ``bool`` stops at the first filled one);
* ``"none"``: the map has no keys to count (queues, bloom filters, local storage,
  XSKMAP): ``len`` and ``bool`` raise the same ``TypeError``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MapTypeFacts", "facts", "TABLE"]


@dataclass(frozen=True)
class MapTypeFacts:
    """What pybpf knows about one map type (libbpf's name, ``"hash"``...)."""

    name: str
    kind: str = "TypedMap"
    """The class of its maps in :mod:`pybpf.mapkinds` (``"Map"``: raw bytes only)."""
    percpu: bool = False
    """Values hold one value per possible CPU, each 8-byte aligned."""
    keyless: bool = False
    """No keys: push/pop/peek (queue, stack) or add/contains (bloom filter)."""
    batch: bool = False
    """``BPF_MAP_LOOKUP_BATCH``/``UPDATE_BATCH`` work for it."""
    batch_delete: bool = False
    """``BPF_MAP_DELETE_BATCH``/``LOOKUP_AND_DELETE_BATCH`` work too (hash kinds)."""
    length: str = "keys"
    """What ``len()`` counts: ``keys``, ``slots``, ``filled`` or ``none`` (see above)."""
    prealloc: str = ""
    """How much memory creation preallocates: ``array``, ``hash``, ``pointers``,
    ``ring``, ``stack_trace``, ``queue``, ``bloom``, or ``""`` (on demand)."""
    stream: bool = False
    """An event stream (ring buffer, perf buffer): records, read by a reader."""
    dump: bool = True
    """``pybpf run`` and ``pybpf map dump`` print its entries (not for streams, fds,
    stacks, keyless kinds and local storage, whose entries say nothing by themselves)."""
    zero_entries: bool = False
    """``max_entries`` may be 0 at load: local storage (the kernel wants 0) and the
    maps libbpf sizes itself (a perf event array: one slot per CPU), struct_ops."""
    value_size: bool = False
    """A value of ``value_size`` bytes is required (0 cannot be created); other kinds
    have none, or libbpf sets it."""
    key_size: bool = False
    """A key of ``key_size`` bytes the object must give (a 0 is only EINVAL at creation);
    other kinds have no key, or a fixed one the kernel or libbpf sets."""
    walk: str = "next_key"
    """How :mod:`pybpf._walk` reads its keys: ``bucket`` (``BPF_MAP_LOOKUP_BATCH``, the
    cursor a hash bucket: a key deleted meanwhile never makes it return a key twice),
    ``index`` (the same by array index), ``next_key`` (``BPF_MAP_GET_NEXT_KEY``) or
    ``none`` (no keys to walk: queues, stacks, bloom filters, ring buffers)."""


def _t(name: str, kind: str, **kw: object) -> tuple[str, MapTypeFacts]:
    return name, MapTypeFacts(name, kind, **kw)  # type: ignore[arg-type]


_HASH = dict(batch=True, batch_delete=True, prealloc="hash", walk="bucket",
             value_size=True, key_size=True)
_ARRAY = dict(batch=True, length="slots", prealloc="array", walk="index",
              value_size=True, key_size=True)

_STORAGE = dict(length="none", dump=False, zero_entries=True, value_size=True)

TABLE: dict[str, MapTypeFacts] = dict([
    _t("hash", "HashMap", **_HASH),
    _t("lru_hash", "HashMap", **_HASH),
    _t("percpu_hash", "PerCPUHashMap", percpu=True, **_HASH),
    _t("lru_percpu_hash", "PerCPUHashMap", percpu=True, **_HASH),
    _t("array", "ArrayMap", **_ARRAY),
    _t("percpu_array", "PerCPUArrayMap", percpu=True, **_ARRAY),
    _t("queue", "QueueMap", keyless=True, length="none", prealloc="queue", dump=False,
       walk="none", value_size=True),
    _t("stack", "QueueMap", keyless=True, length="none", prealloc="queue", dump=False,
       walk="none", value_size=True),
    _t("bloom_filter", "BloomFilterMap", keyless=True, length="none", prealloc="bloom",
       dump=False, walk="none", value_size=True),
    _t("lpm_trie", "LPMTrieMap", value_size=True, key_size=True),
    _t("prog_array", "ProgArrayMap", length="filled", prealloc="array", dump=False),
    _t("array_of_maps", "ArrayOfMapsMap", length="filled", prealloc="array", dump=False,
       key_size=True),
    _t("hash_of_maps", "ArrayOfMapsMap", prealloc="hash", dump=False, walk="bucket",
       key_size=True),
    _t("stack_trace", "StackTraceMap", prealloc="stack_trace", dump=False,
       value_size=True, key_size=True),
    _t("devmap", "DevMap", length="filled", prealloc="pointers", dump=False),
    _t("devmap_hash", "DevMap", prealloc="pointers"),
    _t("cpumap", "CPUMap", length="filled", prealloc="pointers", dump=False),
    _t("xskmap", "XSKMap", length="none", prealloc="pointers", dump=False),
    _t("sockmap", "SockMap", length="filled", prealloc="pointers", dump=False),
    _t("sockhash", "SockMap", prealloc="pointers", dump=False),
    _t("task_storage", "LocalStorageMap", **_STORAGE),
    _t("sk_storage", "LocalStorageMap", **_STORAGE),
    _t("inode_storage", "LocalStorageMap", **_STORAGE),
    _t("cgrp_storage", "LocalStorageMap", **_STORAGE),
    _t("percpu_cgroup_storage", "Map", percpu=True, zero_entries=True),
    _t("cgroup_storage", "Map", zero_entries=True),
    _t("perf_event_array", "Map", stream=True, prealloc="array", dump=False,
       zero_entries=True),
    _t("cgroup_array", "Map", prealloc="array", dump=False),
    _t("ringbuf", "Map", stream=True, prealloc="ring", dump=False, walk="none"),
    _t("user_ringbuf", "Map", stream=True, prealloc="ring", dump=False, walk="none"),
    _t("struct_ops", "Map", dump=False, zero_entries=True),
])


def facts(type_name: str) -> MapTypeFacts:
    """The facts of map type ``type_name``; an unknown type is a plain ``Map``."""
    f = TABLE.get(type_name)
    return f if f is not None else MapTypeFacts(type_name, "Map")
