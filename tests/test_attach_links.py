"""Link verbs and lifetimes across hook kinds: detach, context manager, pin /
open_pinned / unpin, info, Object.close, garbage collection, SIGKILL of the
attaching process, and fd accounting over many attach cycles."""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _child import readline
from attach_util import (
    hits,
    in_netns,
    new_cgroup,
    open_fds,
    target_binary,
    unique,
    veth_pair,
    wait_for,
)

import pybpf
from pybpf import AttachError, BPFError, ClosedError, Link

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[1]
TP = 1  # hook id of on_tp in tests/bpf/attach_trace.bpf.c


def kernel_link_ids(links: list[Link]) -> set[int]:
    """Ids of the kernel BPF links among ``links`` (netlink tc filters and pre-6.10
    sockmap attachments are not links)."""
    out = set()
    for link in links:
        try:
            _ = link.fd
        except BPFError:
            continue
        out.add(link.info().id)
    return out


def link_ids() -> set[int]:
    return {li.id for li in pybpf.list_links()}


def prog_ids() -> set[int]:
    return {p.id for p in pybpf.list_programs()}


@pytest.fixture
def trace_obj(bpf_obj):
    with pybpf.load(bpf_obj("attach_trace")) as obj:
        yield obj


@pytest.fixture
def bpffs_dir():
    from pybpf import _fs

    try:
        _fs.check_pin_path("/sys/fs/bpf/x")
    except BPFError as exc:
        pytest.skip(f"bpffs not available: {exc}")
    return Path("/sys/fs/bpf")


def test_detach_is_idempotent_and_state_shows(trace_obj, trigger_exec):
    link = trace_obj.programs["on_tp"].attach_tracepoint("sched", "sched_process_exec")
    info = link.info()
    assert info.id in link_ids()
    assert info.prog_id == trace_obj.programs["on_tp"].info().id
    assert info.type == "perf_event"  # a tracepoint is a perf event link
    assert repr(link).endswith("(attached)>")
    assert trace_obj.links == [link]
    link.detach()
    link.detach()
    assert link.detached and repr(link).endswith("(detached)>")
    assert trace_obj.links == []
    assert info.id not in link_ids()
    with pytest.raises(ClosedError):
        _ = link.fd
    assert hits(trace_obj, TP, trigger_exec()) == 0


def test_link_as_context_manager(trace_obj, trigger_exec):
    with trace_obj.programs["on_tp"].attach_tracepoint("sched", "sched_process_exec") as link:
        link_id = link.info().id
        pid = trigger_exec()
        assert hits(trace_obj, TP, pid) == 1
    assert link.detached and link_id not in link_ids()


def test_pin_open_pinned_unpin(trace_obj, bpffs_dir, trigger_exec):
    pin = bpffs_dir / unique("pybpf_attach_link_")
    prog = trace_obj.programs["on_raw_tp"]
    link = prog.attach_raw_tracepoint("sched_process_exec")
    try:
        link.pin(pin)
        assert pin.exists()
        assert link.pin_path == str(pin)
        assert repr(link).endswith(f"(pinned at {pin})>")
        link_id = link.info().id
        # Closing the object closes our fd; the pin keeps the link attached.
        trace_obj.close()
        assert link.detached
        assert link_id in link_ids()
        pinned = Link.open_pinned(pin)
        assert pinned.info().id == link_id
        assert pinned.program == f"prog id {pinned.info().prog_id}"
        assert pinned.pin_path is None or pinned.pin_path == str(pin)
        pinned.unpin()
        assert not pin.exists()
        assert link_id in link_ids()  # our fd still holds it
        pinned.detach()
        assert wait_for(lambda: link_id not in link_ids())
    finally:
        if pin.exists():
            pin.unlink()


def test_pin_errors(trace_obj, bpffs_dir):
    link = trace_obj.programs["on_raw_tp"].attach_raw_tracepoint("sched_process_exec")
    with pytest.raises(BPFError, match="/tmp"):
        link.pin("/tmp/not-bpffs-" + unique("x"))
    with pytest.raises(FileNotFoundError, match="no pinned link at"):
        Link.open_pinned(bpffs_dir / unique("pybpf_nothing_"))
    link.detach()


def test_pin_iter_and_perf_links(trace_obj, bpffs_dir):
    it = trace_obj.programs["dump_task"].attach_iter()
    pin = bpffs_dir / unique("pybpf_iter_")
    try:
        it.pin(pin)
        # a pinned iterator is a file: reading it runs the iterator
        assert str(os.getpid()).encode() in pin.read_bytes()
        it.unpin()
        assert not pin.exists()
    finally:
        if pin.exists():
            pin.unlink()
        it.detach()
    group = trace_obj.programs["on_sample"].attach_perf_event()
    with pytest.raises(BPFError, match="has no single fd"):
        _ = group.fd
    with pytest.raises(BPFError, match="only BPF links can be pinned"):
        group.pin(bpffs_dir / unique("pybpf_group_"))
    group.detach()


def test_object_close_detaches_every_kind(bpf_obj):
    obj = pybpf.load(bpf_obj("attach_trace"))
    net = pybpf.load(bpf_obj("attach_net"))
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b, new_cgroup() as cg, veth_pair() as pair:
        links = [
            obj.programs["on_tp"].attach_tracepoint("sched", "sched_process_exec"),
            obj.programs["on_raw_tp"].attach_raw_tracepoint("sched_process_exec"),
            obj.programs["on_tp_btf"].attach_trace(),
            obj.programs["dump_task"].attach_iter(),
            net.programs["cg_egress"].attach_cgroup(cg),
            net.programs["on_msg"].attach_sockmap(net.maps["socks"]),
            net.programs["on_lookup"].attach_netns(f"/run/netns/{pair.ns_a}"),
        ]
        with in_netns(pair.ns_b):
            links.append(net.programs["xdp_count"].attach_xdp(pair.dev_b))
            links.append(net.programs["tc_ingress"].attach_tc(pair.dev_b, "ingress",
                                                              priority=2))
            links.append(net.programs["tc_egress"].attach_tc(pair.dev_b, "egress"))
        group = obj.programs["on_sample"].attach_perf_event()
        sock = net.programs["sock_filter"].attach_socket(b)
        ids = kernel_link_ids([*links, *group.links])  # type: ignore[attr-defined]
        assert len(ids) >= 9
        progs = {p.info().id for o in (obj, net) for p in o.programs.values()}
        assert ids <= link_ids()
        assert len(obj.links) == 5 and len(net.links) == 7
        assert "qdisc clsact" in pair.tc("b", "qdisc", "show", "dev", "DEV")
        obj.close()
        net.close()
        assert all(link.detached for link in [*links, group, sock])
        assert wait_for(lambda: not ids & link_ids())
        assert wait_for(lambda: not progs & prog_ids())
        assert "clsact" not in pair.tc("b", "qdisc", "show", "dev", "DEV")
        assert "prog/xdp" not in pair.link_show("b")
        a.send(b"Dropped if the filter were still attached")
        assert b.recv(64).startswith(b"Dropped")
        with pytest.raises(ClosedError):
            obj.programs["on_tp"].attach_tracepoint("sched", "sched_process_exec")


def test_dropped_object_undoes_netlink_tc_filter(bpf_obj):
    with veth_pair() as pair:
        obj = pybpf.load(bpf_obj("attach_net"))
        with in_netns(pair.ns_b):
            obj.programs["tc_ingress"].attach_tc(pair.dev_b, "ingress", priority=9)
        assert "qdisc clsact" in pair.tc("b", "qdisc", "show", "dev", "DEV")
        del obj
        gc.collect()
        assert "clsact" not in pair.tc("b", "qdisc", "show", "dev", "DEV")


def test_attach_errors_name_the_target_and_leak_nothing(trace_obj):
    fds = open_fds()
    links = link_ids()
    prog = trace_obj.programs["on_tp"]
    with pytest.raises(AttachError, match="tracepoint sched:pybpf_no_such_event does not "
                                          "exist") as exc:
        prog.attach_tracepoint("sched", "pybpf_no_such_event")
    assert exc.value.errno == 2
    assert exc.value.program == "on_tp"
    assert exc.value.target == "tracepoint sched:pybpf_no_such_event"
    with pytest.raises(AttachError, match="tracepoint pybpf_no_such_category:x"):
        prog.attach_tracepoint("pybpf_no_such_category", "x")
    with pytest.raises(AttachError, match="raw_tracepoint pybpf_no_such_tp does not exist"):
        trace_obj.programs["on_raw_tp"].attach_raw_tracepoint("pybpf_no_such_tp")
    with pytest.raises(TypeError):
        prog.attach(nonsense=1)
    assert trace_obj.links == []
    assert open_fds() == fds
    ours = {p.info().id for p in trace_obj.programs.values()}
    assert not [li for li in pybpf.list_links() if li.prog_id in ours and li.id not in links]


# --- process death and fd accounting -------------------------------------------------

CHILD = """
    import os, sys
    sys.path.insert(0, {tests!r})
    import pybpf
    from attach_util import in_netns
    trace = pybpf.load({trace!r})
    user = pybpf.load({user!r})
    net = pybpf.load({net!r})
    links = [
        trace.programs["on_tp"].attach_tracepoint("sched", "sched_process_exec"),
        trace.programs["on_raw_tp"].attach_raw_tracepoint("sched_process_exec"),
        trace.programs["on_tp_btf"].attach_trace(),
        trace.programs["dump_task"].attach_iter(),
        user.programs["on_add"].attach_uprobe({target!r}, "pybpf_target_add"),
        user.programs["on_usdt"].attach_usdt({target!r}, "pybpf_test", "added"),
        net.programs["cg_egress"].attach_cgroup({cgroup!r}),
        net.programs["on_msg"].attach_sockmap(net.maps["socks"]),
    ]
    links += trace.programs["on_sample"].attach_perf_event().links
    with in_netns({ns!r}):
        links.append(net.programs["xdp_count"].attach_xdp({dev!r}))
        links.append(net.programs["tc_ingress"].attach_tc({dev!r}, "egress"))
        links.append(net.programs["on_lookup"].attach_netns())
    kernel_links = 0  # netlink tc filters and pre-6.10 sockmap attachments are not links
    netlink = []  # a netlink tc filter is kernel state: it outlives the process
    for link in links:
        try:
            _ = link.fd
            kernel_links += 1
        except pybpf.BPFError:
            if link.target.startswith("tc "):
                netlink.append(link.program)
    progs = [p.info().id for o in (trace, user, net) for p in o.programs.values()
             if p.name not in netlink]
    print(kernel_links, "|", " ".join(map(str, progs)), flush=True)
    sys.stdin.read()
"""


def test_sigkill_leaves_no_link_behind(bpf_obj):
    objs = {name: bpf_obj(f"attach_{name}") for name in ("trace", "user", "net")}
    target = target_binary()
    with veth_pair() as pair, new_cgroup() as cg:
        code = CHILD.format(tests=str(ROOT / "tests"), target=target, cgroup=cg,
                            ns=pair.ns_b, dev=pair.dev_b, **objs)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        try:
            line = readline(child)
            if "|" not in line:
                child.kill()
                pytest.fail(f"child failed: {child.communicate()[1]}")
            count, progs_part = line.split("|")
            progs = {int(x) for x in progs_part.split()}
            # every kernel link of the child's programs (a USDT attachment is one
            # uprobe link per probe site, a perf event group one link per CPU)
            links = {li.id for li in pybpf.list_links() if li.prog_id in progs}
            assert len(links) >= int(count) >= 10
            assert "prog/xdp" in pair.link_show("b")
            child.send_signal(signal.SIGKILL)
            assert child.wait(10) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert wait_for(lambda: not links & link_ids(), timeout=5)
        assert wait_for(lambda: not progs & prog_ids(), timeout=5)
        assert "prog/xdp" not in pair.link_show("b")


def test_200_attach_cycles_leak_no_fd(bpf_obj):
    """open/load/attach/close 200 times, through every kind of link cleanup:
    libbpf links, fd links (XDP, tcx, sockmap), netlink tc filters, socket
    filters, per-CPU perf event groups; no fd may stay behind."""
    data = Path(bpf_obj("attach_cycle")).read_bytes()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)

    def cycle(i: int, pair) -> None:  # type: ignore[no-untyped-def]
        with pybpf.Object.open(data, name="cycle") as obj:
            obj.load()
            p = obj.programs
            if i % 20 == 0:  # a raw tracepoint attach also costs ~15 ms
                assert [ln.program for ln in obj.attach()] == ["cycle_exec"]
            p["cycle_sock"].attach_socket(b)
            p["cycle_lookup"].attach_netns(f"/run/netns/{pair.ns_a}")
            p["cycle_msg"].attach_sockmap(obj.maps["socks"])
            if i % 5 == 0:
                p["cycle_sample"].attach_perf_event()
            with in_netns(pair.ns_b):
                p["cycle_tc"].attach_tc(pair.dev_b, "egress", priority=1, handle=1)
                if i % 10 == 0:  # XDP and tcx attach/detach wait ~15 ms each for RCU
                    p["cycle_xdp"].attach_xdp(pair.dev_b, mode="skb" if i % 20 else "auto")
                    p["cycle_tc"].attach_tc(pair.dev_b, "ingress")
            assert len(obj.links) >= 4

    with a, b, veth_pair() as pair:
        for i in range(5):
            cycle(i, pair)
        gc.collect()
        fds = open_fds()
        for i in range(200):
            cycle(i, pair)
        gc.collect()
        assert open_fds() == fds
        assert "clsact" not in pair.tc("b", "qdisc", "show", "dev", "DEV")
        assert "prog/xdp" not in pair.link_show("b")
