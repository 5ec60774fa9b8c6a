"""XDP firewall: drop or pass packets by source prefix (and destination port), with counters.

    with Firewall("eth0") as fw:
        fw.add_rule("203.0.113.0/24", action="drop")          # every port
        fw.add_rule("10.0.0.0/8", port=22, action="pass")      # port rule wins
        ...
        for rule in fw.rules():
            print(rule.id, rule.network, rule.port, rule.action, rule.packets)
        print(fw.egress_counters())

Rules live in an LPM-trie map keyed by (destination port, family, source
address): a packet matches a rule for its TCP/UDP destination port first,
then a rule for any port; within each the longest prefix wins. Every rule has
a per-CPU counter (packets, bytes, summed over CPUs when read); packets that
no rule matches pass and count as the default (id 0). A tc program on the
interface's egress counts outgoing packets by (ethertype, IP protocol).

Rules change live (one map syscall each). ``pin=True`` pins the maps and links
under /sys/fs/bpf so the firewall outlives the process; :meth:`Firewall.open`
finds it again. That is what the CLI does::

    pybpf firewall attach eth0
    pybpf firewall add eth0 198.51.100.0/24 --port 80 --action drop
    pybpf firewall show eth0 [--json]
    pybpf firewall remove eth0 198.51.100.0/24 --port 80
    pybpf firewall detach eth0

``--netns NAME`` (an ``ip netns`` name) works on an interface of another
network namespace.
"""

from __future__ import annotations

import argparse
import contextlib
import errno as _errno
import ipaddress
import json
import os
import socket
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Union

from .. import Object, probe_path
from .._args import c_int, choice
from .._fs import BPFFS, ensure_bpffs
from ..errors import AttachError, BPFError, BPFTypeError, BPFValueError
from ..export.exporters import Exporters, add_flags
from ..export.metrics import Family, Series
from ..link import Link
from ..mapkinds import PerCPUArrayMap
from ..maps import Map, possible_cpus
from ..upgrade import UpgradeReport
from ._common import table

__all__ = ["Firewall", "Rule", "Counter", "main"]

MAX_RULES = 1024
XDP_DROP, XDP_PASS = 1, 2
ACTIONS = {"drop": XDP_DROP, "pass": XDP_PASS}
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
_ETH = {0x0800: "ipv4", 0x86DD: "ipv6", 0x0806: "arp"}
_IPPROTO = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}


@dataclass(frozen=True)
class Counter:
    """Packets and bytes (frame length), summed over CPUs."""

    packets: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class Rule:
    """A rule: ``network`` (source prefix), ``port`` (None = any), ``action``, counters."""

    id: int
    network: Network
    port: int | None
    action: str
    packets: int = 0
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "network": str(self.network), "port": self.port,
                "action": self.action, "packets": self.packets, "bytes": self.bytes}


def _network(source: str | Network) -> Network:
    if isinstance(source, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return source
    if not isinstance(source, str):
        raise BPFTypeError(_errno.EINVAL, f"firewall: a source prefix is a str such as "
                                          f"'10.0.0.0/8', got {type(source).__name__}")
    try:
        return ipaddress.ip_network(source, strict=False)
    except ValueError as exc:
        raise BPFValueError(_errno.EINVAL, f"firewall: not an IP prefix: {source!r} "
                                           f"({exc})") from None


# The rules map's keys and values (struct fw_key, struct fw_rule of firewall.bpf.c) go
# through the map's own codecs, from its BTF: the one place that knows their layout.

def _key(rules: Map, net: Network, port: int | None) -> bytes:
    """The fw_key of ``net`` and ``port`` (its port in network order, as XDP reads it)."""
    if port is not None:
        port = c_int(port, "firewall: port", "u16", lo=1,
                     want="1-65535 (or None for any port)")
    return bytes(rules.key_type.encode({  # type: ignore[attr-defined]
        "prefixlen": 32 + net.prefixlen, "port": socket.htons(port or 0),
        "family": net.version, "addr": net.network_address.packed}))


def _unkey(rules: Map, raw: bytes) -> tuple[Network, int | None]:
    k = rules.key_type.decode(raw)  # type: ignore[attr-defined]
    addr = bytes(k.addr)
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = (
        ipaddress.IPv4Address(addr[:4]) if k.family == 4 else ipaddress.IPv6Address(addr))
    return ipaddress.ip_network(f"{ip}/{k.prefixlen - 32}"), socket.ntohs(k.port) or None


def _rule(rules: Map, raw: bytes) -> tuple[int, int]:
    """(id, action) of a fw_rule value."""
    v = rules.value_type.decode(raw)  # type: ignore[attr-defined]
    return int(v.id), int(v.action)


def _sum_counters(raw: bytes) -> Counter:
    n = possible_cpus()
    stride = len(raw) // n  # a build may add counter fields after packets and bytes
    pk = by = 0
    for i in range(n):
        p, b = struct.unpack_from("<QQ", raw, i * stride)
        pk += p
        by += b
    return Counter(pk, by)


@contextlib.contextmanager
def _in_netns(netns: str | None) -> Iterator[None]:
    """Run the block with this thread in network namespace ``netns`` (name or path)."""
    if not netns:
        yield
        return
    from .._netns import _setns

    path = netns if "/" in netns else f"/run/netns/{netns}"
    try:
        there = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise BPFError(exc.errno or _errno.ENOENT, f"network namespace {netns!r}: "
                                                   f"{exc.strerror} ({path})") from None
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(there)
        try:
            yield
        finally:
            _setns(here)
    finally:
        os.close(here)
        os.close(there)


def pin_dir_for(ifname: str, netns: str | None = None) -> str:
    """Where a pinned firewall for ``ifname`` (in ``netns``) lives in bpffs."""
    with _in_netns(netns):
        ino = os.stat("/proc/thread-self/ns/net").st_ino
    return f"{BPFFS}/pybpf-fw-{ino}-{ifname}"


class Firewall:
    """The XDP firewall on one interface. A context manager; see the module docs.

    ``mode`` is the XDP mode ("auto", "native", "skb"); ``egress=False`` skips
    the tc egress counter; ``netns`` names the interface's network namespace.
    With ``pin=True`` maps and links are pinned in bpffs (see :meth:`open`)
    and stay attached after :meth:`close`; :meth:`detach` removes them.
    """

    def __init__(self, ifname: str, *, mode: str = "auto", egress: bool = True,
                 netns: str | None = None, pin: bool = False) -> None:
        self.ifname = ifname
        self.netns = netns
        self.obj: Object | None = None
        self._links: list[Link] = []
        self.pin_dir: str | None = None
        self._maps: dict[str, Map] = {}
        self._owned: list[Map] = []
        if pin:
            where = pin_dir_for(ifname, netns)
            if os.path.exists(where):
                raise BPFError(_errno.EEXIST, f"firewall: {ifname} already has a pinned "
                                              f"firewall at {where} (pybpf firewall detach "
                                              f"{ifname})")
        obj = Object.open(probe_path("firewall"))
        try:
            if not egress:
                obj.programs["firewall_egress"].autoload = False
            obj.load()
            with _in_netns(netns):
                try:
                    socket.if_nametoindex(ifname)
                except OSError:
                    where = f" in network namespace {netns!r}" if netns else ""
                    raise AttachError(_errno.ENODEV, f"firewall: no network interface "
                                                     f"{ifname!r}{where}",
                                      target=ifname) from None
                self._links.append(obj.programs["firewall_xdp"].attach_xdp(ifname, mode=mode))
                if egress:
                    self._links.append(obj.programs["firewall_egress"].attach_tc(
                        ifname, "egress"))
            self.obj = obj
            self._maps = {n: obj.maps[n] for n in ("rules", "counters", "egress")}
            if pin:
                self._pin()
        except BaseException:
            obj.close()
            raise

    def _pin(self) -> None:
        path = pin_dir_for(self.ifname, self.netns)
        ensure_bpffs()
        if os.path.exists(path):
            raise BPFError(_errno.EEXIST, f"firewall: {self.ifname} already has a pinned "
                                          f"firewall at {path} (pybpf firewall detach "
                                          f"{self.ifname})")
        os.mkdir(path)
        self.pin_dir = path
        try:
            for name, m in self._maps.items():
                m.pin(f"{path}/{name}")
            for link, name in zip(self._links, ("xdp_link", "tc_link")):
                try:
                    link.pin(f"{path}/{name}")
                except BPFError:
                    if name == "xdp_link":
                        raise
                    # A netlink tc filter (no tcx) is not a link: no egress when pinned.
                    link.detach()
                    self._links.remove(link)
                    print("pybpf firewall: egress counting needs tcx links (kernel 6.6+) "
                          "when pinned; skipped", file=sys.stderr)
        except BaseException:
            self._unpin_all()
            raise

    @classmethod
    def open(cls, ifname: str, *, netns: str | None = None) -> Firewall:
        """The pinned firewall of ``ifname`` (made by ``Firewall(..., pin=True)``)."""
        path = pin_dir_for(ifname, netns)
        if not os.path.isdir(path):
            raise BPFError(_errno.ENOENT, f"firewall: no pinned firewall for {ifname!r} "
                                          f"({path} does not exist; pybpf firewall attach "
                                          f"{ifname})")
        self = cls.__new__(cls)
        self.ifname, self.netns, self.obj, self._links = ifname, netns, None, []
        self.pin_dir = path
        self._maps, self._owned = {}, []
        try:
            for name in ("rules", "counters", "egress"):
                m = Map.open_pinned(f"{path}/{name}")
                self._maps[name] = m
                self._owned.append(m)
        except BaseException:
            self.close()
            raise
        return self

    # --- rules --------------------------------------------------------------------
    def add_rule(self, source: str | Network, *, action: str = "drop",
                 port: int | None = None) -> Rule:
        """Add (or replace) the rule for exactly ``source`` and ``port``; returns it. A
        prefix nested in another (a /24 inside a /16) is a rule of its own, with its own
        id and counters. Costs a walk of the rules (two syscalls each), then two updates."""
        choice(action, ACTIONS, "firewall: action")
        net = _network(source)
        rules = self._maps["rules"]
        key = _key(rules, net, port)
        # An LPM trie's lookup is a longest-prefix match: a /24 inside an existing /16
        # would find the /16's rule and share its id and counters. Find this exact
        # prefix and port among the rules instead (one walk; remove_rule's delete is
        # exact already).
        table = dict(rules.items_raw())
        existing = table.get(key)
        if existing is not None:
            rid = _rule(rules, existing)[0]
        else:
            used = {_rule(rules, v)[0] for v in table.values()}
            rid = next((i for i in range(1, MAX_RULES) if i not in used), 0)
            if not rid:
                raise BPFError(_errno.ENOSPC, f"firewall: all {MAX_RULES - 1} rules are used")
            # A fresh id starts from zero.
            self._maps["counters"].update(rid.to_bytes(4, "little"),
                                          bytes(16 * possible_cpus()))
        rules.update(key, bytes(rules.value_type.encode(  # type: ignore[attr-defined]
            {"id": rid, "action": ACTIONS[action]})))
        return Rule(rid, net, port, action)

    def remove_rule(self, source: str | Network, *, port: int | None = None) -> bool:
        """Remove the rule for ``source`` and ``port``; False if there was none."""
        rules = self._maps["rules"]
        return rules.delete(_key(rules, _network(source), port))

    def rules(self) -> list[Rule]:
        """Every rule with its counters, by id."""
        out = []
        rules = self._maps["rules"]
        for k, v in rules.items_raw():
            net, port = _unkey(rules, k)
            rid, action = _rule(rules, v)
            c = self._counter(rid)
            out.append(Rule(rid, net, port, "drop" if action == XDP_DROP else "pass",
                            c.packets, c.bytes))
        return sorted(out, key=lambda r: r.id)

    def default_counter(self) -> Counter:
        """Packets that matched no rule (and passed)."""
        return self._counter(0)

    def _counter(self, rid: int) -> Counter:
        """Rule ``rid``'s counters summed over CPUs (the typed per-CPU array's sum())."""
        counters = self._maps["counters"]
        if isinstance(counters, PerCPUArrayMap):
            total = counters.sum(rid)
            return Counter(int(total.packets), int(total.bytes))
        raw = counters.lookup(rid.to_bytes(4, "little"))  # a map without BTF
        return _sum_counters(raw) if raw is not None else Counter()

    def egress_counters(self) -> dict[str, Counter]:
        """Outgoing packets by ``"ipv4/udp"``-style protocol name."""
        out = {}
        for k, v in self._maps["egress"].items_raw():
            eth, ipp, _ = struct.unpack("<HBB", k)
            name = _ETH.get(eth, f"0x{eth:04x}")
            if eth in (0x0800, 0x86DD):
                name += "/" + _IPPROTO.get(ipp, str(ipp))
            out[name] = _sum_counters(v)
        return out

    # --- lifetime -------------------------------------------------------------------
    def upgrade(self, source: str | os.PathLike[str], **options: Any) -> UpgradeReport:
        """Replace the running firewall by a new build of its object (``source``) while
        traffic flows: rules and counters carry over, the XDP and tcx links switch
        atomically (see :meth:`pybpf.Object.upgrade`; ``options`` go there). The old
        build stays live if the upgrade is refused. A pinned firewall is upgraded with
        ``pybpf upgrade`` instead."""
        if self.obj is None:
            raise BPFError(_errno.EINVAL, "firewall: this handle has no loaded object (a "
                                          "pinned firewall opened by open(): use pybpf "
                                          "upgrade on its pin directory)")
        new = self.obj.upgrade(source, **options)
        self.obj = new
        self._links = new.links
        self._maps = {n: new.maps[n] for n in ("rules", "counters", "egress")}
        assert new.upgrade_report is not None
        return new.upgrade_report

    def _unpin_all(self) -> None:
        if not self.pin_dir:
            return
        for name in ("xdp_link", "tc_link", "rules", "counters", "egress"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.pin_dir}/{name}")
        with contextlib.suppress(OSError):
            os.rmdir(self.pin_dir)

    def detach(self) -> None:
        """Take the firewall off the interface (and remove its pins) for good.

        Works on a handle from :meth:`open` too: the pins are the last
        references to the links, so removing them detaches the programs."""
        self._unpin_all()
        self.pin_dir = None
        for link in self._links:
            link.detach()
        self._links = []
        self.close()

    def close(self) -> None:
        """Release this handle. A pinned firewall stays attached; others are detached."""
        for m in self._owned:
            m.close()
        self._owned = []
        if self.obj is not None:
            # Closing a BPF link's fd detaches it only if no pin holds it.
            self.obj.close()
            self.obj = None
        self._links = []

    def __enter__(self) -> Firewall:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def firewall_metrics(fw: Firewall) -> list[Family]:
    """The firewall's counters as metric families, read now (a walk of the rules and one
    lookup per counter): ``pybpf_firewall_rule_{packets,bytes}_total`` by ``rule``,
    ``network``, ``port``, ``action`` (rule 0: no rule matched, passed) and
    ``pybpf_firewall_egress_{packets,bytes}_total`` by ``proto``."""
    base = {"ifname": fw.ifname}
    rows = [({**base, "rule": str(r.id), "network": str(r.network),
              "port": str(r.port or "any"), "action": r.action}, Counter(r.packets, r.bytes))
            for r in fw.rules()]
    rows.append(({**base, "rule": "0", "network": "any", "port": "any", "action": "pass"},
                 fw.default_counter()))
    egress = sorted(fw.egress_counters().items())
    out = []
    for what in ("packets", "bytes"):
        out.append(Family(f"pybpf_firewall_rule_{what}", "counter",
                          f"{what} matched by each rule (XDP ingress)",
                          [Series(lb, getattr(c, what)) for lb, c in rows]))
        out.append(Family(f"pybpf_firewall_egress_{what}", "counter",
                          f"{what} sent, by protocol (tc egress)",
                          [Series({**base, "proto": k}, getattr(c, what)) for k, c in egress]))
    return out


def _serve(fw: Firewall, args: argparse.Namespace) -> None:
    """Export the counters until SIGTERM or Ctrl-C (read at scrape/export time)."""
    import signal
    import threading

    done = threading.Event()
    old = signal.signal(signal.SIGTERM, lambda *a: done.set())
    try:
        with Exporters.from_args(args, "firewall") as exp:
            exp.add_metrics(lambda: firewall_metrics(fw))
            print("Exporting firewall counters... Hit Ctrl-C to end.", file=sys.stderr,
                  flush=True)
            try:
                while not done.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
    finally:
        signal.signal(signal.SIGTERM, old)


def _print_show(fw: Firewall, as_json: bool) -> None:
    rules = fw.rules()
    default = fw.default_counter()
    egress = fw.egress_counters()
    if as_json:
        print(json.dumps({"interface": fw.ifname, "rules": [r.to_dict() for r in rules],
                          "default": default.__dict__,
                          "egress": {k: v.__dict__ for k, v in sorted(egress.items())}}))
        return
    rows: list[list[str]] = [["ID", "SOURCE", "PORT", "ACTION", "PACKETS", "BYTES"]]
    rows += [[str(r.id), str(r.network), str(r.port or "any"), r.action, str(r.packets),
              str(r.bytes)] for r in rules]
    rows.append(["-", "(no rule)", "any", "pass", str(default.packets), str(default.bytes)])
    print(table(rows, right={0, 4, 5}))
    if egress:
        print()
        rows = [["EGRESS", "PACKETS", "BYTES"]]
        rows += [[k, str(v.packets), str(v.bytes)] for k, v in sorted(egress.items())]
        print(table(rows, right={1, 2}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="pybpf firewall",
        description="An XDP firewall by source prefix and port, with per-rule counters and "
                    "a tc egress counter; rules change live.",
        epilog="examples:\n  pybpf firewall attach eth0\n"
               "  pybpf firewall add eth0 198.51.100.0/24 --port 80 --action drop\n"
               "  pybpf firewall show eth0 --json\n"
               "  pybpf firewall show eth0 --prometheus 0.0.0.0:9435   # and keep exporting\n"
               "  pybpf firewall remove eth0 198.51.100.0/24 --port 80\n"
               "  pybpf firewall detach eth0",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("ifname", help="network interface")
    common.add_argument("--netns", help="the interface's network namespace (ip netns name)")
    p = sub.add_parser("attach", parents=[common], help="load, attach and pin the firewall")
    p.add_argument("--mode", choices=("auto", "native", "skb"), default="auto",
                   help="XDP mode (default: native if the driver has it)")
    p.add_argument("--no-egress", action="store_true", help="no tc egress counter")
    for name, hlp in (("add", "add or replace a rule"), ("remove", "remove a rule")):
        p = sub.add_parser(name, parents=[common], help=hlp,
                           aliases=["del"] if name == "remove" else [])
        p.add_argument("source", help="source prefix, e.g. 10.0.0.0/8 or 2001:db8::/32")
        p.add_argument("--port", type=int, help="destination port (default: any)")
        if name == "add":
            p.add_argument("--action", choices=("drop", "pass"), default="drop")
    p = sub.add_parser("show", parents=[common], help="rules and counters; with --prometheus "
                       "or --otlp, then export them until SIGTERM/Ctrl-C")
    p.add_argument("--json", action="store_true", help="as JSON")
    add_flags(p)
    sub.add_parser("detach", parents=[common], help="detach and unpin")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "attach":
            fw = Firewall(args.ifname, mode=args.mode, egress=not args.no_egress,
                          netns=args.netns, pin=True)
            print(f"firewall attached to {args.ifname}, pinned at {fw.pin_dir}")
            fw.close()
            return 0
        fw = Firewall.open(args.ifname, netns=args.netns)
        with fw:
            if args.cmd == "add":
                rule = fw.add_rule(args.source, action=args.action, port=args.port)
                print(f"rule {rule.id}: {rule.action} from {rule.network} to port "
                      f"{rule.port or 'any'}")
            elif args.cmd in ("remove", "del"):
                if not fw.remove_rule(args.source, port=args.port):
                    print(f"pybpf firewall: no rule for {args.source} port "
                          f"{args.port or 'any'}", file=sys.stderr)
                    return 1
            elif args.cmd == "show":
                _print_show(fw, args.json)
                if args.prometheus or args.otlp:
                    sys.stdout.flush()
                    _serve(fw, args)
            elif args.cmd == "detach":
                fw.detach()  # removing the last pin of a link detaches it
                print(f"firewall detached from {args.ifname}")
        return 0
    except ValueError as exc:
        print(f"pybpf firewall: {exc}", file=sys.stderr)
        return 2
    except BPFError as exc:
        print(f"pybpf firewall: {exc}", file=sys.stderr)
        return 1
