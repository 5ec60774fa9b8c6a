"""Integrity (issue 11): every bad input gets a pybpf exception naming what was wrong,
never a hang, a crash, a bare Python error or an operation on another object.
Each case runs in a child interpreter with a timeout."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from _child import run_child

pytestmark = pytest.mark.kernel

OPEN_BAD = r"""
import resource
# A loader that reads everything must fail here, not take the machine's memory.
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
import pybpf
t = time.monotonic()
try:
    pybpf.Object.open(P["path"])
    res = ["no error", "", False]
except BaseException as e:
    res = [type(e).__name__, str(e), isinstance(e, pybpf.BPFError)]
emit(res + [round(time.monotonic() - t, 2)])
"""


@pytest.mark.parametrize("label", ["fifo", "dev_zero", "dev_urandom", "sparse", "directory",
                                   "symlink_to_dev_zero", "unix_socket"])
def test_object_open_refuses_non_regular_files(tmp_path, label):
    keep = None
    if label == "symlink_to_dev_zero":
        path = str(tmp_path / "zero.bpf.o")
        os.symlink("/dev/zero", path)
    elif label == "unix_socket":
        path = str(tmp_path / "sock.bpf.o")
        keep = socket.socket(socket.AF_UNIX)
        keep.bind(path)
    elif label == "fifo":
        path = str(tmp_path / "fifo.bpf.o")
        os.mkfifo(path)
    elif label == "sparse":
        path = str(tmp_path / "huge.bpf.o")
        with open(path, "wb") as f:
            f.truncate(64 << 30)  # 64 GiB of holes
    elif label == "directory":
        path = str(tmp_path)
    else:
        path = "/dev/" + label[4:]
    try:
        etype, msg, is_bpf, secs = run_child(OPEN_BAD, timeout=10, what=f"Object.open({label})",
                                             params={"path": path})
    finally:
        if keep is not None:
            keep.close()
    assert is_bpf, f"{label}: not a pybpf error: {etype}: {msg}"
    assert path in msg or os.path.realpath(path) in msg, \
        f"{label}: the error does not name the file: {msg}"
    assert secs < 5, f"{label}: took {secs} s (read the whole thing?)"
    if label == "sparse":
        assert any(w in msg for w in ("limit", "too large", "larger", "exceeds")), msg


PINS = r"""
import pybpf, _integrity_obj as io
from pybpf import BPFError
d = P["dir"]
a = io.load(P["path"], tag=1, attach=False)
b = io.load(P["path"], tag=2, attach=False)
res = {}
pa, pb = a.maps["h"], b.maps["h"]
pa[1] = 111
pb[1] = 222
pa.pin(d + "/h")
try:
    pb.pin(d + "/h")
    res["pin over another map's pin"] = "no error"
except BaseException as e:
    res["pin over another map's pin"] = type(e).__name__
res["pin_path after failed pin"] = pb.pin_path
try:
    pb.unpin()
    res["unpin after failed pin"] = "no error"
except BaseException as e:
    res["unpin after failed pin"] = type(e).__name__
res["a's pin still there"] = os.path.exists(d + "/h")
if os.path.exists(d + "/h"):
    with pybpf.Map.open_pinned(d + "/h") as pinned:
        res["a's pin is a's map"] = (pinned.lookup((1).to_bytes(4, "little"))
                                     == (111).to_bytes(8, "little"))
a.programs["mark"].pin(d + "/prog")
try:
    pybpf.Map.open_pinned(d + "/prog")
    res["Map.open_pinned(program pin)"] = "no error"
except BaseException as e:
    res["Map.open_pinned(program pin)"] = [type(e).__name__, isinstance(e, BPFError), str(e)]
try:
    l = pybpf.Link.open_pinned(d + "/h")
    res["Link.open_pinned(map pin)"] = "no error"
    try:
        l.unpin()
    except BaseException:
        pass
except BaseException as e:
    res["Link.open_pinned(map pin)"] = [type(e).__name__, isinstance(e, BPFError), str(e)]
res["map pin survives"] = os.path.exists(d + "/h")
for p in ("/h", "/prog"):
    try:
        os.unlink(d + p)
    except OSError:
        pass
emit(res)
"""


def test_pins_never_touch_another_object(bpf_obj):
    d = f"/sys/fs/bpf/pybpf-h5-{os.getpid()}"
    os.makedirs(d, exist_ok=True)
    try:
        v = run_child(PINS, timeout=30, what="pins", params={"path": bpf_obj("integrity"),
                                                              "dir": d})
    finally:
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)
    assert v["pin over another map's pin"] in ("MapError", "BPFError", "FileExistsError"), v
    assert v["pin_path after failed pin"] is None, v
    assert v["a's pin still there"] and v["a's pin is a's map"], v
    assert v["map pin survives"], v
    for k in ("Map.open_pinned(program pin)", "Link.open_pinned(map pin)"):
        assert v[k] != "no error" and v[k][1], f"{k}: {v[k]}"


UNPRIV = r"""
import pybpf  # imported as root (the interpreter's files may not be readable by nobody)
os.setgroups([])
os.setgid(65534)
os.setuid(65534)  # drops every capability
res = {}
for name in ("list_programs", "list_maps", "list_links"):
    try:
        r = getattr(pybpf, name)()
        res[name] = f"returned {r!r}"[:80]
    except BaseException as e:
        res[name] = type(e).__name__
emit(res)
"""


def test_unprivileged_listing_raises():
    v = run_child(UNPRIV, timeout=30, what="unprivileged list_*")
    assert v == {n: "BPFPermissionError" for n in ("list_programs", "list_maps", "list_links")}, v


ERRORS = r"""
import pybpf, _integrity_obj as io
from pybpf import BPFError
from pybpf.types import plain
a = io.load(P["path"], tag=1, attach=False)
h, arr, ts, odd = a.maps["h"], a.maps["arr"], a.maps["tstore"], a.maps["odd"]
res = {}
def probe(label, fn):
    try:
        r = fn()
        res[label] = ["no error", repr(r)[:100], False]
    except BaseException as e:
        res[label] = [type(e).__name__, str(e)[:300], isinstance(e, BPFError)]
probe("update flags=2**70", lambda: h.update({1: 1}, flags=2**70))
probe("raw update flags=2**70", lambda: pybpf.Map.update(h, bytes(4), bytes(8), 2**70))
probe("create_map max_entries=2**40", lambda: pybpf.create_map("hash", 4, 8, 2**40))
probe("create_map key_size=2**40", lambda: pybpf.create_map("hash", 2**40, 8, 4))
probe("Map.from_id(2**40)", lambda: pybpf.Map.from_id(2**40))
probe("task storage key 2**40", lambda: ts.__setitem__(2**40, 1))
probe("arr[64] = 1", lambda: arr.__setitem__(64, 1))
h[1] = 1
probe("items_raw() on a typed map", lambda: list(h.items_raw()))
probe("odd member write", lambda: odd.__setitem__(1, {"in": 1, "__init__": 2, "__slots__": 3,
                                                       "items": 4}))
NAMES = ("in", "__init__", "__slots__", "items")
def member(v, n):  # attribute access, or item access where a name cannot be an attribute
    x = getattr(v, n, None)
    return x if isinstance(x, int) else v[n]
probe("odd member read", lambda: [member(odd[1], n) for n in NAMES])
probe("plain() written back", lambda: odd.__setitem__(2, plain(odd[1])) or plain(odd[2]))
a.close()
probe("globals after close", lambda: a.bss.hits)
probe("repr(map) after close", lambda: repr(h) + str(h))
probe("repr(object) after close", lambda: repr(a))
emit(res)
"""


def _names_map(msg: str) -> bool:
    return any(f"'{n}'" in msg for n in ("h", "arr", "tstore", "odd")) or "map" in msg


def test_every_error_is_pybpf_naming_the_object(bpf_obj):
    v = run_child(ERRORS, timeout=30, what="error types",
                  params={"path": bpf_obj("integrity")})
    bad = {}
    for label in ("update flags=2**70", "raw update flags=2**70", "create_map max_entries=2**40",
                  "create_map key_size=2**40", "Map.from_id(2**40)", "task storage key 2**40",
                  "arr[64] = 1"):
        etype, msg, is_bpf = v[label]
        pythonic = etype in ("KeyError", "IndexError", "ValueError")  # documented dict/array errors
        if not (is_bpf or (pythonic and _names_map(msg))) or "full" in msg:
            bad[label] = f"{etype}: {msg}"
    for label in ("items_raw() on a typed map", "repr(map) after close", "odd member write",
                  "repr(object) after close", "odd member read", "plain() written back"):
        if v[label][0] != "no error":
            bad[label] = f"{v[label][0]}: {v[label][1]}"
    if v["odd member read"][0] == "no error" and v["odd member read"][1] != "[1, 2, 3, 4]":
        bad["odd member read"] = v["odd member read"][1]
    if v["globals after close"][0] != "ClosedError":
        bad["globals after close"] = f"{v['globals after close'][0]}: {v['globals after close'][1]}"
    assert bad == {}, bad


@pytest.mark.parametrize("argv", [["map", "dump", "99999999999"], ["build", "/etc/passwd"]])
def test_cli_bad_input_has_no_traceback(argv, tmp_path):
    r = subprocess.run([sys.executable, "-m", "pybpf", *argv], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert r.returncode not in (0,) and r.returncode > 0, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip(), "no error message"


def _cgroup_root() -> str | None:
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if parts[2] == "cgroup2":
                return parts[1]
    return None


def _cgroup_of(pid: str) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        return next(ln[3:].strip() for ln in f if ln.startswith("0::"))


def test_audit_sigkill_leaves_no_cgroup_and_no_unaudited_command(tmp_path):
    root = _cgroup_root()
    if root is None:
        pytest.skip("no cgroup v2 hierarchy mounted")
    marker = tmp_path / "alive"
    # the audited shell writes its pid, then keeps touching the marker
    script = f"echo $$ > {tmp_path}/pid; while true; do touch {marker}; sleep 0.05; done"
    p = subprocess.Popen([sys.executable, "-m", "pybpf", "audit", "--output",
                          str(tmp_path / "out.jsonl"), "--", "sh", "-c", script],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pid, cgroup = 0, None
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the audited command never ran"
        pid = int((tmp_path / "pid").read_text())
        rel, mine = _cgroup_of(str(pid)), _cgroup_of("self")
        cgroup = os.path.join(root, rel.lstrip("/")) if rel != mine else None  # audit's own
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (
                os.path.exists(f"/proc/{pid}") or (cgroup and os.path.exists(cgroup))):
            time.sleep(0.1)
        still_running = os.path.exists(f"/proc/{pid}")
        left = cgroup if cgroup and os.path.exists(cgroup) else None
    finally:
        if p.poll() is None:
            p.kill()
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if cgroup and os.path.exists(cgroup):
            time.sleep(0.2)
            try:
                os.rmdir(cgroup)
            except OSError:
                pass
    problems = ((["the audited command runs on, unaudited"] if still_running else [])
                + ([f"cgroup left behind: {left}"] if left else []))
    assert problems == [], f"after SIGKILL of pybpf audit: {problems}"


FIREWALL = r"""
from attach_util import in_netns, veth_pair
from pybpf.tools.firewall import Firewall
with veth_pair() as pair:
    rx = pair.udp_socket("b")
    port = rx.getsockname()[1]
    with Firewall(pair.dev_b, netns=pair.ns_b) as fw:
        outer = fw.add_rule("10.77.0.0/16", port=port, action="pass")
        inner = fw.add_rule("10.77.0.0/24", port=port, action="drop")
        got = pair.send_udp(4, receiver=rx, wait=0.3)
        rules = {r.id: (str(r.network), r.action, r.packets) for r in fw.rules()}
    rx.close()
emit({"outer": outer.id, "inner": inner.id, "received": got, "rules": rules})
"""


def test_firewall_nested_prefixes_are_separate_rules():
    v = run_child(FIREWALL, timeout=60, what="firewall nested prefixes")
    assert v["outer"] != v["inner"], v
    rules = {int(k): r for k, r in v["rules"].items()}
    assert rules[v["outer"]][:2] == ["10.77.0.0/16", "pass"], v
    assert rules[v["inner"]][:2] == ["10.77.0.0/24", "drop"], v
    assert v["received"] == 0, v  # the longest prefix (the /24 drop) decides
    assert rules[v["inner"]][2] == 4 and rules[v["outer"]][2] == 0, v


CUSTOM_BTF_SWAP = r"""
import struct
import pybpf
from pybpf.btf import BTF
raw = open("/sys/kernel/btf/vmlinux", "rb").read()
b = BTF.from_bytes(raw)
ts = b.find("task_struct")
tgid = next(m for m in ts.members if m.name == "tgid")
t0 = 24 + struct.unpack_from("<HBBIIIII", raw)[4]
i = [m.name for m in ts.members].index("tgid")
entry = t0 + b._offs[ts.id - 1] + 12 + 12 * i
moved = bytearray(raw)     # task_struct.tgid 8 bytes further: a valid BTF
struct.pack_into("<I", moved, entry + 8, struct.unpack_from("<I", raw, entry + 8)[0] + 64)
bad = bytearray(raw)       # tgid of a type that does not exist: libbpf 1.1 crashes on it
struct.pack_into("<I", bad, entry + 4, 0x7FFFFFFF)
path = P["dir"] + "/custom.btf"

def put(data, tag):
    tmp = f"{path}.{tag}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)

def offset(o):
    return o.programs["tgid_offset"].test_run(repeat=0).retval

res = {"kernel": tgid.offset // 8, "moved": tgid.offset // 8 + 8}
# 1. The file is replaced after open() checked it, before load() (when libbpf reads it).
for first, then, name in ((raw, moved, "good_then_moved"), (moved, raw, "moved_then_good"),
                          (raw, bad, "good_then_bad")):
    put(first, "a")
    with pybpf.Object.open(P["obj"], btf_custom_path=path) as o:
        put(then, "b")
        o.load()
        res[name] = offset(o)
# 2. Another thread swaps the file between a good and a crashing version all along.
stop = threading.Event()

def swapper():
    n = 0
    while not stop.is_set():
        put(bad if n % 2 else raw, "s")
        n += 1

t = threading.Thread(target=swapper)
t.start()
outcomes = {}
try:
    for _ in range(P["rounds"]):
        try:
            with pybpf.Object.open(P["obj"], btf_custom_path=path) as o:
                o.load()
                got = offset(o)
        except pybpf.ObjectError as e:
            got = "refused" if "malformed BTF" in str(e) else str(e)
        outcomes[got] = outcomes.get(got, 0) + 1
finally:
    stop.set()
    t.join()
res["race"] = outcomes
memfds = []
for n in os.listdir("/proc/self/fd"):
    try:
        if os.readlink(f"/proc/self/fd/{n}").startswith("/memfd:"):
            memfds.append(int(n))
    except FileNotFoundError:
        pass  # the listing's own fd
res["fds_left"] = memfds
emit(res)
"""


def test_custom_btf_libbpf_relocates_against_the_checked_bytes(bpf_obj, tmp_path):
    """``btf_custom_path`` is checked when the object is opened and read by libbpf at
    load: a file replaced in between must not reach libbpf unchecked. The relocated
    offset of task_struct.tgid (what the loaded program returns) shows which bytes
    libbpf used: those of the file as it was checked, whatever replaced it since; and a
    swapper thread alternating a good file and one that crashes libbpf only ever gives
    a refusal or the checked file's offset, never a crash."""
    v = run_child(CUSTOM_BTF_SWAP, timeout=240, what="btf_custom_path swapped",
                  params={"obj": bpf_obj("core_offset"), "dir": str(tmp_path), "rounds": 40})
    k, moved = v["kernel"], v["moved"]
    assert (v["good_then_moved"], v["moved_then_good"], v["good_then_bad"]) == (k, moved, k), v
    assert set(v["race"]) <= {"refused", str(k)}, v["race"]
    assert sum(v["race"].values()) == 40 and v["fds_left"] == [], v


UNPIN_SWAP = r"""
import random
import pybpf
random.seed(P["seed"])
d = P["dir"]
if P["kind"] == "map":
    maps = [pybpf.create_map("hash", 4, 4, 8, name=n) for n in ("pinmine", "pinother")]
    pair = lambda: maps  # noqa: E731
    unpin = lambda mine, path: mine.unpin(path)  # noqa: E731
    kernel_id = lambda q: pybpf.Map.open_pinned(q)  # noqa: E731
else:
    # libbpf makes both links (raw_tp): the route bpf_link__unpin took unchecked
    obj = pybpf.load(P["obj"])
    prog = obj.programs["on_raw_tp"]
    pair = lambda: [prog.attach_raw_tracepoint("sched_process_exec") for _ in "ab"]  # noqa
    unpin = lambda mine, path: mine.unpin()  # noqa: E731
    kernel_id = lambda q: pybpf.Link.open_pinned(q)  # noqa: E731
path, spare = d + "/p", d + "/spare"
res = {"removed_mine": 0, "refused": 0, "other_lost": 0, "other_left": 0, "errors": [],
       "stale_pin_path": 0}
for i in range(P["rounds"]):
    mine, other = pair()
    mine.pin(path)
    other.pin(spare)
    other_id = other.id if P["kind"] == "map" else other.info().id
    # another process's pin replaces this one at a random moment around the unpin
    t = threading.Timer(random.random() * 0.0004, os.replace, (spare, path))
    t.start()
    try:
        unpin(mine, path)
        res["removed_mine"] += 1
    except pybpf.BPFError as e:
        res["refused"] += 1
    except OSError as e:
        res["errors"].append(f"round {i}: {type(e).__name__}: {e}")
    t.join()
    if P["kind"] == "link":
        res["stale_pin_path"] += mine.pin_path is not None
    # the other's pin must survive, wherever the race put it
    ids = []
    for q in [q for q in (path, spare) if os.path.exists(q)]:
        h = kernel_id(q)
        ids.append(h.id if P["kind"] == "map" else h.info().id)
        h.close()
        os.unlink(q)
    res["other_left"] += other_id in ids
    res["other_lost"] += other_id not in ids
    stray = os.listdir(d)
    if stray:
        res["errors"].append(f"round {i}: left behind {stray}")
        for n in stray:
            os.unlink(d + "/" + n)
    if P["kind"] == "link":
        mine.detach()
        other.detach()
emit(res)
"""


def _unpin_swap(kind: str, rounds: int, **params) -> dict:
    d = f"/sys/fs/bpf/pybpf_t2_unpin_{kind}_{os.getpid()}"
    os.makedirs(d, exist_ok=True)
    try:
        return run_child(UNPIN_SWAP, timeout=300, what=f"{kind} unpin under a swap",
                         params={"dir": d, "rounds": rounds, "kind": kind, **params})
    finally:
        for n in os.listdir(d):
            os.unlink(os.path.join(d, n))
        os.rmdir(d)


def test_unpin_never_removes_a_pin_swapped_in_during_the_check():
    """``Map.unpin(path)`` checks that the map pinned there is this one, then removes
    it: another map's pin moved onto the path between the two must survive (the pin is
    moved to a private name first, checked there, then removed)."""
    v = _unpin_swap("map", 1500, seed=3)
    assert v["other_lost"] == 0 and v["errors"] == [], v
    assert v["other_left"] == 1500, v


def test_link_unpin_never_removes_a_link_pin_swapped_in_during_the_check(bpf_obj):
    """The same for links libbpf made (raw_tp): ``Link.unpin()`` must not remove the
    pin of another link moved onto its path around the call, and afterwards the link
    no longer claims a pin path (it was removed, or replaced by the other's)."""
    v = _unpin_swap("link", 600, seed=5, obj=bpf_obj("attach_trace"))
    assert v["other_lost"] == 0 and v["errors"] == [], v
    assert v["other_left"] == 600 and v["stale_pin_path"] == 0, v
    assert v["removed_mine"] + v["refused"] == 600, v


SHORT_CODEC = r"""
import pybpf
import pybpf.types as T
m = pybpf.create_map("hash", 4, 256, 8, name=f"short{os.getpid() % 10000}")
base = T.as_codec(bytes, 256, "value")

class Short(type(base)):   # a user's codec whose encode() gives fewer bytes than its size
    def encode(self, value, path=""):
        return b"x"

short = Short.__new__(Short)
for cls in type(base).__mro__:
    for slot in getattr(cls, "__slots__", ()):
        if hasattr(base, slot):
            setattr(short, slot, getattr(base, slot))
short.__dict__.update(getattr(base, "__dict__", {}))
m.set_types(key="u32", value=short)
res = {}
for name, op in (("m[k] = v", lambda: m.__setitem__(1, b"a" * 256)),
                 ("update_batch", lambda: m.update_batch([(2, b"a" * 256)]))):
    try:
        op()
        res[name] = "stored"
    except pybpf.MapValueError as e:
        res[name] = str(e)
res["entries"] = len(list(pybpf.Map.keys(m)))   # nothing reached the kernel
emit(res)
"""


def test_a_codec_giving_the_wrong_size_never_reaches_the_kernel():
    """The kernel reads value_size bytes from what the codec gave: a user's codec that
    gives fewer must be refused (it made the kernel copy heap bytes past the buffer
    into the map)."""
    v = run_child(SHORT_CODEC, timeout=60, what="short codec")
    assert v["entries"] == 0, v
    for name in ("m[k] = v", "update_batch"):
        assert "the codec gave 1 bytes, not 256" in v[name], v
