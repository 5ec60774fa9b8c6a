"""Integrity (issue 11): SIGINT at random points of poll/read/consume/events/borrow.
A storm of KeyboardInterrupts (signal.setitimer at short intervals) hits a consumer
loop; afterwards the reader must still work: no "already consuming" error, and every
record produced after the storm is received, in order."""

from __future__ import annotations

import pytest
from _child import run_child

pytestmark = pytest.mark.kernel

STORM = r"""
import random
import pybpf, _integrity_obj as io
random.seed(P["seed"])
form, kind = P["form"], P["kind"]
obj = io.load(P["path"], tag=3)
got = []
def cb(rec):
    got.append(int.from_bytes(bytes(rec)[:8], "little"))
if kind == "ring":
    c = pybpf.RingBuffer(obj.maps["rb"], callback=cb)
else:
    c = pybpf.PerfBuffer(obj.maps["pb"], callback=cb, pages=4)

def once(timeout):
    if form == "poll":
        c.poll(timeout)
    elif form == "consume":
        c.consume()
    elif form == "read":
        for rec in c.read(timeout):
            cb(rec)
    elif form == "events":
        for rec in c.events(timeout):
            cb(rec)
    elif form == "borrow":
        with c.borrow(timeout) as b:
            for rec in b:
                cb(rec)

calls = [0]

def step():
    for _ in range(random.randint(0, 5)):
        io.mark()
    once(random.choice([0, 0.001]))
    calls[0] += 1

interrupts, bad = io.sigint_storm(step, P["seconds"])
calls = calls[0]

# Drain what the storm left, then produce a known tail and receive all of it.
try:
    for _ in range(50):
        once(0.01)
except BaseException as e:
    bad.append(f"after the storm: {type(e).__name__}: {e}")
start = int(obj.bss.hits)
got.clear()
for _ in range(P["after"]):
    io.mark()
end = time.monotonic() + 10
while len(got) < P["after"] and time.monotonic() < end:
    try:
        once(0.05)
    except BaseException as e:
        bad.append(f"after the storm: {type(e).__name__}: {e}")
        break
seqs = [g & 0xffffffff for g in got]
if kind == "perf":  # per-CPU buffers: in order within a CPU only
    seqs.sort()
emit({"bad": bad, "interrupts": interrupts, "calls": calls,
      "seqs_ok": seqs == list(range(start, start + P["after"])),
      "received_after": len(got), "first": seqs[:3], "start": start})
"""


# Open (issue 11): a KeyboardInterrupt landing in a callback's error path or a borrow()
# block can hand a few records over twice (never lose one); these forms then count more
# records than were sent, now and then.
_TWICE = pytest.mark.xfail(reason="issue 11, open: a record can be delivered twice when an "
                                  "interrupt lands in a callback or borrow() block", strict=False)


@pytest.mark.parametrize("kind,form", [
    pytest.param("ring", "poll", marks=_TWICE), ("ring", "read"),
    pytest.param("ring", "consume", marks=_TWICE), ("ring", "events"),
    pytest.param("ring", "borrow", marks=_TWICE),
    pytest.param("perf", "poll", marks=_TWICE), ("perf", "read"),
    pytest.param("perf", "consume", marks=_TWICE), ("perf", "events"),
])
def test_sigint_storm_leaves_the_reader_usable(bpf_obj, kind, form):
    v = run_child(STORM, timeout=60, what=f"SIGINT storm in {kind} {form}",
                  params={"path": bpf_obj("integrity"), "kind": kind, "form": form,
                          "seconds": 2.0, "seed": 5, "after": 40})
    assert v["bad"] == [], v
    assert v["interrupts"] >= 20, f"the storm did not interrupt enough: {v}"
    assert v["received_after"] == 40 and v["seqs_ok"], v


URB_STORM = r"""
import random, struct
import pybpf, _integrity_obj as io
random.seed(P["seed"])
REC = struct.Struct("<IIQ")
obj = io.load(P["path"], tag=3)
urb = pybpf.UserRingBuffer(obj.maps["urb"])
form = P["form"]
n = 0

def step():
    global n
    n += 1
    try:
        if form == "submit":
            urb.submit(REC.pack(1 + n % 60, 0, n), timeout=0.001)
        else:
            with urb.reserve(REC.size, timeout=0.001) as buf:
                REC.pack_into(buf, 0, 1 + n % 60, 0, n)
    except pybpf.MapError as e:  # full: let the program drain
        if "full" not in str(e):
            raise
    if n % 20 == 0:
        os.getpgid(0)

interrupts, bad = io.sigint_storm(step, P["seconds"])
# Afterwards the program drains what is submitted: nothing interrupted stays stuck.
for _ in range(3):
    os.getpgid(0)
after = {}
try:
    for i in range(1, 11):
        with urb.reserve(REC.size) as buf:
            REC.pack_into(buf, 0, i, 0, 10_000 + i)
    os.getpgid(0)
    after = {i: int(obj.maps["arr"][i]) for i in range(1, 11)}
except BaseException as e:
    bad.append(f"after the storm: {type(e).__name__}: {e}")
emit({"bad": bad, "interrupts": interrupts,
      "after_ok": after == {i: 10_000 + i for i in range(1, 11)}})
"""


@pytest.mark.parametrize("form", ["submit", "reserve"])
def test_sigint_storm_leaves_the_user_ring_buffer_usable(bpf_obj, form):
    v = run_child(URB_STORM, timeout=60, what=f"SIGINT storm in UserRingBuffer {form}",
                  params={"path": bpf_obj("integrity"), "form": form, "seconds": 2.0, "seed": 6})
    assert v["bad"] == [] and v["after_ok"], v
    assert v["interrupts"] >= 20, v
