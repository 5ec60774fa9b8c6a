"""Live upgrade (pybpf.upgrade, Object.upgrade): a running probe replaced by a new build
under real traffic and real events, losing no packet, event or counter.

Expected values come from the kernel side and from what the test caused: packets the
sender's sendto() accepted, sequence numbers a child process passed to lseek(), the
counters the BPF programs kept.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter as Tally
from pathlib import Path

import pytest
from attach_util import in_netns, veth_pair
from conftest import BUILD

import pybpf
from pybpf import Object, RingBuffer, UpgradeError, toolchain
from pybpf.tools.firewall import Firewall

pytestmark = pytest.mark.kernel

HERE = os.path.dirname(os.path.abspath(__file__))
BPF_SRC = Path(HERE).parent / "bpf_src"  # firewall_v2 includes the shipped source
FRAME = 14 + 20 + 8  # ethernet + IPv4 + UDP headers
PAYLOAD = b"x" * 18


def variant(src: str, tag: str, **defines: int) -> str:
    """tests/bpf/SRC.bpf.c compiled with -D flags (cached on mtime, as conftest does)."""
    source = Path(HERE) / "bpf" / f"{src}.bpf.c"
    out = BUILD / f"{src}.{tag}.bpf.o"
    deps = [source, *(Path(HERE) / "bpf").glob("*.h"), *BPF_SRC.glob("*")]
    if not out.exists() or out.stat().st_mtime < max(d.stat().st_mtime for d in deps):
        BUILD.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}.o")
        toolchain.compile(source, tmp, include_dirs=[str(BPF_SRC)],
                          defines={k: str(v) for k, v in defines.items()})
        os.replace(tmp, out)
    return str(out)


# --- (a) the shipped XDP firewall under a steady packet flow ----------------------------
def _sender(ns: str, addr: str, ports: tuple[int, int], sent, stop) -> None:
    """In a child process (its own GIL: the flow never pauses for the upgrade): UDP to
    two ports of ``addr``, paced, counting what sendto accepted."""
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    i = 0
    while not stop.is_set():
        try:
            s.sendto(PAYLOAD, (addr, ports[i % 2]))
            with sent[i % 2].get_lock():
                sent[i % 2].value += 1
        except OSError:
            pass  # not sent: not counted
        i += 1
        if i % 32 == 0:
            time.sleep(0.001)


class _Flow:
    """A sender process in netns a; receiver threads in b counting what arrived."""

    def __init__(self, pair, drop_port: int, pass_port: int) -> None:
        ctx = multiprocessing.get_context("fork")
        self.ports = (drop_port, pass_port)
        self._sent = (ctx.Value("Q", 0), ctx.Value("Q", 0))
        self.received = {drop_port: 0, pass_port: 0}
        self.rx = {p: pair.udp_socket("b", p) for p in self.ports}
        for sock in self.rx.values():
            sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
            sock.settimeout(0.05)
        self.stop = threading.Event()
        self._stop_sender = ctx.Event()
        self.proc = ctx.Process(target=_sender, args=(pair.ns_a, pair.addr_b, self.ports,
                                                      self._sent, self._stop_sender))
        self.threads = [threading.Thread(target=self._recv, args=(p,)) for p in self.ports]

    def sent(self, port: int) -> int:
        return int(self._sent[self.ports.index(port)].value)

    def _recv(self, port: int) -> None:
        s = self.rx[port]
        while True:
            try:
                s.recv(2048)
                self.received[port] += 1
            except (TimeoutError, socket.timeout):
                if self.stop.is_set():
                    return

    def start(self) -> None:
        self.proc.start()
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self._stop_sender.set()
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
        time.sleep(0.3)  # the last datagrams through XDP and into the sockets
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)
        for sock in self.rx.values():
            sock.close()


def _warm_up_arp(pair) -> None:
    """One datagram a -> b before any firewall, so no packet waits on ARP later."""
    rx = pair.udp_socket("b")
    rx.settimeout(2)
    with in_netns(pair.ns_a):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"arp", (pair.addr_b, rx.getsockname()[1]))
    rx.recv(16)
    s.close()
    rx.close()


def test_firewall_upgrade_under_flow_keeps_every_drop_and_counter():
    v2 = variant("firewall_v2", "v2")
    drop_port, pass_port = 40000 + os.getpid() % 10000, 30000 + os.getpid() % 10000
    with veth_pair() as pair:
        _warm_up_arp(pair)
        with Firewall(pair.dev_b, netns=pair.ns_b) as fw:
            r_drop = fw.add_rule(f"{pair.addr_a}/32", port=drop_port, action="drop")
            r_pass = fw.add_rule(f"{pair.addr_a}/32", port=pass_port, action="pass")
            xdp_before = next(lk for lk in fw.obj.links if "xdp" in lk.target).info()
            flow = _Flow(pair, drop_port, pass_port)
            flow.start()
            try:
                time.sleep(0.5)
                counted_by_old = fw._counter(r_drop.id).packets  # before the upgrade starts
                report = fw.upgrade(v2)
                sent_at_return = flow.sent(drop_port)
                time.sleep(0.5)
            finally:
                flow.finish()
            sent_drop, sent_pass = flow.sent(drop_port), flow.sent(pass_port)
            counters = fw.obj.maps["counters"]
            drop_total = counters.sum(r_drop.id)
            pass_total = counters.sum(r_pass.id)
            xdp_after = next(lk for lk in fw.obj.links if "xdp" in lk.target).info()

    print(f"\nfirewall upgrade: {report.seconds * 1e3:.1f} ms, both attached "
          f"{report.both_attached_seconds * 1e3:.2f} ms; {sent_drop + sent_pass} packets")
    assert report.maps["rules"].action == "reused"
    assert report.maps["counters"].action == "migrated"
    assert report.maps["egress"].action == "migrated"
    assert {ln.kind: ln.action for ln in report.links} == {"xdp": "updated", "tcx": "updated"}
    # the XDP link was updated in place: same kernel link, new program
    assert xdp_after.id == xdp_before.id and xdp_after.prog_id != xdp_before.prog_id
    assert counted_by_old > 0 and sent_drop > counted_by_old
    # not one packet passed that the rule drops; every one that should pass did
    assert flow.received[drop_port] == 0
    assert flow.received[pass_port] == sent_pass
    # counters continue: old value + new packets, nothing lost or counted twice
    assert drop_total.packets == sent_drop
    assert drop_total.bytes == sent_drop * (FRAME + len(PAYLOAD))
    assert pass_total.packets == sent_pass
    # the new field started at 0: only packets the new build saw
    assert sent_drop - sent_at_return <= drop_total.packets_v2 <= sent_drop - counted_by_old


# --- (b) an event probe at >= 100k events/s -------------------------------------------
_PRODUCER = """
import os, sys, time
fd = os.open('/dev/null', os.O_RDONLY)
print(os.getpid(), fd, flush=True)
sys.stdin.readline()
t = time.perf_counter()
ls = os.lseek
for i in range({n}):
    ls(fd, i, 0)
print(time.perf_counter() - t, flush=True)
"""


class _Stream:
    """A child process calling lseek(fd, i, 0) for i in 0..n-1 (the probe's sequence
    numbers), and a consumer thread reading the ring buffer of the first build."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.child = subprocess.Popen([sys.executable, "-c", _PRODUCER.format(n=n)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        pid, fd = map(int, self.child.stdout.readline().split())
        self.rodata = {"target_tgid": pid, "target_fd": fd}
        self.records: list[tuple[int, int, int]] = []  # (seq, build, record size)
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def load(self, path: str, build: int) -> Object:
        obj = Object.open(path)
        for k, v in {**self.rodata, "build": build}.items():
            obj.rodata[k] = v
        for prog in obj.programs.values():
            prog.autoattach = prog.section != "xdp"  # the test attaches that one itself
        obj.load()
        obj.attach()
        return obj

    def consume(self, obj: Object) -> None:
        self.rb = RingBuffer(obj.maps["events"])
        self.thread = threading.Thread(target=self._consume)
        self.thread.start()

    def _consume(self) -> None:
        try:
            while True:
                batch = self.rb.read(timeout=0.1)
                for r in batch:
                    seq, build, _ = struct.unpack_from("<QII", r)
                    self.records.append((seq, build, len(r)))
                if self.stop.is_set() and len(batch) == 0:
                    return
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def go(self) -> None:
        self.child.stdin.write("go\n")
        self.child.stdin.flush()

    def wait_for(self, count: int, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while len(self.records) < count and time.monotonic() < end:
            time.sleep(0.002)

    def finish(self) -> float:
        elapsed = float(self.child.stdout.readline())
        self.child.wait(timeout=30)
        self.wait_for(self.n, 30)
        self.stop.set()
        self.thread.join(timeout=30)
        return elapsed

    def kill(self) -> None:
        if self.child.poll() is None:
            self.child.kill()
            self.child.wait()
        self.stop.set()


@pytest.mark.parametrize("hook", ["tracepoint", "uprobe"])
def test_event_probe_upgrade_loses_and_repeats_no_event(hook):
    """The guard's order: a tracepoint runs the old program first for an event, a uprobe
    the new one (its newest consumer): both switch exactly once."""
    if hook == "tracepoint":
        v1 = variant("upgrade_events", "v1")
        v2 = variant("upgrade_events", "v2", EVENT_V2=1)
        n = 600_000
    else:
        v1 = variant("upgrade_events", "u1", USE_UPROBE=1)
        v2 = variant("upgrade_events", "u2", USE_UPROBE=1, EVENT_V2=1)
        n = 150_000
    st = _Stream(n)
    old = new = None
    try:
        old = st.load(v1, build=1)
        st.consume(old)
        st.go()
        st.wait_for(n // 3)

        def slow_attach(prog):  # the old build keeps working after the copy meanwhile
            time.sleep(0.03)
            return prog.attach_auto()

        new = old.upgrade(v2, rodata={**st.rodata, "build": 2},
                          reattach={"on_lseek": slow_attach})
        elapsed = st.finish()
        report = new.upgrade_report
        assert old.closed and not new.closed and not st.rb.closed
        stats = new.maps["stats"][0]
        bss = (new.bss.bss_events, new.bss.bss_v2_events)
        bss_map = new.bss.map.name
        drops = st.rb.drops()
    finally:
        st.kill()
        for o in (new, old):
            if o is not None:
                o.close()
    assert st.error is None
    print(f"\nevent upgrade ({hook}): {n / elapsed:,.0f} events/s; upgrade "
          f"{report.seconds * 1e3:.1f} ms, both attached "
          f"{report.both_attached_seconds * 1e3:.2f} ms")
    seqs = [s for s, _, _ in st.records]
    tally = Tally(seqs)
    assert drops == 0
    assert [s for s, c in tally.items() if c > 1] == []  # none seen twice
    assert sorted(tally) == list(range(n))  # none lost
    by_build = {b: [s for s, bb, _ in st.records if bb == b] for b in (1, 2)}
    assert by_build[1] and by_build[2], "both builds produced events"
    assert max(by_build[1]) < min(by_build[2])  # one clean switch
    assert {(b, size) for _, b, size in st.records} == {(1, 16), (2, 24)}
    assert report.maps["events"].action == "reused"
    assert report.maps["stats"].action == "migrated"
    assert report.maps["stats"].folded == 1  # the old build counted after the copy
    assert [ln.action for ln in report.links] == ["generation-switched"]
    assert report.both_attached_seconds > 0
    # the counter continued (old value + new events, the fold included); the new field
    # counted only what the new build handled
    assert stats.handled == n
    assert stats.handled_v2 == len(by_build[2])
    assert bss == (n, len(by_build[2]))  # .bss migrated by variable name, same promise
    assert report.maps[bss_map].action == "migrated"
    assert st.rb.closed  # the reader now closes with the new object


def test_event_probe_without_guard_loses_nothing_but_may_repeat():
    """What an object built without the guard gets: both builds run for the window,
    an event in it is handled by both, none by neither."""
    v1 = variant("upgrade_events", "ng1", UPGRADE_NO_GUARD=1)
    v2 = variant("upgrade_events", "ng2", UPGRADE_NO_GUARD=1, EVENT_V2=1)
    n = 300_000
    st = _Stream(n)
    old = new = None
    try:
        old = st.load(v1, build=1)
        st.consume(old)
        st.go()
        st.wait_for(n // 3)
        new = old.upgrade(v2, rodata={**st.rodata, "build": 2})
        st.finish()
        report = new.upgrade_report
    finally:
        st.kill()
        for o in (new, old):
            if o is not None:
                o.close()
    assert [ln.action for ln in report.links] == ["re-attached"]
    assert sorted(set(s for s, _, _ in st.records)) == list(range(n))
    twice = [s for s, c in Tally(s for s, _, _ in st.records).items() if c > 1]
    # repeats only by both builds, and only within the window
    both = {s for s, b, _ in st.records if b == 1} & {s for s, b, _ in st.records if b == 2}
    assert set(twice) == both


# --- (c) refusals leave the old build running -------------------------------------------
def _assert_still_running(st: _Stream, old: Object, before: int) -> None:
    assert not old.closed and old.links and all(not lk.detached for lk in old.links)
    st.go()
    st.finish()
    assert st.error is None
    assert sorted(s for s, _, _ in st.records) == list(range(st.n))
    assert {b for _, b, _ in st.records} == {1}
    assert old.maps["stats"][0].handled == before + st.n


@pytest.mark.parametrize("defines,field,why", [
    ({"KEY_V2": 1}, "key", "key layout changed (u32 -> s32)"),
    ({"TYPE_V2": 1}, None, "map type changed from array to hash"),
    ({"SEEN_KEY_V2": 1}, "tgid", "key layout changed (field 'tgid')"),
])
def test_refused_layout_change_leaves_old_running(defines, field, why):
    v1 = variant("upgrade_events", "v1")
    bad = variant("upgrade_events", "bad" + "".join(defines), **defines)
    st = _Stream(20_000)
    old = None
    try:
        old = st.load(v1, build=1)
        st.consume(old)
        fds_before = len(os.listdir("/proc/self/fd"))
        with pytest.raises(UpgradeError) as ei:
            old.upgrade(bad, rodata={**st.rodata, "build": 2})
        mname = "seen" if "SEEN_KEY_V2" in defines else "stats"
        assert (ei.value.map, ei.value.field) == (mname, field) and why in str(ei.value)
        assert "the old version is still live" in str(ei.value)
        assert len(os.listdir("/proc/self/fd")) == fds_before
        _assert_still_running(st, old, 0)
    finally:
        st.kill()
        if old is not None:
            old.close()


def test_refused_narrowing_overflow_leaves_old_running():
    v1 = variant("upgrade_events", "v1")
    narrow = variant("upgrade_events", "narrow", NARROW=1)
    st = _Stream(20_000)
    old = None
    try:
        old = st.load(v1, build=1)
        st.consume(old)
        big = 1 << 33
        old.maps["stats"][0] = {"handled": big}
        with pytest.raises(UpgradeError) as ei:
            old.upgrade(narrow, rodata={**st.rodata, "build": 2})
        e = ei.value
        assert (e.map, e.field) == ("stats", "handled")
        assert f"{big}" in str(e) and "does not fit" in str(e)
        # nothing switched: the generation word still names the old build alone
        word = old.maps["pybpf_generation"][0]
        assert word == 0
        _assert_still_running(st, old, big)
    finally:
        st.kill()
        if old is not None:
            old.close()


def test_failure_during_the_switch_puts_the_old_build_back():
    """An XDP link already updated to the new build, then the tracepoint's re-attach
    fails: the XDP link runs the old program again, the generation word names the old
    build alone, and events go on exactly once through the old build."""
    v1 = variant("upgrade_events", "x1", WITH_XDP=1)
    v2 = variant("upgrade_events", "x2", WITH_XDP=1, EVENT_V2=1)
    st = _Stream(20_000)
    old = None
    with veth_pair() as pair:
        try:
            old = st.load(v1, build=1)
            with in_netns(pair.ns_b):
                xdp = old.programs["pass_xdp"].attach_xdp(pair.dev_b)
            before = xdp.info()
            st.consume(old)

            def boom(prog):
                prog.attach_auto()  # attached, then the step fails
                raise RuntimeError("attach failed")

            with pytest.raises(RuntimeError, match="attach failed"):
                old.upgrade(v2, rodata={**st.rodata, "build": 2}, reattach={"on_lseek": boom})
            after = xdp.info()
            assert (after.id, after.prog_id) == (before.id, before.prog_id)
            assert old.maps["pybpf_generation"][0] == 0
            _assert_still_running(st, old, 0)
        finally:
            st.kill()
            if old is not None:
                old.close()


def test_a_program_the_new_build_does_not_load_is_refused():
    v1 = variant("upgrade_events", "v1")
    st = _Stream(1000)
    old = None
    try:
        old = st.load(v1, build=1)
        new = Object.open(v1, upgrade_from=old)
        new.programs["on_lseek"].autoload = False
        with pytest.raises(UpgradeError, match="autoload is off"):
            new.load()
        new.close()
        assert not old.closed and not old.links[0].detached
    finally:
        st.kill()
        if old is not None:
            old.close()


def test_narrowing_that_fits_is_converted():
    v1 = variant("upgrade_events", "v1")
    narrow = variant("upgrade_events", "narrow", NARROW=1)
    st = _Stream(1000)
    old = new = None
    try:
        old = st.load(v1, build=1)
        old.maps["stats"][0] = {"handled": 12345}
        new = old.upgrade(narrow, rodata={**st.rodata, "build": 2})
        assert new.maps["stats"][0].handled == 12345
        assert new.maps["stats"].value_size == 4
    finally:
        st.kill()
        for o in (new, old):
            if o is not None:
                o.close()


def test_widening_and_dropped_fields_through_open_upgrade_from():
    """u32 -> u64 widened (Object.open(upgrade_from=) then load()), and back from the
    two-field build to one: the removed field is dropped and said so."""
    narrow = variant("upgrade_events", "narrow", NARROW=1)
    v2 = variant("upgrade_events", "v2", EVENT_V2=1)
    v1 = variant("upgrade_events", "v1")
    st = _Stream(1000)
    objs = []
    try:
        old = st.load(narrow, build=1)
        objs.append(old)
        old.maps["stats"][0] = {"handled": (1 << 32) - 1}
        new = Object.open(v2, upgrade_from=old)
        objs.append(new)
        for k, v in {**st.rodata, "build": 2}.items():
            new.rodata[k] = v
        new.load()
        got = new.maps["stats"][0]
        assert old.closed and (got.handled, got.handled_v2) == ((1 << 32) - 1, 0)
        new.maps["stats"][0] = {"handled": 1 << 40, "handled_v2": 9}
        back = new.upgrade(v1, rodata={**st.rodata, "build": 3})
        objs.append(back)
        assert back.maps["stats"][0].handled == 1 << 40
        assert "dropped handled_v2" in back.upgrade_report.maps["stats"].reason
    finally:
        st.kill()
        for o in objs:
            o.close()


def test_user_migration_function_allows_a_key_change():
    v1 = variant("upgrade_events", "v1")
    keyed = variant("upgrade_events", "badKEY_V2", KEY_V2=1)
    st = _Stream(1000)
    old = new = None
    seen = []

    def migrate(k: bytes, v: bytes) -> tuple[bytes, bytes]:
        seen.append(k)
        return k, (int.from_bytes(v, "little") + 1).to_bytes(8, "little")

    try:
        old = st.load(v1, build=1)
        old.maps["stats"][0] = {"handled": 77}
        new = old.upgrade(keyed, rodata={**st.rodata, "build": 2}, migrate={"stats": migrate})
        assert seen == [bytes(4)]
        assert new.maps["stats"].lookup(bytes(4)) == (78).to_bytes(8, "little")
        assert new.upgrade_report.maps["stats"].action == "migrated"
    finally:
        st.kill()
        for o in (new, old):
            if o is not None:
                o.close()


def test_upgrade_refuses_a_closed_or_unloaded_object():
    v1 = variant("upgrade_events", "v1")
    obj = Object.open(v1)
    with pytest.raises(UpgradeError, match="not loaded"):
        obj.upgrade(v1)
    obj.close()
    with pytest.raises(pybpf.ClosedError):
        obj.upgrade(v1)


# --- pinned deployments: pybpf upgrade (old pins in, new pins out) ----------------------
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pybpf ARGS`` in a process of its own (a service restarting into a
    new version): what it leaves pinned must outlive it."""
    return subprocess.run([sys.executable, "-m", "pybpf", *args], capture_output=True,
                          text=True, check=False, timeout=120)


@pytest.mark.parametrize("same_dir", [True, False])
def test_cli_upgrades_a_pinned_firewall(same_dir):
    import json

    from pybpf.tools.firewall import pin_dir_for

    v2 = variant("firewall_v2", "v2")
    with veth_pair() as pair:
        dev, ns = pair.dev_b, pair.ns_b
        pin = pin_dir_for(dev, ns)
        to = pin if same_dir else f"{pin}-v2"
        rx = pair.udp_socket("b")
        port = rx.getsockname()[1]
        try:
            r = _cli("firewall", "attach", dev, "--netns", ns)
            assert r.returncode == 0, r.stderr
            r = _cli("firewall", "add", dev, f"{pair.addr_a}/32", "--port", str(port),
                     "--netns", ns)
            assert r.returncode == 0, r.stderr
            assert pair.send_udp(5, receiver=rx, wait=0.3) == 0
            xdp_id = pybpf.Link.open_pinned(f"{pin}/xdp_link").info().id
            pinned = sorted(os.listdir(pin))
            assert {"counters", "egress", "rules", "xdp_link"} <= set(pinned)
            r = _cli("upgrade", v2, "--from", pin, "--to", to, "--json")
            assert r.returncode == 0, r.stderr
            report = json.loads(r.stdout)
            assert {m["name"]: m["action"] for m in report["maps"]} == {
                "rules": "reused", "counters": "migrated", "egress": "migrated"}
            assert {ln["action"] for ln in report["links"]} == {"updated"}
            assert sorted(os.listdir(to)) == pinned
            assert same_dir or not os.path.exists(pin)
            # the same XDP link, still attached after the CLI exited, now the new build
            link = pybpf.Link.open_pinned(f"{to}/xdp_link")
            assert link.info().id == xdp_id
            link.detach()
            assert pair.send_udp(7, receiver=rx, wait=0.3) == 0  # the rule still drops
            counters = pybpf.Map.open_pinned(f"{to}/counters")
            total = counters.sum(1)
            counters.close()
            assert (total.packets, total.packets_v2) == (12, 7)
        finally:
            rx.close()
            for d in {pin, to}:
                if os.path.isdir(d):
                    for name in os.listdir(d):
                        os.unlink(os.path.join(d, name))
                    os.rmdir(d)


def test_cli_upgrade_refusal_leaves_the_pins(tmp_path):
    """A pinned map whose key layout the new build changes: refused, pins untouched."""
    v1 = variant("upgrade_events", "v1")
    bad = variant("upgrade_events", "badKEY_V2", KEY_V2=1)
    pin = f"/sys/fs/bpf/pybpf-upg-{os.getpid()}"
    obj = Object.open(v1)
    obj.load()
    os.mkdir(pin)
    try:
        obj.maps["stats"].pin(f"{pin}/stats")
        obj.maps["stats"][0] = {"handled": 5}
        r = _cli("upgrade", bad, "--from", pin)
        assert r.returncode == 1
        assert "map 'stats'" in r.stderr and "key layout changed" in r.stderr
        assert os.listdir(pin) == ["stats"]
        m = pybpf.Map.open_pinned(f"{pin}/stats")
        assert m.id == obj.maps["stats"].id and m[0].handled == 5
        m.close()
    finally:
        obj.close()
        for name in os.listdir(pin):
            os.unlink(os.path.join(pin, name))
        os.rmdir(pin)


def test_cgroup_and_netns_links_are_updated_in_place(bpf_obj):
    """The other kinds BPF_LINK_UPDATE switches: the same kernel links (ids), now
    running the new build's programs (program ids from the kernel)."""
    from attach_util import new_cgroup

    path = bpf_obj("attach_net")
    obj = Object.open(path)
    obj.load()
    by_section = {p.section: p for p in obj.programs.values()}
    new = None
    try:
        with new_cgroup() as cg:
            by_section["cgroup_skb/ingress"].attach_cgroup(cg)
            by_section["sk_lookup"].attach_netns()
            before = {lk.info().type: lk.info() for lk in obj.links}
            new = obj.upgrade(path)
            after = {lk.info().type: lk.info() for lk in new.links}
            assert {ln.kind: ln.action for ln in new.upgrade_report.links} == {
                "cgroup": "updated", "netns": "updated"}
            progs = {p.section: p.info().id for p in new.programs.values() if p.autoload}
            assert after["cgroup"].id == before["cgroup"].id
            assert after["cgroup"].prog_id == progs["cgroup_skb/ingress"]
            assert after["netns"].id == before["netns"].id
            assert after["netns"].prog_id == progs["sk_lookup"]
            new.close()
    finally:
        obj.close()
        if new is not None:
            new.close()


def test_perf_buffer_reads_on_across_an_upgrade(bpf_obj):
    """A PerfBuffer (and a RingBuffer) consuming the old build's maps read what the new
    build emits, unrestarted; the sequence map carried over continues."""
    from _events_obj import EVENT, MODE_PERF, MODE_RB, Events

    from pybpf import PerfBuffer

    path = bpf_obj("events")
    old = Object.open(path)
    old.set_rodata("target_pid", os.getpid())
    old.load()
    old.attach()
    seqs: dict[str, list[int]] = {"perf": [], "ring": []}
    pb = PerfBuffer(old.maps["pb"], callback=lambda r: seqs["perf"].append(
        EVENT.unpack_from(r)[0]))
    rb = RingBuffer(old.maps["rb"], callback=lambda r: seqs["ring"].append(
        EVENT.unpack_from(r)[0]))
    new = None
    try:
        Events(old).emit(50, MODE_PERF)
        Events(old).emit(50, MODE_RB)
        new = old.upgrade(path, rodata={"target_pid": os.getpid()})
        assert {n: new.upgrade_report.maps[n].action for n in ("pb", "rb", "seq")} == {
            "pb": "reused", "rb": "reused", "seq": "reused"}
        Events(new).emit(50, MODE_PERF)
        Events(new).emit(50, MODE_RB)
        while len(seqs["perf"]) < 100 and pb.poll(timeout=1.0):
            pass
        rb.poll(timeout=1.0)
        assert sorted(seqs["perf"]) == list(range(50)) + list(range(100, 150))
        assert sorted(seqs["ring"]) == list(range(50, 100)) + list(range(150, 200))
        assert not pb.closed and not rb.closed
        new.close()
        assert pb.closed and rb.closed  # they now close with the new object
    finally:
        for r in (pb, rb):
            r.close()
        for o in (new, old):
            if o is not None:
                o.close()
