"""Carrying a map's entries from one build of an object to the next (for
:mod:`pybpf.upgrade`): layouts compared from BTF, values converted member by member,
and what the old build wrote during the switch added in afterwards.

Pure Python over the parsed BTF (:mod:`pybpf.btf`) and the raw map layer
(:class:`pybpf.Map` lookup/update/items_raw); the only kernel work of its own is
:class:`_Adder`, a tiny BPF program that adds to an entry with atomic instructions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._ffi import error_for, ffi, lib
from .btf import BTF, BTFKind, BTFType
from .maps import Map, OpenMap, possible_cpus

__all__ = ["Migration", "Refused", "MapPlan", "plan_map", "copy_map", "fold_map",
           "layouts_equal"]

#: A user migration for one map: (old key bytes, old value bytes) -> (new key bytes,
#: new value bytes), or None to leave the entry out. Per-CPU values are every CPU's
#: value, each padded to 8 bytes, as :meth:`pybpf.Map.lookup` returns them.
Migration = Callable[[bytes, bytes], "tuple[bytes, bytes] | None"]

# Map types whose entries can be read and written one by one.
_COPYABLE = frozenset({"hash", "array", "percpu_hash", "percpu_array", "lru_hash",
                       "lru_percpu_hash", "lpm_trie"})
# Map types that hold programs or maps of one build: always the new build's own.
_BUILD_OWNED = frozenset({"prog_array", "array_of_maps", "hash_of_maps", "struct_ops"})

# --- layouts ------------------------------------------------------------------------
class Refused(Exception):
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
        if t.kind == BTFKind.DATASEC:  # a variable: its name is the VAR type's
            out.append((btf.types[m.type].name or f"<anon {i}>", 8 * m.offset, 0, m.type))
        else:
            out.append((m.name or f"<anon {i}>", m.offset, m.bitfield_size, m.type))
    return out


def _signature(btf: BTF, tid: int, depth: int = 0) -> Any:
    """A comparable description of a type's layout: sizes, offsets, member names and
    integer encodings (type names and modifiers do not matter)."""
    if depth > 64:
        raise Refused(None, "type nesting deeper than 64")
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
        raise Refused(path, "type nesting deeper than 64")
    ot, nt = _resolve(ob, oid), _resolve(nb, nid)
    ok, nk = _scalar_kind(ot), _scalar_kind(nt)
    if ok != nk:
        raise Refused(path, f"field {path!r} changed from {ok} to {nk}")
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
            raise Refused(path, f"field {path!r} ({ok}) changed its layout; pybpf copies "
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
            raise Refused(leaf.path, f"{what} {v} of field {leaf.path!r} does not fit in its "
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
@dataclass
class MapPlan:
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


def _describe(btf: BTF, tid: int) -> str:
    """A short C-like name of a type's layout for messages: "u32", "s64", "struct x"."""
    t = _resolve(btf, tid)
    if _scalar_kind(t) == "int":
        return f"{'s' if t.signed else 'u'}{8 * t.size}"
    return f"{_scalar_kind(t)} {t.name}".strip()


def plan_map(old: Map | None, old_btf: BTF | None, om: OpenMap, new_btf: BTF | None,
             user: Migration | None) -> MapPlan:
    """Decide what happens to the new build's map ``om`` (no syscall)."""
    name = om.name
    if om.internal and (".rodata" in name or ".kconfig" in name):
        return MapPlan(name, "created", "read-only constants of the new build")
    if old is None:
        return MapPlan(name, "created", "new in this build")
    otype, ntype = old.type, om.type
    if ntype in _BUILD_OWNED:
        return MapPlan(name, "created", f"a {ntype} map holds the new build's own programs "
                                         "or maps")
    if user is not None:
        return MapPlan(name, "migrated", "by the migration function given", old=old,
                        user=user, new_max=om.max_entries, array=ntype.endswith("array"))
    if otype != ntype:
        return MapPlan(name, "refused", f"map type changed from {otype} to {ntype}",
                        field_=None)
    okey, oval = _type_ids(old)
    nkey, nval = _type_ids(om)
    typed = old_btf is not None and new_btf is not None
    # keys
    if typed and okey and nkey:
        assert old_btf is not None and new_btf is not None
        if not layouts_equal(old_btf, okey, new_btf, nkey):
            f = _first_difference(old_btf, okey, new_btf, nkey)
            what = (f"field {f!r}" if f else
                    f"{_describe(old_btf, okey)} -> {_describe(new_btf, nkey)}")
            return MapPlan(name, "refused", f"key layout changed ({what})", field_=f or "key")
    elif old.key_size != om.key_size:
        return MapPlan(name, "refused", f"key size changed from {old.key_size} to "
                                         f"{om.key_size}", field_="key")
    # values
    if typed and oval and nval:
        assert old_btf is not None and new_btf is not None
        same_value = layouts_equal(old_btf, oval, new_btf, nval)
    else:
        same_value = old.value_size == om.value_size and not (oval or nval)
    new_max = om.max_entries
    if ntype == "perf_event_array" and new_max == 0:
        new_max = possible_cpus()  # what libbpf will create (one slot per CPU)
    same_shape = old.max_entries == new_max and old.flags == om.flags
    if same_value and same_shape:
        return MapPlan(name, "reused", "same layout", old=old)
    why = "value layout changed" if not same_value else (
        f"max_entries {old.max_entries} -> {new_max}"
        if old.max_entries != new_max else f"flags {old.flags:#x} -> {om.flags:#x}")
    if ntype not in _COPYABLE:
        return MapPlan(name, "refused", f"{why}, and the entries of a {ntype} map cannot be "
                                         "copied (keep its layout, size and flags)")
    if not same_value and not (typed and oval and nval):
        return MapPlan(name, "refused", f"{why}, and the map has no BTF value type to "
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
    except Refused as r:
        return MapPlan(name, "refused", r.reason, field_=r.field)
    reason = why + (f"; dropped {', '.join(dropped)}" if dropped else "")
    key_conv = _Converter(name, [_Leaf("key", 0, 8 * old.key_size, False, 0, 8 * om.key_size,
                                       False, False)], old.key_size, om.key_size, False)
    return MapPlan(name, "migrated", reason, old=old, key=key_conv,
                    value=_Converter(name, leaves, old.value_size, om.value_size,
                                     ntype in ("percpu_hash", "percpu_array",
                                               "lru_percpu_hash")),
                    new_max=om.max_entries, array=ntype.endswith("array"))


# --- copying ------------------------------------------------------------------------
def _convert_entry(p: MapPlan, k: bytes, v: bytes) -> tuple[bytes, bytes] | None:
    if p.user is not None:
        return p.user(k, v)
    assert p.key is not None and p.value is not None
    return k, p.value.convert(v)


def _is_zero(b: bytes) -> bool:
    return not any(b)


def copy_map(p: MapPlan, new: Map) -> None:
    """First pass: snapshot the old map and write the converted entries into ``new``
    (two syscalls per entry; zero array slots are left as they are)."""
    assert p.old is not None
    try:
        _copy(p, new)
    except Refused as r:
        r.map = p.name
        raise


def _copy(p: MapPlan, new: Map) -> None:
    assert p.old is not None
    p.snapshot = dict(p.old.items_raw())
    n = 0
    for k, v in p.snapshot.items():
        if p.array and _is_zero(v):
            continue
        if p.array and int.from_bytes(k, "little") >= p.new_max:
            raise Refused(None, f"array index {int.from_bytes(k, 'little')} holds a value "
                                 f"but the new map has {p.new_max} entries")
        try:
            pair = _convert_entry(p, k, v)
        except Refused:
            raise
        except Exception as e:  # a user migration function failed
            raise Refused(None, f"migration function failed: {e!r}") from e
        if pair is None:
            continue
        new.update(pair[0], pair[1])
        n += 1
    p.entries = n


def fold_map(p: MapPlan, new: Map) -> None:
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
            if fields is not None and adder is None:
                try:
                    adder = _Adder(new, new.key_size, fields, p.value.ncpu > 1 or new.percpu)
                except OSError:  # no syscall programs (< 5.14) or percpu lookups (< 5.19)
                    fields = None
            if adder is not None and _fold_atomic(adder, p.value, k, before, after, new):
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
                try:
                    os.sched_setaffinity(0, {c})  # this thread only: the add runs on CPU c
                except OSError:
                    pass  # not allowed there: the add still is atomic, from another CPU
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
