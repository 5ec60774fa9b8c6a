"""Struct values in C: construction, field access, == (pybpf/_native/values.c) and the
three value forms m[k] = Struct(...) / (a, b, ...) / {...} plus per-CPU values encoded
and decoded in C (pybpf/_fastpath.c), checked against what a BPF program read and wrote
(tests/bpf/values_c.bpf.c): every field the kernel saw is copied out as a plain u64 and
read back as raw bytes, so the expected values are what this test wrote or what the
program wrote, never what the code under test decoded.
"""

from __future__ import annotations

import struct

import pytest
from _child import run_child

import pybpf
from pybpf import possible_cpus

PKT = bytes(64)
OUT_H, OUT_ARR, OUT_PH, MAXCPU = 0, 8, 16, 64
OUT_PA = OUT_PH + 8 * MAXCPU
FIELDS = ("a", "b", "c", "d", "e", "col", "f", "g")
# one value per field, at the edges of each C type
EDGES = dict(a=2**64 - 1, b=-2**31, c=65535, d=255, e=True, col=300, f=-2**63, g=-2.25)


def _bits(x: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", x))[0])


def _as_u64(d: dict[str, object]) -> list[int]:
    """What readback records for a value with these fields (zero where absent)."""
    out = []
    for n in FIELDS:
        v = d.get(n, 0)
        if n == "g":
            out.append(_bits(float(v)))  # type: ignore[arg-type]
        else:
            out.append(int(v) % 2**64)  # type: ignore[call-overload]
    return out


@pytest.fixture
def vo(bpf_obj):
    with pybpf.load(bpf_obj("values_c")) as obj:
        obj.maps["h"][1] = {}  # readback counts an absent h[1] as a miss
        yield obj


def _out(obj: pybpf.Object, base: int) -> list[int]:
    """readback's record at ``base``: raw bytes, unpacked here (not by pybpf's codecs)."""
    m = obj.maps["out"]
    got = []
    for i in range(base, base + 8):
        raw = m.lookup(struct.pack("<I", i))
        assert raw is not None
        got.append(struct.unpack("<Q", raw)[0])
    return got


def _readback(obj: pybpf.Object) -> None:
    assert obj.programs["readback"].test_run(PKT).retval == 2  # XDP_PASS
    assert obj.bss.misses == 0


def _c_only(m: pybpf.Map) -> None:
    """Make the validating Python path fail loudly: what follows must stay in C."""
    def boom(*a: object) -> None:
        raise AssertionError(f"map {m.name!r} left the C path: {a!r}")
    m._c_failed = boom  # type: ignore[attr-defined]


@pytest.mark.parametrize("form", ["struct", "tuple", "list", "dict", "partial-dict"])
@pytest.mark.parametrize("mapname,base", [("h", OUT_H), ("arr", OUT_ARR)])
def test_every_form_reaches_the_kernel_exactly(vo, form, mapname, base):
    Rec = vo.btf["rec"].pytype
    m = vo.maps[mapname]
    fields = dict(EDGES) if form != "partial-dict" else {"b": -7, "col": 1, "g": 0.5}
    value = {
        "struct": lambda: Rec(**fields),
        "tuple": lambda: tuple(fields[n] for n in FIELDS),
        "list": lambda: [fields[n] for n in FIELDS],
        "dict": lambda: dict(fields),
        "partial-dict": lambda: dict(fields),
    }[form]()
    m[0] = Rec()  # something to make the C state first
    _c_only(m)
    m[1] = value
    _readback(vo)
    assert _out(vo, base) == _as_u64(fields)


def test_short_tuples_zero_the_rest_in_the_kernel(vo):
    h = vo.maps["h"]
    h[1] = dict(EDGES)
    _c_only(h)
    h[1] = (5, -6)
    _readback(vo)
    assert _out(vo, OUT_H) == _as_u64({"a": 5, "b": -6})


def test_decodes_what_the_kernel_wrote(vo):
    Rec, color = vo.btf["rec"].pytype, vo.btf["vc_color"].pytype
    h, pa, ph = vo.maps["h"], vo.maps["pa"], vo.maps["ph"]
    ncpu = possible_cpus()
    ph[2] = Rec(c=9)  # on every CPU; fill then rewrites a, b and col on each
    assert vo.programs["fill"].test_run(PKT).retval == 2
    v = h[2]
    assert type(v) is Rec
    assert (v.a, v.b, v.c, v.d, v.e, v.f, v.g) == (
        0xfedcba9876543210, -2**31, 65535, 255, True, -(1 << 62), 2.5)
    assert v.col is color.VC_BLUE
    for m in (pa, ph):
        key = 1 if m is pa else 2
        vals = m[key]
        assert type(vals) is list and len(vals) == ncpu
        assert [x.a for x in vals] == [1000 * i + 7 for i in range(ncpu)]
        assert [x.b for x in vals] == [-i - 1 for i in range(ncpu)]
        assert all(x.col is color.VC_GREEN for x in vals)
        assert [x.c for x in vals] == [9 if m is ph else 0] * ncpu
        assert m.get(key) == vals
        walked = dict(m.items())  # batches: every CPU's value of a chunk in one C call
        assert walked[key] == vals and [x.a for x in walked[key]] == [
            1000 * i + 7 for i in range(ncpu)]


@pytest.mark.parametrize("form", ["list-of-structs", "list-of-tuples", "list-of-dicts"])
def test_per_cpu_values_reach_every_cpu(vo, form):
    Rec = vo.btf["rec"].pytype
    ph = vo.maps["ph"]
    ncpu = possible_cpus()
    per = [dict(a=100 + i, b=-i, c=i, d=i % 256, e=bool(i % 2), col=2, f=-5 * i,
                g=i / 4) for i in range(ncpu)]
    value = {
        "list-of-structs": [Rec(**p) for p in per],
        "list-of-tuples": [tuple(p[n] for n in FIELDS) for p in per],
        "list-of-dicts": per,
    }[form]
    ph[0] = Rec()
    _c_only(ph)
    ph[1] = value
    _readback(vo)
    assert vo.bss.ph_cpus == ncpu
    for i in range(ncpu):
        assert _out(vo, OUT_PH + 8 * i) == _as_u64(per[i]), i


@pytest.mark.parametrize("form", ["struct", "tuple", "dict"])
def test_one_per_cpu_value_goes_to_every_cpu(vo, form):
    Rec = vo.btf["rec"].pytype
    pa = vo.maps["pa"]
    ncpu = possible_cpus()
    value = {"struct": Rec(**EDGES), "tuple": tuple(EDGES[n] for n in FIELDS),
             "dict": dict(EDGES)}[form]
    pa[1] = Rec()
    _c_only(pa)
    pa[0] = value
    _readback(vo)
    assert vo.bss.pa_cpus == ncpu
    for i in range(ncpu):
        assert _out(vo, OUT_PA + 8 * i) == _as_u64(EDGES), i


def test_construction_field_access_and_equality(vo, bpf_obj):
    Rec = vo.btf["rec"].pytype
    r = Rec(1, -2, col=300)
    assert (r.a, r.b, r.c, r.d, r.e, r.col, r.f, r.g) == (1, -2, 0, 0, False, 300, 0, 0.0)
    assert type(r.e) is bool and type(r.g) is float
    assert r == Rec(a=1, b=-2, col=300) and not r != Rec(a=1, b=-2, col=300)
    assert r != Rec(a=1, b=-3, col=300) and not r == Rec(a=1, b=-3, col=300)
    assert r != (1, -2, 0, 0, False, 300, 0, 0.0) and r != {"a": 1}  # other kinds: unequal
    r.c = 7
    assert r.c == 7 and r == Rec(1, -2, 7, col=300)
    with pytest.raises(TypeError):
        hash(r)  # mutable, as before
    with pytest.raises(TypeError, match=r"rec has no field 'nope' \(fields: a, b, c, d, e"):
        Rec(nope=1)
    with pytest.raises(TypeError, match="rec has 8 fields, got 9 positional values"):
        Rec(*range(9))
    with pytest.raises(AttributeError):
        r.nope = 1  # __slots__: no other attributes
    # objects opened from the same bytes share one BTF, so one class
    with pybpf.load(bpf_obj("values_c")) as other:
        assert other.btf["rec"].pytype is Rec
    # the same C type from another BTF is equal field by field
    Rec2 = pybpf.BTF.from_bytes(vo.btf.raw)["rec"].pytype
    assert Rec2 is not Rec
    assert Rec2(1, -2, 7, col=300) == r and r == Rec2(1, -2, 7, col=300)
    assert Rec2(1) != r
    # keyword and positional forms agree with the decoder, through the kernel
    h = vo.maps["h"]
    h[1] = Rec(**EDGES)
    assert h[1] == Rec(**EDGES) and h[1] == Rec(*[EDGES[n] for n in FIELDS])


@pytest.mark.parametrize("value,exc,field,msg", [
    ({"b": 2**31}, pybpf.MapValueError, "value.b", "out of range for int"),
    ({"c": -1}, pybpf.MapValueError, "value.c", "out of range"),
    ({"a": "1"}, pybpf.MapTypeError, "value.a", "expected int"),
    ({"col": "VC_PURPLE"}, pybpf.MapValueError, "value.col", "not an enumerator"),
    ({"nope": 1}, pybpf.MapTypeError, "value", "has no field 'nope'"),
    (tuple(range(9)), pybpf.MapTypeError, "value", "9 values for rec"),
    ((1.5,), pybpf.MapTypeError, "value.a", "expected int"),
    ("x", pybpf.MapTypeError, "value", "expected rec"),
])
def test_bad_values_name_the_map_field_and_type_and_write_nothing(vo, value, exc, field, msg):
    Rec = vo.btf["rec"].pytype
    for mapname in ("h", "ph"):
        m = vo.maps[mapname]
        m[1] = Rec(a=41)
        with pytest.raises(exc) as ei:
            m[1] = value
        e = ei.value
        assert isinstance(e, pybpf.MapError) and isinstance(e, (TypeError, ValueError))
        assert (e.map, e.field, e.type_name) == (mapname, field, "rec")
        assert str(e).startswith(f"map {mapname!r}: {field}") and msg in str(e)
        assert str(e).endswith("(value type: rec)")
        got = m[1]
        assert (got[0] if isinstance(got, list) else got).a == 41  # untouched


def test_bad_keys_and_per_cpu_counts_name_the_map_and_type(vo):
    Rec = vo.btf["rec"].pytype
    h, ph = vo.maps["h"], vo.maps["ph"]
    with pytest.raises(pybpf.MapTypeError) as ei:
        h["1"] = Rec()
    assert (ei.value.map, ei.value.field) == ("h", "key") and "key type" in str(ei.value)
    with pytest.raises(pybpf.MapValueError) as ei:
        h[2**32]
    assert ei.value.field == "key" and ei.value.type_name == ei.value.type_name.strip()
    assert "out of range" in str(ei.value) and ei.value.type_name in str(ei.value)
    ncpu = possible_cpus()
    with pytest.raises(pybpf.MapValueError, match=f"per-CPU value needs {ncpu} values"):
        ph[1] = [Rec()] * (ncpu + 1)
    with pytest.raises(pybpf.MapValueError, match=r"value\[1\]\.b: .*out of range"):
        ph[1] = [Rec(), {"b": 2**40}] + [Rec()] * (ncpu - 2)


def test_struct_base_survives_misuse_in_a_child():
    """Reinitialising, deleting slots, subclasses, replaced shapes and many threads
    building values at once: errors, never a crash."""
    verdict = run_child("""
        import gc, threading, pybpf
        from conftest import compile_test_bpf
        obj = pybpf.load(compile_test_bpf("values_c"))
        Rec = obj.btf["rec"].pytype
        r = Rec(1, 2)
        r.__init__(b=5)                       # re-init: the others back to zero
        assert (r.a, r.b) == (0, 5)
        del r.a
        try:
            r.a
        except AttributeError:
            pass
        assert r != Rec() and Rec() != r      # a missing slot compares unequal
        try:
            obj.maps["h"][1] = r              # a missing slot: the Python path explains
        except TypeError:
            pass
        class Sub(Rec):
            __slots__ = ()
        s = Sub(a=3)
        assert s.a == 3 and s == Sub(a=3)
        h = obj.maps["h"]
        h[2] = Sub(a=4, b=1)                  # another class: encoded by the codec
        assert h[2].a == 4
        # Python code run while C converts a value may drop the map's C state or the
        # slots being compared: C keeps its own references
        class Evil(str):
            __hash__ = str.__hash__
            def __eq__(self, other):
                h.set_types(value=Rec)        # drops the MapOps in use
                gc.collect()
                return str.__eq__(self, other)
        h[3] = {Evil("a"): 7}
        assert h[3].a == 7
        class Reassign(int):
            __hash__ = int.__hash__
            def __eq__(self, other):
                r2.a = 0                      # frees the value being compared
                gc.collect()
                return int.__eq__(self, other)
        big_int = int("1" + "0" * 30)           # made at run time: only r2 holds it
        r1, r2 = Rec(a=Reassign(big_int)), Rec(a=big_int * 1)
        del big_int
        assert (r1 == r2) is True and r2.a == 0
        lst = [1, 2, 3, 4, None, 6, 7, 8.0]
        class Clear(int):
            def __bool__(self):
                lst.clear()                   # shrinks the list C is reading
                gc.collect()
                return True
        lst[4] = Clear(1)                     # field e is a bool
        try:
            h[4] = lst
        except (TypeError, ValueError):
            pass
        big = [Rec(i, -i, col=300) for i in range(20000)]
        del big
        errors = []
        def work():
            try:
                for i in range(3000):
                    h[i % 16] = Rec(a=i, b=-i)
                    v = h[i % 16]
                    assert v == v and type(v) is Rec
            except Exception as e:
                errors.append(repr(e))
        ts = [threading.Thread(target=work) for _ in range(4)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        gc.collect()
        obj.close()
        try:
            h[1]
        except pybpf.ClosedError:
            pass
        emit({"errors": errors})
    """, timeout=120)
    assert verdict == {"errors": []}


@pytest.mark.parametrize("form", ["struct", "tuple", "dict"])
def test_struct_and_signed_keys_are_encoded_in_c(vo, form):
    Key = vo.btf["kkey"].pytype
    kh, sk = vo.maps["kh"], vo.maps["sk"]
    fields = dict(ip=0x0a000001, port=8080, proto=6, zone=-3)
    key = {"struct": Key(**fields), "tuple": tuple(fields.values()), "dict": fields}[form]
    kh[Key()] = 1
    sk[0] = 1
    _c_only(kh)
    _c_only(sk)
    kh[key] = 77
    sk[-5] = 88
    _readback(vo)
    assert (vo.data.kh_seen, vo.data.sk_seen) == (77, 88)
    assert kh[key] == 77 and key in kh and sk[-5] == 88
    assert sorted(k.port for k in kh.keys()) == [0, 8080]
    del kh[key]
    del sk[-5]
    _readback(vo)
    assert (vo.data.kh_seen, vo.data.sk_seen) == (2**64 - 1, 2**64 - 1)


def test_bad_struct_keys_name_the_map_field_and_key_type(vo):
    kh, sk = vo.maps["kh"], vo.maps["sk"]
    with pytest.raises(pybpf.MapValueError) as ei:
        kh[{"port": 70000}] = 1
    e = ei.value
    assert (e.map, e.field, e.type_name) == ("kh", "key.port", "kkey")
    assert str(e).endswith("(key type: kkey)")
    with pytest.raises(pybpf.MapTypeError, match=r"map 'kh': key: .*no field 'nope'"):
        kh[{"nope": 1}]
    with pytest.raises(pybpf.MapValueError, match=r"map 'sk': key: .*out of range"):
        sk[-2**15 - 1] = 1
    assert len(kh) == 0 and len(sk) == 0  # nothing was written


def test_maps_c_cannot_serve_take_the_validating_path(vo):
    """As on a big-endian host (or a keyless map): no MapOps, every operation through the
    codecs, with the same results in the kernel and the same errors."""
    from pybpf import mapkinds

    Rec = vo.btf["rec"].pytype
    h = vo.maps["h"]
    h._ops = mapkinds._NO_OPS
    h[1] = dict(EDGES)
    _readback(vo)
    assert _out(vo, OUT_H) == _as_u64(EDGES)
    h[2] = (5, -6)
    assert h[2] == Rec(5, -6) and 2 in h and 9 not in h and h.get(9) is None
    del h[2]
    with pytest.raises(KeyError):
        h[2]
    with pytest.raises(pybpf.MapValueError, match=r"map 'h': value\.b: .*out of range"):
        h[3] = {"b": 2**31}
    assert h._ops is mapkinds._NO_OPS


def test_an_interrupt_while_c_converts_a_value_is_not_swallowed():
    """A KeyboardInterrupt (or MemoryError) raised by a field's own conversion (an int
    subclass's __bool__, a float subclass's __float__: where a signal handler lands)
    while C encodes a value reaches the caller, and nothing is written. It was cleared
    as "not for the fast path", and the write went ahead."""
    verdict = run_child("""
        import pybpf
        from conftest import compile_test_bpf
        obj = pybpf.load(compile_test_bpf("values_c"))
        armed = []
        def fire():
            if armed:
                raise armed.pop()
        class Once(int):
            def __bool__(self):
                fire()
                return True
        class OnceF(int):  # an int for a double field: C asks its __float__
            def __float__(self):
                fire()
                return 2.5
        h, ph = obj.maps["h"], obj.maps["ph"]
        cases = [("tuple", h, (0, 0, 0, 0, Once(1))),
                 ("dict", h, {"e": Once(1)}),
                 ("float", h, {"g": OnceF(1)}),
                 ("percpu", ph, (0, 0, 0, 0, Once(1))),
                 ("percpu-list", ph, [{"e": Once(1)}, {"e": Once(1)}])]
        out = {}
        for name, m, v in cases:
            for exc in (KeyboardInterrupt, MemoryError):
                armed[:] = [exc]
                try:
                    m[7] = v
                    got = "written"
                except exc:
                    got = exc.__name__ + (" but written" if 7 in m else "")
                out[f"{name}/{exc.__name__}"] = got
                if 7 in m:
                    del m[7]
        emit(out)
    """, what="interrupt during C conversion")
    assert verdict == {f"{name}/{exc}": exc for name in ("tuple", "dict", "float", "percpu",
                                                         "percpu-list")
                       for exc in ("KeyboardInterrupt", "MemoryError")}


def test_recycled_instances_in_a_child():
    """Instances of generated classes reuse freed memory (pybpf/_native/values.c): every
    instance still has its own class and values, what its slots held is freed exactly
    once, subclasses (with __dict__ and __weakref__), a __del__ added later, cycles,
    deep chains and copy behave as for any class, and the class's reference
    count comes back."""
    verdict = run_child("""
        import copy, gc, weakref, pybpf
        from conftest import compile_test_bpf
        obj = pybpf.load(compile_test_bpf("values_c"))
        h = obj.maps["h"]
        Rec = obj.btf["rec"].pytype
        # a second class of the same size: freed memory of one goes to the other
        import ctypes
        class other(ctypes.Structure):  # (a ctypes type: no clang needed in guests)
            _fields_ = [(n, ctypes.c_long) for n in ("a", "b", "c", "d", "e", "col", "f", "g")]
        Other = pybpf.btf_type(other).pytype
        out = {}
        h[1] = Rec(); h[1]; Other()           # the map's C state made (it holds Rec)
        refs = sys.getrefcount(Rec), sys.getrefcount(Other)
        for i in range(2000):
            h[1] = Rec(a=i, b=-i, col=300)
            got = h[1]
            o = Other(a=i, g=-i)
            assert type(got) is Rec and (got.a, got.b, got.c) == (i, -i, 0), got
            assert type(o) is Other and (o.a, o.b, o.g) == (i, 0, -i), o
            del got, o
        gc.collect()
        out["class refs back"] = (sys.getrefcount(Rec), sys.getrefcount(Other)) == refs

        class Marker:
            pass

        def freed_with(make):
            m = Marker()
            w = weakref.ref(m)
            x = make(m)
            del m, x
            return w() is None

        out["slot freed"] = freed_with(lambda m: Rec(a=m))
        class Sub(Rec):                       # __dict__ and __weakref__ of its own
            pass
        srefs = sys.getrefcount(Sub)
        out["base slot of subclass freed"] = freed_with(lambda m: Sub(a=m))
        out["subclass dict freed"] = freed_with(lambda m: setattr(s := Sub(), "x", m) or s)
        s = Sub(a=5)
        ws = weakref.ref(s)
        del s
        out["subclass instance freed"] = ws() is None
        out["subclass refs back"] = sys.getrefcount(Sub) == srefs

        def cyc(m):                           # a cycle through a slot: the collector frees it
            r = Rec(b=m)
            r.a = r
            return r
        m = Marker(); w = weakref.ref(m); cyc(m); del m; gc.collect()
        out["cycle collected"] = w() is None

        r = Rec()
        for i in range(300000):               # freed without a deep C recursion
            r = Rec(a=r)
        del r

        r = Rec(a=7, b=-2, col=300, g=1.5)
        out["copy"] = copy.copy(r) == r and copy.deepcopy(r) == r and copy.copy(r) is not r

        dels, keep = [], []
        Rec.__del__ = lambda self: (dels.append(self.a),    # a finalizer added later
                                    keep.append(self) if self.a == 2 else None)
        Rec(a=1); Rec(a=2)                    # the second resurrects itself
        out["finalizers"] = dels == [1, 2] and keep[0].a == 2
        del Rec.__del__
        h[2] = Rec(a=3)
        out["after"] = h[2].a == 3 and type(h[2]) is Rec
        emit(out)
    """, timeout=180)
    assert verdict == {k: True for k in verdict} and len(verdict) == 10, verdict
