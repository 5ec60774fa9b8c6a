"""Integrity (issue 11): close() from another thread while a consumer, a user ring
buffer producer or the first map operation runs.  Every scenario repeats for a few
seconds with real threads, in a child interpreter: a crash or a hang fails one test.
Each call must either succeed or raise ClosedError; nothing else."""

from __future__ import annotations

import pytest
from _child import run_child

pytestmark = pytest.mark.kernel

SECONDS = 2.5

CONSUMER = r"""
import random
import pybpf, _integrity_obj as io
from pybpf import ClosedError
form, kind = P["form"], P["kind"]
random.seed(P["seed"])
bad, iters, obj_closes = [], 0, 0
obj = None
deadline = time.monotonic() + P["seconds"]

def make(obj):
    sink = []
    if kind == "ring":
        return pybpf.RingBuffer(obj.maps["rb"], callback=sink.append)
    return pybpf.PerfBuffer(obj.maps["pb"], callback=sink.append, pages=4)

def once(c):
    if form == "poll":
        c.poll(0)
    elif form == "read":
        c.read(0)
    elif form == "read_copy":
        bytes(c.read(0, copy=True).data)
    elif form == "events":
        for rec in c.events(0):
            bytes(rec)
    elif form == "borrow":
        with c.borrow(0) as b:
            for rec in b:
                bytes(rec)
    elif form == "consume":
        c.consume()
    elif form == "read_numpy":
        c.read_numpy("<u8", 0).sum()
    elif form == "iter_break":
        for rec in c.events(0):
            bytes(rec)
            break

while time.monotonic() < deadline:
    iters += 1
    if obj is None or obj.closed:
        obj = io.load(P["path"])
    c = make(obj)
    close_obj = iters % 3 == 0
    for _ in range(random.randint(0, 30)):
        io.mark()
    stop = threading.Event()
    started = threading.Event()

    def consumer():
        try:
            while not stop.is_set():
                started.set()
                once(c)
                if not obj.closed:
                    io.mark()
        except ClosedError:
            pass
        except BaseException as e:
            bad.append(f"{form} while closing: {type(e).__name__}: {e}")
        finally:
            started.set()

    t = threading.Thread(target=consumer)
    t.start()
    started.wait(5)
    time.sleep(random.uniform(0, 0.002))
    try:
        if close_obj:
            obj.close()
            obj_closes += 1
        else:
            c.close()
    except BaseException as e:
        bad.append(f"close(): {type(e).__name__}: {e}")
    stop.set()
    t.join(10)
    if t.is_alive():
        bad.append(f"{form}: the consumer is still running 10 s after close()")
        break
    if form not in ("events", "iter_break"):  # events() on a closed stream just ends
        try:
            once(c)
            bad.append(f"{form} after close: no ClosedError")
        except ClosedError:
            pass
        except BaseException as e:
            bad.append(f"{form} after close: {type(e).__name__}: {e}")
    if len(bad) > 5:
        break
emit({"iters": iters, "obj_closes": obj_closes, "bad": bad})
"""


@pytest.mark.parametrize("kind,form", [
    ("ring", "poll"), ("ring", "read"), ("ring", "read_copy"), ("ring", "events"),
    ("ring", "borrow"), ("ring", "consume"), ("ring", "iter_break"), ("ring", "read_numpy"),
    ("perf", "poll"), ("perf", "read"), ("perf", "events"), ("perf", "consume"),
])
def test_close_from_another_thread_during_consumer(bpf_obj, kind, form):
    if form == "read_numpy":
        pytest.importorskip("numpy")  # optional dependency
    v = run_child(CONSUMER, timeout=60, what=f"{kind} {form} vs close()",
                  params={"path": bpf_obj("integrity"), "kind": kind, "form": form,
                          "seconds": SECONDS, "seed": 11})
    assert v["bad"] == [], v
    assert v["iters"] >= 3 and v["obj_closes"] >= 1, v


FIRST_MAP_OP = r"""
import random
import pybpf, _integrity_obj as io
from pybpf import ClosedError
random.seed(P["seed"])
bad, iters, wrote, stale_written = [], 0, 0, []
deadline = time.monotonic() + P["seconds"]
while time.monotonic() < deadline:
    iters += 1
    a = io.load(P["path"], tag=1, attach=False)
    m = a.maps[P["map"]]
    go = threading.Barrier(2)
    res = []

    def first_op():
        go.wait()
        try:
            m[3] = 1000 + iters  # the first operation: resolves types lazily
            res.append("ok")
        except ClosedError:
            res.append("closed")
        except BaseException as e:
            res.append(f"{type(e).__name__}: {e}")

    t = threading.Thread(target=first_op)
    t.start()
    go.wait()
    time.sleep(random.uniform(0, 0.0005))
    a.close()
    t.join(10)
    if t.is_alive():
        bad.append("first map operation still running 10 s after close()")
        break
    if res and res[0] not in ("ok", "closed"):
        bad.append(f"m[k] = v racing close(): {res[0]}")
    wrote += res == ["ok"]
    # A second object now likely has the same fd numbers: the stale handle must not reach it.
    b = io.load(P["path"], tag=2, attach=False)
    try:
        ops = [("set", lambda: m.__setitem__(5, 5)), ("get", lambda: m[3])]
        if P["map"] == "h":  # an array's len() is its size, and its elements are not deleted
            ops += [("del", lambda: m.__delitem__(3)), ("len", lambda: len(m))]
        for op, fn in ops:
            try:
                fn()
                bad.append(f"stale {op} after close(): no ClosedError")
            except ClosedError:
                pass
            except BaseException as e:
                bad.append(f"stale {op} after close(): {type(e).__name__}: {e}")
        mb = b.maps[P["map"]]
        seen = {int(k): int(mb[k]) for k in mb.keys()}
        if P["map"] == "h" and seen:
            stale_written.append(seen)
        if P["map"] == "arr" and any(seen.values()):
            stale_written.append({k: v for k, v in seen.items() if v})
    finally:
        b.close()
    if len(bad) > 5 or stale_written:
        break
emit({"iters": iters, "wrote": wrote, "bad": bad, "stale_written": stale_written})
"""


@pytest.mark.parametrize("mapname", ["h", "arr"])
def test_first_map_operation_racing_object_close(bpf_obj, mapname):
    v = run_child(FIRST_MAP_OP, timeout=60, what="m[k] = v vs Object.close()",
                  params={"path": bpf_obj("integrity"), "map": mapname,
                          "seconds": SECONDS, "seed": 4})
    assert v["stale_written"] == [], f"writes landed in another object's map: {v}"
    assert v["bad"] == [], v
    assert v["iters"] >= 10, v


USER_RING = r"""
import random, struct
import pybpf, _integrity_obj as io
from pybpf import ClosedError
random.seed(P["seed"])
REC = struct.Struct("<IIQ")
bad, iters = [], 0
deadline = time.monotonic() + P["seconds"]
obj = io.load(P["path"])
while time.monotonic() < deadline:
    iters += 1
    if obj.closed:
        obj = io.load(P["path"])
    urb = pybpf.UserRingBuffer(obj.maps["urb"])
    scenario = iters % 3
    if scenario == 0:
        # close() inside `with reserve()`, then touch the reservation and leave the block
        try:
            with urb.reserve(REC.size) as buf:
                (urb.close() if iters % 2 else obj.close())
                try:
                    REC.pack_into(buf, 0, 1, 0, 7)
                    buf[0]
                except ValueError:  # ClosedError, or a released view: both are clean
                    pass
        except ClosedError:
            pass
        except BaseException as e:
            bad.append(f"reserve/close/touch: {type(e).__name__}: {e}")
    else:
        stop = threading.Event()

        def producer():
            n = 0
            try:
                while not stop.is_set():
                    if scenario == 1:
                        urb.submit(REC.pack(1 + n % 60, 0, n), timeout=0)
                    else:
                        with urb.reserve(REC.size, timeout=0) as buf:
                            REC.pack_into(buf, 0, 1 + n % 60, 0, n)
                    n += 1
                    if n % 50 == 0:
                        os.getpgid(0)  # let the program drain
            except ClosedError:
                pass
            except pybpf.MapError as e:  # full ring with timeout=0 is a documented error
                if "ENOSPC" not in str(e) and "EAGAIN" not in str(e) and "full" not in str(e):
                    bad.append(f"submit: MapError: {e}")
            except BaseException as e:
                bad.append(f"submit racing close: {type(e).__name__}: {e}")

        t = threading.Thread(target=producer)
        t.start()
        time.sleep(random.uniform(0, 0.003))
        (urb.close() if iters % 2 else obj.close())
        stop.set()
        t.join(10)
        if t.is_alive():
            bad.append("producer still running 10 s after close()")
            break
    try:
        urb.submit(REC.pack(1, 0, 1))
        bad.append("submit after close: no ClosedError")
    except ClosedError:
        pass
    except BaseException as e:
        bad.append(f"submit after close: {type(e).__name__}: {e}")
    if len(bad) > 5:
        break
emit({"iters": iters, "bad": bad})
"""


def test_user_ring_buffer_close_during_reserve_and_submit(bpf_obj):
    v = run_child(USER_RING, timeout=60, what="UserRingBuffer vs close()",
                  params={"path": bpf_obj("integrity"), "seconds": SECONDS, "seed": 2})
    assert v["bad"] == [], v
    assert v["iters"] >= 6, v


ASYNC_CLOSE = r"""
import asyncio
import pybpf, _integrity_obj as io

async def main():
    a = io.load(P["path"])
    rb = pybpf.RingBuffer(a.maps["rb"])
    for _ in range(5):
        io.mark()
    got = []

    async def consume():
        async for rec in rb:
            got.append(rec)
        return "ended"

    t = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    (a.close() if P["obj"] else rb.close())
    try:
        r = await asyncio.wait_for(t, 5)
    except asyncio.TimeoutError:
        r = "still iterating 5 s after close()"
    except pybpf.ClosedError:
        r = "ended"
    emit({"result": r, "got": len(got)})

asyncio.run(main())
"""


@pytest.mark.parametrize("obj", [False, True], ids=["rb.close", "Object.close"])
def test_close_ends_async_iteration(bpf_obj, obj):
    v = run_child(ASYNC_CLOSE, timeout=30, what="async for vs close()",
                  params={"path": bpf_obj("integrity"), "obj": obj})
    assert v == {"result": "ended", "got": 5}, v


COPY_CLOSE = r"""
import copy
import pybpf, _integrity_obj as io
a = io.load(P["path"], attach=False)
h = a.maps["h"]
h[1] = 5
res = {}
try:
    c = copy.copy(h)
    c.close()
except BaseException as e:
    res["copy"] = type(e).__name__
try:
    res["original after closing a copy"] = int(h[1])
except BaseException as e:
    res["original after closing a copy"] = f"{type(e).__name__}: {e}"
emit(res)
"""


def test_closing_a_copy_does_not_close_the_original(bpf_obj):
    """One owner per fd: a copy of a Map either shares nothing it can close or is refused."""
    v = run_child(COPY_CLOSE, timeout=30, what="copy.copy(map).close()",
                  params={"path": bpf_obj("integrity")})
    assert v.get("original after closing a copy") == 5 or v.get("copy") == "TypeError", v


BORROW_SMALL = r"""
import pybpf, _integrity_obj as io
a = io.load(P["path"])
rb = pybpf.RingBuffer(a.maps["rb"], max_batch_bytes=8)  # smaller than one record + header
io.mark()
got, err = 0, None
try:
    for _ in range(20):
        with rb.borrow(0.05) as b:
            got += len(b)
        if got:
            break
except BaseException as e:
    err = f"{type(e).__name__}: {e}"
emit({"got": got, "err": err})
"""


def test_borrow_with_a_tiny_batch_limit_makes_progress(bpf_obj):
    v = run_child(BORROW_SMALL, timeout=30, what="borrow(max_batch_bytes=8)",
                  params={"path": bpf_obj("integrity")})
    assert v["got"] == 1 or (v["err"] or "").startswith(("ValueError", "MapError")), v


MAP_OPS_CLOSE = r"""
import random
import pybpf, _integrity_obj as io
from pybpf import ClosedError
random.seed(P["seed"])
forms = {
    "typed keys()": lambda m: list(m.keys()),
    "Map.keys()": lambda m: list(pybpf.Map.keys(m)),
    "lookup_batch": lambda m: [bytes(b.keys) for b in m.lookup_batch(chunk=8)],
    "items()": lambda m: list(m.items()),
    "len()": lambda m: len(m),
    "clear()": lambda m: m.clear(),
    "update_batch": lambda m: m.update_batch([(k, k) for k in range(0, 3000, 3)]),
    "delete_batch": lambda m: m.delete_batch(range(3000)),
    "m[k] = v": lambda m: [m.__setitem__(k, k) for k in range(200)],
}
bad, iters = [], 0
deadline = time.monotonic() + P["seconds"]
while time.monotonic() < deadline and len(bad) < 6:
    iters += 1
    a = io.load(P["path"], attach=False)
    m = a.maps["h"]
    for k in range(0, 3000, 3):
        m[k] = k
    name = list(forms)[iters % len(forms)]

    def run():
        try:
            for _ in range(50):
                forms[name](m)
        except ClosedError:
            pass
        except BaseException as e:
            bad.append(f"{name} racing close(): {type(e).__name__}: {e}")

    t = threading.Thread(target=run)
    t.start()
    time.sleep(random.uniform(0, 0.003))
    a.close()
    t.join(10)
    if t.is_alive():
        bad.append(f"{name}: still running 10 s after close()")
        break
emit({"iters": iters, "bad": bad})
"""


def test_close_from_another_thread_during_map_operations(bpf_obj):
    v = run_child(MAP_OPS_CLOSE, timeout=60, what="map operations vs Object.close()",
                  params={"path": bpf_obj("integrity"), "seconds": SECONDS, "seed": 8})
    assert v["bad"] == [], v
    assert v["iters"] >= 9, v


ADD_WHILE_POLLING = r"""
import pybpf, _integrity_obj as io
from pybpf import ClosedError
objs = [io.load(P["path"], tag=i) for i in (1, 2, 3)]
bad, added, refused = [], 0, 0
deadline = time.monotonic() + P["seconds"]
while time.monotonic() < deadline and len(bad) < 5:
    rb = pybpf.RingBuffer(objs[0].maps["rb"], callback=lambda r: None)
    stop = threading.Event()

    def poller():
        try:
            while not stop.is_set():
                io.mark()
                try:
                    rb.poll(0)
                except RuntimeError as e:  # add() holds the reader: documented, retry
                    if "already consuming" not in str(e):
                        raise
        except ClosedError:
            pass
        except BaseException as e:
            bad.append(f"poll while add(): {type(e).__name__}: {e}")

    t = threading.Thread(target=poller)
    t.start()
    for o in objs[1:]:
        try:
            rb.add(o.maps["rb"], callback=lambda r: None)
            added += 1
        except RuntimeError:  # refused while another thread consumes: documented
            refused += 1
        except BaseException as e:
            bad.append(f"add() while polling: {type(e).__name__}: {e}")
    time.sleep(0.005)
    rb.close()
    stop.set()
    t.join(10)
    if t.is_alive():
        bad.append("poller still running 10 s after close()")
        break
emit({"bad": bad, "added": added, "refused": refused})
"""


def test_ring_add_while_another_thread_polls(bpf_obj):
    v = run_child(ADD_WHILE_POLLING, timeout=60, what="RingBuffer.add() vs poll()",
                  params={"path": bpf_obj("integrity"), "seconds": 2.0})
    assert v["bad"] == [], v


URB_AFTER_BLOCK = r"""
import struct
import pybpf, _integrity_obj as io
REC = struct.Struct("<IIQ")
obj = io.load(P["path"])
urb = pybpf.UserRingBuffer(obj.maps["urb"])
arr = obj.maps["arr"]
out = {}

def attempt(name, f):
    try:
        f()
        out[name] = "no error"
    except pybpf.ClosedError as e:
        out[name] = "ClosedError" if "urb" in str(e) else f"ClosedError without the map: {e}"
    except BaseException as e:
        out[name] = f"{type(e).__name__}: {e}"

for i in range(P["rounds"]):
    with urb.reserve(REC.size) as buf:
        REC.pack_into(buf, 0, 5, 0, 1000 + i)
        head, tail = buf[0:8], buf[8:16]
        mv = memoryview(buf)
    # after the block: the reservation and its slices are closed...
    attempt("buf[0]", lambda: buf[0])
    attempt("buf[0] = 1", lambda: buf.__setitem__(0, 1))
    attempt("tail[:] = ...", lambda: tail.__setitem__(slice(0, 8), b"\xff" * 8))
    attempt("bytes(head)", lambda: bytes(head))
    attempt("memoryview(tail)", lambda: memoryview(tail))
    attempt("len(buf)", lambda: len(buf))
    # ...and a memoryview made inside writes to the private copy, never to the ring
    mv[8:16] = b"\xee" * 8
    os.getpgid(0)  # the program drains the ring into arr[5]
    out.setdefault("values", []).append(int(arr[5]))
# close() inside the block: the block raises ClosedError, nothing is published
try:
    with urb.reserve(REC.size) as buf:
        REC.pack_into(buf, 0, 6, 0, 77)
        part = buf[8:16]
        urb.close()
        part[0] = 1  # (private bytes: harmless)
    out["close in block"] = "no error"
except pybpf.ClosedError:
    out["close in block"] = "ClosedError"
attempt("slice after close", lambda: part[0])
os.getpgid(0)
out["arr6"] = int(arr[6])
emit(out)
"""


def test_user_ring_buffer_reservation_after_its_block_raises_closed_error(bpf_obj):
    rounds = 20
    v = run_child(URB_AFTER_BLOCK, timeout=30, what="reservation used after its block",
                  params={"path": bpf_obj("integrity"), "rounds": rounds})
    for name in ("buf[0]", "buf[0] = 1", "tail[:] = ...", "bytes(head)", "memoryview(tail)",
                 "len(buf)", "slice after close"):
        assert v[name] == "ClosedError", (name, v)
    # what the program drained is what the block wrote, not the later writes
    assert v["values"] == [1000 + i for i in range(rounds)], v
    assert v["close in block"] == "ClosedError" and v["arr6"] == 0, v


GLOBALS_RACE = r"""
import collections
import pybpf, _integrity_obj as io
errs = collections.Counter()
for i in range(P["rounds"]):
    obj = io.load(P["path"], attach=False)
    if i % 2:
        obj.bss.hits = 1  # the mmap exists already; else the first access races close()
    go = threading.Event()

    def writer(k):
        go.wait()
        n = 0
        while True:
            try:
                if k == 0:
                    obj.bss.hits = n
                elif k == 1:
                    obj.data.marker = n
                    obj.bss["hits"]
                else:
                    obj.data._asdict()
                n += 1
            except pybpf.ClosedError as e:
                errs["ClosedError" if "'integrity'" in str(e) else f"unnamed: {e}"] += 1
                return
            except BaseException as e:
                errs[f"{type(e).__name__}: {e}"] += 1
                return

    ts = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for t in ts:
        t.start()
    go.set()
    time.sleep(0.0003 * (i % 5))
    obj.close()
    for t in ts:
        t.join(10)
    if any(t.is_alive() for t in ts):
        errs["hang"] += 1
        break
emit(dict(errs))
"""


def test_globals_writes_racing_object_close_raise_closed_error(bpf_obj):
    """.bss/.data reads and writes in three threads while the object closes: each
    thread ends with ClosedError naming the object, never ``ValueError: mmap closed``."""
    rounds = 150
    v = run_child(GLOBALS_RACE, timeout=120, what="globals racing Object.close()",
                  params={"path": bpf_obj("integrity"), "rounds": rounds})
    assert v == {"ClosedError": 3 * rounds}, v


LPM_STRESS = r"""
import ipaddress, random
import pybpf, _integrity_obj as io
from pybpf import BPFError, ClosedError
random.seed(P["seed"])
nets = [ipaddress.ip_network(f"10.{i // 64}.{(i % 64) * 4}.0/{22 + i % 3}") for i in range(800)]
res = {"rounds": 0, "interrupts": 0, "errors": 0, "other": [], "ops": 0}
armed = [False]

def handler(signum, frame):   # KeyboardInterrupt at random points of the main thread's ops
    if armed[0] and random.random() < 0.5:
        armed[0] = False
        raise KeyboardInterrupt

signal.signal(signal.SIGALRM, handler)
signal.setitimer(signal.ITIMER_REAL, 0.001, 0.0007)
deadline = time.monotonic() + P["seconds"]
while time.monotonic() < deadline:
    obj = io.load(P["path"], attach=False)
    m = obj.maps["lpm"]
    stop = threading.Event()

    def worker(kind):
        while not stop.is_set():
            try:
                if kind == "typed":
                    n = random.choice(nets)
                    if random.random() < 0.5:
                        m[n] = random.randrange(1 << 32)
                    else:
                        m.pop(n, None)
                    m.get(ipaddress.ip_network(f"10.{random.randrange(13)}.{random.randrange(256)}.7/32"))
                elif kind == "raw":
                    k = random.choice(nets)
                    kb = k.prefixlen.to_bytes(4, "little") + k.network_address.packed
                    pybpf.Map.update(m, kb, os.urandom(8))
                    pybpf.Map.lookup(m, kb)
                    pybpf.Map.delete(m, kb)
                elif kind == "walk":
                    for _ in m.items():
                        pass
                    list(m.keys_raw())
                    len(m)
                else:
                    for b in m.lookup_batch(chunk=random.choice([1, 7, 64])):
                        bytes(b.keys)
                res["ops"] += 1
            except ClosedError:
                return
            except KeyError:
                pass
            except BPFError:
                res["errors"] += 1   # a walk abandoned under churn (EAGAIN) is allowed
            except Exception as e:
                res["other"].append(f"{kind}: {type(e).__name__}: {e}"[:200])
                return

    ts = [threading.Thread(target=worker, args=(k,))
          for k in ("typed", "raw", "walk", "batch", "walk")]
    for t in ts:
        t.start()
    end = time.monotonic() + random.random() * 0.3
    while time.monotonic() < end:
        try:
            armed[0] = True
            n = random.choice(nets)
            m[n] = 1
            del m[n]
            for i, _ in enumerate(m.items()):
                if i > random.randrange(50):
                    break
            pybpf.Map.lookup(m, n.prefixlen.to_bytes(4, "little") + n.network_address.packed)
            armed[0] = False
        except (KeyError, ClosedError):
            armed[0] = False
        except KeyboardInterrupt:
            armed[0] = False
            res["interrupts"] += 1
    armed[0] = False
    obj.close()              # while the workers are in the middle of their calls
    stop.set()
    for t in ts:
        t.join()
    res["rounds"] += 1
signal.setitimer(signal.ITIMER_REAL, 0, 0)
emit(res)
"""


def test_lpm_trie_typed_raw_walks_deletes_close_and_signals(bpf_obj):
    """The LPM trie SIGSEGV seen once: typed and raw access, walks, batch walks and
    deletes in threads, KeyboardInterrupts landing in the main thread's operations,
    and the object closed under all of them, round after round. Nothing may crash,
    and every error is a pybpf one (ClosedError once closed)."""
    for seed in range(2):
        v = run_child(LPM_STRESS, timeout=150, what=f"LPM trie stress (seed {seed})",
                      params={"path": bpf_obj("integrity"), "seconds": 15, "seed": seed})
        assert v["other"] == [], v
        assert v["rounds"] >= 3 and v["ops"] > 100 and v["interrupts"] > 0, v


BIG_BATCH_CLOSE = r"""
import pybpf
m = pybpf.create_map("hash", 4, 8, 100000, name=f"bigb{os.getpid() % 10000}",
                     key="u32", value="u64")
m.update_batch([(i, 3 * i) for i in range(100000)])
outcomes = {}
for r in range(P["rounds"]):
    m2 = pybpf.Map.from_id(m.id)   # a second handle, closed while its walk runs
    t = threading.Timer(0.0004 * (r % 9), m2.close)
    t.start()
    try:
        got = 0
        for b in m2.lookup_batch(chunk=30000):   # more than 4096: the GIL is let go
            vals = memoryview(b.values).cast("Q")
            keys = memoryview(b.keys).cast("I")
            got += sum(vals[i] == 3 * keys[i] for i in range(b.count))
        o = str(got)
    except pybpf.ClosedError:
        o = "closed"
    t.join()
    outcomes[o] = outcomes.get(o, 0) + 1
emit({"outcomes": outcomes, "still": len(m)})
"""


def test_big_batch_walk_racing_close(bpf_obj):
    """A batch chunk over 4096 entries is read without the GIL, the map's owner
    borrowed: closing that handle from another thread meanwhile gives ClosedError (or
    the whole map, every value right), never a crash or another map's entries."""
    v = run_child(BIG_BATCH_CLOSE, timeout=120, what="big batch vs close",
                  params={"rounds": 30})
    assert set(v["outcomes"]) <= {"closed", "100000"} and v["still"] == 100000, v
    assert v["outcomes"].get("closed", 0) > 0, v
