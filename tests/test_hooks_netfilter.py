"""netfilter links: a SEC("netfilter") program (unknown to libbpf 1.1) counts real UDP
datagrams sent over loopback at the hook, family and priority it was given; with
defrag; detached links stop counting.
"""

from __future__ import annotations

import socket

import pytest
from attach_util import hits, wait_for
from conftest import require
from hooks_util import NF_SEEN, NF_SEEN_DEFRAG, assert_route

import pybpf
from pybpf import features

pytestmark = pytest.mark.kernel


@pytest.fixture
def obj(bpf_obj):
    require(features.netfilter())
    o = pybpf.Object.open(bpf_obj("hooks"))
    for p in o.programs.values():
        p.autoload = p.name.startswith("nf_")
    o.load()
    yield o
    o.close()


def udp_loopback(n: int, size: int = 16) -> int:
    """Send n datagrams to a fresh loopback port and receive them; returns the port."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(2)
        port = rx.getsockname()[1]
        for _ in range(n):
            tx.sendto(b"x" * size, ("127.0.0.1", port))
        for _ in range(n):
            rx.recv(65536)
        return port
    finally:
        rx.close()
        tx.close()


def test_program_type_is_netfilter(obj):
    assert obj.programs["nf_count"].type == "netfilter"
    assert obj.programs["nf_count"].expected_attach_type == "netfilter"


@pytest.mark.parametrize("hook", ["local_in", "local_out"])
def test_counts_loopback_datagrams(obj, hook):
    link = obj.programs["nf_count"].attach_netfilter("ipv4", hook, priority=-128)
    assert link.info().type == "netfilter"
    assert link.target == f"netfilter ipv4 {hook} priority -128"
    assert_route(link, "bpf_program__attach_netfilter")
    port = udp_loopback(7)
    assert wait_for(lambda: hits(obj, NF_SEEN, port) == 7)
    link.detach()
    port2 = udp_loopback(3)
    assert hits(obj, NF_SEEN, port2) == 0


def test_ipv6_hook_does_not_see_ipv4(obj):
    obj.programs["nf_count"].attach_netfilter("ipv6", "local_in", 10)
    port = udp_loopback(4)
    assert hits(obj, NF_SEEN, port) == 0


def test_defrag_and_keyword_attach(obj):
    link = obj.programs["nf_count_defrag"].attach(family="ipv4", hook="prerouting",
                                                  priority=-300, defrag=True)
    assert link.target.endswith(" defrag")
    port = udp_loopback(2, size=1000)
    assert wait_for(lambda: hits(obj, NF_SEEN_DEFRAG, port) == 2)


def test_defrag_sees_reassembled_datagrams(obj):
    """A 3000-byte datagram over a veth with MTU 1280 arrives in fragments: with defrag
    the program sees it whole (skb len > MTU), without defrag only the fragments."""
    from attach_util import in_netns, run, val, veth_pair

    with veth_pair() as pair:
        for ns, dev in ((pair.ns_a, pair.dev_a), (pair.ns_b, pair.dev_b)):
            run("ip", "-n", ns, "link", "set", dev, "mtu", "1280")
        lens = {}
        for defrag in (False, True):
            with in_netns(pair.ns_b):  # netfilter hooks are per network namespace
                link = obj.programs["nf_count_defrag"].attach_netfilter(
                    "ipv4", "prerouting", priority=-300, defrag=defrag)
            rx = pair.udp_socket("b")
            tx = pair.udp_socket("a")
            port = rx.getsockname()[1]
            tx.sendto(b"y" * 3000, (pair.addr_b, port))
            rx.settimeout(2)
            assert len(rx.recv(4096)) == 3000
            rx.close()
            tx.close()
            link.detach()
            assert hits(obj, NF_SEEN_DEFRAG, port) == 1  # only the first fragment has UDP
            lens[defrag] = val(obj, NF_SEEN_DEFRAG, port)
        assert lens[False] <= 1280 < 3000 < lens[True]


def test_errors(obj):
    prog = obj.programs["nf_count"]
    with pytest.raises(ValueError, match="family"):
        prog.attach_netfilter("ipx")
    with pytest.raises(ValueError, match="hook"):
        prog.attach_netfilter("ipv4", "sideways")
    with pytest.raises(pybpf.AttachError):
        prog.attach_netfilter("ipv4", "local_in", priority=-(2 ** 31))  # NF_IP_PRI_FIRST


def test_attach_detach_cycles_leak_no_fd_or_link(obj):
    """Raw kernel links (BPF_LINK_CREATE fds) close on detach, and those left attached
    close with their object."""
    from attach_util import open_fds

    prog = obj.programs["nf_count"]
    prog_id = prog.info().id
    before = open_fds()
    for i in range(50):
        prog.attach_netfilter("ipv4", "local_in", priority=i + 1).detach()
    assert open_fds() - before == set()
    kept = [prog.attach_netfilter("ipv4", "local_out", priority=i + 1) for i in range(5)]
    assert sum(li.prog_id == prog_id for li in pybpf.list_links()) == 5
    obj.close()
    assert all(k.detached for k in kept)
    assert open_fds() - before == set()
    assert not any(li.prog_id == prog_id for li in pybpf.list_links())
