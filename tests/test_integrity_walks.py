"""Integrity (issue 11): walks under a concurrent writer.  Keys the test inserted and
never touches must each come out exactly once from every walk form while a writer
thread inserts and deletes other keys (and, separately, while the walker deletes
the keys it is shown)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from _child import run_child

pytestmark = pytest.mark.kernel

WALK = r"""
import ipaddress, random
import pybpf, _integrity_obj as io
random.seed(P["seed"])
form = P["form"]
obj = io.load(P["path"], attach=False)
lpm = form.startswith("lpm")
m = obj.maps["lpm" if lpm else "h"]
if lpm:
    stable = {ipaddress.ip_network(f"10.{i // 16}.{i % 16}.0/24") for i in range(300)}
    # churn: prefixes of their own, and /25s inside the stable /24s (a trie's lookup
    # "finds" a deleted /25 by its /24: only GET_NEXT_KEY tells it is gone)
    churn = [ipaddress.ip_network(f"172.{16 + i // 256}.{i % 256}.0/24") for i in range(1200)]
    churn += [ipaddress.ip_network(f"10.{i // 16}.{i % 16}.128/25") for i in range(300)]
else:
    stable = set(range(0, 2000, 2))  # even keys: never touched again
    churn = list(range(1, 6001, 2))   # odd keys: inserted and deleted by the writer
for k in stable:
    m[k] = 1
for k in churn[: len(churn) // 2]:
    m[k] = 2
stop = threading.Event()
writes = [0]

def writer():
    live = set(churn[: len(churn) // 2])
    while not stop.is_set():
        k = random.choice(churn)
        try:
            if k in live:
                del m[k]
                live.discard(k)
            else:
                m[k] = 3
                live.add(k)
            writes[0] += 1
        except KeyError:
            live.discard(k)

def to_key(raw):
    return int.from_bytes(raw[:4], "little")

def walk():
    if form in ("Map.keys", "keys_raw"):
        it = pybpf.Map.keys(m) if form == "Map.keys" else m.keys_raw()
        return [to_key(bytes(k)) for k in it]
    if form in ("keys", "lpm_keys"):
        return list(m.keys())
    if form in ("items", "lpm_items"):
        return [k for k, _ in m.items()]
    if form.startswith("batch"):
        out = []
        for b in m.lookup_batch(chunk=int(form[5:])):
            kb = bytes(b.keys)
            out += [to_key(kb[i:i + 4]) for i in range(0, 4 * b.count, 4)]
        return out
    raise ValueError(form)

bad, walks = [], 0
t = threading.Thread(target=writer)
t.start()
try:
    # At least 3 whole walks, however slow a walk is under the writer (this checks what
    # a walk returns, not its speed), and more while time is left.
    deadline = time.monotonic() + P["seconds"]
    while (time.monotonic() < deadline or walks < 3) and len(bad) < 3:
        got = walk()
        walks += 1
        seen = [k for k in got if k in stable]
        missing = stable - set(seen)
        dups = len(seen) - len(set(seen))
        if missing or dups:
            bad.append(f"walk {walks}: {len(missing)} of {len(stable)} stable keys missing, "
                       f"{dups} returned twice (walk returned {len(got)} keys)")
finally:
    stop.set()
    t.join()
emit({"walks": walks, "writes": writes[0], "bad": bad})
"""


@pytest.mark.parametrize("form", ["Map.keys", "keys_raw", "keys", "items", "batch1", "batch64",
                                  "lpm_keys", "lpm_items"])
def test_walk_returns_every_stable_key_once_under_a_writer(bpf_obj, form):
    v = run_child(WALK, timeout=120, what=f"{form} walk under a writer",
                  params={"path": bpf_obj("integrity"), "form": form, "seconds": 2.0, "seed": 9})
    assert v["bad"] == [], v
    assert v["walks"] >= 3 and v["writes"] >= 100, v


DELETE_WHILE_WALKING = r"""
import ipaddress
import pybpf, _integrity_obj as io
obj = io.load(P["path"], attach=False)
res = {}
for form in ("Map.keys", "keys_raw", "keys", "lpm_keys"):
    m = obj.maps["lpm" if form == "lpm_keys" else "h"]
    if form == "lpm_keys":
        keys = [ipaddress.ip_network(f"10.{i // 256}.{i % 256}.0/24") for i in range(1200)]
    else:
        keys = list(range(1200))
    index = {k: i for i, k in enumerate(keys)}
    for k in keys:
        m[k] = 1
    # The walker deletes each odd-numbered key it is shown, and the next key of each
    # even-numbered one: every even-numbered key stays for the whole walk.
    shown = []
    it = (pybpf.Map.keys(m) if form == "Map.keys" else m.keys_raw() if form == "keys_raw"
          else m.keys())
    for k in it:
        if isinstance(k, (bytes, bytearray)):
            k = int.from_bytes(bytes(k)[:4], "little")
        i = index[k]
        shown.append(i)
        victim = keys[i] if i % 2 else keys[i + 1] if i + 1 < len(keys) else None
        if victim is not None:
            try:
                del m[victim]
            except KeyError:
                pass
    res[form] = len(set(range(0, len(keys), 2)) - set(shown))
    m.clear()
emit(res)
"""


def test_walk_survives_deleting_the_keys_it_shows(bpf_obj):
    v = run_child(DELETE_WHILE_WALKING, timeout=60, what="delete while walking",
                  params={"path": bpf_obj("integrity")})
    assert v == {"Map.keys": 0, "keys_raw": 0, "keys": 0, "lpm_keys": 0}, \
        f"stable keys never shown (per walk form): {v}"



def test_lpm_items_never_report_a_deleted_prefix_with_its_parents_value():
    """A trie's lookup is a longest-prefix match: a prefix deleted between the step that
    found it and the lookup of its value "is found" with its parent's value. The walker
    deletes the key the walk will read next (in the trie's order the /25 right after
    each /24), and in the second round also everything before it, so the kernel's
    restart lands above the deleted key. The walk must leave deleted prefixes out (or
    give their own value), never give a parent's value."""
    import ipaddress

    import pybpf

    net = ipaddress.IPv4Network
    for everything_before in (False, True):
        with pybpf.create_map("lpm_trie", 8, 8, 1024, name=f"tv{os.getpid() % 100000}",
                              flags=1, value="u64") as m:
            own = {net("10.0.0.0/16"): 7777}
            for i in range(200):
                own[net(f"10.0.{i}.0/24")] = i
                own[net(f"10.0.{i}.128/25")] = 1000 + i
            m.update(own)
            # the order the kernel walks (a prefix after the longer ones inside it)
            order = [net(f"10.0.{i}.{h}/{p}") for i in range(200)
                     for h, p in ((128, 25), (0, 24))] + [net("10.0.0.0/16")]
            got: dict[Any, int] = {}
            deleted: set[Any] = set()
            for n, value in m.items():
                assert n not in got, f"{n} returned twice"
                got[n] = value
                i = order.index(n)
                if n.prefixlen == 24 and i + 1 < len(order) - 1 or everything_before:
                    victims = order[:i + 2] if everything_before else [order[i + 1]]
                    for v in victims:
                        if v not in deleted:
                            del m[v]
                            deleted.add(v)
            wrong = {str(n): (v, own[n]) for n, v in got.items() if v != own[n]}
            assert not wrong, f"(value returned, the prefix's own value): {wrong}"
            missing = set(own) - deleted - set(got)
            assert not missing, f"prefixes never deleted and not returned: {missing}"


BESIDE_A_BUSY_WRITER = r"""
import ipaddress
import pybpf, _integrity_obj as io
obj = io.load(P["path"], attach=False)
lpm, h = obj.maps["lpm"], obj.maps["h"]
stable = {ipaddress.ip_network(f"10.{i // 16}.{i % 16}.0/24"): i for i in range(300)}
lpm.update(stable)
# A switch interval long enough that a walk of a few ms normally fits in one: the
# writer can run inside a walk only where the walk lets go of the GIL (or, rarely,
# where the interval runs out in the middle of it).
sys.setswitchinterval(P["interval"])
stop = threading.Event()
writes = [0]

def writer():   # a tight loop on the typed fast path: it never blocks
    n = 0
    while not stop.is_set():
        h[n & 1023] = n
        n += 1
        writes[0] = n

t = threading.Thread(target=writer)
t.start()
bad, interleaved = [], 0
try:
    for i in range(P["walks"]):
        before = writes[0]
        if P["form"] == "items":
            got = dict(lpm.items())
        elif P["form"] == "keys":
            got = {k: stable.get(k) for k in lpm.keys()}
        else:
            got = {ipaddress.ip_network((bytes(k)[4:], int.from_bytes(bytes(k)[:4], "little"))):
                   stable.get(ipaddress.ip_network((bytes(k)[4:],
                                                    int.from_bytes(bytes(k)[:4], "little"))))
                   for k in lpm.keys_raw()}
        interleaved += writes[0] != before
        if got != stable:
            bad.append(f"walk {i}: {len(set(stable) - set(got))} keys missing, "
                       f"{len(set(got) - set(stable))} unexpected, "
                       f"{sum(got.get(k) != v for k, v in stable.items())} wrong values")
finally:
    stop.set()
    t.join()
# the writer really ran, and its writes are in the kernel's map
emit({"bad": bad, "interleaved": interleaved, "writes": writes[0],
      "last": h[(writes[0] - 1) & 1023] == writes[0] - 1})
"""


@pytest.mark.parametrize("form", ["items", "keys", "keys_raw"])
def test_walk_beside_a_busy_fast_path_writer_holds_the_gil(bpf_obj, form):
    """A walk's syscalls keep the GIL, like the writer's fast path: beside a thread in a
    tight ``h[k] = v`` loop the walk is not handed to the writer at each syscall (the
    "GIL convoy": then every syscall of the walk waited for the writer's switch interval,
    ~4 s per 300-prefix LPM walk). Checked by work done: every walk returns the exact
    key set and values, and the writer runs inside at most a few of the walks (where the
    switch interval ran out), not in nearly all of them. The child's time limit is only a
    hang guard."""
    walks = 40
    v = run_child(BESIDE_A_BUSY_WRITER, timeout=240, what=f"LPM {form} beside a busy writer",
                  params={"path": bpf_obj("integrity"), "form": form, "walks": walks,
                          "interval": 0.2})
    assert v["bad"] == [], v
    assert v["writes"] > 0 and v["last"], v
    assert v["interleaved"] <= walks // 4, \
        f"the writer ran inside {v['interleaved']} of {walks} walks: walks let go of the GIL"
