"""pybpf.btf: lazily built types from a C-indexed type section, checked against libbpf's
own parser (an independent reading of the same bytes), and malformed BTF refused."""

from __future__ import annotations

import glob
import os
import struct
from typing import Any

import pytest
from _child import run_child

import pybpf
from pybpf._ffi import ffi, lib
from pybpf.btf import BTF, BTFFormatError, BTFKind

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBES = sorted(glob.glob(os.path.join(ROOT, "pybpf", "probes", "*.bpf.o")))
VMLINUX = "/sys/kernel/btf/vmlinux"
_VLEN_KINDS = {BTFKind.STRUCT, BTFKind.UNION, BTFKind.ENUM, BTFKind.ENUM64,
               BTFKind.FUNC_PROTO, BTFKind.DATASEC}
_SIZED = {BTFKind.INT, BTFKind.ENUM, BTFKind.ENUM64, BTFKind.STRUCT, BTFKind.UNION,
          BTFKind.FLOAT, BTFKind.DATASEC}


def _same_as_libbpf(btf: BTF, cb: object, ids: range) -> None:
    """Type by type: kind, name, vlen, size or referenced type, as libbpf reads them."""
    for i in ids:
        ct = lib.btf__type_by_id(cb, i)
        t = btf.types[i]
        kind = (ct.info >> 24) & 0x1F
        assert t.kind == kind, (i, t)
        name = ffi.string(lib.btf__name_by_offset(cb, ct.name_off)).decode()
        assert t.name == name or t.kind == BTFKind.DATASEC and not name, (i, t, name)
        if t.kind in _VLEN_KINDS:
            assert len(t.members) == ct.info & 0xFFFF, (i, t)
        if t.kind in _SIZED:
            assert t.size == ct.size, (i, t)
        elif t.kind != BTFKind.ARRAY:
            assert t.type == ct.type, (i, t)
        if t.kind in (BTFKind.STRUCT, BTFKind.UNION, BTFKind.INT, BTFKind.TYPEDEF):
            want = lib.btf__resolve_size(cb, i)
            if want >= 0:
                assert btf.size_of(i) == want, (i, t)


@pytest.mark.parametrize("path", PROBES, ids=os.path.basename)
def test_object_btf_matches_libbpf(path: str) -> None:
    with pybpf.Object.open(path) as obj:
        btf = obj.btf
        with obj.owner:
            cb = lib.bpf_object__btf(obj._ptr)  # libbpf's own parse of it
            assert len(btf) == lib.btf__type_cnt(cb)
            _same_as_libbpf(btf, cb, range(1, len(btf)))
            for t in list(btf)[:200]:
                if t.name and t.kind != BTFKind.DATASEC:
                    want = lib.btf__find_by_name_kind(cb, t.name.encode(), t.kind)
                    assert btf.find(t.name, t.kind).id == want  # type: ignore[union-attr]


@pytest.mark.skipif(not os.path.exists(VMLINUX), reason="no kernel BTF")
def test_vmlinux_matches_libbpf() -> None:
    btf = BTF.from_file(VMLINUX)
    cb = lib.btf__parse(VMLINUX.encode(), ffi.NULL)
    assert cb != ffi.NULL
    try:
        assert len(btf) == lib.btf__type_cnt(cb)
        _same_as_libbpf(btf, cb, range(1, len(btf), 97))
        for name, kind in (("task_struct", BTFKind.STRUCT), ("sk_buff", BTFKind.STRUCT),
                           ("pid_t", BTFKind.TYPEDEF), ("bpf_func_id", BTFKind.ENUM),
                           ("int", BTFKind.INT), ("bpf_prog_run", BTFKind.FUNC)):
            want = lib.btf__find_by_name_kind(cb, name.encode(), kind)
            got = btf.find(name, kind)
            if want < 0:
                assert got is None
                continue
            assert got is not None and got.id == want, name
            assert btf.size_of(want) == max(lib.btf__resolve_size(cb, want), 0) or \
                kind == BTFKind.FUNC
        # find() without a kind: a struct before a same-named function or typedef
        assert btf.find("task_struct").kind == BTFKind.STRUCT  # type: ignore[union-attr]
        assert btf.find("no_such_type_pybpf") is None
        t = btf.find("task_struct")
        assert t is not None and t._btf is btf
        assert {m.name for m in t.members} >= {"pid", "tgid", "comm"}
    finally:
        lib.btf__free(cb)


# --- hand-made blobs ------------------------------------------------------------------

def _blob(types: bytes, strings: bytes) -> bytes:
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


# strings: "" "int" "pair" "a" "b"
_STRS = b"\0int\0pair\0a\0b\0"


def _int(name_off: int = 1) -> bytes:  # #1: int, 4 bytes, signed
    return struct.pack("<IIII", name_off, 1 << 24, 4, (1 << 24) | 32)


def _pair(ref_b: int = 1, name_b: int = 12) -> bytes:  # #2: struct pair { int a, b; }
    return struct.pack("<III", 5, (4 << 24) | 2, 8) + struct.pack(
        "<IIIIII", 10, 1, 0, name_b, ref_b, 32)


def test_handmade_blob_parses() -> None:
    btf = BTF.from_bytes(_blob(_int() + _pair(), _STRS))
    t = btf["pair"]
    assert (t.kind, t.size, [(m.name, m.type, m.offset) for m in t.members]) == (
        BTFKind.STRUCT, 8, [("a", 1, 0), ("b", 1, 32)])
    assert t.codec.decode(struct.pack("<ii", -1, 7)).b == 7


@pytest.mark.parametrize("types,strings,message", [
    (_int() + _pair()[:20], _STRS, "truncated type #2 (STRUCT)"),
    (_int() + b"\0" * 8, _STRS, "truncated type #2"),
    (_int() + struct.pack("<III", 0, 25 << 24, 0), _STRS, "type #2 has unknown kind 25"),
    (_int() + _pair(ref_b=3), _STRS, "type #2 (STRUCT 'pair') refers to type #3, past the "
                                     "last type #2"),
    (_int() + _pair(name_b=400), _STRS, "type #2: string offset 400 out of bounds"),
    (_int(name_off=99), _STRS, "type #1: string offset 99 out of bounds"),
    (_int() + _pair(), _STRS[:-1] + b"x", "string section is not NUL-terminated"),
])
def test_malformed_blob_is_refused(types: bytes, strings: bytes, message: str) -> None:
    with pytest.raises(BTFFormatError, match="malformed BTF: " + message.replace("(", r"\(")
                       .replace(")", r"\)")):
        BTF.from_bytes(_blob(types, strings))


def test_split_btf_matches_libbpf(tmp_path: Any) -> None:
    """A split blob (types and strings numbered after its base's) reads as libbpf reads it."""
    base_raw = _blob(_int() + _pair(), _STRS)
    # #3: typedef pair pair_t; #4: pair_t[3]  (own strings start at len(_STRS))
    own_strs = b"pair_t\0"
    types = struct.pack("<III", len(_STRS), 8 << 24, 2) + struct.pack(
        "<III", 0, 3 << 24, 0) + struct.pack("<III", 3, 1, 3)
    split_raw = _blob(types, own_strs)
    base = BTF.from_bytes(base_raw)
    btf = BTF.from_bytes(split_raw, base=base)
    cbase = lib.btf__new(base_raw, len(base_raw))
    (tmp_path / "split.btf").write_bytes(split_raw)
    cb = lib.btf__parse_raw_split(str(tmp_path / "split.btf").encode(), cbase)
    assert cbase != ffi.NULL and cb != ffi.NULL
    try:
        assert len(btf) == lib.btf__type_cnt(cb) == 5
        _same_as_libbpf(btf, cb, range(1, 5))
        assert btf.find("pair_t").id == lib.btf__find_by_name_kind(cb, b"pair_t", 8)  # type: ignore[union-attr]
        assert btf.find("pair").id == 2  # type: ignore[union-attr]
        assert btf.size_of(4) == lib.btf__resolve_size(cb, 4) == 24
    finally:
        lib.btf__free(cb)
        lib.btf__free(cbase)


def test_mutated_btf_never_crashes() -> None:
    """Random corruptions of a real object's BTF: a BTFFormatError or a usable BTF whose
    every type builds and resolves, never a crash (in a child interpreter)."""
    code = r"""
import random
import pybpf
from pybpf.btf import BTF, BTFFormatError
with pybpf.Object.open(P["path"]) as o:
    good = bytearray(o.btf.raw)
rng = random.Random(1234)
refused = usable = 0
for i in range(1500):
    raw = bytearray(good)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(24, len(raw)) if rng.random() < 0.9 else rng.randrange(len(raw))
        raw[pos] = rng.randrange(256)
    if rng.random() < 0.1:
        raw = raw[:rng.randrange(len(raw))]
    try:
        btf = BTF.from_bytes(bytes(raw))
        for t in btf:
            btf.resolve(t.id)
            btf.size_of(t.id)
            btf.find(t.name)
        usable += 1
    except BTFFormatError:
        refused += 1
emit([refused, usable])
"""
    path = os.path.join(ROOT, "pybpf", "probes", "execsnoop.bpf.o")
    refused, usable = run_child(code, params={"path": path}, timeout=300,
                                what="mutated BTF")
    assert refused > 100 and usable > 100


# --- values of hand-made and corrupted BTF (the codecs built on first use) --------------

class _Strs:
    """A string section built as names are asked for: ``s["x"]`` is x's offset."""

    def __init__(self) -> None:
        self.raw = b"\0"

    def __getitem__(self, name: str) -> int:
        off = self.raw.find(b"\0" + name.encode() + b"\0")
        if off >= 0:
            return off + 1
        self.raw += name.encode() + b"\0"
        return len(self.raw) - len(name) - 1


def _struct(s: _Strs, name: str, size: int, members: list[tuple[str, int, int]]) -> bytes:
    """STRUCT NAME of SIZE bytes; members (name, type id, bit offset)."""
    out = struct.pack("<III", s[name] if name else 0, (4 << 24) | len(members), size)
    return out + b"".join(struct.pack("<III", s[n] if n else 0, t, off) for n, t, off in members)


def _array(elem: int, n: int) -> bytes:
    return struct.pack("<IIIIII", 0, 3 << 24, 0, elem, 1, n)


# what each child builds: the same blob builder, imported from this module
_PRELUDE = """
import copy, struct
from test_btf import _Strs, _struct, _array, _int, _blob
from pybpf.btf import BTF, BTFFormatError
import pybpf.types
"""


def test_c_member_names_arrays_of_one_field_and_empty_structs_round_trip() -> None:
    """A member named like a Python private name (``__pad``, rb_node's
    ``__rb_parent_color``) keeps that attribute name; arrays of one-field structs and of
    empty structs (vmlinux's lock_class_key[3]) build, decode and encode. Each of these
    raised from the codec (KeyError, SyntaxError, ValueError) and left a broken class
    cached for the next use."""
    got = run_child(_PRELUDE + r"""
s = _Strs()
types = (_int(s["int"])                                          # 1
         + _struct(s, "one", 4, [("x", 1, 0)])                   # 2
         + _struct(s, "empty", 0, [])                            # 3
         + _array(2, 3) + _array(3, 2)                           # 4 one[3], 5 empty[2]
         + _struct(s, "rec", 20, [("x", 1, 0), ("__pad", 1, 32), ("ones", 4, 64),
                                  ("e", 5, 160)]))               # 6
btf = BTF.from_bytes(_blob(types, s.raw))
t = btf.find("rec")
Rec = t.pytype
raw = struct.pack("<iiiii", 7, -8, 1, 2, 3)
v = t.decode(raw)
out = {"slots": list(Rec.__slots__), "pad": v.__pad, "ones": [o.x for o in v.ones],
       "e": len(v.e), "again": t.encode(v) == raw,
       "kw": t.encode(Rec(x=7, __pad=-8, ones=[(1,), (2,), (3,)])) == raw,
       "dict": t.encode({"x": 7, "__pad": -8, "ones": [{"x": 1}, {"x": 2}, {"x": 3}]}) == raw,
       "copy": copy.copy(v) == v and copy.deepcopy(v).__pad == -8}
emit(out)
""", what="struct codecs of odd layouts")
    assert got == {"slots": ["x", "__pad", "ones", "e"], "pad": -8, "ones": [1, 2, 3], "e": 2,
                   "again": True, "kw": True, "dict": True, "copy": True}


def test_rb_node_of_a_real_object_decodes() -> None:
    """The kernel's rb_node (in every CO-RE object's BTF) and every struct in the probes'
    BTF: a codec, a value of zeros that encodes back to the same bytes."""
    got = run_child(r"""
import pybpf
from pybpf.btf import BTF
bad = []
n = 0
for path in P["paths"]:
    with pybpf.Object.open(path) as o:
        btf = BTF.from_bytes(o.btf.raw)
    for t in btf:
        if t.kind in (4, 5):
            n += 1
            try:
                zero = bytes(t.codec.size)
                if t.encode(t.decode(zero)) != zero:
                    bad.append(f"{path}: {t}: round trip")
            except Exception as e:
                bad.append(f"{path}: {t}: {type(e).__name__}: {e}")
    rb = btf.find("rb_node")
emit([n, bad[:5], rb.decode(bytes(range(24))).__rb_parent_color if rb else None])
""", params={"paths": PROBES}, timeout=120, what="probe structs")
    n, bad, rb = got
    assert n > 100 and bad == []
    assert rb == int.from_bytes(bytes(range(8)), "little")


@pytest.mark.parametrize("build,message", [
    # struct loop { int a; struct loop b; }: impossible in C, a RecursionError at decode
    (lambda s: _int(s["int"]) + _struct(s, "loop", 8, [("a", 1, 0), ("b", 2, 32)]),
     "type #2 (loop) contains itself"),
    # a member past the end of its struct: struct.error (or a short read) at decode
    (lambda s: _int(s["int"]) + _struct(s, "short", 4, [("a", 1, 0), ("b", 1, 32)]),
     "type #2 (short): member 'b' ends at byte 8, past the 4 bytes of the struct"),
], ids=["contains-itself", "member-past-end"])
def test_impossible_layouts_are_refused_every_time(build: Any, message: str) -> None:
    """A BTFFormatError naming the type, the same on a second use (nothing half-built
    stays cached by the first)."""
    s = _Strs()
    blob = _blob(build(s), s.raw)
    got = run_child(_PRELUDE + r"""
btf = BTF.from_bytes(bytes.fromhex(P["blob"]))
out = []
for attempt in range(2):
    try:
        btf.types[2].codec
        out.append("built")
    except BTFFormatError as e:
        out.append(str(e))
    except Exception as e:
        out.append(f"{type(e).__name__}: {e}")
emit(out)
""", params={"blob": blob.hex()}, what="impossible layout")
    assert got == [f"malformed BTF: {message}"] * 2


def test_mutated_btf_values_never_crash_or_poison() -> None:
    """Random corruptions of a real object's BTF, used lazily as values are: each
    struct's codec, class, a decoded value of zeros and its encoding. Only a
    BTFFormatError (or a pybpf error) may come out, the same one on a second try (no
    half-built codec cached), never another exception or a crash."""
    code = r"""
import random
import pybpf
from pybpf.btf import BTF, BTFFormatError
from pybpf.errors import BPFError
with pybpf.Object.open(P["path"]) as o:
    good = bytearray(o.btf.raw)
rng = random.Random(4321)
used = refused = 0
escaped = []
for i in range(400):
    raw = bytearray(good)
    for _ in range(rng.randint(1, 4)):
        raw[rng.randrange(24, len(raw))] = rng.randrange(256)
    try:
        btf = BTF.from_bytes(bytes(raw))
    except BTFFormatError:
        continue
    for t in btf:
        if t.kind not in (4, 5):
            continue
        first = None
        for attempt in range(2):
            try:
                c = t.codec
                t.pytype
                if c.size <= 1 << 20:
                    zero = bytes(c.size)
                    t.encode(t.decode(zero))
                used += 1
                got = "ok"
            except BPFError as e:
                refused += 1
                got = type(e).__name__
            except Exception as e:
                got = f"{type(e).__name__}: {e}"[:120]
                escaped.append(f"#{i} {t}: {got}")
            if first is None:
                first = got
            elif got != first:
                escaped.append(f"#{i} {t}: {first!r} then {got!r}")
emit([used, refused, escaped[:5]])
"""
    path = os.path.join(ROOT, "pybpf", "probes", "execsnoop.bpf.o")
    used, refused, escaped = run_child(code, params={"path": path}, timeout=300,
                                       what="mutated BTF values")
    assert escaped == []
    assert used > 1000 and refused > 10


def test_btf_custom_path_with_bad_type_ids_is_refused_before_libbpf(tmp_path: Any) -> None:
    """A custom BTF whose task_struct.tgid refers to a type that does not exist made
    libbpf 1.1 crash (SIGSEGV) relocating execsnoop's CO-RE accesses; now the file is
    checked by pybpf's parser first: an ObjectError naming it. The unmodified copy still
    loads (and so does an ELF file's .BTF)."""
    code = r"""
import struct
import pybpf
from pybpf.btf import BTF
raw = open(P["vmlinux"], "rb").read()
b = BTF.from_bytes(raw)
t0 = 24 + struct.unpack_from("<HBBIIIII", raw)[4]
ts = b.find("task_struct")
i = [m.name for m in ts.members].index("tgid")
bad = bytearray(raw)
struct.pack_into("<I", bad, t0 + b._offs[ts.id - 1] + 12 + 12 * i + 4, 0x7FFFFFFF)
out = {}
for case, data in [("good", raw), ("bad-ref", bytes(bad)), ("zeros", bytes(64)),
                   ("elf", open(P["obj"], "rb").read())]:
    path = P["dir"] + "/" + case
    open(path, "wb").write(data)
    try:
        with pybpf.Object.open(P["obj"], btf_custom_path=path) as o:
            o.load()
        out[case] = "loaded"
    except pybpf.ObjectError as e:
        out[case] = str(e)
emit(out)
"""
    obj = os.path.join(ROOT, "pybpf", "probes", "execsnoop.bpf.o")
    got = run_child(code, params={"vmlinux": VMLINUX, "obj": obj, "dir": str(tmp_path)},
                    timeout=120, what="btf_custom_path")
    assert got["good"] == "loaded"
    assert got["bad-ref"].startswith(f"BTF file (btf_custom_path) {tmp_path}/bad-ref: "
                                     "malformed BTF: type #")
    assert "refers to type #2147483647" in got["bad-ref"]
    assert got["zeros"] == (f"BTF file (btf_custom_path) {tmp_path}/zeros: malformed BTF: "
                            "bad magic 0x0")
    assert got["elf"] == "loaded"  # its own BTF has the fields it relocates
