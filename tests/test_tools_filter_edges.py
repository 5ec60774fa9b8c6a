"""The shipped probes' filters at their edges and addresses the kernel tells apart,
against activity the test causes: ``ExecSnoop(uid=0)`` (root is a real filter value,
not "no filter"), OpenSnoop's comm filter (the whole name, not a prefix) and
TcpConnect with a source address different from the destination."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
import time

import pytest
from test_tools_probes import NOBODY, _exec_when_told, _run_children

from pybpf.tools.execsnoop import ExecSnoop
from pybpf.tools.opensnoop import OpenSnoop
from pybpf.tools.tcpconnect import TcpConnect

pytestmark = pytest.mark.kernel


def _collect(session, until, timeout=5.0):
    """Events until ``until(events)`` is true or ``timeout`` passes, then 0.3 s more
    (anything a filter should have kept out but let through)."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(got):
        got.extend(session.events(timeout=0.1))
    got.extend(session.events(timeout=0.3))
    return got


def _exec_as(argv: list[str], uid: int | None) -> int:
    """Run ``argv`` in a child that first becomes ``uid`` (None: stays root); its pid."""
    child = _exec_when_told(argv, uid)
    _run_children([child])
    return child[0]


def test_execsnoop_uid_0_is_a_filter():
    """uid 0 keeps only root's execs: a nobody exec in between must not show."""
    mark = f"pybpf-uid0-{os.getpid()}"
    with ExecSnoop(uid=0, ring_bytes=16 << 20) as snoop:
        nobody = _exec_as(["/bin/true", mark, "nobody"], NOBODY)
        root = _exec_as(["/bin/true", mark, "root"], None)
        evs = _collect(snoop, lambda g: root in {e.pid for e in g})
    assert {e.uid for e in evs} == {0}, [(e.pid, e.uid, e.argv) for e in evs if e.uid]
    mine = [(e.pid, e.argv) for e in evs if mark in e.argv]
    assert mine == [(root, ["/bin/true", mark, "root"])]
    assert nobody not in {e.pid for e in evs}


def test_opensnoop_comm_filter_is_the_whole_name(tmp_path):
    """``comm=NAME`` keeps NAME's opens, not those of a command whose name starts with
    NAME (nor of one whose name NAME starts with)."""
    comm = f"pyc{os.getpid() % 100000}"
    progs = {}
    for name in (comm, comm + "x", comm[:-1]):
        progs[name] = tmp_path / name
        shutil.copy("/bin/cat", progs[name])
    with OpenSnoop(comm=comm) as snoop:
        for name, prog in progs.items():
            target = tmp_path / f"opened-by-{name}"
            target.write_text("x")
            subprocess.run([str(prog), str(target)], stdout=subprocess.DEVNULL, check=True)
        evs = _collect(snoop, lambda g: any(e.path.endswith(f"opened-by-{comm}") for e in g))
    assert {e.comm for e in evs} == {comm}
    assert [e.path for e in evs if "opened-by-" in e.path] == [
        str(tmp_path / f"opened-by-{comm}")]


def test_tcpconnect_source_and_destination_addresses_differ():
    """A connect from 127.0.0.3 to 127.0.0.2: each address in its own field (on
    loopback to 127.0.0.1 both are the same, and a swap would not show)."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.2", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        c.bind(("127.0.0.3", 0))
        sport = c.getsockname()[1]
        with TcpConnect(pid=os.getpid()) as tc:
            c.connect(("127.0.0.2", port))
            evs = _collect(tc, lambda g: any(e.dport == port for e in g))
    finally:
        c.close()
        srv.close()
    mine = [(e.saddr, e.sport, e.daddr, e.dport, e.version) for e in evs if e.dport == port]
    assert mine == [(ipaddress.IPv4Address("127.0.0.3"), sport,
                     ipaddress.IPv4Address("127.0.0.2"), port, 4)]
