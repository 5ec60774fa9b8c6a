"""Live upgrade (pybpf.upgrade, Object.upgrade): a running probe replaced by a new build
under real traffic and real events, losing no packet, event or counter.

Expected values come from the kernel side and from what the test caused: packets the
sender's sendto() accepted, sequence numbers a child process passed to lseek(), the
counters the BPF programs kept. The runs under races (a packet flow through XDP, an
event stream with a live consumer) run in a child interpreter (tests/_upgrade_flows.py
through tests/_child.py), so that a crash or a hang fails one test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _child import run_child
from _upgrade_flows import FRAME, PAYLOAD, _Stream
from attach_util import veth_pair
from conftest import BUILD

import pybpf
from pybpf import Object, RingBuffer, UpgradeError, toolchain

pytestmark = pytest.mark.kernel

HERE = os.path.dirname(os.path.abspath(__file__))
BPF_SRC = Path(HERE).parent / "bpf_src"  # firewall_v2 includes the shipped source


def variant(src: str, tag: str, **defines: int) -> str:
    """tests/bpf/SRC.bpf.c compiled with -D flags (cached on mtime, as conftest does)."""
    source = Path(HERE) / "bpf" / f"{src}.bpf.c"
    out = BUILD / f"{src}.{tag}.bpf.o"
    deps = [source, *(Path(HERE) / "bpf").glob("*.h"), *BPF_SRC.glob("*")]
    if not out.exists() or out.stat().st_mtime < max(d.stat().st_mtime for d in deps):
        BUILD.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}.o")
        toolchain.compile(source, tmp, defines={k: str(v) for k, v in defines.items()},
                          include_dirs=[str(BPF_SRC)])
        os.replace(tmp, out)
    return str(out)


# --- (a) the shipped XDP firewall under a steady packet flow ----------------------------
def test_firewall_upgrade_under_flow_keeps_every_drop_and_counter():
    v2 = variant("firewall_v2", "v2")
    got = run_child("from _upgrade_flows import firewall_upgrade_under_flow as f\n"
                    "emit(f(P['v2']))", params={"v2": v2}, timeout=120,
                    what="firewall upgrade under a packet flow")
    sent_drop, sent_pass = got["sent_drop"], got["sent_pass"]
    packets, nbytes, packets_v2 = got["drop_total"]
    print(f"\nfirewall upgrade: {got['seconds'] * 1e3:.1f} ms, both attached "
          f"{got['both'] * 1e3:.2f} ms; {sent_drop + sent_pass} packets")
    assert got["maps"]["rules"] == "reused"
    assert got["maps"]["counters"] == "migrated"
    assert got["maps"]["egress"] == "migrated"
    assert got["links"] == {"xdp": "updated", "tcx": "updated"}
    # the XDP link was updated in place: same kernel link, new program
    (id_before, prog_before), (id_after, prog_after) = got["xdp_before"], got["xdp_after"]
    assert id_after == id_before and prog_after != prog_before
    assert got["counted_by_old"] > 0 and sent_drop > got["counted_by_old"]
    # not one packet passed that the rule drops; every one that should pass did
    assert got["received_drop"] == 0
    assert got["received_pass"] == sent_pass
    # counters continue: old value + new packets, nothing lost or counted twice
    assert packets == sent_drop
    assert nbytes == sent_drop * (FRAME + len(PAYLOAD))
    assert got["pass_total"] == sent_pass
    # the new field started at 0: only packets the new build saw
    assert sent_drop - got["sent_at_return"] <= packets_v2 <= sent_drop - got["counted_by_old"]


# --- (b) an event probe at >= 100k events/s -------------------------------------------
def _event_upgrade(v1: str, v2: str, n: int, guard: bool = True) -> dict:
    return run_child("from _upgrade_flows import event_upgrade as f\n"
                     "emit(f(P['v1'], P['v2'], P['n'], P['guard']))",
                     params={"v1": v1, "v2": v2, "n": n, "guard": guard}, timeout=180,
                     what=f"event probe upgrade ({n} events)")


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
    got = _event_upgrade(v1, v2, n)
    assert got["old_closed"] and not got["new_closed"] and not got["rb_closed_before"]
    assert got["error"] is None
    print(f"\nevent upgrade ({hook}): {got['rate']:,.0f} events/s; upgrade "
          f"{got['seconds'] * 1e3:.1f} ms, both attached "
          f"{got['both_attached'] * 1e3:.2f} ms")
    assert got["drops"] == 0
    assert got["twice"] == []  # none seen twice
    assert got["missing"] == [] and got["extra"] == []  # none lost
    by_build = got["by_build"]
    assert by_build["1"] and by_build["2"], "both builds produced events"
    assert got["max_1"] < got["min_2"]  # one clean switch
    assert got["sizes"] == [[1, 16], [2, 24]]
    assert got["maps"]["events"] == "reused"
    assert got["maps"]["stats"] == "migrated"
    assert got["stats_folded"] == 1  # the old build counted after the copy
    assert got["links"] == ["generation-switched"]
    assert got["both_attached"] > 0
    # the counter continued (old value + new events, the fold included); the new field
    # counted only what the new build handled
    assert got["handled"] == [n, by_build["2"]]
    assert got["bss"] == [n, by_build["2"]]  # .bss migrated by variable name, same promise
    assert got["bss_map"] == "migrated"
    assert got["rb_closed_after"]  # the reader now closes with the new object


def test_event_probe_without_guard_loses_nothing_but_may_repeat():
    """What an object built without the guard gets: both builds run for the window,
    an event in it is handled by both, none by neither."""
    v1 = variant("upgrade_events", "ng1", UPGRADE_NO_GUARD=1)
    v2 = variant("upgrade_events", "ng2", UPGRADE_NO_GUARD=1, EVENT_V2=1)
    got = _event_upgrade(v1, v2, 300_000, guard=False)
    assert got["error"] is None
    assert got["links"] == ["re-attached"]
    assert got["missing"] == [] and got["extra"] == []
    # repeats only by both builds, and only within the window
    assert got["twice_are_both"], (got["n_twice"], got["both"])


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
    build alone, and events go on exactly once through the old build (in a child: the
    new build is loaded, attached and closed again under a live consumer)."""
    v1 = variant("upgrade_events", "x1", WITH_XDP=1)
    v2 = variant("upgrade_events", "x2", WITH_XDP=1, EVENT_V2=1)
    got = run_child("from _upgrade_flows import failed_switch as f\n"
                    "emit(f(P['v1'], P['v2']))", params={"v1": v1, "v2": v2}, timeout=120,
                    what="a failed switch under a live consumer")
    assert got["raised"] == "attach failed"
    assert got["xdp_after"] == got["xdp_before"]
    assert got["word"] == 0
    assert got["attached"] and got["error"] is None
    assert got["complete"] and got["builds"] == [1]
    assert got["handled"] == got["n"]


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


def test_reuse_and_take_over_move_ownership_explicitly():
    """The interface the upgrade is built on: OpenMap.reuse makes a live map itself the
    new object's map, still held (closed) by its old object until take_over."""
    v1 = variant("upgrade_events", "v1")
    old = Object.open(v1)
    old.load()
    stats = old.maps["stats"]
    stats[0] = {"handled": 7}
    tries = []
    try:
        new = Object.open(v1)
        tries.append(new)
        new.maps["stats"].reuse(stats)
        assert new.maps["stats"].reused and new.maps["stats"].reused_map is stats
        new.load()
        assert new.maps["stats"] is stats and stats.object is old
        new.close()  # not its holder: the map stays open
        assert stats[0].handled == 7
        new = Object.open(v1)
        tries.append(new)
        new.maps["stats"].reuse(stats)
        new.load()
        with pytest.raises(ValueError, match="not a link of"):
            new.take_over(old, [pybpf.Link(program="p", target="elsewhere")])
        new.take_over(old)
        assert stats.object is new and "stats" not in old.maps
        old.close()  # no longer its holder
        assert new.maps["stats"][0].handled == 7
        new.close()
        with pytest.raises(pybpf.ClosedError):
            stats[0]
        with pytest.raises(TypeError, match="reuse_fd"):
            Object.open(v1).maps["stats"].reuse(3)  # type: ignore[arg-type]
    finally:
        for o in [old, *tries]:
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
            assert {"counters", "egress", "rules", "tc_link", "xdp_link"} <= set(pinned)
            r = _cli("upgrade", v2, "--from", pin, "--to", to, "--json")
            assert r.returncode == 0, r.stderr
            report = json.loads(r.stdout)
            assert {m["name"]: m["action"] for m in report["maps"]} == {
                "rules": "reused", "counters": "migrated", "egress": "migrated"}
            # the whole pinned deployment switched: the XDP link and the tcx egress link
            assert {ln["kind"]: ln["action"] for ln in report["links"]} == {
                "xdp": "updated", "tcx": "updated"}
            assert report["removed_pins"] == []
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


def test_cli_upgrade_in_place_removes_the_pins_of_dropped_maps():
    """Upgraded into the same directory, a deployment keeps no pin of a map the new
    build dropped (it would hold the old map forever, and hand stale contents to a
    later build that brings the name back): removed, and said so in the report."""
    import json

    v1 = variant("upgrade_events", "v1")
    dropped = variant("upgrade_events", "dropseen", DROP_SEEN=1)
    pin = f"/sys/fs/bpf/pybpf-upg-drop-{os.getpid()}"
    obj = Object.open(v1)
    obj.load()
    os.mkdir(pin)
    try:
        for name in ("stats", "seen"):
            obj.maps[name].pin(f"{pin}/{name}")
        obj.maps["stats"][0] = {"handled": 41}
        seen_id = obj.maps["seen"].id
        r = _cli("upgrade", dropped, "--from", pin, "--json")
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout)
        maps = {m["name"]: m for m in report["maps"]}
        assert maps["seen"]["action"] == "dropped"
        assert f"{pin}/seen was removed" in maps["seen"]["reason"]
        assert report["removed_pins"] == [f"{pin}/seen"]
        assert maps["stats"]["action"] == "reused"
        pinned = set(os.listdir(pin))
        assert "seen" not in pinned and {"stats", "events"} <= pinned
        # the kernel no longer has a pin of the old map (this process still holds it)
        ids = []
        for n in pinned:
            pm = pybpf.Map.open_pinned(f"{pin}/{n}")
            ids.append(pm.id)
            pm.close()
        assert seen_id not in ids
        m = pybpf.Map.open_pinned(f"{pin}/stats")
        assert m[0].handled == 41
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
