"""Integrity (issue 11): fd-number reuse.  Object A is loaded, handles of every kind
are taken (maps, typed maps, walks in progress, batches, views, readers, globals,
programs, links), A is closed, and B is loaded until it holds A's old fd numbers.
Every stale handle must raise ClosedError, and B's maps must hold exactly what B's
program and the test put there."""

from __future__ import annotations

import os

import pytest
from _child import run_child

pytestmark = pytest.mark.kernel

REUSE = r"""
import pybpf, _integrity_obj as io
from pybpf import ClosedError
path = P["path"]
before = io.open_fds()
a = io.load(path, tag=1)
h, arr, lpm = a.maps["h"], a.maps["arr"], a.maps["lpm"]
for k in range(100):
    h[k] = k
for i in range(1, 40):
    lpm[f"10.{i}.0.0/16"] = i
io.mark()
stale = {}
# walks and batches started before close, resumed after
stale["typed keys() walk"] = iter(h.keys())
stale["typed items() walk"] = iter(h.items())
stale["values() walk"] = iter(h.values())
stale["keys_raw() walk"] = iter(h.keys_raw())
stale["Map.keys() walk"] = iter(pybpf.Map.keys(h))
stale["lookup_batch(chunk=1)"] = iter(h.lookup_batch(chunk=1))
stale["lpm keys() walk"] = iter(lpm.keys())
for name, it in list(stale.items()):
    next(it)
batch = next(iter(h.lookup_batch(chunk=16)))
rb = pybpf.RingBuffer(a.maps["rb"])
pb = pybpf.PerfBuffer(a.maps["pb"], pages=4)
urb = pybpf.UserRingBuffer(a.maps["urb"])
bss = a.bss
prog = a.programs["mark"]
links = list(a.links)
a_fds = io.open_fds() - before
a.close()
for _ in range(4):  # load B until it has A's fd numbers
    b = io.load(path, tag=2)
    b_fds = io.open_fds() - before
    if b_fds & a_fds:
        break
    b.close()
reused = sorted(b_fds & a_fds)
hb, arrb, lpmb = b.maps["h"], b.maps["arr"], b.maps["lpm"]
for k in range(1000, 1010):
    hb[k] = k * 3
lpmb["192.168.0.0/16"] = 77
io.mark()
io.mark()

ops = {
    "h[k] = v": lambda: h.__setitem__(1005, 1),
    "h[k]": lambda: h[1005],
    "del h[k]": lambda: h.__delitem__(1005),
    "h.update(raw)": lambda: pybpf.Map.update(h, (1001).to_bytes(4, "little"), bytes(8)),
    "h.lookup(raw)": lambda: h.lookup((1001).to_bytes(4, "little")),
    "h.delete(raw)": lambda: pybpf.Map.delete(h, (1002).to_bytes(4, "little")),
    "len(h)": lambda: len(h),
    "list(h.keys())": lambda: list(h.keys()),
    "h.clear()": lambda: h.clear(),
    "h.update_batch": lambda: h.update_batch([(1003, 9)]),
    "h.delete_batch": lambda: h.delete_batch([1004]),
    "arr[5] = v": lambda: arr.__setitem__(5, 99),
    "arr[5]": lambda: arr[5],
    "lpm[net] = v": lambda: lpm.__setitem__("192.168.0.0/16", 1),
    "del lpm[net]": lambda: lpm.__delitem__("192.168.0.0/16"),
    "h.info()": lambda: h.info(),
    "h.fd": lambda: h.fd,
    "rb.poll(0)": lambda: rb.poll(0),
    "rb.read(0)": lambda: rb.read(0),
    "rb.consume()": lambda: rb.consume(),
    "pb.poll(0)": lambda: pb.poll(0),
    "pb.read(0)": lambda: pb.read(0),
    "urb.submit": lambda: urb.submit(bytes(16)),
    "bss.hits": lambda: bss.hits,
    "bss.hits = v": lambda: setattr(bss, "hits", 12345),
    "program.fd": lambda: prog.fd,
    "program.attach()": lambda: prog.attach(),
    "batch keys after close": lambda: bytes(batch.keys) + bytes(batch.values),
}
def resume(it):
    for x in it:  # keys A's walk already fetched may come out first, never B's
        text = repr(x) if not isinstance(x, pybpf.RawBatch) else repr(
            [int.from_bytes(bytes(x.keys)[i:i + 4], "little") for i in range(0, 4 * x.count, 4)])
        if any(str(k) in text for k in range(1000, 1010)) or "192.168" in text:
            raise AssertionError(f"B's key in A's walk: {text}")
    return "ended"
for name, it in stale.items():
    ops["resume " + name] = (lambda it=it: resume(it))
for i, link in enumerate(links):
    ops[f"link{i}.info()"] = (lambda l=link: l.info())
    ops[f"link{i}.fd"] = (lambda l=link: l.fd)
    ops[f"link{i}.detach()"] = (lambda l=link: l.detach())

outcome = {}
for name, fn in ops.items():
    try:
        r = fn()
        outcome[name] = "no error" if name != "batch keys after close" else "ok"
    except ClosedError:
        outcome[name] = "ClosedError"
    except BaseException as e:
        outcome[name] = f"{type(e).__name__}: {e}"[:200]

io.mark()
hits_b = b.bss.hits
b_h = {int(k): int(v) for k, v in hb.items()}
b_arr0 = int(arrb[0])
b_arr5 = int(arrb[5])
b_lpm = {str(k): int(v) for k, v in lpmb.items()}
got = b.maps["rb"] and pybpf.RingBuffer(b.maps["rb"]).read(0)
b_ring = [int.from_bytes(r, "little") >> 32 for r in got]
b.close()
emit({"reused": reused, "outcome": outcome, "hits_b": hits_b, "b_h": b_h, "b_arr0": b_arr0,
      "b_arr5": b_arr5,
      "b_lpm": b_lpm, "b_ring_tags": b_ring})
"""


def test_stale_handles_after_fd_reuse(bpf_obj):
    v = run_child(REUSE, timeout=60, what="stale handles after fd reuse",
                  params={"path": bpf_obj("integrity")})
    assert v["reused"], "B never got one of A's fd numbers: the test proves nothing"
    # B is untouched: exactly what B's program and the test wrote
    assert v["b_h"] == {str(k): k * 3 for k in range(1000, 1010)}, v
    assert v["b_lpm"] == {"192.168.0.0/16": 77}, v
    assert v["hits_b"] == 3 and v["b_arr0"] == 2 and v["b_arr5"] == 0, v
    assert v["b_ring_tags"] == [2, 2, 2], v
    # A batch already read is plain memory (ok); detaching an already detached link
    # is a no-op (B's link still counting hits, checked above, shows it hit nothing).
    bad = {k: r for k, r in v["outcome"].items()
           if r != "ClosedError" and not (k == "batch keys after close" and r == "ok")
           and not (k.endswith(".detach()") and r == "no error")}
    assert bad == {}, f"stale handles that did not raise ClosedError: {bad}"


FOR_ITERATIONS = r"""
import random
import pybpf, _integrity_obj as io
from pybpf import ClosedError
random.seed(P["seed"])
bad, iters, reused = [], 0, 0
deadline = time.monotonic() + P["seconds"]
while time.monotonic() < deadline:
    iters += 1
    a = io.load(P["path"], tag=1, attach=False)
    h = a.maps["h"]
    for k in range(50):
        h[k] = k
    form = iters % 4
    it = {0: lambda: iter(h.keys_raw()), 1: lambda: iter(h.lookup_batch(chunk=3)),
          2: lambda: iter(h.keys()), 3: lambda: iter(h.items())}[form]()
    next(it)
    fd = h.fd
    a.close()
    b = io.load(P["path"], tag=2, attach=False)
    reused += b.maps["h"].fd == fd
    for k in range(500, 520):
        b.maps["h"][k] = k
    # Keys A's walk had already fetched may still come out; then ClosedError.  Never
    # one of B's keys, never a silent end.
    got = []
    try:
        for x in it:
            if form == 1:
                kb = bytes(x.keys)
                got += [int.from_bytes(kb[i:i + 4], "little") for i in range(0, 4 * x.count, 4)]
            elif form == 3:
                got.append(int(x[0]))
            else:
                got.append(int.from_bytes(x, "little") if isinstance(x, bytes) else int(x))
        bad.append(f"walk form {form} resumed after close: ended without ClosedError "
                   f"after {len(got)} more keys")
    except ClosedError:
        pass
    except BaseException as e:
        bad.append(f"walk form {form} resumed after close: {type(e).__name__}: {e}")
    if any(k >= 500 for k in got):
        bad.append(f"walk form {form} resumed after close returned B's keys: "
                   f"{sorted(k for k in got if k >= 500)}")
    if sorted(int(k) for k in b.maps["h"].keys()) != list(range(500, 520)):
        bad.append("B's map changed")
    b.close()
    if len(bad) > 5:
        break
emit({"iters": iters, "reused": reused, "bad": bad})
"""


def test_walks_resumed_after_close_and_reuse(bpf_obj):
    v = run_child(FOR_ITERATIONS, timeout=60, what="walk resumed after fd reuse",
                  params={"path": bpf_obj("integrity"), "seconds": 2.0, "seed": 3})
    assert v["bad"] == [], v
    assert v["reused"] >= 1, v


REUSE_MORE = r"""
import asyncio, ctypes, subprocess
import numpy as np
import pybpf, _integrity_obj as io
from pybpf import ClosedError
pin_dir = P["pin_dir"]
before = io.open_fds()
a = io.load(P["path"], tag=1)
h, arr, lpm = a.maps["h"], a.maps["arr"], a.maps["lpm"]
for k in range(100):
    h[k] = k
for i in range(1, 40):
    lpm[f"10.{i}.0.0/16"] = i
io.mark()
io.mark()
# typespec-typed views: a map and a global read through types the user gave
class U64(ctypes.Structure):
    _fields_ = [("v", ctypes.c_uint64)]
hv = pybpf.Map.from_id(h.id)   # a second handle of A's map, closed by the test below
hv.set_types(key="u32", value=U64)
a.bss.set_type("hits", np.dtype([("v", "<u8")]))
prog = a.programs["mark"]
link = a.links[0]
rb = pybpf.RingBuffer(a.maps["rb"])
pb = pybpf.PerfBuffer(a.maps["pb"], pages=4)
urb = pybpf.UserRingBuffer(a.maps["urb"])
kept = rb.read(0)              # A's records, kept past close (a lent batch)
kept_tags = sorted({int.from_bytes(r, "little") >> 32 for r in kept})
kept_bytes = bytes(kept.data)
io.mark()
stale = {"lpm items() walk": iter(lpm.items()), "arr items() walk": iter(arr.items()),
         "values() walk": iter(h.values()), "items_raw() walk": iter(h.items_raw()),
         "lookup_batch(delete) walk": iter(h.lookup_batch(chunk=4, delete=True)),
         "popitems() walk": iter(h.popitems()),
         "rb.events() iterator": rb.events(0)}
for name, it in list(stale.items())[:-1]:
    try:
        next(it)
    except StopIteration:
        raise AssertionError(f"{name}: empty before close") from None
a_fds = io.open_fds() - before
h_id = h.id
hv.close()
a.close()
for _ in range(4):  # load B until it has A's fd numbers
    b = io.load(P["path"], tag=2)
    b_fds = io.open_fds() - before
    if b_fds & a_fds:
        break
    b.close()
reused = sorted(b_fds & a_fds)
hb, lpmb = b.maps["h"], b.maps["lpm"]
for k in range(1000, 1010):
    hb[k] = k * 3
lpmb["192.168.0.0/16"] = 77
io.mark()

async def aread(r):
    return await r.read_async(0)

def enter_borrow():
    with rb.borrow(0) as blk:
        return len(blk)

def reserve():
    with urb.reserve(16) as buf:
        buf[:] = bytes(16)

ops = {
    "h.items_raw()": lambda: list(h.items_raw()),
    "h.pop(k)": lambda: h.pop(1005),
    "h.popitem walk": lambda: list(h.popitems()),
    "h.to_dict()": lambda: h.to_dict(),
    "h.get(k)": lambda: h.get(1005),
    "k in h": lambda: 1005 in h,
    "bool(h)": lambda: bool(h),
    "h.pin()": lambda: h.pin(pin_dir + "/h"),
    "h.set_types() then h[k]": lambda: (h.set_types(value="u64"), h[1005]),
    "typed view hv[k]": lambda: hv[1005],
    "typed view hv[k] = v": lambda: hv.__setitem__(1005, U64(1)),
    "typed global bss.hits": lambda: a.bss.hits,
    "typed global bss.hits = v": lambda: setattr(a.bss, "hits", (5,)),
    "rodata.target_pid": lambda: a.rodata.target_pid,
    "prog.info()": lambda: prog.info(),
    "prog.pin()": lambda: prog.pin(pin_dir + "/p"),
    "prog.test_run()": lambda: prog.test_run(),
    "prog.attach_tracepoint()": lambda: prog.attach_tracepoint("syscalls", "sys_enter_getppid"),
    "prog.attach_raw_tracepoint()": lambda: prog.attach_raw_tracepoint("sys_enter"),
    "link.pin()": lambda: link.pin(pin_dir + "/l"),
    "link.update_program(B's)": lambda: link.update_program(b.programs["mark"]),
    "link.info()": lambda: link.info(),
    "rb.borrow()": enter_borrow,
    "rb.read_numpy()": lambda: rb.read_numpy("<u8", 0),
    "rb.fileno()": lambda: rb.fileno(),
    "rb.read_async()": lambda: asyncio.run(aread(rb)),
    "pb.consume()": lambda: pb.consume(),
    "pb.fileno()": lambda: pb.fileno(),
    "urb.reserve()": reserve,
    "a.maps['h'][k]": lambda: a.maps["h"][1005],
    "a.attach()": lambda: a.attach(),
}
for name, it in stale.items():
    ops["resume " + name] = (lambda it=it: list(it))
outcome = {}
for name, fn in ops.items():
    try:
        got = fn()
        # a consumer loop (events()) ends when its reader is closed: with nothing
        outcome[name] = ("ended" if name == "resume rb.events() iterator" and got == []
                         else "no error")
    except ClosedError:
        outcome[name] = "ClosedError"
    except BaseException as e:
        outcome[name] = f"{type(e).__name__}: {e}"[:200]
io.mark()
# B from the kernel side: bpftool dumps of B's maps by id, and B's program's counter
def dump(m):
    out = subprocess.run(["bpftool", "-j", "map", "dump", "id", str(m.id)], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)
def u(hexes):
    return int.from_bytes(bytes(int(x, 16) for x in hexes), "little")
b_h = {u(e["key"]): u(e["value"]) for e in dump(hb)}
b_lpm = len(dump(lpmb))
b_hits = u(dump(b.maps[[n for n in b.maps if n.endswith(".bss")][0]])[0]["value"])
b_link_prog = b.links[0].info().prog_id == b.programs["mark"].info().id
emit({"reused": reused, "outcome": outcome, "b_h": b_h, "b_lpm": b_lpm, "b_hits": b_hits,
      "b_link_prog": b_link_prog, "kept_tags": kept_tags,
      "kept_same": bytes(kept.data) == kept_bytes,
      "pins": sorted(os.listdir(pin_dir)), "a_h_gone": not any(
          m.id == h_id for m in pybpf.list_maps())})
b.close()
"""


def test_more_stale_handles_after_fd_reuse_never_touch_b(bpf_obj, tmp_path):
    """Every other kind of stale handle of A (typed and typespec-typed views, globals,
    programs, links, readers and their iterators, walks, a kept batch) after A is
    closed and B holds A's fd numbers: ClosedError, and B's maps, as bpftool reads them
    from the kernel, hold exactly what B's program and the test wrote."""
    pin_dir = f"/sys/fs/bpf/pybpf_t2_reuse_{os.getpid()}"
    os.makedirs(pin_dir, exist_ok=True)
    try:
        v = run_child(REUSE_MORE, timeout=120, what="more stale handles after fd reuse",
                      params={"path": bpf_obj("integrity"), "pin_dir": pin_dir})
    finally:
        for n in os.listdir(pin_dir):
            os.unlink(os.path.join(pin_dir, n))
        os.rmdir(pin_dir)
    assert v["reused"], "B never got one of A's fd numbers: the test proves nothing"
    assert v["b_h"] == {str(k): k * 3 for k in range(1000, 1010)}, v
    assert v["b_lpm"] == 1 and v["b_hits"] == 2 and v["b_link_prog"], v
    assert v["pins"] == [], v
    assert v["kept_tags"] == [1] and v["kept_same"], v   # A's records, still A's
    assert v["a_h_gone"], v
    bad = {k: r for k, r in v["outcome"].items() if r != "ClosedError"
           and (k, r) != ("resume rb.events() iterator", "ended")}
    assert bad == {}, f"stale handles that did not raise ClosedError: {bad}"
