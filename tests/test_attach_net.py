"""Network hooks on the real kernel, with real packets: XDP and tc between two
network namespaces over a veth pair, cgroup_skb on a new cgroup v2 directory,
a socket filter, sk_msg on a sockmap, sk_lookup on a netns."""

from __future__ import annotations

import json
import os
import socket
import struct

import pytest
from attach_util import cgroup2_mount, hits, in_netns, new_cgroup, open_fds, val, veth_pair

import pybpf
from pybpf import AttachError, BPFError, features

pytestmark = pytest.mark.kernel

# Hook ids of tests/bpf/attach_net.bpf.c
(XDP_PASSED, XDP_DROPPED, TC_INGRESS, TC_EGRESS, CG_INGRESS, CG_EGRESS, CG_DROPPED,
 SOCK_SEEN, SOCK_DROPPED, SK_MSG, SK_LOOKUP) = range(1, 12)


@pytest.fixture
def net_obj(bpf_obj):
    with pybpf.load(bpf_obj("attach_net")) as obj:
        yield obj


@pytest.fixture
def pair():
    with veth_pair() as p:
        yield p


def set_drop_port(obj: pybpf.Object, port: int) -> None:
    obj.maps["drop_port"].update(struct.pack("<I", 0), struct.pack("<I", port))


# --- XDP ----------------------------------------------------------------------------

@pytest.mark.parametrize("mode, shown", [("auto", "prog/xdp"), ("skb", "xdpgeneric")])
def test_xdp_pass_and_drop_counts(net_obj, pair, mode, shown):
    prog = net_obj.programs["xdp_count"]
    with in_netns(pair.ns_b):
        link = prog.attach_xdp(pair.dev_b, mode=mode)
    assert link.info().type == "xdp"
    assert link.info().prog_id == prog.info().id
    assert shown in pair.link_show("b")
    if mode == "skb":
        assert " xdpgeneric " in pair.link_show("b")
    else:
        assert " xdp " in pair.link_show("b")  # veth runs XDP natively

    rx = pair.udp_socket("b")
    port = rx.getsockname()[1]
    assert pair.send_udp(5, receiver=rx) == 5
    assert hits(net_obj, XDP_PASSED, port) == 5
    assert hits(net_obj, XDP_DROPPED, port) == 0

    drop_rx = pair.udp_socket("b")
    drop = drop_rx.getsockname()[1]
    set_drop_port(net_obj, drop)
    assert pair.send_udp(4, receiver=drop_rx, wait=0.3) == 0  # really dropped
    assert hits(net_obj, XDP_DROPPED, drop) == 4
    assert hits(net_obj, XDP_PASSED, drop) == 0

    link.detach()  # outside the netns: a BPF link needs no netns to detach
    assert "prog/xdp" not in pair.link_show("b")
    assert pair.send_udp(3, receiver=drop_rx) == 3  # nothing drops any more
    assert hits(net_obj, XDP_DROPPED, drop) == 4
    rx.close()
    drop_rx.close()


def test_xdp_by_ifindex_and_attach_keyword(net_obj, pair):
    with in_netns(pair.ns_b):
        idx = socket.if_nametoindex(pair.dev_b)
        link = net_obj.programs["xdp_count"].attach(ifindex=idx)
    assert link.target == f"xdp {pair.dev_b}"
    rx = pair.udp_socket("b")
    assert pair.send_udp(2, receiver=rx) == 2
    assert hits(net_obj, XDP_PASSED, rx.getsockname()[1]) == 2
    link.detach()
    rx.close()


def test_xdp_second_program_on_same_device_is_busy(net_obj, pair):
    prog = net_obj.programs["xdp_count"]
    with in_netns(pair.ns_b):
        link = prog.attach_xdp(pair.dev_b)
        with pytest.raises(AttachError, match="another XDP program is already attached to "
                                              f"{pair.dev_b}") as exc:
            prog.attach_xdp(pair.dev_b)
        with pytest.raises(AttachError, match="another XDP program"):
            prog.attach_xdp(pair.dev_b, mode="skb")
    assert exc.value.target == f"xdp {pair.dev_b}"
    assert net_obj.links == [link]
    link.detach()


def test_xdp_errors(net_obj):
    prog = net_obj.programs["xdp_count"]
    fds = open_fds()
    with pytest.raises(AttachError, match="network interface 'pybpfnosuch0' does not exist"):
        prog.attach_xdp("pybpfnosuch0")
    with pytest.raises(AttachError, match="network interface index 999999 does not exist"):
        prog.attach_xdp(ifindex=999999)
    with pytest.raises(ValueError, match="XDP mode must be one of"):
        prog.attach_xdp("lo", mode="turbo")
    assert net_obj.links == []
    assert open_fds() == fds


# --- tc -----------------------------------------------------------------------------

def test_tcx_ingress_and_egress_counts(net_obj, pair):
    if not features.tcx():
        pytest.skip(features.tcx().reason)
    progs = net_obj.programs
    with in_netns(pair.ns_b):
        ingress = progs["tc_ingress"].attach_tc(pair.dev_b, "ingress")
    with in_netns(pair.ns_a):
        egress = progs["tc_egress"].attach(ifname=pair.dev_a, direction="egress")
    assert ingress.target == f"tcx {pair.dev_b} ingress"
    assert egress.target == f"tcx {pair.dev_a} egress"
    assert ingress.info().type == "tcx"
    assert "clsact" not in pair.tc("b", "qdisc", "show", "dev", "DEV")  # tcx needs none

    rx = pair.udp_socket("b")
    port = rx.getsockname()[1]
    assert pair.send_udp(6, receiver=rx) == 6
    assert hits(net_obj, TC_INGRESS, port) == 6
    assert hits(net_obj, TC_EGRESS, port) == 6

    ingress.detach()
    egress.detach()
    assert pair.send_udp(2, receiver=rx) == 2
    assert (hits(net_obj, TC_INGRESS, port), hits(net_obj, TC_EGRESS, port)) == (6, 6)
    rx.close()


def test_tc_clsact_netlink_with_priority_and_handle(net_obj, pair):
    progs = net_obj.programs
    with in_netns(pair.ns_b):
        ingress = progs["tc_ingress"].attach_tc(pair.dev_b, "ingress", priority=1, handle=1)
    with in_netns(pair.ns_a):
        egress = progs["tc_egress"].attach_tc(pair.dev_a, "egress", priority=3, handle=7)
    assert ingress.target == f"tc {pair.dev_b} ingress prio 1 handle 0x1"
    assert egress.target == f"tc {pair.dev_a} egress prio 3 handle 0x7"
    assert "qdisc clsact" in pair.tc("b", "qdisc", "show", "dev", "DEV")
    shown = pair.tc("b", "filter", "show", "dev", "DEV", "ingress")
    assert "pref 1 bpf" in shown and "handle 0x1 tc_ingress" in shown
    shown = pair.tc("a", "filter", "show", "dev", "DEV", "egress")
    assert "pref 3 bpf" in shown and "handle 0x7 tc_egress" in shown
    with pytest.raises(BPFError, match="not a BPF link"):
        _ = ingress.fd
    with pytest.raises(BPFError, match="only BPF links can be pinned"):
        ingress.pin(f"/sys/fs/bpf/pybpf-never-{os.getpid()}")

    rx = pair.udp_socket("b")
    port = rx.getsockname()[1]
    assert pair.send_udp(4, receiver=rx) == 4
    assert hits(net_obj, TC_INGRESS, port) == 4
    assert hits(net_obj, TC_EGRESS, port) == 4

    # Detached from the root netns: pybpf re-enters the netns the filter lives in.
    ingress.detach()
    egress.detach()
    assert ingress.detached and egress.detached
    for side in "ab":
        assert "clsact" not in pair.tc(side, "qdisc", "show", "dev", "DEV")  # removed
    assert pair.send_udp(2, receiver=rx) == 2
    assert (hits(net_obj, TC_INGRESS, port), hits(net_obj, TC_EGRESS, port)) == (4, 4)
    rx.close()


def test_tc_clsact_shared_by_two_filters_goes_with_the_last(net_obj, pair):
    progs = net_obj.programs
    with in_netns(pair.ns_a):
        egress = progs["tc_egress"].attach_tc(pair.dev_a, "egress", priority=1)
        ingress = progs["tc_ingress"].attach_tc(pair.dev_a, "ingress", priority=1)
    tx = pair.udp_socket("b")  # b -> a: counted by a's ingress filter
    rx = pair.udp_socket("a")
    port = rx.getsockname()[1]
    with tx, rx:
        egress.detach()  # the qdisc pybpf created still carries the ingress filter
        assert "qdisc clsact" in pair.tc("a", "qdisc", "show", "dev", "DEV")
        tx.sendto(b"x", (pair.addr_a, port))
        rx.settimeout(1.0)
        assert rx.recv(8) == b"x"
        assert hits(net_obj, TC_INGRESS, port) == 1
        ingress.detach()
        assert "clsact" not in pair.tc("a", "qdisc", "show", "dev", "DEV")


def test_tc_netlink_keeps_a_clsact_it_did_not_create(net_obj, pair):
    pair.tc("b", "qdisc", "add", "dev", "DEV", "clsact")
    with in_netns(pair.ns_b):
        link = net_obj.programs["tc_ingress"].attach_tc(pair.dev_b, "ingress", tcx=False)
    assert link.target.startswith(f"tc {pair.dev_b} ingress prio ")
    rx = pair.udp_socket("b")
    assert pair.send_udp(3, receiver=rx) == 3
    assert hits(net_obj, TC_INGRESS, rx.getsockname()[1]) == 3
    link.detach()
    assert "bpf" not in pair.tc("b", "filter", "show", "dev", "DEV", "ingress")
    assert "qdisc clsact" in pair.tc("b", "qdisc", "show", "dev", "DEV")  # not ours to remove
    rx.close()


def test_tc_clsact_removed_when_object_closes(bpf_obj, pair):
    obj = pybpf.load(bpf_obj("attach_net"))
    with in_netns(pair.ns_b):
        obj.programs["tc_ingress"].attach_tc(pair.dev_b, "egress", priority=5)
    assert "qdisc clsact" in pair.tc("b", "qdisc", "show", "dev", "DEV")
    obj.close()
    assert "clsact" not in pair.tc("b", "qdisc", "show", "dev", "DEV")


def test_tc_errors(net_obj):
    prog = net_obj.programs["tc_ingress"]
    fds = open_fds()
    with pytest.raises(AttachError, match="'pybpfnosuch0' does not exist"):
        prog.attach_tc("pybpfnosuch0", "ingress")
    with pytest.raises(AttachError, match="'pybpfnosuch0' does not exist"):
        prog.attach_tc("pybpfnosuch0", "ingress", priority=1, handle=1)
    with pytest.raises(ValueError, match="'ingress' or 'egress'"):
        prog.attach_tc("lo", "sideways")
    assert net_obj.links == []
    assert open_fds() == fds


# --- cgroup_skb ---------------------------------------------------------------------

def _child_in_cgroup(cgroup: str, send_port: int, drop_port: int) -> dict[str, object]:
    """Fork a child that joins ``cgroup`` and sends UDP; returns what it saw."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no pytest machinery, report through the pipe, _exit
        res: dict[str, object] = {}
        try:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write("0")
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            own = s.getsockname()[1]
            res["own_port"] = own
            for _ in range(4):
                s.sendto(b"out", ("127.0.0.1", send_port))
            for _ in range(3):
                s.sendto(b"self", ("127.0.0.1", own))  # egress and ingress of the cgroup
            s.settimeout(1.0)
            res["self_received"] = sum(1 for _ in range(3) if s.recv(16))
            try:
                s.sendto(b"drop", ("127.0.0.1", drop_port))
                res["drop"] = "sent"
            except OSError as exc:
                res["drop"] = exc.errno
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            res["error"] = repr(exc)
        os.write(w, json.dumps(res).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)  # type: ignore[no-any-return]


def test_cgroup_skb_ingress_egress_and_drop(net_obj):
    progs = net_obj.programs
    outside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    outside.bind(("127.0.0.1", 0))
    port = outside.getsockname()[1]
    blocked = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocked.bind(("127.0.0.1", 0))
    drop = blocked.getsockname()[1]
    set_drop_port(net_obj, drop)
    with new_cgroup() as cg:
        egress = progs["cg_egress"].attach_cgroup(cg)
        ingress = progs["cg_ingress"].attach(cgroup=cg)
        assert egress.info().type == "cgroup"
        assert egress.target == f"cgroup {cg}"
        res = _child_in_cgroup(cg, port, drop)
        assert "error" not in res, res
        own = res["own_port"]
        assert isinstance(own, int)
        assert hits(net_obj, CG_EGRESS, port) == 4  # child -> outside socket
        assert hits(net_obj, CG_INGRESS, port) == 0  # received outside the cgroup
        assert hits(net_obj, CG_EGRESS, own) == 3  # child -> itself
        assert hits(net_obj, CG_INGRESS, own) == 3
        assert res["self_received"] == 3
        assert res["drop"] == 1  # EPERM: the egress program dropped it
        assert hits(net_obj, CG_DROPPED, drop) == 1
        outside.settimeout(1.0)
        assert [outside.recv(16) for _ in range(4)] == [b"out"] * 4
        blocked.setblocking(False)
        with pytest.raises(BlockingIOError):
            blocked.recv(16)

        # This process is not in the cgroup: its traffic is not seen.
        outside.sendto(b"x", ("127.0.0.1", port))
        assert hits(net_obj, CG_EGRESS, port) == 4
        egress.detach()
        ingress.detach()
    outside.close()
    blocked.close()


def test_cgroup_errors(net_obj):
    prog = net_obj.programs["cg_egress"]
    fds = open_fds()
    with pytest.raises(AttachError, match="cgroup /sys/fs/cgroup/pybpf-no-such-cgroup") as exc:
        prog.attach_cgroup("/sys/fs/cgroup/pybpf-no-such-cgroup")
    assert exc.value.errno == 2
    with pytest.raises(AttachError, match="cgroup /etc/passwd"):
        prog.attach_cgroup("/etc/passwd")
    with pytest.raises(AttachError, match=f"/tmp is not a cgroup v2 directory \\(cgroup2 is "
                                          f"mounted at {cgroup2_mount()}\\)"):
        prog.attach_cgroup("/tmp")
    assert net_obj.links == []
    assert open_fds() == fds


# --- socket filter ------------------------------------------------------------------

def test_socket_filter_counts_and_drops(net_obj):
    prog = net_obj.programs["sock_filter"]
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        link = prog.attach_socket(b)
        assert link.target == f"socket fd {b.fileno()}"
        for msg in (b"keep 1", b"Drop me", b"keep 2", b"Drop too", b"keep 3"):
            a.send(msg)
        b.setblocking(False)
        got = []
        while True:
            try:
                got.append(b.recv(64))
            except BlockingIOError:
                break
        assert got == [b"keep 1", b"keep 2", b"keep 3"]
        assert hits(net_obj, SOCK_SEEN, 0) == 3
        assert hits(net_obj, SOCK_DROPPED, 0) == 2
        link.detach()
        a.send(b"Drop after detach")
        assert b.recv(64) == b"Drop after detach"
        assert hits(net_obj, SOCK_DROPPED, 0) == 2


def test_socket_filter_on_udp_socket_by_fd(net_obj):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        link = net_obj.programs["sock_filter"].attach(sock=rx.fileno())
        assert link.target == f"socket fd {rx.fileno()}"
        for _ in range(3):
            tx.sendto(b"udp", rx.getsockname())
        rx.settimeout(1.0)
        assert [rx.recv(16) for _ in range(3)] == [b"udp"] * 3
        assert hits(net_obj, SOCK_SEEN, 0) == 3
        link.detach()  # reaches the socket through the link's own duplicate fd
        tx.sendto(b"udp", rx.getsockname())
        assert rx.recv(16) == b"udp"
        assert hits(net_obj, SOCK_SEEN, 0) == 3


def test_socket_filter_errors(net_obj):
    prog = net_obj.programs["sock_filter"]
    fds = open_fds()
    with pytest.raises(AttachError, match="fd 999 is not an open socket"):
        prog.attach_socket(999)
    with open("/dev/null") as f, pytest.raises(AttachError, match="is not an open socket"):
        prog.attach_socket(f.fileno())
    assert open_fds() == fds
    assert net_obj.links == []


# --- sk_msg on a sockmap ----------------------------------------------------------------

@pytest.mark.guest  # kernels before 6.10 take the BPF_PROG_ATTACH fallback
def test_sk_msg_on_sockmap(net_obj):
    socks = net_obj.maps["socks"]
    link = net_obj.programs["on_msg"].attach_sockmap(socks)
    assert link.target == "sk_msg_verdict map socks"
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    client = socket.create_connection(srv.getsockname())
    server, _ = srv.accept()
    with srv, client, server:
        socks.update(struct.pack("<I", 0), struct.pack("<I", client.fileno()))
        local = client.getsockname()[1]
        client.sendall(b"hello")
        client.sendall(b"sockmap!")
        server.settimeout(1.0)
        data = b""
        while len(data) < 13:
            data += server.recv(64)
        assert data == b"hellosockmap!"  # SK_PASS delivers
        assert hits(net_obj, SK_MSG, local) == 2
        assert val(net_obj, SK_MSG, local) == 8  # size of the last message
        server.sendall(b"reply")  # the server socket is not in the map
        assert client.recv(16) == b"reply"
        assert hits(net_obj, SK_MSG, server.getsockname()[1]) == 0
        socks.delete(struct.pack("<I", 0))
    link.detach()


# --- sk_lookup on a network namespace ---------------------------------------------------

def test_sk_lookup_on_netns(net_obj, pair):
    link = net_obj.programs["on_lookup"].attach_netns(f"/run/netns/{pair.ns_b}")
    assert link.info().type == "netns"
    rx = pair.udp_socket("b")
    port = rx.getsockname()[1]
    assert pair.send_udp(3, receiver=rx) == 3
    assert hits(net_obj, SK_LOOKUP, port) == 3
    link.detach()
    assert pair.send_udp(2, receiver=rx) == 2
    assert hits(net_obj, SK_LOOKUP, port) == 3
    rx.close()


def test_netns_and_sockmap_errors(net_obj):
    fds = open_fds()
    with pytest.raises(AttachError, match="netns /run/netns/pybpf-no-such-netns"):
        net_obj.programs["on_lookup"].attach_netns("/run/netns/pybpf-no-such-netns")
    with pytest.raises(AttachError, match="/etc/passwd is not a network namespace"):
        net_obj.programs["on_lookup"].attach_netns("/etc/passwd")
    with pytest.raises(AttachError, match="'hits' is a hash map, not a sockmap"):
        net_obj.programs["on_msg"].attach_sockmap(net_obj.maps["hits"])
    assert net_obj.links == []
    assert open_fds() == fds
