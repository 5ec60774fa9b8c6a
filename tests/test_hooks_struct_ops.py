"""struct_ops as BPF links: a BPF TCP congestion control (SEC(".struct_ops.link"),
which libbpf 1.1 does not know) is registered by a link, selected by real loopback
connections with setsockopt(TCP_CONGESTION), swapped atomically for a second
implementation with BPF_LINK_UPDATE, and unregistered when the link closes. The
programs count their own calls.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading

import pytest
from conftest import require

import pybpf
from pybpf import features

pytestmark = pytest.mark.kernel

CC_A_INIT, CC_A_ACK, CC_B_INIT, CC_B_ACK = range(4)
TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", 13)


@pytest.fixture
def cc(bpf_obj):
    require(features.struct_ops_link())
    name = f"pyb{os.getpid():012d}"[:15]
    data = open(bpf_obj("hooks_cc"), "rb").read()
    data = data.replace(b"PYBPFCCA0000000", name.encode()).replace(b"PYBPFCCB0000000",
                                                                  name.encode())
    obj = pybpf.Object.open(data, name="hooks_cc")
    obj.load()
    yield obj, name
    obj.close()


def calls(obj: pybpf.Object) -> list[int]:
    return [struct.unpack("<Q", obj.maps["calls"].lookup(struct.pack("<I", i)))[0]
            for i in range(4)]


def connect_and_send(name: str, nbytes: int = 1 << 20) -> None:
    """One loopback TCP connection whose client uses CC ``name``, sending nbytes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got = []

    def serve() -> None:
        conn, _ = srv.accept()
        n = 0
        while chunk := conn.recv(1 << 16):
            n += len(chunk)
        got.append(n)
        conn.close()

    t = threading.Thread(target=serve)
    t.start()
    cli = socket.socket()
    try:
        cli.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, name.encode())
        cli.connect(srv.getsockname())
        assert cli.getsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, 16).rstrip(b"\0") \
            == name.encode()
        cli.sendall(b"x" * nbytes)
    finally:
        cli.close()
        t.join(10)
        srv.close()
    assert got == [nbytes]


def test_register_select_update_unregister(cc):
    obj, name = cc
    assert obj.maps["cc_a"].flags & (1 << 13)  # BPF_F_LINK from .struct_ops.link
    link = obj.maps["cc_a"].attach_struct_ops()
    assert link.info().type == "struct_ops"
    with open("/proc/sys/net/ipv4/tcp_available_congestion_control") as f:
        assert name in f.read().split()
    for _ in range(3):
        connect_and_send(name)
    a = calls(obj)
    assert a[CC_A_INIT] == 3 and a[CC_A_ACK] > 0
    assert a[CC_B_INIT] == a[CC_B_ACK] == 0

    link.update_map(obj.maps["cc_b"])  # same name, new implementation, no gap
    for _ in range(2):
        connect_and_send(name)
    b = calls(obj)
    assert b[CC_A_INIT] == 3 and b[CC_B_INIT] == 2 and b[CC_B_ACK] > 0

    link.detach()
    with open("/proc/sys/net/ipv4/tcp_available_congestion_control") as f:
        assert name not in f.read().split()
    s = socket.socket()
    with pytest.raises(OSError) as ei:
        s.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, name.encode())
    s.close()
    assert ei.value.errno == errno.ENOENT


def test_unregistered_when_object_closes(cc):
    obj, name = cc
    obj.maps["cc_a"].attach_struct_ops()
    with open("/proc/sys/net/ipv4/tcp_available_congestion_control") as f:
        assert name in f.read().split()
    obj.close()
    with open("/proc/sys/net/ipv4/tcp_available_congestion_control") as f:
        assert name not in f.read().split()


def test_errors(cc):
    obj, name = cc
    with pytest.raises(pybpf.MapError, match="not a struct_ops map"):
        obj.maps["calls"].attach_struct_ops()
    with pytest.raises(pybpf.AttachError, match="register its map"):
        obj.programs["a_init"].attach()
    obj.maps["cc_a"].attach_struct_ops()
    with pytest.raises(pybpf.AttachError) as ei:
        obj.maps["cc_b"].attach_struct_ops()  # same name registered twice
    assert ei.value.errno == errno.EEXIST


def test_object_attach_registers_struct_ops_link_maps(bpf_obj):
    """Object.attach() registers every .struct_ops.link map (here two congestion controls
    under two names), each by a link among those it returns; connections select each
    name and reach its programs; closing the object unregisters both."""
    require(features.struct_ops_link())
    name_a, name_b = (f"py{c}{os.getpid():012d}"[:15] for c in "ab")  # 15: in place
    data = open(bpf_obj("hooks_cc"), "rb").read()
    data = data.replace(b"PYBPFCCA0000000", name_a.encode()).replace(b"PYBPFCCB0000000",
                                                                    name_b.encode())
    obj = pybpf.Object.open(data, name="hooks_cc")
    try:
        links = obj.attach()  # loads, then registers
        assert sorted(link.program for link in links) == ["struct_ops cc_a", "struct_ops cc_b"]
        assert {link.info().type for link in links} == {"struct_ops"}
        with open("/proc/sys/net/ipv4/tcp_available_congestion_control") as f:
            assert {name_a, name_b} <= set(f.read().split())
        connect_and_send(name_a)
        connect_and_send(name_b)
        connect_and_send(name_b)
        got = calls(obj)
        assert got[CC_A_INIT] == 1 and got[CC_B_INIT] == 2
        assert got[CC_A_ACK] > 0 and got[CC_B_ACK] > 0
    finally:
        obj.close()
    with open("/proc/sys/net/ipv4/tcp_available_congestion_control") as f:
        assert not {name_a, name_b} & set(f.read().split())
