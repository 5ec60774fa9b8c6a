"""Live-upgrade runs under real traffic, for tests/test_upgrade.py: each runs in a child
interpreter (tests/_child.py run_child), since they drive native readers, XDP and
tracepoints under races; a crash or a hang there fails one test. Each returns what
the kernel side and the test's own traffic showed (JSON-able); the test asserts.

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
from typing import Any

from _child import readline
from attach_util import in_netns, veth_pair

from pybpf import Object, RingBuffer
from pybpf.tools.firewall import Firewall

FRAME = 14 + 20 + 8  # ethernet + IPv4 + UDP headers
PAYLOAD = b"x" * 18


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


def firewall_upgrade_under_flow(v2: str) -> dict[str, Any]:
    """The firewall between two netns, a drop and a pass rule, a steady UDP flow to
    both ports, upgraded to ``v2`` in the middle of it."""
    drop_port, pass_port = 40000 + os.getpid() % 10000, 30000 + os.getpid() % 10000
    with veth_pair() as pair:
        _warm_up_arp(pair)
        with Firewall(pair.dev_b, netns=pair.ns_b) as fw:
            r_drop = fw.add_rule(f"{pair.addr_a}/32", port=drop_port, action="drop")
            r_pass = fw.add_rule(f"{pair.addr_a}/32", port=pass_port, action="pass")
            assert fw.obj is not None
            xdp_before = next(lk for lk in fw.obj.links if "xdp" in lk.target).info()
            flow = _Flow(pair, drop_port, pass_port)
            flow.start()
            try:
                time.sleep(0.5)
                # before the upgrade starts
                counted_by_old = next(r.packets for r in fw.rules() if r.id == r_drop.id)
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
    return {"seconds": report.seconds, "both": report.both_attached_seconds,
            "maps": {n: m.action for n, m in report.maps.items()},
            "links": {ln.kind: ln.action for ln in report.links},
            "xdp_before": [xdp_before.id, xdp_before.prog_id],
            "xdp_after": [xdp_after.id, xdp_after.prog_id],
            "counted_by_old": counted_by_old, "sent_at_return": sent_at_return,
            "sent_drop": sent_drop, "sent_pass": sent_pass,
            "received_drop": flow.received[drop_port],
            "received_pass": flow.received[pass_port],
            "drop_total": [drop_total.packets, drop_total.bytes, drop_total.packets_v2],
            "pass_total": pass_total.packets}


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
        pid, fd = map(int, readline(self.child, what="upgrade flow child").split())
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
        elapsed = float(readline(self.child, what="upgrade flow child"))
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


def summarize(n: int, records: list[tuple[int, int, int]]) -> dict[str, Any]:
    """What a stream of (seq, build, size) records shows, for sequences 0..n-1."""
    tally = Tally(s for s, _, _ in records)
    by_build = {b: [s for s, bb, _ in records if bb == b] for b in (1, 2)}
    both = set(by_build[1]) & set(by_build[2])
    return {
        "twice": sorted(s for s, c in tally.items() if c > 1)[:50],
        "n_twice": sum(1 for c in tally.values() if c > 1),
        "missing": sorted(set(range(n)) - set(tally))[:50],
        "extra": sorted(set(tally) - set(range(n)))[:50],
        "by_build": {str(b): len(v) for b, v in by_build.items()},
        "max_1": max(by_build[1], default=None), "min_2": min(by_build[2], default=None),
        "sizes": sorted({(b, size) for _, b, size in records}),
        "both": len(both),
        # the seqs seen twice are exactly those both builds handled
        "twice_are_both": {s for s, c in tally.items() if c > 1} == both,
    }


def event_upgrade(v1: str, v2: str, n: int, guard: bool = True) -> dict[str, Any]:
    """The event probe ``v1`` streaming ``n`` sequence numbers to a consumer thread,
    upgraded to ``v2`` a third of the way in (with the guard: a slow re-attach, so that
    the old build keeps working after the copy)."""
    st = _Stream(n)
    old = new = None
    try:
        old = st.load(v1, build=1)
        st.consume(old)
        st.go()
        st.wait_for(n // 3)

        def slow_attach(prog: Any) -> Any:  # the old build keeps working after the copy
            time.sleep(0.03)
            return prog.attach_auto()

        new = old.upgrade(v2, rodata={**st.rodata, "build": 2},
                          reattach={"on_lseek": slow_attach} if guard else None)
        elapsed = st.finish()
        report = new.upgrade_report
        assert report is not None
        out: dict[str, Any] = {
            "old_closed": old.closed, "new_closed": new.closed,
            "rb_closed_before": st.rb.closed}
        if guard:
            stats = new.maps["stats"][0]
            out["handled"] = [stats.handled, stats.handled_v2]
            out["bss"] = [new.bss.bss_events, new.bss.bss_v2_events]
            out["bss_map"] = report.maps[new.bss.map.name].action
        out["drops"] = st.rb.drops()
    finally:
        st.kill()
        for o in (new, old):
            if o is not None:
                o.close()
    out.update(summarize(n, st.records))
    out.update({"error": repr(st.error) if st.error is not None else None,
                "rate": n / elapsed, "seconds": report.seconds,
                "both_attached": report.both_attached_seconds,
                "maps": {k: m.action for k, m in report.maps.items()},
                "stats_folded": report.maps["stats"].folded,
                "links": [ln.action for ln in report.links],
                "rb_closed_after": st.rb.closed})
    return out


# --- (c) a failure in the middle of the switch ------------------------------------------
def still_running(st: _Stream, old: Object, before: int) -> dict[str, Any]:
    """Stream ``st.n`` events through ``old`` and say what came out: the old build is
    running when ``attached``, ``complete``, ``builds == [1]`` and ``handled`` is
    ``before + n``."""
    attached = not old.closed and bool(old.links) and all(not lk.detached for lk in old.links)
    st.go()
    st.finish()
    return {"attached": attached, "error": repr(st.error) if st.error is not None else None,
            "complete": sorted(s for s, _, _ in st.records) == list(range(st.n)),
            "builds": sorted({b for _, b, _ in st.records}),
            "handled": old.maps["stats"][0].handled, "before": before, "n": st.n}


def failed_switch(v1: str, v2: str) -> dict[str, Any]:
    """``v1`` with an XDP link and a tracepoint feeding a live consumer; the upgrade to
    ``v2`` updates the XDP link, then the tracepoint's re-attach fails."""
    st = _Stream(20_000)
    old = None
    out: dict[str, Any] = {}
    with veth_pair() as pair:
        try:
            old = st.load(v1, build=1)
            with in_netns(pair.ns_b):
                xdp = old.programs["pass_xdp"].attach_xdp(pair.dev_b)
            before = xdp.info()
            st.consume(old)

            def boom(prog: Any) -> Any:
                prog.attach_auto()  # attached, then the step fails
                raise RuntimeError("attach failed")

            try:
                old.upgrade(v2, rodata={**st.rodata, "build": 2}, reattach={"on_lseek": boom})
                out["raised"] = None
            except RuntimeError as e:
                out["raised"] = str(e)
            after = xdp.info()
            out["xdp_before"] = [before.id, before.prog_id]
            out["xdp_after"] = [after.id, after.prog_id]
            out["word"] = old.maps["pybpf_generation"][0]
            out.update(still_running(st, old, 0))
        finally:
            st.kill()
            if old is not None:
                old.close()
    return out
