"""tcx chains on a veth in a netns: two programs in a known order (before/after a
program or a link), the order seen by the packets themselves (each program marks the
skb and the next one checks the mark), the kernel's query of the chain, expected
revisions, and SEC("tcx/ingress") / SEC("tc/egress") names on libbpf 1.1.
"""

from __future__ import annotations

import errno
import os

import pytest
from attach_util import hits, in_netns, veth_pair, wait_for
from conftest import require
from hooks_util import A_AFTER_B, B_AFTER_A, TC_ALIAS, TCX_A, TCX_B, assert_route

import pybpf
from pybpf import features

pytestmark = pytest.mark.kernel


@pytest.fixture
def obj(bpf_obj):
    require(features.tcx())
    o = pybpf.Object.open(bpf_obj("hooks"))
    for p in o.programs.values():
        p.autoload = p.name in ("tcx_a", "tcx_b", "tc_alias")
    o.load()
    yield o
    o.close()


@pytest.fixture
def pair():
    with veth_pair() as p:
        yield p


def send(pair, n):
    rx = pair.udp_socket("b")
    try:
        port = rx.getsockname()[1]
        assert pair.send_udp(n, receiver=rx) == n
        return port
    finally:
        rx.close()


def test_section_names_give_tcx_attach_types(obj):
    assert obj.programs["tcx_a"].expected_attach_type == "tcx_ingress"
    assert obj.programs["tc_alias"].expected_attach_type == "tcx_egress"


def test_after_then_before_order_seen_by_packets_and_query(obj, pair):
    a, b = obj.programs["tcx_a"], obj.programs["tcx_b"]
    with in_netns(pair.ns_b):
        la = a.attach(ifname=pair.dev_b)  # the section says ingress
        lb = b.attach_tcx(pair.dev_b, after=a)
        chain = pybpf.Program.tcx_chain(pair.dev_b, "ingress")
    assert chain.prog_ids == (a.info().id, b.info().id)
    assert_route(la, "bpf_program__attach_tcx")
    assert_route(lb, "bpf_program__attach_tcx")
    assert chain.link_ids == (la.info().id, lb.info().id)
    port = send(pair, 5)
    assert wait_for(lambda: hits(obj, TCX_B, port) == 5)
    assert (hits(obj, TCX_A, port), hits(obj, B_AFTER_A, port), hits(obj, A_AFTER_B, port)) \
        == (5, 5, 0)
    # move b in front of a: detach, reattach before a's link
    lb.detach()
    with in_netns(pair.ns_b):
        lb = b.attach_tcx(pair.dev_b, before=la)
        chain2 = pybpf.Program.tcx_chain(pair.dev_b)
    assert chain2.prog_ids == (b.info().id, a.info().id)
    assert chain2.revision > chain.revision
    port = send(pair, 4)
    assert wait_for(lambda: hits(obj, TCX_A, port) == 4)
    assert (hits(obj, A_AFTER_B, port), hits(obj, B_AFTER_A, port)) == (4, 0)
    la.detach()
    lb.detach()
    with in_netns(pair.ns_b):
        assert pybpf.Program.tcx_chain(pair.dev_b).prog_ids == ()


def test_a_tcx_link_pins_and_outlives_its_object(obj, pair):
    """Any BPF link pins, one pybpf made with BPF_LINK_CREATE (libbpf 1.1 has no tcx
    API) too: the pin keeps it attached after the object closed."""
    pin = f"/sys/fs/bpf/pybpf-tcx-pin-{os.getpid()}"
    with in_netns(pair.ns_b):
        link = obj.programs["tcx_a"].attach_tcx(pair.dev_b)
    link_id = link.info().id
    try:
        link.pin(pin)
        assert link.pin_path == pin and repr(link).endswith(f"(pinned at {pin})>")
        with pytest.raises(pybpf.BPFError, match="already pinned"):
            link.pin(pin + "-2")
        obj.close()  # closes this fd: the pin holds the link
        assert link.detached
        pinned = pybpf.Link.open_pinned(pin)
        assert pinned.info().id == link_id and pinned.info().type == "tcx"
        with in_netns(pair.ns_b):
            assert pybpf.Program.tcx_chain(pair.dev_b).link_ids == (link_id,)
        pinned.unpin()
        assert not os.path.exists(pin)
        pinned.detach()
        with in_netns(pair.ns_b):
            assert wait_for(lambda: pybpf.Program.tcx_chain(pair.dev_b).link_ids == ())
    finally:
        if os.path.exists(pin):
            os.unlink(pin)


def test_a_link_pybpf_made_unpins_itself(obj, pair):
    pin = f"/sys/fs/bpf/pybpf-tcx-unpin-{os.getpid()}"
    with in_netns(pair.ns_b):
        link = obj.programs["tcx_a"].attach_tcx(pair.dev_b)
    try:
        link.pin(pin)
        link.unpin()
        assert not os.path.exists(pin) and link.pin_path is None
        link_id = link.info().id
        link.detach()  # no pin holds it: gone
        with in_netns(pair.ns_b):
            assert link_id not in pybpf.Program.tcx_chain(pair.dev_b).link_ids
    finally:
        if os.path.exists(pin):
            os.unlink(pin)


def test_expected_revision(obj, pair):
    a, b = obj.programs["tcx_a"], obj.programs["tcx_b"]
    with in_netns(pair.ns_b):
        rev = pybpf.Program.tcx_chain(pair.dev_b).revision
        a.attach_tcx(pair.dev_b, expected_revision=rev)
        with pytest.raises(pybpf.AttachError) as ei:
            b.attach_tcx(pair.dev_b, expected_revision=rev)  # stale: a was added
        assert ei.value.errno == errno.ESTALE
        b.attach_tcx(pair.dev_b, expected_revision=rev + 1)
        assert len(pybpf.Program.tcx_chain(pair.dev_b).prog_ids) == 2


def test_tc_egress_alias_counts(obj, pair):
    with in_netns(pair.ns_a):
        link = obj.programs["tc_alias"].attach(ifname=pair.dev_a)
    assert link.target == f"tcx {pair.dev_a} egress"
    port = send(pair, 3)
    assert wait_for(lambda: hits(obj, TC_ALIAS, port) == 3)


def test_errors(obj, pair):
    a = obj.programs["tcx_a"]
    with pytest.raises(pybpf.AttachError, match="does not exist"):
        a.attach_tcx("nodev-pybpf")
    with pytest.raises(ValueError, match="not both"):
        a.attach_tcx("lo", before=a, after=a)
    with pytest.raises(ValueError, match="ingress"):
        a.attach_tcx("lo", "sideways")
    with pytest.raises(TypeError, match="Program or a Link"):
        a.attach_tcx("lo", before="x")
