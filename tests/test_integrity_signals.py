"""Integrity (issue 11): SIGINT at random points of every consumer form.

A storm of KeyboardInterrupts (signal.setitimer at short intervals) hits a consumer
loop while the program emits numbered records; afterwards the reader must still work
(no "already consuming" error) and, over the whole run, every record the program
emitted must have been handed to the test exactly once: none twice, none lost (perf:
unless the kernel counted it lost), ring records in order.

The exact rule under test (README, "Threads and signals"): a record is consumed when
it is handed to user code -- passed to a callback (or decoder), yielded by events(),
returned by read(), or lent by entering a borrow() block.  An interrupt raised inside
a callback or a borrow() block propagates; the records not handed over yet stay in
the reader (or the ring) for the next call.  Interrupts land wherever pybpf runs
Python code and at any point of the test's callback; the handler keeps them out of
the test's own frames (after read() returned, the batch is the caller's), and when
one lands at the very start of the callback, before the record was stored, the
handler stores it (it was handed over)."""

from __future__ import annotations

import pytest
from _child import run_child

pytestmark = pytest.mark.kernel

STORM = r"""
import asyncio, collections, os, random
import pybpf, _integrity_obj as io
random.seed(P["seed"])
form, kind = P["form"], P["kind"]
obj = io.load(P["path"], tag=3)
got = []
def cb(rec):
    got.append(rec)
def block_body():  # user code inside a borrow() block, after the records were stored
    pass
CB = cb.__code__
PYBPF = os.path.dirname(pybpf.__file__) + os.sep
where = collections.Counter()

def may_interrupt(frame):
    code = frame.f_code
    if code is CB:  # at the callback's start or after its append: handed over
        rec = frame.f_locals.get("rec")
        if rec is not None and (not got or got[-1] is not rec):
            got.append(rec)
        where["callback"] += 1
        return True
    if code is block_body.__code__:
        where["borrow block"] += 1
        return True
    if code.co_filename.startswith(PYBPF) and not code.co_qualname.startswith("RecordBatch."):
        where[code.co_qualname] += 1
        return True
    return False  # the test's own frames, the stdlib (contextlib, asyncio), batch access

first_seq = int(obj.bss.hits)
kw = {"max_batch_bytes": P["mbb"]} if P["mbb"] else {}
if kind == "ring":
    c = pybpf.RingBuffer(obj.maps["rb"], callback=cb, **kw)
else:
    c = pybpf.PerfBuffer(obj.maps["pb"], callback=cb, pages=16, **kw)
loop = asyncio.new_event_loop()

async def aiter_some(timeout):
    async for rec in c:  # left early: a second iterator takes the rest over
        got.append(rec)
        if random.random() < 0.3:
            break
    if c.wait(0):
        async for rec in c:
            got.append(rec)
            if not c.wait(0):
                break

def arun(coro):
    global loop
    try:
        return loop.run_until_complete(coro)
    except BaseException:  # (an interrupted loop is left stopping: start a new one)
        loop.close()
        loop = asyncio.new_event_loop()
        raise

def once(timeout):
    if form == "poll":
        c.poll(timeout)
    elif form == "consume":
        c.consume()
    elif form == "read":
        got.extend(c.read(timeout))
    elif form == "events":
        for rec in c.events(timeout):
            got.append(rec)
    elif form == "events_break":  # leave an iterator early: the next one takes over
        for rec in c.events(timeout):
            got.append(rec)
            if random.random() < 0.3:
                break
        for rec in c.events(0):
            got.append(rec)
    elif form == "borrow":
        with c.borrow(timeout) as b:
            got.extend(map(bytes, b))
            block_body()
    elif form == "poll_async":
        arun(c.poll_async(timeout))
    elif form == "read_async":
        got.extend(arun(c.read_async(timeout)))
    elif form == "aiter":
        try:
            arun(asyncio.wait_for(aiter_some(timeout), max(timeout, 0.01)))
        except asyncio.TimeoutError:
            pass

calls = [0]

def step():
    if kind == "perf" or c.pending_bytes() < 16384:  # (a full ring drops uncounted)
        for _ in range(random.randint(0, P["burst"])):
            io.mark()
    once(random.choice([0, 0.001]))
    calls[0] += 1

interrupts, bad = io.sigint_storm(step, P["seconds"], where=may_interrupt, per_step=3)
calls = calls[0]

# The storm is over: produce a known tail, then read until everything emitted is in.
for _ in range(P["after"]):
    io.mark()
last_seq = int(obj.bss.hits)
end = time.monotonic() + 10
while len(got) < last_seq - first_seq and time.monotonic() < end:
    try:
        once(0.05)
    except BaseException as e:
        bad.append(f"after the storm: {type(e).__name__}: {e}")
        break
seqs = [int.from_bytes(bytes(r)[:8], "little") & 0xffffffff for r in got]
counts = collections.Counter(seqs)
want = set(range(first_seq, last_seq))
lost = c.lost if kind == "perf" else 0
emit({"bad": bad, "interrupts": interrupts, "calls": calls, "where": dict(where),
      "emitted": last_seq - first_seq, "received": len(seqs),
      "twice": sorted(s for s, k in counts.items() if k > 1)[:10],
      "missing": sorted(want - set(counts))[:10], "n_missing": len(want - set(counts)),
      "alien": sorted(set(counts) - want)[:10], "kernel_lost": lost,
      "in_order": kind == "perf" or seqs == sorted(seqs),
      "tail_ok": all(s in counts for s in range(last_seq - P["after"], last_seq)),
      "counted": c.received})
"""

FORMS = [("ring", f) for f in ("poll", "consume", "read", "events", "events_break", "borrow",
                                "poll_async", "read_async", "aiter")]
FORMS += [("perf", f) for f in ("poll", "consume", "read", "events", "events_break",
                                "poll_async", "read_async", "aiter")]


def storm(bpf_obj, kind: str, form: str, *, seed: int = 5, mbb: int = 0, burst: int = 12) -> dict:
    return run_child(STORM, timeout=60, what=f"SIGINT storm in {kind} {form}",
                     params={"path": bpf_obj("integrity"), "kind": kind, "form": form,
                             "seconds": 2.0, "seed": seed, "after": 40, "burst": burst,
                             "mbb": mbb})


def check_exactly_once(v: dict) -> None:
    assert v["bad"] == [], v
    assert v["interrupts"] >= 20, f"the storm did not interrupt enough: {v}"
    assert v["twice"] == [], f"records delivered twice: {v}"
    assert v["alien"] == [], v
    assert v["n_missing"] <= v["kernel_lost"], f"records lost: {v}"
    assert v["in_order"] and v["tail_ok"], v
    assert v["counted"] == v["received"], f"received counter is off: {v}"


@pytest.mark.parametrize("kind,form", FORMS)
def test_sigint_storm_delivers_every_record_exactly_once(bpf_obj, kind, form):
    check_exactly_once(storm(bpf_obj, kind, form))


@pytest.mark.parametrize("kind,form", [("ring", "poll"), ("ring", "events"), ("ring", "borrow"),
                                       ("perf", "poll"), ("perf", "read")])
def test_sigint_storm_with_small_batches(bpf_obj, kind, form):
    """Batches of a few records: the ring keeps the rest, a step hands over part."""
    check_exactly_once(storm(bpf_obj, kind, form, seed=7, mbb=48, burst=3))


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
