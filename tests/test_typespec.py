"""Value types the object's BTF lacks (pybpf.typespec): given as a C declaration, a
ctypes.Structure or a numpy dtype, they type ring and perf buffer records, map values
(live and before load), globals, numpy batches, `pybpf run --event-type` and
`pybpf gen --map-type`.

The kernel side is tests/bpf/typespec.bpf.c: a getpriority(PRIO_PROCESS, cookie) call
of this process makes it record a `struct ts_event` computed from the cookie, a
struct its BTF does not have. Expected values come from the cookies the test chose
and from this process (pid, thread id, thread name)."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _child import readline

import pybpf
from pybpf import toolchain
from pybpf.typespec import btf_type

DECL = """
/* the program's struct, as a user would copy it from its source */
struct ts_event {
	__u32 pid;
	__u32 tid;
	__u64 cookie;
	char comm[16];
	__s16 neg;
	__u8 flags:3;
	__u8 kind:5;
	__u8 pad;
	__u32 small;
};
"""


class TsEvent(ctypes.Structure):
    _fields_ = [("pid", ctypes.c_uint32), ("tid", ctypes.c_uint32),
                ("cookie", ctypes.c_uint64), ("comm", ctypes.c_char * 16),
                ("neg", ctypes.c_int16), ("flags", ctypes.c_uint8, 3),
                ("kind", ctypes.c_uint8, 5), ("pad", ctypes.c_uint8),
                ("small", ctypes.c_uint32)]


class TsEventBits(ctypes.Structure):  # numpy arrays have no bitfields: one byte `bits`
    _fields_ = [(n, t) for n, t, *_ in TsEvent._fields_ if n not in ("flags", "kind")]
    _fields_.insert(5, ("bits", ctypes.c_uint8))


DECL_BITS = DECL.replace("__u8 flags:3;", "__u8 bits;").replace("__u8 kind:5;", "").replace(
    "ts_event", "ts_event_bits")


def _dtype() -> Any:
    np = pytest.importorskip("numpy")
    # numpy has no bitfields: flags and kind share the byte `bits`
    return np.dtype([("pid", "<u4"), ("tid", "<u4"), ("cookie", "<u8"), ("comm", "S16"),
                     ("neg", "<i2"), ("bits", "u1"), ("pad", "u1"), ("small", "<u4")])


FORMS = ["c", "ctypes", "numpy"]


def spec_of(form: str) -> Any:
    if form == "c":
        if not _have_clang():
            pytest.skip("no clang to compile the C declaration")
        return DECL
    if form == "ctypes":
        return TsEvent
    return _dtype()


def _have_clang() -> bool:
    try:
        toolchain.find_clang()
    except FileNotFoundError:
        return False
    return True


COOKIES = [0x1234_0000 + i * 37 for i in range(1, 9)]


def expected(cookie: int, tid: int, comm: bytes) -> dict[str, Any]:
    """What the program records for ``cookie`` (its arithmetic, restated)."""
    return {"pid": os.getpid(), "tid": tid, "cookie": cookie, "comm": comm,
            "neg": -(cookie & 0x7FFF), "flags": cookie & 7, "kind": (cookie >> 3) & 31,
            "pad": 0, "small": (cookie * 3) & 0xFFFFFFFF}


def as_dict(v: Any, form: str) -> dict[str, Any]:
    """A decoded record as the dict expected() gives (numpy form: bits split)."""
    d = {n: getattr(v, n) for n in ("pid", "tid", "cookie", "comm", "neg", "pad", "small")}
    d["comm"] = bytes(d["comm"]).rstrip(b"\0")
    if form == "numpy":
        d["flags"], d["kind"] = v.bits & 7, v.bits >> 3
    else:
        d["flags"], d["kind"] = v.flags, v.kind
    return d


def my_comm() -> bytes:
    tid = threading.get_native_id()
    return Path(f"/proc/self/task/{tid}/comm").read_bytes().strip()[:15]


def trigger(cookies: list[int]) -> None:
    for c in cookies:
        try:
            os.getpriority(os.PRIO_PROCESS, c)
        except OSError:
            pass  # no such process: the tracepoint fired all the same


@pytest.fixture
def loaded(bpf_obj: Any) -> Any:
    obj = pybpf.Object.open(bpf_obj("typespec"))
    obj.rodata.target_pid = os.getpid()
    yield obj
    obj.close()


def test_the_object_lacks_the_struct(bpf_obj: Any) -> None:
    with pybpf.Object.open(bpf_obj("typespec")) as obj:
        assert obj.btf.find("ts_event") is None
        assert obj.maps["recorded"].btf_value_type_id == 0


@pytest.mark.parametrize("form", FORMS)
def test_ring_perf_map_and_globals_decode(loaded: Any, form: str) -> None:
    spec = spec_of(form)
    obj = loaded
    obj.maps["recorded"].set_types("u32", spec)  # before load: kept for the live map
    obj.load()
    obj.attach()
    got_ring: list[Any] = []
    got_perf: list[Any] = []
    rb = pybpf.RingBuffer(obj.maps["ts_rb"], callback=got_ring.append, decode=spec)
    pb = pybpf.PerfBuffer(obj.maps["ts_pb"], callback=got_perf.append, decode=spec)
    try:
        trigger(COOKIES)
        deadline = time.monotonic() + 10
        while (len(got_ring) < len(COOKIES) or len(got_perf) < len(COOKIES)) and \
                time.monotonic() < deadline:
            rb.poll(0.1)
            pb.poll(0.1)
    finally:
        rb.close()
        pb.close()
    tid, comm = threading.get_native_id(), my_comm()
    want = [expected(c, tid, comm) for c in COOKIES]
    assert [as_dict(v, form) for v in got_ring] == want
    assert sorted((as_dict(v, form) for v in got_perf), key=lambda d: d["cookie"]) == want
    recorded = obj.maps["recorded"]
    for c in COOKIES:
        assert as_dict(recorded[c], form) == expected(c, tid, comm)
    bss = obj.bss
    bss.set_type("last_event", spec)
    assert as_dict(bss.last_event, form) == want[-1]


@pytest.mark.parametrize("form", FORMS)
def test_live_map_set_types_and_write(loaded: Any, form: str) -> None:
    spec = spec_of(form)
    before = loaded.maps["recorded"]
    obj = loaded.load()
    with pytest.raises(pybpf.StateError, match="set_types can only be set before load"):
        before.set_types(value=spec)  # the description: too late once loaded
    m = obj.maps["recorded"]
    m.set_types(key="u32", value=spec)
    obj.attach()
    trigger(COOKIES[:2])
    tid, comm = threading.get_native_id(), my_comm()
    assert as_dict(m[COOKIES[0]], form) == expected(COOKIES[0], tid, comm)
    # a value written from Python reads back as the same bytes ctypes makes of it
    raw = bytes(TsEvent(pid=1, tid=2, cookie=3, comm=b"abc", neg=-4, flags=5, kind=6,
                        small=7))
    bits = 5 | 6 << 3
    value = {"pid": 1, "tid": 2, "cookie": 3, "comm": b"abc", "neg": -4, "small": 7,
             **({"bits": bits} if form == "numpy" else {"flags": 5, "kind": 6})}
    m[99] = value
    assert m.lookup((99).to_bytes(4, "little")) == raw


def test_numpy_batch_from_c_declaration_and_ctypes(loaded: Any) -> None:
    np = pytest.importorskip("numpy")
    obj = loaded.load()
    obj.attach()
    rb = pybpf.RingBuffer(obj.maps["ts_rb"])
    try:
        trigger(COOKIES)
        batch = rb.read(timeout=5.0)  # the program wrote them all before read()
        assert len(batch) == len(COOKIES)
        specs = [TsEventBits] + ([DECL_BITS] if _have_clang() else [])
        for spec in specs:
            arr = batch.numpy(spec)
            assert list(arr["cookie"]) == COOKIES
            assert list(arr["small"]) == [(c * 3) & 0xFFFFFFFF for c in COOKIES]
            assert list(arr["neg"]) == [-(c & 0x7FFF) for c in COOKIES]
            assert arr.dtype.itemsize == 40
            assert np.all(arr["pid"] == os.getpid())
            assert list(arr["bits"]) == [(c & 7) | ((c >> 3) & 31) << 3 for c in COOKIES]
        with pytest.raises(TypeError, match="bitfield member 'flags' has no numpy"):
            batch.numpy(TsEvent)
    finally:
        rb.close()


# --- the conversions and their errors ---------------------------------------------------

def test_three_forms_give_the_same_layout() -> None:
    forms = [btf_type(TsEvent)]
    if _have_clang():
        forms.append(btf_type(DECL))
    for t in forms:
        c = t.codec
        assert c.size == ctypes.sizeof(TsEvent) == 40
        assert [(m.name, m.byte_off, m.bits) for m in c.members if m.bits] == [
            ("flags", 34, 3), ("kind", 34, 5)] or \
            [(m.name, m.bit_off, m.bits) for m in c.members if m.bits] == [
            ("flags", 272, 3), ("kind", 275, 5)]
        ev = TsEvent(pid=7, tid=8, cookie=9, comm=b"bash", neg=-2, flags=3, kind=17, small=5)
        v = c.decode(bytes(ev))
        assert (v.pid, v.cookie, v.comm.str, v.neg, v.flags, v.kind, v.small) == (
            7, 9, "bash", -2, 3, 17, 5)
        assert c.encode(v) == bytes(ev)


def test_unsupported_ctypes_are_named() -> None:
    class WithPtr(ctypes.Structure):
        _fields_ = [("a", ctypes.c_int), ("next", ctypes.c_void_p)]

    class WithWchar(ctypes.Structure):
        _fields_ = [("w", ctypes.c_wchar)]

    class Big(ctypes.BigEndianStructure):
        _fields_ = [("a", ctypes.c_uint32)]

    with pytest.raises(pybpf.TypeSpecError, match=r"WithPtr\.next: c_void_p is a pointer"):
        btf_type(WithPtr)
    with pytest.raises(TypeError, match=r"LP_c_int is a pointer"):
        btf_type(ctypes.POINTER(ctypes.c_int))
    with pytest.raises(pybpf.TypeSpecError, match=r"WithWchar\.w: c_wchar"):
        btf_type(WithWchar)
    with pytest.raises(pybpf.TypeSpecError, match="Big: Big is big-endian"):
        btf_type(Big)


def test_unions_and_nested_ctypes() -> None:
    class Inner(ctypes.Structure):
        _fields_ = [("x", ctypes.c_uint16), ("y", ctypes.c_uint16)]

    class U(ctypes.Union):
        _fields_ = [("whole", ctypes.c_uint32), ("parts", Inner)]

    class Outer(ctypes.Structure):
        _fields_ = [("u", U), ("arr", ctypes.c_int32 * 3), ("ok", ctypes.c_bool),
                    ("d", ctypes.c_double)]

    o = Outer()
    o.u.whole = 0x00020001
    o.arr[:] = [-1, 5, 9]
    o.ok = True
    o.d = 2.5
    v = btf_type(Outer).decode(bytes(o))
    assert (v.u.whole, v.u.parts.x, v.u.parts.y, v.arr, v.ok, v.d) == (
        0x20001, 1, 2, [-1, 5, 9], True, 2.5)


def test_unsupported_numpy_dtypes_are_named() -> None:
    np = pytest.importorskip("numpy")
    with pytest.raises(pybpf.TypeSpecError, match=r"record\.name: <U4 has no C equivalent"):
        btf_type(np.dtype([("a", "<u4"), ("name", "<U4")]))
    with pytest.raises(pybpf.TypeSpecError, match=r"record\.a: >u4 is big-endian"):
        btf_type(np.dtype([("a", ">u4")]))


def test_bad_declarations() -> None:
    if not _have_clang():
        pytest.skip("no clang")
    with pytest.raises(pybpf.TypeSpecError, match="does not compile: .*unknown type name"):
        btf_type("struct bad { no_such_t x; };")
    with pytest.raises(pybpf.TypeSpecError, match="the last declaration must define a type"):
        btf_type("int x;")
    with pytest.raises(LookupError, match="no type 'nope'"):
        btf_type("nope", btf=pybpf.BTF.vmlinux())
    t = btf_type("typedef struct { __u8 a; __u64 b; } pair_t;")
    assert t.name == "pair_t" and t.codec.size == 16


def test_type_cache_serves_a_machine_without_clang(tmp_path: Path) -> None:
    """`pybpf build --type` fills a cache; a process with no clang on PATH then uses it,
    and without it says what to do."""
    if not _have_clang():
        pytest.skip("no clang to fill the cache")
    cache = tmp_path / "types"
    r = subprocess.run([sys.executable, "-m", "pybpf", "build", "--type", DECL,
                        "--type-cache", str(cache)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    (written,) = r.stdout.split()
    assert Path(written).parent == cache and Path(written).is_file()
    code = ("import sys, pybpf\n"
            "from pybpf.typespec import btf_type\n"
            "try:\n"
            "    t = btf_type(sys.argv[1])\n"
            "except pybpf.TypeSpecError as e:\n"
            "    print('ERR', e); raise SystemExit(3)\n"
            "print('OK', t.name, t.codec.size)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CLANG", "PYBPF_TYPE_CACHE")}
    env.update(PATH=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "empty"))
    r = subprocess.run([sys.executable, "-c", code, DECL], capture_output=True, text=True,
                       env={**env, "PYBPF_TYPE_CACHE": str(cache)}, timeout=60)
    assert r.stdout.split() == ["OK", "ts_event", "40"], r.stderr
    r = subprocess.run([sys.executable, "-c", code, DECL], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "no clang to compile it and no cached BTF" in r.stdout
    assert "pybpf build --type" in r.stdout


def test_a_corrupted_or_foreign_cache_entry_is_refused(tmp_path: Path) -> None:
    """A cache file is used only when it is the entry of that very declaration: another
    declaration's file under its name, a flipped byte or garbage is refused (compiled
    again where clang is; a TypeSpecError naming the file where it is not), never
    decoded as the wrong type."""
    if not _have_clang():
        pytest.skip("no clang to fill the cache")
    from _child import run_child

    a, b = "struct tc_a { __u32 x; __u64 y; }", "struct tc_b { __u8 only; }"
    cache = tmp_path / "types"
    code = """
from pathlib import Path
import pybpf
from pybpf import typespec
from pybpf.typespec import btf_type
a, b = P["a"], P["b"]
pa, pb = (Path(p) for p in typespec.compile_c([a, b], P["cache"]))
out = {}
for case, bad in [("foreign", pb.read_bytes()), ("flipped", None), ("garbage", b"x")]:
    if bad is None:
        bad = bytearray(pa.read_bytes())
        bad[-5] ^= 0xFF
    pa.write_bytes(bytes(bad))
    typespec._memo.clear()
    try:
        t = btf_type(a)
        out[case] = [t.name, t.codec.size, typespec._cache_entry(pa, a) is not None]
    except pybpf.TypeSpecError as e:
        out[case] = str(e)
emit(out)
"""
    params = {"a": a, "b": b, "cache": str(cache)}
    env = {**os.environ, "PYBPF_TYPE_CACHE": str(cache), "XDG_CACHE_HOME": str(tmp_path)}
    got = run_child(code, params=params, env=env, what="cache with clang")
    # recompiled, and the entry replaced by a good one
    assert got == {k: ["tc_a", 16, True] for k in ("foreign", "flipped", "garbage")}
    env.pop("CLANG", None)
    env["PATH"] = str(tmp_path / "nothing")
    # without clang: compile_c cannot run, so the child corrupts the entries made above
    code_no_clang = code.replace(
        'pa, pb = (Path(p) for p in typespec.compile_c([a, b], P["cache"]))',
        'pa = Path(P["cache"]) / (typespec._key(a) + ".btf")\n'
        'pb = Path(P["cache"]) / (typespec._key(b) + ".btf")')
    got = run_child(code_no_clang, params=params, env=env, what="cache without clang")
    for case in ("foreign", "flipped", "garbage"):
        assert "no clang to compile it" in got[case], got
        assert f"refused the corrupted or foreign cache file {cache}" in got[case], got


@pytest.mark.parametrize("make,message", [
    (lambda: ctypes.c_uint8 * 2**32, "an array of 4294967296 elements"),
    (lambda: type("Many", (ctypes.Structure,), {
        "_fields_": [(f"f{i}", ctypes.c_uint8) for i in range(70000)]}),
     "struct Many: 70000 members"),
    (lambda: type("FarBits", (ctypes.Structure,), {
        "_fields_": [("pad", ctypes.c_uint8 * (3 << 20)), ("b", ctypes.c_uint32, 3)]}),
     "struct FarBits.b: bit offset 25165824 does not fit BTF"),
], ids=["nelems", "vlen", "bitfield-offset"])
def test_ctypes_beyond_what_btf_holds_is_refused(make: Any, message: str) -> None:
    """Counts and offsets BTF cannot hold raise TypeSpecError (they were a struct.error,
    or silently wrapped into another field of the type's header)."""
    with pytest.raises(pybpf.TypeSpecError, match=message):
        btf_type(make())


def test_a_huge_array_type_builds_without_a_huge_format() -> None:
    """u32[2**31]: its codec builds (it built a 2**31-character struct format first:
    MemoryError); a struct of it stays usable for its other members."""
    from _child import run_child

    got = run_child("""
import ctypes
from pybpf.typespec import btf_type
class S(ctypes.Structure):
    _fields_ = [("x", ctypes.c_uint32), ("big", ctypes.c_uint32 * 2**28)]
t = btf_type(ctypes.c_uint32 * 2**31)
s = btf_type(S)
emit([t.codec.size, s.codec.size])
""", timeout=60, what="huge array")
    assert got == [4 * 2**31, 4 + 4 * 2**28]


# --- CLI ----------------------------------------------------------------------------------

def test_cli_run_event_type_prints_fields(bpf_obj: Any) -> None:
    if not _have_clang():
        pytest.skip("no clang to compile the C declaration")
    path = bpf_obj("typespec")
    p = subprocess.Popen([sys.executable, "-m", "pybpf", "run", path, "--json",
                          "--set", f"target_pid={os.getpid()}", "--event-type", DECL,
                          "--duration", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        assert p.stderr is not None and p.stdout is not None
        line = ""
        deadline = time.monotonic() + 60
        while "attached" not in line and time.monotonic() < deadline:
            line = readline(p, p.stderr)
            if not line and p.poll() is not None:
                pytest.fail(f"pybpf run exited: {p.stderr.read()}")
        trigger(COOKIES[:3])
        events: list[dict[str, Any]] = []
        while len(events) < 6 and time.monotonic() < deadline:  # ring + perf, 3 each
            out = readline(p)
            if not out:
                break
            rec = json.loads(out)
            if "event" in rec:
                events.append(rec)
    finally:
        p.terminate()
        p.wait(timeout=30)
    tid, comm = threading.get_native_id(), my_comm().decode()
    for src in ("ts_rb", "ts_pb"):
        got = sorted((e["event"] for e in events if e["map"] == src),
                     key=lambda e: e["cookie"])
        want = []
        for c in COOKIES[:3]:
            w = expected(c, tid, b"")
            w["comm"] = comm
            want.append(w)
        assert got == want, src


def test_gen_map_type(bpf_obj: Any, tmp_path: Path) -> None:
    if not _have_clang():
        pytest.skip("no clang to compile the C declaration")
    path = bpf_obj("typespec")
    out = tmp_path / "ts_skel.py"
    r = subprocess.run([sys.executable, "-m", "pybpf", "gen", path, "-o", str(out),
                        "--map-type", f"recorded={DECL}", "--map-key-type", "recorded=typedef "
                        "__u32 key_t;", "--map-type", f"ts_rb={DECL}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    stub = out.with_suffix(".pyi").read_text()
    assert "class ts_event(Struct):" in stub
    assert "recorded: HashMap[int, _T_ts_event]" in stub
    sys.path.insert(0, str(tmp_path))
    try:
        import ts_skel  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    assert ts_skel.ts_event._fields[:3] == ("pid", "tid", "cookie")
    with ts_skel.Typespec() as skel:
        skel.rodata.target_pid = os.getpid()
        skel.load()
        skel.attach()
        got: list[Any] = []
        rb = pybpf.RingBuffer(skel.maps.ts_rb, callback=got.append,
                              decode=ts_skel.EVENT_TYPES["ts_rb"])
        try:
            trigger(COOKIES[:2])
            deadline = time.monotonic() + 10
            while len(got) < 2 and time.monotonic() < deadline:
                rb.poll(0.1)
        finally:
            rb.close()
        tid, comm = threading.get_native_id(), my_comm()
        assert [as_dict(v, "c") for v in got] == [expected(c, tid, comm) for c in COOKIES[:2]]
        v = skel.maps.recorded[COOKIES[1]]
        assert isinstance(v, ts_skel.ts_event)
        assert as_dict(v, "c") == expected(COOKIES[1], tid, comm)


class UserReq(ctypes.Structure):
    _fields_ = [("idx", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("value", ctypes.c_uint64)]


@pytest.mark.parametrize("form", FORMS)
def test_user_ringbuf_encode(bpf_obj: Any, form: str) -> None:
    """encode= with each form: the program (tests/bpf/events.bpf.c) drains each request
    into out[idx] = value."""
    from _events_obj import events_object

    spec: Any = {"c": "struct req_given { __u32 idx; __u32 flags; __u64 value; };",
                 "ctypes": UserReq}.get(form)
    if form == "c" and not _have_clang():
        pytest.skip("no clang to compile the C declaration")
    if form == "numpy":
        np = pytest.importorskip("numpy")
        spec = np.dtype([("idx", "<u4"), ("flags", "<u4"), ("value", "<u8")])
    with events_object(bpf_obj("events")) as ev:
        with pybpf.UserRingBuffer(ev.maps["urb"], encode=spec) as urb:
            urb.submit({"idx": 4, "value": 4444})
            urb.submit((5, 0, 5555))
            os.getpgid(0)  # the program drains on this syscall
        for idx, value in ((4, 4444), (5, 5555)):
            raw = ev.maps["out"].lookup(idx.to_bytes(4, "little"))
            assert raw is not None and int.from_bytes(raw, "little") == value


def test_declaration_using_kernel_types() -> None:
    """A declaration naming kernel types compiles against the running kernel's vmlinux.h;
    the layout is the kernel's (from its BTF, read independently here)."""
    if not _have_clang():
        pytest.skip("no clang")
    try:
        toolchain.vmlinux_h()
    except (OSError, ValueError) as e:
        pytest.skip(f"no vmlinux.h: {e}")
    t = btf_type(f"struct kt_{os.getpid()} {{ struct in6_addr saddr; pid_t pid; "
                 "char comm[TASK_COMM_LEN]; };")
    kernel = pybpf.BTF.vmlinux()
    in6 = kernel.find("in6_addr", pybpf.BTFKind.STRUCT)
    assert in6 is not None
    c = t.codec
    assert [m.byte_off for m in c.members] == [0, in6.size, in6.size + 4]
    assert c.size == in6.size + 4 + 16
    v = c.decode(bytes(range(16)) + (1234).to_bytes(4, "little") + b"bash".ljust(16, b"\0"))
    assert (v.saddr.in6_u.u6_addr8, v.pid, v.comm.str) == (bytes(range(16)), 1234, "bash")


def test_set_type_checks_the_size(bpf_obj: Any) -> None:
    with pybpf.Object.open(bpf_obj("typespec")) as obj:
        with pytest.raises(ValueError, match=r"\.bss variable 'last_event' is 40 bytes, "
                                             r"UserReq is 16"):
            obj.bss.set_type("last_event", UserReq)
        with pytest.raises(AttributeError, match="no variable 'nope'"):
            obj.bss.set_type("nope", UserReq)
        with pytest.raises(ValueError, match=r"map 'recorded' value: UserReq is 16 bytes"):
            obj.maps["recorded"].set_types(value=UserReq)
        obj.bss.set_type("last_event", TsEvent)
        assert obj.bss.last_event.cookie == 0  # zeroed before load
