"""Borrowed and lent event batches left in reference cycles (issue 11): a cyclic GC
after the block, from any thread, while the reader is read on and closed, must never
crash, and views used after their block must never show freed memory.

``RingBuffer.borrow()`` views the ring's pages, ``read()`` (copy=False) of a large
batch views the reader's lent buffer; each is kept here in cycles together with
``memoryview`` slices and numpy arrays made from it, then collected by
``gc.collect()`` calls in other threads (CPython 3.11 once crashed on a memoryview
in a cycle). Each run is a child interpreter, many rounds over; the records come
from the kernel (the test program emits them on the child's getppid()) and their
sequence numbers are checked whenever a view is read.
"""

from __future__ import annotations

import pytest
from _child import run_child

pytestmark = pytest.mark.kernel

np = pytest.importorskip("numpy")

CYCLES = r"""
import gc, random, struct
import numpy as np
from _events_obj import EVENT, MODE_PERF, MODE_RB, events_object
import pybpf
from pybpf import ClosedError, PerfBuffer, RingBuffer
random.seed(P["seed"])
kind = P["kind"]
dt = np.dtype([("seq", "<u8"), ("pid", "<u4"), ("kind", "<u4"), ("cookie", "<u8"),
               ("square", "<u8")])
stop = threading.Event()
gcs = [0]

def collector():
    while not stop.is_set():
        gc.collect()
        gcs[0] += 1
        time.sleep(random.random() * 0.002)

class Node:
    def __init__(self, *held):
        self.held = list(held)
        self.me = self   # a cycle through the instance itself

bad, rounds, views_read, refused, records = [], 0, 0, 0, 0
collectors = [threading.Thread(target=collector) for _ in range(2)]
for t in collectors:
    t.start()
kept = []   # views kept past their block, read again in later rounds
try:
    with events_object(P["obj"]) as ev:
        for rnd in range(P["rounds"]):
            r = (PerfBuffer(ev.maps["pb"], pages=16) if kind == "perf"
                 else RingBuffer(ev.maps["rb"]))
            closer = None
            if rnd % 3 == 2:   # close the reader from another thread, at a random point
                closer = threading.Timer(random.random() * 0.01, r.close)
                closer.start()
            try:
                for step in range(6):
                    ev.emit(random.choice([1, 8, 700]), MODE_PERF if kind == "perf" else MODE_RB)
                    if kind == "ring" and step % 2 == 0:
                        with r.borrow(0) as b:
                            mv = memoryview(b.data)
                            arr = b.numpy(dt) if len(b) and b.fixed_size == dt.itemsize else None
                            records += len(b)
                            node = Node(b, mv, mv[1:], arr, arr[::2] if arr is not None else None)
                            node.held.append(node.held)   # list <-> itself too
                            if random.random() < 0.5:
                                kept.append((mv, arr))
                            del node, mv, arr, b
                    else:
                        b = r.read(0)
                        records += len(b)
                        if len(b) and b.fixed_size is not None and b.fixed_size >= dt.itemsize:
                            arr = b.numpy(dt)
                            seqs = arr["seq"].tolist()
                            if any(y != x + 1 for x, y in zip(seqs, seqs[1:])) and kind == "ring":
                                bad.append(f"round {rnd}: records out of order in a batch")
                            node = Node(b, memoryview(b.data), arr, arr[1:])
                            if random.random() < 0.5:
                                kept.append((memoryview(b.data), arr))
                            del node, arr
                        del b
                    if random.random() < 0.3:
                        gc.collect()
            except ClosedError:
                pass
            if closer is not None:
                closer.join()
            r.close()
            # views kept past their block (and past the reader's close): reading them
            # raises or gives bytes of the right size -- never a crash
            for mv, arr in kept[-8:]:
                try:
                    data = bytes(mv)
                    views_read += 1
                    if len(data) != mv.nbytes:
                        bad.append("a view changed size")
                    if arr is not None:
                        arr["seq"].sum()
                except (ValueError, ClosedError, BufferError):
                    refused += 1
            if len(kept) > 64:
                del kept[:32]
            rounds += 1
finally:
    kept.clear()
    stop.set()
    for t in collectors:
        t.join()
gc.collect()
emit({"bad": bad, "rounds": rounds, "gcs": gcs[0], "records": records,
      "views_read": views_read, "refused": refused})
"""


@pytest.mark.parametrize("kind", ["ring", "perf"])
def test_borrowed_and_lent_batches_in_cycles_survive_gc_from_threads(bpf_obj, kind):
    for seed in range(3):
        v = run_child(CYCLES, timeout=240, what=f"{kind} batches in cycles (seed {seed})",
                      params={"obj": bpf_obj("events"), "kind": kind, "rounds": 40,
                              "seed": seed})
        assert v["bad"] == [], v
        assert v["rounds"] == 40 and v["records"] > 0 and v["gcs"] > 0, v
        assert v["views_read"] + v["refused"] > 0, v
