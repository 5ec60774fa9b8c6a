"""XDP firewall (pybpf.tools.firewall) between two network namespaces over veth, real traffic."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys

import pytest
from attach_util import in_netns, veth_pair

from pybpf.tools.firewall import Counter, Firewall, pin_dir_for

pytestmark = pytest.mark.kernel

FRAME = 14 + 20 + 8  # ethernet + IPv4 + UDP headers


def _sent_bytes(count: int) -> int:
    return sum(FRAME + len(b"pybpf %d" % i) for i in range(count))


@pytest.fixture
def pair():
    with veth_pair() as p:
        yield p


def _egress_udp(pair, count: int, port: int = 9) -> None:
    """Send ``count`` UDP datagrams b -> a (out of b's egress)."""
    with in_netns(pair.ns_b):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(count):
            s.sendto(b"pybpf %d" % i, (pair.addr_a, port))
    finally:
        s.close()


def test_firewall_rules_counters_live(pair):
    rx_drop = pair.udp_socket("b")
    rx_pass = pair.udp_socket("b")
    port_drop, port_pass = rx_drop.getsockname()[1], rx_pass.getsockname()[1]
    try:
        with Firewall(pair.dev_b, netns=pair.ns_b) as fw:
            # Nothing yet: everything passes, counted as default.
            assert pair.send_udp(3, receiver=rx_pass) == 3
            assert fw.default_counter().packets >= 3

            r1 = fw.add_rule("10.77.0.0/24", port=port_drop, action="drop")
            assert (r1.id, r1.port, r1.action) == (1, port_drop, "drop")
            assert pair.send_udp(5, receiver=rx_drop, wait=0.3) == 0
            assert pair.send_udp(4, receiver=rx_pass) == 4
            rules = {r.id: r for r in fw.rules()}
            assert rules[1].packets == 5 and rules[1].bytes == _sent_bytes(5)
            assert rules[1].network == ipaddress.ip_network("10.77.0.0/24")

            # An any-port rule for the sender's /32: now the other port drops too,
            # while the port rule keeps counting its own port.
            r2 = fw.add_rule(f"{pair.addr_a}/32", action="drop")
            assert r2.id == 2 and r2.port is None
            assert pair.send_udp(4, receiver=rx_pass, wait=0.3) == 0
            assert pair.send_udp(2, receiver=rx_drop, wait=0.3) == 0
            rules = {r.id: r for r in fw.rules()}
            assert (rules[1].packets, rules[2].packets) == (7, 4)

            # A more specific pass rule for the port beats the any-port drop.
            r3 = fw.add_rule(f"{pair.addr_a}/32", port=port_pass, action="pass")
            assert pair.send_udp(3, receiver=rx_pass) == 3
            assert {r.id: r.packets for r in fw.rules()}[r3.id] == 3

            # Remove live: traffic flows again and removed rules are gone.
            assert fw.remove_rule(f"{pair.addr_a}/32")
            assert fw.remove_rule("10.77.0.0/24", port=port_drop)
            assert not fw.remove_rule("10.77.0.0/24", port=port_drop)
            assert pair.send_udp(5, receiver=rx_drop) == 5
            assert [r.id for r in fw.rules()] == [r3.id]

            # A freed id is reused with its counter reset.
            r4 = fw.add_rule("192.0.2.0/24", action="pass")
            assert r4.id == 1
            assert {r.id: r.packets for r in fw.rules()}[1] == 0

            # Egress: what b sends out.
            before = fw.egress_counters().get("ipv4/udp", Counter())
            _egress_udp(pair, 6)
            after = fw.egress_counters()["ipv4/udp"]
            assert after.packets - before.packets == 6
            assert after.bytes - before.bytes == _sent_bytes(6)
        # Closed: detached, traffic passes.
        with in_netns(pair.ns_b):
            out = subprocess.run(["ip", "-d", "link", "show", pair.dev_b], capture_output=True,
                                 text=True, check=True).stdout
        assert "xdp" not in out.split("\n", 1)[0]
    finally:
        rx_drop.close()
        rx_pass.close()


def test_firewall_nested_prefixes_are_separate_rules(pair):
    """A /24 inside a /16, same port, different actions: two rules, two ids, and each
    rule's counters are exactly the packets this test sent while it was the match."""
    rx = pair.udp_socket("b")
    port = rx.getsockname()[1]
    try:
        with Firewall(pair.dev_b, netns=pair.ns_b, egress=False) as fw:
            wide = fw.add_rule("10.77.0.0/16", port=port, action="drop")
            narrow = fw.add_rule("10.77.0.0/24", port=port, action="pass")
            assert wide.id != narrow.id
            # The /24 is the longest match for 10.77.0.1: it passes.
            assert pair.send_udp(6, receiver=rx) == 6
            rules = {r.id: r for r in fw.rules()}
            assert len(rules) == 2
            assert (rules[wide.id].action, rules[narrow.id].action) == ("drop", "pass")
            assert (rules[wide.id].packets, rules[narrow.id].packets) == (0, 6)
            assert rules[narrow.id].bytes == _sent_bytes(6)
            # Replacing the /16 keeps its own id and leaves the /24 alone.
            again = fw.add_rule("10.77.0.0/16", port=port, action="drop")
            assert again.id == wide.id
            # Without the /24, the /16 matches and drops; the /24's counters stay.
            assert fw.remove_rule("10.77.0.0/24", port=port)
            assert pair.send_udp(4, receiver=rx, wait=0.3) == 0
            rules = {r.id: r for r in fw.rules()}
            assert list(rules) == [wide.id]
            assert rules[wide.id].packets == 4 and rules[wide.id].bytes == _sent_bytes(4)
    finally:
        rx.close()


def test_firewall_ipv6_rule(pair):
    for ns, dev, addr in ((pair.ns_a, pair.dev_a, "fd77::1"), (pair.ns_b, pair.dev_b, "fd77::2")):
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{addr}/64", "dev", dev, "nodad"],
                       check=True)
    with in_netns(pair.ns_b):
        rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        rx.bind(("fd77::2", 0))
        rx.settimeout(0.05)
    with in_netns(pair.ns_a):
        tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        with Firewall(pair.dev_b, netns=pair.ns_b, egress=False) as fw:
            rule = fw.add_rule("fd77::/64", port=rx.getsockname()[1], action="drop")
            for i in range(4):
                tx.sendto(b"x%d" % i, ("fd77::2", rx.getsockname()[1]))
            with pytest.raises(socket.timeout):
                rx.recv(16)
            assert [(r.id, r.packets) for r in fw.rules()] == [(rule.id, 4)]
            assert fw.rules()[0].network == ipaddress.ip_network("fd77::/64")
    finally:
        rx.close()
        tx.close()


def test_firewall_bad_input(pair):
    with pytest.raises(OSError, match="no network interface 'nosuchif0'"):
        Firewall("nosuchif0", netns=pair.ns_b)
    with Firewall(pair.dev_b, netns=pair.ns_b, egress=False) as fw:
        with pytest.raises(ValueError, match="not an IP prefix"):
            fw.add_rule("10.0.0.300/8")
        with pytest.raises(ValueError, match="port must be"):
            fw.add_rule("10.0.0.0/8", port=70000)
        with pytest.raises(ValueError, match="action must be"):
            fw.add_rule("10.0.0.0/8", action="reject")


@pytest.fixture
def fwcli(capsys):
    """``pybpf firewall ...`` in this process; each call is a separate CLI invocation."""
    from pybpf.cli import main

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        capsys.readouterr()
        try:
            rc = main(["firewall", *args])
        except SystemExit as exc:
            rc = int(exc.code or 0)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), rc, out, err)

    return run


def test_firewall_cli_pinned(pair, fwcli):
    dev, ns = pair.dev_b, pair.ns_b
    pin = pin_dir_for(dev, ns)
    rx = pair.udp_socket("b")
    port = rx.getsockname()[1]
    try:
        # The first invocation in a process of its own: the firewall must outlive it.
        r = subprocess.run([sys.executable, "-m", "pybpf", "firewall", "attach", dev,
                            "--netns", ns], capture_output=True, text=True, check=False)
        assert r.returncode == 0, r.stderr
        assert os.path.isdir(pin)
        # the whole deployment is pinned, the tc egress counter too (a tcx link that
        # pybpf made itself, BPF_LINK_CREATE on libbpf 1.1: pinned with bpf_obj_pin)
        assert "skipped" not in r.stderr
        assert sorted(os.listdir(pin)) == ["counters", "egress", "rules", "tc_link",
                                           "xdp_link"]
        import pybpf

        tc = pybpf.Link.open_pinned(f"{pin}/tc_link")
        assert tc.info().type == "tcx"
        tc.detach()  # this fd only: the pin holds the link
        _egress_udp(pair, 4)  # counted on b's egress by the link the CLI left pinned
        egress = json.loads(fwcli("show", dev, "--netns", ns, "--json").stdout)["egress"]
        assert egress["ipv4/udp"]["packets"] == 4
        r = fwcli("attach", dev, "--netns", ns)
        assert r.returncode == 1 and "already has a pinned firewall" in r.stderr
        # The firewall outlived the CLI process: rules added by another process bite.
        r = fwcli("add", dev, "10.77.0.0/16", "--port", str(port), "--netns", ns)
        assert r.returncode == 0 and "rule 1: drop from 10.77.0.0/16" in r.stdout, r.stderr
        assert pair.send_udp(3, receiver=rx, wait=0.3) == 0
        r = fwcli("show", dev, "--netns", ns, "--json")
        assert r.returncode == 0, r.stderr
        shown = json.loads(r.stdout)
        assert shown["rules"] == [{"id": 1, "network": "10.77.0.0/16", "port": port,
                                   "action": "drop", "packets": 3, "bytes": _sent_bytes(3)}]
        r = fwcli("show", dev, "--netns", ns)
        lines = r.stdout.splitlines()
        assert lines[0].split() == ["ID", "SOURCE", "PORT", "ACTION", "PACKETS", "BYTES"]
        assert lines[1].split() == ["1", "10.77.0.0/16", str(port), "drop", "3",
                                    str(_sent_bytes(3))]
        r = fwcli("remove", dev, "10.77.0.0/16", "--port", str(port), "--netns", ns)
        assert r.returncode == 0, r.stderr
        assert pair.send_udp(3, receiver=rx) == 3
        r = fwcli("remove", dev, "10.77.0.0/16", "--port", str(port), "--netns", ns)
        assert r.returncode == 1 and "no rule" in r.stderr
        r = fwcli("detach", dev, "--netns", ns)
        assert r.returncode == 0, r.stderr
        assert not os.path.exists(pin)
        r = fwcli("show", dev, "--netns", ns)
        assert r.returncode == 1 and "no pinned firewall" in r.stderr
        r = fwcli("add", dev, "not-a-prefix", "--netns", ns)
        assert r.returncode == 1
    finally:
        rx.close()
        if os.path.isdir(pin):
            for name in os.listdir(pin):
                os.unlink(os.path.join(pin, name))
            os.rmdir(pin)
