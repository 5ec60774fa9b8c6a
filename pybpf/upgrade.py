"""Live upgrade: replace a running object by a new build of it, losing no event, no
packet and no counter (:meth:`pybpf.Object.upgrade`, ``pybpf upgrade``).

What happens to each map of the new build (decided from BTF before anything changes):

* **reused** -- same name, same type, identical key and value layout, same size and
  flags: the new object uses the old map itself (``bpf_map__reuse_fd`` before load),
  with its contents; a ring buffer keeps its consumers, which read on.
* **migrated** -- the value layout changed (or the size or flags): entries are copied
  by BTF member name. Added fields start at zero, removed fields are dropped, an
  integer that widens is converted, one that narrows is checked. What the old version
  writes while the switch is under way is added in after it has stopped (integers as
  counters: new value + old final - old snapshot).
* **created** -- new maps, the new build's constants (``.rodata``, ``.kconfig``) and
  maps that hold programs (prog arrays, maps of maps, struct_ops).
* **refused** -- a changed key layout or map type, a value that does not fit, a map
  whose contents cannot be copied (a ring buffer whose size changed...): the whole
  upgrade is refused before anything changes, unless ``migrate=`` has a function for
  that map. Each refusal names the map, the field and the reason.

Links: the new programs are loaded before anything is detached. Links the kernel can
update (XDP, tcx, cgroup, netns, netkit, sockmap) are switched atomically
(``BPF_LINK_UPDATE``). The others (tracepoints, raw tracepoints, uprobes...) get the
new program attached beside the old one, then the old one detached; an object built
with the **generation guard** (``#define PYBPF_GENERATIONS`` before including
``pybpf_common.h``, ``PYBPF_GUARD(ret)`` at the top of each such program) switches
from old to new with one write to a shared map, each event handled exactly once. An
object without the guard runs both versions for the window reported as
``both_attached_seconds``: every event in it is handled by both (none by neither).
If any step fails, the old version stays live and attached.
"""

from __future__ import annotations

import errno as _errno
import mmap
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._fd import bpf_fd_kind
from ._ffi import error_for, ffi, lib
from .btf import BTF, BTFKind, BTFType
from .errors import AttachError, BPFError, UpgradeError
from .link import Link
from .maps import Map, OpenMap, possible_cpus

__all__ = ["MapReport", "LinkReport", "UpgradeReport", "Migration", "GENERATION_MAP",
           "layouts_equal", "wait_for_running_programs"]

#: A user migration for one map: (old key bytes, old value bytes) -> (new key bytes,
#: new value bytes), or None to leave the entry out. Per-CPU values are every CPU's
#: value, each padded to 8 bytes, as :meth:`pybpf.Map.lookup` returns them.
Migration = Callable[[bytes, bytes], "tuple[bytes, bytes] | None"]

GENERATION_MAP = "pybpf_generation"  # mmapable array, one u64 word (see pybpf_common.h)
GENERATION_HANDLED = "pybpf_gen_handled"  # per-CPU u32: the first runner's decision
GENERATION_VAR = "pybpf_gen"  # const volatile __u32 in .rodata: this build's generation
_GEN_MASK = 0x7FFFFFFF
_PAIR = 1 << 63

# Link kinds BPF_LINK_UPDATE switches atomically (kernel: link_update in each kind).
UPDATABLE_LINKS = frozenset({"xdp", "tcx", "cgroup", "netns", "netkit", "sockmap"})
# Map types whose entries can be read and written one by one.
_COPYABLE = frozenset({"hash", "array", "percpu_hash", "percpu_array", "lru_hash",
                       "lru_percpu_hash", "lpm_trie"})
# Map types that hold programs or maps of one build: always the new build's own.
_BUILD_OWNED = frozenset({"prog_array", "array_of_maps", "hash_of_maps", "struct_ops"})


# --- the report ---------------------------------------------------------------------
@dataclass(frozen=True)
class MapReport:
    """What the upgrade did with one map: ``action`` is "reused", "migrated",
    "created" or "refused"; ``reason`` says why; ``field`` names the member a refusal
    is about; ``entries`` counts the entries copied."""

    name: str
    action: str
    reason: str = ""
    field: str | None = None
    entries: int = 0
    folded: int = 0
    """Entries the old version changed during the switch, added in afterwards."""


@dataclass(frozen=True)
class LinkReport:
    """What the upgrade did with one link: ``action`` is "updated" (BPF_LINK_UPDATE,
    atomic), "generation-switched" (both attached, one write switched) or
    "re-attached" (both attached for the window, no guard)."""

    program: str
    target: str
    kind: str
    action: str


@dataclass
class UpgradeReport:
    """The outcome of an upgrade: per map, per link, and how long it took."""

    maps: dict[str, MapReport] = field(default_factory=dict)
    links: list[LinkReport] = field(default_factory=list)
    generation: int | None = None
    """The new build's generation (objects with the guard), else None."""
    seconds: float = 0.0
    """Wall time of the whole upgrade (plan, load, copy, switch, fold)."""
    both_attached_seconds: float = 0.0
    """How long old and new programs were both attached to a hook that cannot be
    updated (0 when every link was updated atomically)."""
    warnings: list[str] = field(default_factory=list)
    """Problems after the switch was committed (the new version is live)."""

    def __str__(self) -> str:
        lines = [f"upgrade: {self.seconds * 1e3:.1f} ms, both attached "
                 f"{self.both_attached_seconds * 1e3:.2f} ms"
                 + (f", generation {self.generation}" if self.generation is not None else "")]
        for m in self.maps.values():
            extra = (f" ({m.entries} entries, {m.folded} folded)" if m.action == "migrated"
                     else "")
            why = f": {m.reason}" if m.reason else ""
            lines.append(f"  map {m.name}: {m.action}{extra}{why}")
        for ln in self.links:
            lines.append(f"  link {ln.program} -> {ln.target} [{ln.kind}]: {ln.action}")
        return "\n".join(lines)


# --- layouts ------------------------------------------------------------------------
class _Refused(Exception):
    def __init__(self, field: str | None, reason: str, map: str = "?") -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason
        self.map = map


def _scalar_kind(t: BTFType) -> str:
    if t.kind in (BTFKind.INT, BTFKind.ENUM, BTFKind.ENUM64):
        return "int"
    if t.kind in (BTFKind.STRUCT, BTFKind.DATASEC):
        return "struct"
    if t.kind == BTFKind.ARRAY:
        return "array"
    if t.kind == BTFKind.UNION:
        return "union"
    return "raw"  # pointers, floats, void


def _resolve(btf: BTF, tid: int) -> BTFType:
    t = btf.resolve(tid)
    while t.kind == BTFKind.VAR:
        t = btf.resolve(t.type)
    return t


def _members(btf: BTF, t: BTFType) -> list[tuple[str, int, int, int]]:
    """(name, bit offset, bitfield bits or 0, type id) of a struct or datasec."""
    out = []
    for i, m in enumerate(t.members):
        name = m.name or f"<anon {i}>"
        if t.kind == BTFKind.DATASEC:
            out.append((name or btf.types[m.type].name, 8 * m.offset, 0, m.type))
        else:
            out.append((name, m.offset, m.bitfield_size, m.type))
    return out


def _signature(btf: BTF, tid: int, depth: int = 0) -> Any:
    """A comparable description of a type's layout: sizes, offsets, member names and
    integer encodings (type names and modifiers do not matter)."""
    if depth > 64:
        raise _Refused(None, "type nesting deeper than 64")
    t = _resolve(btf, tid)
    k = _scalar_kind(t)
    if k == "int":
        return ("int", t.size, t.signed)
    if k == "array":
        return ("array", t.nelems, _signature(btf, t.type, depth + 1))
    if k in ("struct", "union"):
        if t.kind == BTFKind.DATASEC:
            size = max((m.offset + m.size for m in t.members), default=t.size)
        else:
            size = t.size
        return (k, size, tuple((n, off, bits, _signature(btf, sub, depth + 1))
                               for n, off, bits, sub in _members(btf, t)))
    return ("raw", btf.size_of(t.id) if t.kind != BTFKind.VOID else 0)


def layouts_equal(old_btf: BTF, old_id: int, new_btf: BTF, new_id: int) -> bool:
    """Whether two BTF types lay their bytes out identically (sizes, offsets, member
    names, integer signedness). Pure Python over the parsed BTF, no syscall."""
    return bool(_signature(old_btf, old_id) == _signature(new_btf, new_id))


@dataclass(frozen=True)
class _Leaf:
    """One scalar carried from the old layout to the new one."""

    path: str
    obit: int
    obits: int
    osigned: bool
    nbit: int
    nbits: int
    nsigned: bool
    integer: bool


def _pair(ob: BTF, oid: int, nb: BTF, nid: int, obit: int, nbit: int, path: str,
          out: list[_Leaf], dropped: list[str], obits: int = 0, nbits: int = 0,
          depth: int = 0) -> None:
    """Match the old type's scalars to the new type's by member name (recursively)."""
    if depth > 64:
        raise _Refused(path, "type nesting deeper than 64")
    ot, nt = _resolve(ob, oid), _resolve(nb, nid)
    ok, nk = _scalar_kind(ot), _scalar_kind(nt)
    if ok != nk:
        raise _Refused(path, f"field {path!r} changed from {ok} to {nk}")
    if ok == "int":
        out.append(_Leaf(path, obit, obits or 8 * ot.size, ot.signed, nbit,
                         nbits or 8 * nt.size, nt.signed, True))
        return
    if ok == "array":
        osz, nsz = ob.size_of(ot.type), nb.size_of(nt.type)
        for i in range(min(ot.nelems, nt.nelems)):
            _pair(ob, ot.type, nb, nt.type, obit + 8 * osz * i, nbit + 8 * nsz * i,
                  f"{path}[{i}]", out, dropped, depth=depth + 1)
        if ot.nelems > nt.nelems:
            dropped.append(f"{path}[{nt.nelems}:{ot.nelems}]")
        return
    if ok == "union" or ok == "raw":
        if _signature(ob, ot.id) != _signature(nb, nt.id):
            raise _Refused(path, f"field {path!r} ({ok}) changed its layout; pybpf copies "
                                 f"a {ok} only unchanged")
        size = ob.size_of(ot.id) if ot.kind != BTFKind.VOID else 0
        if size:
            out.append(_Leaf(path, obit, 8 * size, False, nbit, 8 * size, False, False))
        return
    old_members = {n: (off, bits, sub) for n, off, bits, sub in _members(ob, ot)}
    seen = set()
    for n, off, bits, sub in _members(nb, nt):
        if n not in old_members:
            continue  # added: starts at zero
        seen.add(n)
        ooff, obts, osub = old_members[n]
        _pair(ob, osub, nb, sub, obit + ooff, nbit + off, f"{path}.{n}" if path else n,
              out, dropped, obts, bits, depth + 1)
    dropped.extend(f"{path}.{n}" if path else n for n in old_members if n not in seen)


def _get(buf: bytes | bytearray, bit: int, bits: int, signed: bool) -> int:
    lo, hi = bit // 8, (bit + bits + 7) // 8
    v = int.from_bytes(buf[lo:hi], "little") >> (bit % 8)
    v &= (1 << bits) - 1
    if signed and v >> (bits - 1):
        v -= 1 << bits
    return v


def _put(buf: bytearray, bit: int, bits: int, v: int) -> None:
    lo, hi = bit // 8, (bit + bits + 7) // 8
    shift = bit % 8
    mask = ((1 << bits) - 1) << shift
    cur = int.from_bytes(buf[lo:hi], "little")
    cur = (cur & ~mask) | ((v << shift) & mask)
    buf[lo:hi] = cur.to_bytes(hi - lo, "little")


def _fits(v: int, bits: int, signed: bool) -> bool:
    if signed:
        return -(1 << (bits - 1)) <= v < 1 << (bits - 1)
    return 0 <= v < 1 << bits


class _Converter:
    """Old value bytes -> new value bytes for one layout pair (per CPU for per-CPU
    maps), and the three-way fold of what the old version did meanwhile."""

    def __init__(self, map_name: str, leaves: list[_Leaf], osize: int, nsize: int,
                 percpu: bool) -> None:
        self.map = map_name
        self.leaves = leaves
        self.osize, self.nsize = osize, nsize
        self.ncpu = possible_cpus() if percpu else 1
        self.ostride = (osize + 7) // 8 * 8 if percpu else osize
        self.nstride = (nsize + 7) // 8 * 8 if percpu else nsize

    def _slots(self, raw: bytes) -> list[bytes]:
        return [raw[i * self.ostride:i * self.ostride + self.osize] for i in range(self.ncpu)]

    def _check(self, leaf: _Leaf, v: int, what: str) -> int:
        if leaf.integer and not _fits(v, leaf.nbits, leaf.nsigned):
            kind = "signed" if leaf.nsigned else "unsigned"
            raise _Refused(leaf.path, f"{what} {v} of field {leaf.path!r} does not fit in its "
                                      f"new {leaf.nbits}-bit {kind} type")
        return v

    def convert(self, raw: bytes, what: str = "value") -> bytes:
        out = bytearray(self.nstride * self.ncpu)
        for c, slot in enumerate(self._slots(raw)):
            base = c * self.nstride * 8
            for leaf in self.leaves:
                v = _get(slot, leaf.obit, leaf.obits, leaf.osigned and leaf.integer)
                _put(out, base + leaf.nbit, leaf.nbits, self._check(leaf, v, what))
        return bytes(out)

    def fold(self, before: bytes, after: bytes, current: bytes) -> bytes:
        """``current`` (the new map's entry) plus what the old version changed between
        the snapshot ``before`` and its final ``after``: integers add the difference,
        other bytes take the old version's change if it made one."""
        out = bytearray(current)
        b_slots, a_slots = self._slots(before), self._slots(after)
        for c in range(self.ncpu):
            base = c * self.nstride * 8
            for leaf in self.leaves:
                sgn = leaf.osigned and leaf.integer
                b = _get(b_slots[c], leaf.obit, leaf.obits, sgn)
                a = _get(a_slots[c], leaf.obit, leaf.obits, sgn)
                if a == b:
                    continue
                if leaf.integer:
                    cur = _get(out, base + leaf.nbit, leaf.nbits, leaf.nsigned)
                    v = cur + (a - b)
                    if not leaf.nsigned and not leaf.osigned:
                        v %= 1 << leaf.nbits  # counters wrap as they do in the kernel
                    _put(out, base + leaf.nbit, leaf.nbits, self._check(leaf, v, "value"))
                else:
                    _put(out, base + leaf.nbit, leaf.nbits, a)
        return bytes(out)


# --- the old side -------------------------------------------------------------------
class _OldSide(Protocol):
    """What is running now: a loaded Object, or a pinned deployment."""

    name: str

    def live_maps(self) -> Mapping[str, Map]: ...

    def map_btf(self, m: Map) -> BTF | None: ...

    def old_links(self) -> list[Link]: ...

    def program_of(self, link: Link) -> str: ...

    def program_fd_owner(self, link: Link) -> Any: ...


@dataclass
class _MapPlan:
    name: str
    action: str
    reason: str = ""
    old: Map | None = None
    key: _Converter | None = None
    value: _Converter | None = None
    user: Migration | None = None
    snapshot: dict[bytes, bytes] = field(default_factory=dict)
    field_: str | None = None
    entries: int = 0
    folded: int = 0
    new_max: int = 0
    array: bool = False


def _type_ids(m: Map | OpenMap) -> tuple[int, int]:
    return m.btf_key_type_id, m.btf_value_type_id


def _first_difference(ob: BTF, oid: int, nb: BTF, nid: int) -> str | None:
    """The first member (by name) whose layout differs, for a refusal's message."""
    ot, nt = _resolve(ob, oid), _resolve(nb, nid)
    if _scalar_kind(ot) == "struct" and _scalar_kind(nt) == "struct":
        om = {n: (off, bits, sub) for n, off, bits, sub in _members(ob, ot)}
        nm = {n: (off, bits, sub) for n, off, bits, sub in _members(nb, nt)}
        for n in list(om) + [n for n in nm if n not in om]:
            if n not in om or n not in nm:
                return n
            if om[n][:2] != nm[n][:2] or (_signature(ob, om[n][2])
                                          != _signature(nb, nm[n][2])):
                return n
    return None


def plan_map(old: Map | None, old_btf: BTF | None, om: OpenMap, new_btf: BTF | None,
             user: Migration | None) -> _MapPlan:
    """Decide what happens to the new build's map ``om`` (no syscall)."""
    name = om.name
    if om.internal and (".rodata" in name or ".kconfig" in name):
        return _MapPlan(name, "created", "read-only constants of the new build")
    if old is None:
        return _MapPlan(name, "created", "new in this build")
    otype, ntype = old.type, om.type
    if ntype in _BUILD_OWNED:
        return _MapPlan(name, "created", f"a {ntype} map holds the new build's own programs "
                                         "or maps")
    if user is not None:
        return _MapPlan(name, "migrated", "by the migration function given", old=old,
                        user=user, new_max=om.max_entries, array=ntype.endswith("array"))
    if otype != ntype:
        return _MapPlan(name, "refused", f"map type changed from {otype} to {ntype}",
                        field_=None)
    okey, oval = _type_ids(old)
    nkey, nval = _type_ids(om)
    typed = old_btf is not None and new_btf is not None
    # keys
    if typed and okey and nkey:
        assert old_btf is not None and new_btf is not None
        if not layouts_equal(old_btf, okey, new_btf, nkey):
            f = _first_difference(old_btf, okey, new_btf, nkey)
            return _MapPlan(name, "refused", "key layout changed" + (f" (field {f!r})" if f
                                                                     else ""), field_=f)
    elif old.key_size != om.key_size:
        return _MapPlan(name, "refused", f"key size changed from {old.key_size} to "
                                         f"{om.key_size}")
    # values
    if typed and oval and nval:
        assert old_btf is not None and new_btf is not None
        same_value = layouts_equal(old_btf, oval, new_btf, nval)
    else:
        same_value = old.value_size == om.value_size and not (oval or nval)
    same_shape = old.max_entries == om.max_entries and old.flags == om.flags
    if same_value and same_shape:
        return _MapPlan(name, "reused", "same layout", old=old)
    why = "value layout changed" if not same_value else (
        f"max_entries {old.max_entries} -> {om.max_entries}"
        if old.max_entries != om.max_entries else f"flags {old.flags:#x} -> {om.flags:#x}")
    if ntype not in _COPYABLE:
        return _MapPlan(name, "refused", f"{why}, and the entries of a {ntype} map cannot be "
                                         "copied (keep its layout, size and flags)")
    if not same_value and not (typed and oval and nval):
        return _MapPlan(name, "refused", f"{why}, and the map has no BTF value type to "
                                         "migrate by")
    leaves: list[_Leaf] = []
    dropped: list[str] = []
    try:
        if typed and oval and nval:
            assert old_btf is not None and new_btf is not None
            _pair(old_btf, oval, new_btf, nval, 0, 0, "", leaves, dropped)
        else:
            leaves.append(_Leaf("", 0, 8 * old.value_size, False, 0, 8 * om.value_size,
                                False, False))
    except _Refused as r:
        return _MapPlan(name, "refused", r.reason, field_=r.field)
    reason = why + (f"; dropped {', '.join(dropped)}" if dropped else "")
    key_conv = _Converter(name, [_Leaf("key", 0, 8 * old.key_size, False, 0, 8 * om.key_size,
                                       False, False)], old.key_size, om.key_size, False)
    return _MapPlan(name, "migrated", reason, old=old, key=key_conv,
                    value=_Converter(name, leaves, old.value_size, om.value_size,
                                     ntype in ("percpu_hash", "percpu_array",
                                               "lru_percpu_hash")),
                    new_max=om.max_entries, array=ntype.endswith("array"))


# --- copying ------------------------------------------------------------------------
def _convert_entry(p: _MapPlan, k: bytes, v: bytes) -> tuple[bytes, bytes] | None:
    if p.user is not None:
        return p.user(k, v)
    assert p.key is not None and p.value is not None
    return k, p.value.convert(v)


def _is_zero(b: bytes) -> bool:
    return not any(b)


def copy_map(p: _MapPlan, new: Map) -> None:
    """First pass: snapshot the old map and write the converted entries into ``new``
    (two syscalls per entry; zero array slots are left as they are)."""
    assert p.old is not None
    try:
        _copy(p, new)
    except _Refused as r:
        r.map = p.name
        raise


def _copy(p: _MapPlan, new: Map) -> None:
    assert p.old is not None
    p.snapshot = dict(p.old.items_raw())
    n = 0
    for k, v in p.snapshot.items():
        if p.array and _is_zero(v):
            continue
        if p.array and int.from_bytes(k, "little") >= p.new_max:
            raise _Refused(None, f"array index {int.from_bytes(k, 'little')} holds a value "
                                 f"but the new map has {p.new_max} entries")
        try:
            pair = _convert_entry(p, k, v)
        except _Refused:
            raise
        except Exception as e:  # a user migration function failed
            raise _Refused(None, f"migration function failed: {e!r}") from e
        if pair is None:
            continue
        new.update(pair[0], pair[1])
        n += 1
    p.entries = n


def fold_map(p: _MapPlan, new: Map) -> None:
    """Second pass, after the old programs stopped: add what they changed since the
    snapshot. Integer fields are added with atomic instructions of a small BPF
    program (:class:`_Adder`, one run per changed entry and CPU), so the increments
    the new version makes meanwhile are all kept; other changes are written by
    lookup + update."""
    assert p.old is not None
    final = dict(p.old.items_raw())
    changed = [(k, p.snapshot.get(k), after) for k, after in final.items()
               if p.snapshot.get(k) != after]
    p.folded = len(changed)
    adder: _Adder | None = None
    fields = _addable(p.value.leaves) if p.value is not None and p.user is None else None
    try:
        for k, before, after in changed:
            if p.user is not None:
                pair = p.user(k, after)
                if pair is not None:
                    new.update(pair[0], pair[1])
                continue
            assert p.value is not None
            if p.array and int.from_bytes(k, "little") >= p.new_max:
                continue
            if before is None:
                before = bytes(len(after))
            if fields is not None:
                if adder is None:
                    adder = _Adder(new, new.key_size, fields, p.value.ncpu > 1 or new.percpu)
                if _fold_atomic(adder, p.value, k, before, after, new):
                    continue
            cur = new.lookup(k)
            if cur is None:
                cur = p.value.convert(bytes(len(after)))
            new.update(k, p.value.fold(before, after, cur))
    finally:
        if adder is not None:
            adder.close()
    if not p.array:
        for k in p.snapshot.keys() - final.keys():
            pair = (k, b"") if p.user is None else p.user(k, p.snapshot[k])
            if pair is not None:
                new.delete(pair[0])


def _fold_atomic(adder: _Adder, conv: _Converter, key: bytes, before: bytes, after: bytes,
                 new: Map) -> bool:
    """Add (after - before) of each integer field to ``key``'s entry, CPU by CPU;
    False if the new map has no such entry (the caller inserts it)."""
    bs, as_ = conv._slots(before), conv._slots(after)
    per_cpu = []
    for c in range(conv.ncpu):
        d = [_get(as_[c], lf.obit, lf.obits, lf.osigned) - _get(bs[c], lf.obit, lf.obits,
                                                                 lf.osigned)
             for lf in conv.leaves]
        per_cpu.append(d)
    if not any(any(d) for d in per_cpu):
        return True
    if new.lookup(key) is None:
        return False
    if not adder.percpu:
        return adder.add(key, 0, per_cpu[0])
    mask = os.sched_getaffinity(0)
    try:
        for c, d in enumerate(per_cpu):
            if any(d):
                os.sched_setaffinity(0, {c})  # this thread only: the add runs on CPU c
                if not adder.add(key, c, d):
                    return False
    finally:
        os.sched_setaffinity(0, mask)
    return True


# --- adding what the old version counted, atomically --------------------------------
_PROG_TYPE_SYSCALL = 31
_F_SLEEPABLE = 1 << 4
_LDX = {1: 0x71, 2: 0x69, 4: 0x61, 8: 0x79}
_STX = {1: 0x73, 2: 0x6B, 4: 0x63, 8: 0x7B}
_ATOMIC_ADD = {4: 0xC3, 8: 0xDB}


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return bytes([code, (src << 4) | dst]) + off.to_bytes(2, "little", signed=True) + \
        imm.to_bytes(4, "little", signed=True)


class _Adder:
    """A tiny BPF_PROG_TYPE_SYSCALL program, built for one map, that adds deltas to the
    integer fields of one entry with atomic instructions. Run with the thread pinned
    to CPU ``c`` it adds to that CPU's slot of a per-CPU map: one ``lock add``
    cannot interleave with a program's ``c->packets++`` on the same CPU, so no
    increment of the new version is ever overwritten (user-space lookup + update
    could overwrite the ones made between them)."""

    def __init__(self, map_: Map, key_size: int, fields: list[tuple[int, int]],
                 percpu: bool) -> None:
        self.fields = fields  # (byte offset, size) in the new value
        self.key_size = key_size
        self.kslot = (key_size + 7) // 8 * 8
        self.percpu = percpu
        ins = [_insn(0xBF, 6, 1)]  # r6 = ctx
        off = 0
        while off < key_size:  # the key, copied from ctx to the stack
            n = next(n for n in (8, 4, 2, 1) if off % n == 0 and off + n <= key_size)
            ins += [_insn(_LDX[n], 1, 6, off), _insn(_STX[n], 10, 1, off - self.kslot)]
            off += n
        with map_.owner as mfd:
            ins += [_insn(0x18, 1, 1, 0, mfd), _insn(0)]  # r1 = map (ld_imm64)
            ins += [_insn(0xBF, 2, 10), _insn(0x07, 2, 0, 0, -self.kslot)]
            if percpu:
                ins += [_insn(0x61, 3, 6, self.kslot), _insn(0x85, imm=195)]
            else:
                ins += [_insn(0x85, imm=1)]  # bpf_map_lookup_elem
            body = []
            for i, (foff, size) in enumerate(fields):
                body.append(_insn(0x79, 1, 6, self.kslot + 8 + 8 * i))
                if size in _ATOMIC_ADD:
                    body.append(_insn(_ATOMIC_ADD[size], 7, 1, foff, 0))
                else:
                    body += [_insn(_LDX[size], 2, 7, foff), _insn(0x0F, 2, 1),
                             _insn(_STX[size], 7, 2, foff)]
            ins += [_insn(0x15, 0, 0, len(body) + 3, 0), _insn(0xBF, 7, 0)]
            ins += body + [_insn(0xB7, 0, 0, 0, 0), _insn(0x95)]
            ins += [_insn(0xB7, 0, 0, 0, 1), _insn(0x95)]
            code = b"".join(ins)
            insns = ffi.new("struct bpf_insn[]", len(code) // 8)
            ffi.memmove(insns, code, len(code))
            opts = ffi.new("struct bpf_prog_load_opts *")
            opts.sz = ffi.sizeof("struct bpf_prog_load_opts")
            opts.prog_flags = _F_SLEEPABLE
            log = ffi.new("char[]", 65536)
            opts.log_buf, opts.log_size, opts.log_level = log, 65536, 1
            fd = lib.bpf_prog_load(_PROG_TYPE_SYSCALL, b"pybpf_fold", b"GPL", insns,
                                   len(code) // 8, opts)
            err = ffi.errno
        if fd < 0:
            raise error_for(err, f"map {map_.name!r}: cannot load the fold program: "
                            + ffi.string(log).decode(errors="replace")[-300:])
        self.fd = int(fd)

    def add(self, key: bytes, cpu: int, deltas: list[int]) -> bool:
        """Add ``deltas`` (one per field) to ``key``'s entry (on ``cpu``'s slot); False
        if the key is absent. One BPF_PROG_TEST_RUN."""
        ctx = bytearray(self.kslot + 8 + 8 * len(deltas))
        ctx[:self.key_size] = key
        ctx[self.kslot:self.kslot + 4] = cpu.to_bytes(4, "little")
        for i, d in enumerate(deltas):
            ctx[self.kslot + 8 + 8 * i:self.kslot + 16 + 8 * i] = (d & (1 << 64) - 1).to_bytes(
                8, "little")
        buf = ffi.from_buffer(ctx)
        opts = ffi.new("struct bpf_test_run_opts *")
        opts.sz = ffi.sizeof("struct bpf_test_run_opts")
        opts.ctx_in, opts.ctx_size_in = buf, len(ctx)
        if lib.bpf_prog_test_run_opts(self.fd, opts) < 0:
            raise error_for(ffi.errno, "cannot run the fold program")
        return int(opts.retval) == 0

    def close(self) -> None:
        os.close(self.fd)


def _addable(leaves: list[_Leaf]) -> list[tuple[int, int]] | None:
    """(offset, size) of each integer leaf if every one is a whole, aligned 1, 2, 4 or
    8-byte integer (else None: the fold falls back to lookup + update)."""
    out = []
    for leaf in leaves:
        if not leaf.integer or leaf.nbits not in (8, 16, 32, 64) or leaf.nbit % leaf.nbits:
            return None
        out.append((leaf.nbit // 8, leaf.nbits // 8))
    return out


# --- waiting for programs in flight -------------------------------------------------
def wait_for_running_programs() -> None:
    """Return once every non-sleepable BPF program that was running has finished (an
    RCU grace period: the kernel waits for one on every update of a map of maps).
    Costs two map creations and one update (a few milliseconds)."""
    from .mapkinds import create_map  # the typed layer (mapkinds imports maps, not us)

    inner = create_map("array", 4, 4, 1, name="pybpf_rcu_in")
    try:
        outer = create_map("array_of_maps", 4, 4, 1, name="pybpf_rcu", inner_map=inner)
        try:
            key = ffi.new("__u32 *", 0)
            with outer.owner as ofd, inner.owner as ifd:
                val = ffi.new("__u32 *", ifd)
                if lib.bpf_map_update_elem(ofd, key, val, 0) < 0:
                    raise error_for(ffi.errno, "cannot wait for running BPF programs")
        finally:
            outer.close()
    finally:
        inner.close()


# --- the generation word ------------------------------------------------------------
class _GenerationWord:
    """The shared ``pybpf_generation`` map, written with one aligned 8-byte store."""

    def __init__(self, m: Map) -> None:
        with m.owner as fd:
            self._mm = mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
        self._view = memoryview(self._mm).cast("Q")

    def read(self) -> tuple[int, int, bool]:
        w = int(self._view[0])
        return w & _GEN_MASK, (w >> 32) & _GEN_MASK, bool(w & _PAIR)

    def write(self, active: int, last: int = 0, pair: bool = False) -> None:
        self._view[0] = (active & _GEN_MASK) | ((last & _GEN_MASK) << 32) | (
            _PAIR if pair else 0)

    def close(self) -> None:
        self._view.release()
        self._mm.close()


def guarded(maps: Iterable[str]) -> bool:
    return GENERATION_MAP in set(maps)


# Link kinds whose programs the kernel runs in attach order (a new one after the old);
# for the rest (uprobes: a new consumer goes first) the old program runs last.
_APPENDED = frozenset({"perf_event", "raw_tracepoint", "tracing", "kprobe_multi", "netfilter"})


def link_kind(link: Link) -> str:
    """The kernel's kind of ``link`` ("xdp", "perf_event"...), or "legacy" for a hook
    that is not a BPF link (netlink tc, socket filter), or "libbpf" for one without a
    single fd (USDT). One syscall."""
    try:
        return link.info().type
    except BPFError:
        return "legacy"


def update_link(link: Link, prog_fd: int, name: str) -> None:
    """``BPF_LINK_UPDATE`` of ``link`` to program fd ``prog_fd`` (one syscall)."""
    with link.owner as lfd:
        lfd = link._link_fd(lfd)
        rc = lib.bpf_link_update(lfd, prog_fd, ffi.NULL)
        err = ffi.errno
    if rc < 0:
        raise error_for(err, f"cannot update link {link.target} to program {name!r}",
                        kind=AttachError, program=name, target=link.target)
    link.program = name


def refusal_error(old_name: str, refusals: list[tuple[str, str | None, str]]) -> UpgradeError:
    text = "; ".join(f"map {m!r}" + (f" field {f!r}" if f else "") + f": {r}"
                     for m, f, r in refusals)
    return UpgradeError(f"upgrade of {old_name!r} refused, nothing changed (the old version "
                        f"is still live): {text}", refusals=refusals)


__all__ += ["plan_map", "copy_map", "fold_map", "update_link", "link_kind", "refusal_error",
            "guarded", "UPDATABLE_LINKS", "PinnedSide", "upgrade_pinned"]


# --- the driver ---------------------------------------------------------------------
@dataclass
class _LinkPlan:
    link: Link
    program: str
    kind: str
    new_program: Any
    attach: Callable[[Any], Link] | None  # None: BPF_LINK_UPDATE
    new_link: Link | None = None
    restore: Callable[[], None] | None = None


class _ObjectSide:
    """The old side of :meth:`pybpf.Object.upgrade`: a loaded Object."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        self.name: str = obj.name

    def live_maps(self) -> Mapping[str, Map]:
        return dict(self.obj.maps)

    def map_btf(self, m: Map) -> BTF | None:
        try:
            return self.obj.btf  # type: ignore[no-any-return]
        except BPFError:
            return None

    def old_links(self) -> list[Link]:
        return list(self.obj.links)

    def program_of(self, link: Link) -> str:
        return link.program

    def check(self) -> None:
        self.obj.owner.get()  # ClosedError once closed
        if not self.obj.loaded:
            raise UpgradeError(f"upgrade: the old object {self.name!r} is not loaded")

    def restorer(self, link: Link) -> Callable[[], None]:
        prog = self.obj.programs[link.program]
        return lambda: _prog_fd_update(link, prog)

    def detach(self, link: Link) -> None:
        link.detach()

    def abort(self, new: Any) -> None:
        new._release_maps(self.live_maps().values())

    def commit(self, new: Any, updated: list[Link]) -> None:
        new._take_over(self.obj, updated)
        self.obj.close()


def _pin_link(link: Link, path: str) -> None:
    """Pin ``link`` at ``path`` (a second pin of a pinned link too; one syscall)."""
    with link.owner:
        if lib.bpf_obj_pin(link.fd, path.encode()) < 0:
            raise error_for(ffi.errno, f"cannot pin link {link.program!r} at {path}",
                            kind=AttachError, program=link.program)


def _prog_name(fd: int) -> str:
    """The kernel's name of the program ``fd`` (its first 15 characters; one syscall)."""
    info = ffi.new("struct bpf_prog_info *")
    size = ffi.new("__u32 *", ffi.sizeof("struct bpf_prog_info"))
    if lib.bpf_obj_get_info_by_fd(fd, info, size) < 0:
        raise error_for(ffi.errno, "cannot read program info")
    return str(ffi.string(info.name).decode(errors="replace"))


class PinnedSide:
    """The old side of ``pybpf upgrade``: a pinned deployment, a bpffs directory with
    maps pinned under their names and links pinned under any name (the firewall's
    ``pybpf firewall attach --pin`` makes one). Holds an fd of each until closed."""

    def __init__(self, old_dir: str, new_dir: str | None = None) -> None:
        self.old_dir = os.path.abspath(old_dir)
        self.new_dir = os.path.abspath(new_dir or old_dir)
        self.name = self.old_dir
        self.maps: dict[str, Map] = {}
        self.links: dict[str, Link] = {}  # pin file name -> link
        self._progs: dict[int, tuple[str, int]] = {}  # link id -> (program name, prog fd)
        try:
            entries = sorted(os.listdir(self.old_dir))
        except OSError as e:
            raise UpgradeError(f"upgrade: cannot read the pin directory {old_dir}: "
                               f"{e.strerror}", err=e.errno or _errno.ENOENT) from None
        try:
            for entry in entries:
                path = os.path.join(self.old_dir, entry)
                fd = lib.bpf_obj_get(path.encode())
                if fd < 0:
                    continue  # not a BPF object
                kind = bpf_fd_kind(fd)
                os.close(fd)
                if kind == "map":
                    self.maps[entry] = Map.open_pinned(path)
                elif kind == "link":
                    link = Link.open_pinned(path)
                    link.target = f"pinned {path}"
                    self.links[entry] = link
                    info = link.info()
                    pfd = lib.bpf_prog_get_fd_by_id(info.prog_id)
                    if pfd < 0:
                        raise error_for(ffi.errno, f"cannot open program id {info.prog_id} "
                                                   f"of link {path}")
                    link.program = _prog_name(int(pfd))
                    self._progs[id(link)] = (link.program, int(pfd))
        except BaseException:
            self.close()
            raise
        if not self.maps and not self.links:
            raise UpgradeError(f"upgrade: {old_dir} has no pinned maps or links",
                               err=_errno.ENOENT)

    def check(self) -> None:
        pass

    def live_maps(self) -> Mapping[str, Map]:
        return dict(self.maps)

    def map_btf(self, m: Map) -> BTF | None:
        from .mapkinds import kernel_btf_by_id

        btf_id = m.info().btf_id
        return kernel_btf_by_id(btf_id) if btf_id else None

    def old_links(self) -> list[Link]:
        return list(self.links.values())

    def program_of(self, link: Link) -> str:
        return link.program

    def restorer(self, link: Link) -> Callable[[], None]:
        name, pfd = self._progs[id(link)]
        return lambda: update_link(link, pfd, name)

    def _pin_of(self, link: Link) -> str:
        return os.path.join(self.old_dir, next(n for n, lk in self.links.items() if lk is link))

    def detach(self, link: Link) -> None:
        os.unlink(self._pin_of(link))  # the pin held it attached
        link.detach()

    def abort(self, new: Any) -> None:
        new._release_maps(self.maps.values())

    def commit(self, new: Any, updated: list[Link]) -> None:
        """Pin the new object's maps and links in ``new_dir`` (old pins in, new pins
        out): maps under their names, links under the names the old ones had."""
        os.makedirs(self.new_dir, exist_ok=True)
        same = self.new_dir == self.old_dir
        for name, m in new.maps.items():
            if m.internal and (".rodata" in name or ".kconfig" in name):
                continue
            path = os.path.join(self.new_dir, name)
            old = self.maps.get(name)
            if old is not None and old is m and same:
                continue  # reused, already pinned there
            if old is None and name not in self.maps and os.path.exists(path):
                continue
            if same and os.path.exists(path):
                os.unlink(path)
            m.pin(path)
        for entry, link in self.links.items():
            if link in updated and not same:
                _pin_link(link, os.path.join(self.new_dir, entry))
                os.unlink(os.path.join(self.old_dir, entry))
        for entry, link in self.links.items():
            if link in updated:
                continue
            prog = new.programs.get(link.program)
            fresh = [lk for lk in new.links if prog is not None and lk.program == prog.name]
            if fresh:
                _pin_link(fresh[0], os.path.join(self.new_dir, entry))
        if not same:
            for name in self.maps:
                path = os.path.join(self.old_dir, name)
                if os.path.exists(path):
                    os.unlink(path)
            try:
                os.rmdir(self.old_dir)
            except OSError:
                pass

    def close(self) -> None:
        for _, pfd in self._progs.values():
            os.close(pfd)
        self._progs = {}
        for m in self.maps.values():
            m.close()
        for link in self.links.values():
            link.detach()  # closes this fd; a pin still holds the link


def upgrade_pinned(new: Any, old_dir: str, new_dir: str | None = None) -> UpgradeReport:
    """Live upgrade of the deployment pinned in ``old_dir`` to the opened (not loaded)
    Object ``new``, whose maps and links are pinned in ``new_dir`` (default: the same
    directory) at the end. Links whose sections do not name their target must be
    updatable (XDP, tcx...). ``new`` stays open: closing it leaves the pins."""
    side = PinnedSide(old_dir, new_dir)
    try:
        return _run(new, side, {}, {})
    finally:
        side.close()


def _auto_attach(prog: Any) -> Link:
    return prog.attach_auto()  # type: ignore[no-any-return]


def _plan_links(side: Any, new: Any, reattach: Mapping[str, Callable[[Any], Link]],
                refusals: list[tuple[str, str | None, str]]) -> list[_LinkPlan]:
    from ._sections import auto_attachable

    plans = []
    for link in side.old_links():
        name = side.program_of(link)
        kind = link_kind(link)
        newp = new.programs.get(name) or next(  # kernel names keep 15 characters
            (p for n, p in new.programs.items() if len(name) == 15 and n[:15] == name), None)
        if newp is None:
            refusals.append((f"link {link.target}", None, f"program {name!r} is attached "
                             "but the new build has no program of that name"))
            continue
        if kind in UPDATABLE_LINKS:
            plans.append(_LinkPlan(link, name, kind, newp, None))
        elif name in reattach:
            plans.append(_LinkPlan(link, name, kind, newp, reattach[name]))
        elif auto_attachable(newp.section):
            plans.append(_LinkPlan(link, name, kind, newp, _auto_attach))
        else:
            refusals.append((f"link {link.target}", None, f"a {kind} link cannot be updated "
                             f"and section {newp.section!r} does not name where to attach "
                             f"{name!r}: pass reattach={{{name!r}: fn}}"))
    return plans


def _prog_fd_update(link: Link, prog: Any) -> None:
    with prog.object.owner:
        update_link(link, prog.fd, prog.name)


def upgrade_object(new: Any, old: Any, *, migrate: Mapping[str, Migration],
                   reattach: Mapping[str, Callable[[Any], Link]]) -> UpgradeReport:
    """The live upgrade of loaded Object ``old`` to opened Object ``new`` (called by
    ``new.load()``): plan, load, copy, switch, fold, hand over; ``old`` is closed
    at the end. On any failure before the switch is committed, everything done is
    undone and ``old`` stays live and attached."""
    return _run(new, _ObjectSide(old), migrate, reattach)


def _run(new: Any, side: Any, migrate: Mapping[str, Migration],
         reattach: Mapping[str, Callable[[Any], Link]]) -> UpgradeReport:
    side.check()
    t0 = time.perf_counter()
    report = UpgradeReport()
    refusals: list[tuple[str, str | None, str]] = []
    old_maps = side.live_maps()
    try:
        new_btf: BTF | None = new.btf
    except BPFError:
        new_btf = None
    plans: dict[str, _MapPlan] = {}
    for name, om in new.maps.items():
        prev = old_maps.get(name)
        p = plan_map(prev, side.map_btf(prev) if prev is not None else None, om, new_btf,
                     migrate.get(name))
        plans[name] = p
        if p.action == "refused":
            refusals.append((name, p.field_, p.reason))
    for name in migrate:
        if name not in plans:
            refusals.append((name, None, "migrate= names a map the new build does not have"))
    links = _plan_links(side, new, reattach, refusals)
    if refusals:
        raise refusal_error(side.name, refusals)

    # The generation guard: the new build's generation, set before load.
    gen_old_map = old_maps.get(GENERATION_MAP)
    word: _GenerationWord | None = None
    g0 = g1 = 0
    if guarded(new.maps):
        if gen_old_map is not None and plans[GENERATION_MAP].action == "reused":
            word = _GenerationWord(gen_old_map)
            g0 = word.read()[0]
        g1 = (g0 + 1) & _GEN_MASK
        new.rodata[GENERATION_VAR] = g1
        report.generation = g1

    reused = {n: p.old for n, p in plans.items() if p.action == "reused" and p.old is not None}
    try:
        for n, m in reused.items():
            new.maps[n].reuse_fd(m)
        new._load_reusing(reused)
    except BaseException:
        if word is not None:
            word.close()
        raise
    done_updates: list[_LinkPlan] = []
    try:
        migrated = [p for p in plans.values() if p.action == "migrated"]
        for p in migrated:
            copy_map(p, new.maps[p.name])
        if word is None and guarded(new.maps):
            word = _GenerationWord(new.maps[GENERATION_MAP])  # the old build had none
        both = _switch(side, new, links, word, g0, g1, done_updates, report)
        report.both_attached_seconds = both
    except BaseException as e:
        _undo(links, done_updates, word, g0)
        side.abort(new)
        if isinstance(e, _Refused):
            raise refusal_error(side.name, [(e.map, e.field, e.reason)]) from None
        raise
    finally:
        if word is not None:
            word.close()
    # Committed: the new version is the live one.
    wait_for_running_programs()
    for p in migrated:
        try:
            fold_map(p, new.maps[p.name])
        except (_Refused, BPFError, KeyError) as e:
            # committed: the new version stays live; the report says what is missing
            report.warnings.append(f"map {p.name!r}: what the old version wrote during "
                                   f"the switch was not all added in: {e}")
    for name, p in plans.items():
        report.maps[name] = MapReport(name, p.action, p.reason, p.field_, p.entries,
                                      p.folded)
    side.commit(new, [lp.link for lp in links if lp.attach is None])
    report.seconds = time.perf_counter() - t0
    return report


def _order(links: list[_LinkPlan], g0: int, g1: int) -> int:
    """The generation whose programs the kernel runs last for one event."""
    kinds = {lp.kind for lp in links if lp.attach is not None}
    return g1 if kinds <= _APPENDED else g0


def _switch(side: Any, new: Any, links: list[_LinkPlan], word: _GenerationWord | None,
            g0: int, g1: int, done: list[_LinkPlan], report: UpgradeReport) -> float:
    """Switch every link; returns how long old and new were both attached."""
    for lp in links:
        if lp.attach is None:
            lp.restore = side.restorer(lp.link)
            _prog_fd_update(lp.link, lp.new_program)
            done.append(lp)
            report.links.append(LinkReport(lp.program, lp.link.target, lp.kind, "updated"))
    again = [lp for lp in links if lp.attach is not None]
    guard_both = word is not None and GENERATION_MAP in side.live_maps()
    last = _order(links, g0, g1)
    if not again:
        if word is not None:
            word.write(g1)
        return 0.0
    if guard_both:
        assert word is not None
        handled = new.maps.get(GENERATION_HANDLED)
        if handled is not None:  # nobody reads it while the word says "one generation"
            handled.update(bytes(4), bytes(8 * possible_cpus()))
        word.write(g0, last, True)
    t_both = time.perf_counter()
    for lp in again:
        lp.new_link = lp.attach(lp.new_program)
        done.append(lp)
    if word is not None:
        word.write(g1, last, guard_both)  # the switch: one 8-byte store
        if guard_both:
            wait_for_running_programs()
            word.write(g1)
    for lp in again:
        side.detach(lp.link)
        report.links.append(LinkReport(lp.program, lp.link.target, lp.kind,
                                       "generation-switched" if guard_both else "re-attached"))
    return time.perf_counter() - t_both


def _undo(links: list[_LinkPlan], done: list[_LinkPlan], word: _GenerationWord | None,
          g0: int) -> None:
    """Put the old version back: links updated back, new links detached, generation."""
    for lp in reversed(done):
        try:
            if lp.attach is None and lp.restore is not None:
                lp.restore()
            elif lp.new_link is not None:
                lp.new_link.detach()
        except BPFError:
            pass
    if word is not None:
        try:
            word.write(g0)
        except (ValueError, BPFError):
            pass
