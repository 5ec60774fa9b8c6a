"""Map views (keys/values/items like dict's) and the fd-valued and local-storage map
kinds: xskmap with a real AF_XDP socket, sk_storage on a loopback TCP connection,
cgrp_storage keyed by a cgroup fd, inode_storage (tests/bpf/mapkinds_more.bpf.c)."""

from __future__ import annotations

import collections.abc as cabc
import errno
import os
import socket
import subprocess
import sys

import pytest
from attach_util import in_netns, new_cgroup, veth_pair
from conftest import require

import pybpf
from pybpf import MapError, features
from pybpf.mapkinds import LocalStorageMap, MapItemsView, MapKeysView, MapValuesView, XSKMap

PKT = bytes(64)


@pytest.fixture
def tm(bpf_obj):
    obj = pybpf.load(bpf_obj("typed_maps"))
    yield obj
    obj.close()


# --- keys()/values()/items() are views -------------------------------------------------

def test_views_are_live_reiterable_and_sized(tm):
    m = tm.maps["vals"]
    Val = tm.btf["val"].pytype
    ks, vs, its = m.keys(), m.values(), m.items()
    assert isinstance(ks, MapKeysView) and isinstance(ks, cabc.KeysView)
    assert isinstance(vs, MapValuesView) and isinstance(vs, cabc.ValuesView)
    assert isinstance(its, MapItemsView) and isinstance(its, cabc.ItemsView)
    assert len(ks) == len(vs) == len(its) == 0 and list(ks) == [] and 1 not in ks
    m[1] = Val(count=5)
    tm.programs["derive"].test_run(PKT)  # the kernel adds key 2 = f(key 1)
    # the views made before the inserts see them (live, like dict views) ...
    assert len(ks) == 2 and sorted(ks) == [1, 2] and 2 in ks and 3 not in ks
    # ... and can be iterated again and again (each iteration walks the map afresh)
    assert sorted(ks) == sorted(ks) == [1, 2]
    assert sorted(v.count for v in vs) == [5, 10] and Val(count=5) in vs
    assert dict(its) == {1: Val(count=5), 2: m[2]} and (1, Val(count=5)) in its
    assert (1, Val(count=6)) not in its and (9, Val()) not in its and "x" not in its
    # set behaviour of keys views, as for dict.keys()
    assert ks == {1, 2} and ks & {2, 3} == {2} and ks | {7} == {1, 2, 7} and ks - {1} == {2}
    assert isinstance(ks & {2}, set) and ks.isdisjoint({8, 9})
    del m[1]
    assert list(ks) == [2] and len(its) == 1
    assert repr(ks) == "MapKeysView(<map 'vals' (hash)>)"


def test_items_view_of_a_big_map_uses_batches(tm):
    m = tm.maps["churn"]  # u32 -> u64 hash, 4096 entries
    m.update({i: i * 3 for i in range(3000)})
    calls = []
    batches = m._batches

    def counting(**kw):
        it = batches(**kw)
        calls.append(kw)
        return it

    m._batches = counting  # spy on our own walk: which path the view takes
    items = m.items()
    assert sum(1 for _ in items) == 3000 and len(calls) == 1
    got = dict(items)  # a second pass over the same view, batched again
    assert len(calls) == 2 and got == {i: i * 3 for i in range(3000)}
    assert sum(m.values()) == 3 * sum(range(3000)) and len(calls) == 3
    assert len(m.keys()) == 3000


def test_views_of_sparse_and_keyless_kinds(tm):
    with pybpf.create_map("cpumap", 4, 4, 2, name="pyviewcpu") as cm:
        cm[1] = 256
        assert list(cm.keys()) == [1] and list(cm.items()) == [(1, 256)]
        assert list(cm.values()) == [256] and 1 in cm.keys() and 0 not in cm.keys()
    with pytest.raises(TypeError, match="has no keys"):
        tm.maps["fifo"].keys()
    with pytest.raises(TypeError, match="cannot be iterated"):
        tm.maps["tstore"].items()


# --- fd- and ifindex-valued kinds ------------------------------------------------------

def test_sockmap_devmap_hash_and_cpumap_value_kinds():
    from pybpf.mapkinds import CPUMap, DevMap, SockMap

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    cli = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    try:
        with pybpf.create_map("sockmap", 4, 8, 4, name="pysockmap") as sm:
            assert isinstance(sm, SockMap)
            sm[2] = cli  # a socket object; its fd works too
            sm[3] = conn.fileno()
            cookie = int.from_bytes(cli.getsockopt(socket.SOL_SOCKET, 57, 8), "little")
            assert sm[2] == cookie and sm.get(0) is None  # value read back: SO_COOKIE
            assert dict(sm.items()) == {2: cookie, 3: sm[3]} and len(sm.keys()) == 2
            del sm[2]
            assert list(sm.keys()) == [3] and 2 not in sm
            with open(os.devnull) as f, pytest.raises(MapError) as ei:
                sm[1] = f.fileno()  # not a socket
            assert ei.value.errno == errno.ENOTSOCK and "map 'pysockmap'" in str(ei.value)
    finally:
        for s in (cli, conn, srv):
            s.close()
    with pybpf.create_map("devmap_hash", 4, 4, 8, name="pydevhash") as dh:
        assert isinstance(dh, DevMap)
        dh[1000] = "lo"  # interface names become ifindexes
        assert dh[1000] == socket.if_nametoindex("lo") and list(dh.keys()) == [1000]
        with pytest.raises(OSError):
            dh[1] = "pybpf-no-such-if"
    # struct bpf_cpumap_val {u32 qsize; u32 bpf_prog.fd}: without BTF, the raw bytes
    with pybpf.create_map("cpumap", 4, 8, 1, name="pycpuval") as cv:
        assert isinstance(cv, CPUMap)
        cv[0] = (128).to_bytes(4, "little") + bytes(4)
        assert cv[0][:4] == (128).to_bytes(4, "little")


# --- socket local storage (sk_storage) ---------------------------------------------------

@pytest.fixture
def km(bpf_obj):
    """mapkinds_more.bpf.o loaded (its programs are attached by the tests that use them)."""
    obj = pybpf.load(bpf_obj("mapkinds_more"))
    yield obj
    obj.close()


def test_sk_storage_keyed_by_a_socket_on_a_loopback_connection(km):
    sk = km.maps["skst"]
    assert isinstance(sk, LocalStorageMap) and sk.type == "sk_storage"
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    cli = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    try:
        km.bss.server_port = srv.getsockname()[1]
        sk[conn] = {"tag": 77}  # Python creates the server socket's storage first
        assert sk[conn.fileno()] == km.btf["sk_val"].pytype(segments=0, tag=77, port=0)
        with km.programs["on_tcp_probe"].attach():
            for _ in range(5):
                cli.sendall(b"x" * 10)
                assert conn.recv(100) == b"x" * 10
        v = sk[conn]  # what the kernel wrote into this socket's storage
        assert (v.segments, v.tag, v.port) == (5, 77, cli.getsockname()[1])
        assert km.bss.sk_seen_tag == 77  # and what it read there: Python's tag
        assert sk.get(cli) is None and cli not in sk and conn in sk  # per socket
        del sk[conn]
        assert conn not in sk
        with pytest.raises(KeyError):
            del sk[conn]
        with pytest.raises(TypeError, match="the key is an fd or an object with fileno"):
            sk[1.5] = {}
    finally:
        for s in (cli, conn, srv):
            s.close()


def test_sk_storage_needs_a_socket_fd(km, tmp_path):
    with open(tmp_path / "f", "w") as f, pytest.raises(MapError) as ei:
        km.maps["skst"][f] = {"tag": 1}
    assert ei.value.errno == errno.ENOTSOCK and "map 'skst'" in str(ei.value)


# --- cgroup local storage (cgrp_storage) ------------------------------------------------

def _require_map_type(name: str) -> None:
    if not features.map_types().get(name):
        pytest.skip(f"{name}: the kernel has no BPF_MAP_TYPE_{name.upper()} "
                    "(libbpf_probe_bpf_map_type)")


def test_cgrp_storage_keyed_by_a_cgroup_fd(bpf_obj):
    if not features.map_types().get("cgrp_storage"):  # before 6.2: refused by name
        with pytest.raises(pybpf.NotSupportedError, match="cannot create map 'cgst' of "
                           "mapkinds_cgrp: the kernel has no cgrp_storage maps"):
            pybpf.load(bpf_obj("mapkinds_cgrp"))
    _require_map_type("cgrp_storage")
    with pybpf.load(bpf_obj("mapkinds_cgrp")) as km:
        _check_cgrp_storage(km)


def _check_cgrp_storage(km: pybpf.Object) -> None:
    cg = km.maps["cgst"]
    assert isinstance(cg, LocalStorageMap) and cg.type == "cgrp_storage"
    magic = 0x7FF0_0000 + os.getpid()  # no such process group: ESRCH, but traced
    km.bss.magic_pgid = magic
    code = (f"import os\nfor _ in range(4):\n    try:\n        os.getpgid({magic})\n"
            "    except OSError:\n        pass\n")
    with new_cgroup() as path, km.programs["on_sys_enter"].attach():
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            cg[fd] = {"tag": 5}

            def join() -> None:
                with open(os.path.join(path, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))

            subprocess.run([sys.executable, "-c", code], preexec_fn=join, check=True)
            for _ in range(3):  # this process is not in that cgroup: not counted
                with pytest.raises(OSError):
                    os.getpgid(magic)
            v = cg[fd]
            assert (v.calls, v.tag) == (4, 5) and km.bss.cg_seen_tag == 5
            del cg[fd]
            assert fd not in cg
        finally:
            os.close(fd)


def test_map_types_newer_than_libbpf_are_named_by_number():
    from pybpf.maps import map_type_name

    assert map_type_name(32) == "cgrp_storage"  # BPF_MAP_TYPE_CGRP_STORAGE
    assert map_type_name(33) == "arena"  # unknown to libbpf 1.1
    assert map_type_name(200) == "map_type_200"


# --- inode local storage ----------------------------------------------------------------

def test_inode_storage_keyed_by_any_fd_of_the_file(bpf_obj, tmp_path):
    _require_map_type("inode_storage")
    obj = pybpf.Object.open(bpf_obj("mapkinds_inode"))
    obj.programs["count_open"].autoload = False  # an LSM program: tested below
    with obj:
        obj.load()
        m = obj.maps["inost"]
        assert isinstance(m, LocalStorageMap) and m.type == "inode_storage"
        (tmp_path / "a").write_text("a")
        (tmp_path / "b").write_text("b")
        os.link(tmp_path / "a", tmp_path / "a2")
        with open(tmp_path / "a") as fa, open(tmp_path / "a2") as fa2, \
                open(tmp_path / "b") as fb:
            m[fa] = {"tag": 3}
            # the storage belongs to the inode: another open file of it sees it
            assert m[fa2.fileno()].tag == 3 and fb not in m
            m[fb] = {"tag": 4, "opens": 1}
            assert (m[fa].tag, m[fb].tag) == (3, 4)
            del m[fa2]
            assert fa not in m and m.get(fa) is None
        with pytest.raises(TypeError, match="cannot be iterated"):
            len(m)


def test_inode_storage_from_an_lsm_program(bpf_obj, tmp_path):
    require(features.lsm())
    with pybpf.load(bpf_obj("mapkinds_inode")) as obj:
        m = obj.maps["inost"]
        (tmp_path / "f").write_text("x")
        with open(tmp_path / "f") as f:
            m[f] = {"tag": 9}
        with obj.programs["count_open"].attach():
            for _ in range(3):
                open(tmp_path / "f").close()
        with open(tmp_path / "f") as f:
            assert m[f].opens >= 3 and obj.bss.seen_tag == 9


# --- XSKMAP with a real AF_XDP socket -------------------------------------------------------

AF_XDP, SOL_XDP = 44, 283
XDP_MMAP_OFFSETS, XDP_RX_RING, XDP_UMEM_REG = 1, 2, 4
XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING = 5, 6
XDP_COPY = 1 << 1
XDP_UMEM_PGOFF_FILL_RING = 0x100000000


class XskSocket:
    """A minimal AF_XDP socket: a UMEM of ``n`` 4 KiB frames all handed to the fill
    ring, an RX ring, bound in copy mode to queue 0 of ``ifname`` in the calling
    thread's netns. ``received()`` returns the frames the kernel put on the RX ring."""

    FRAME = 4096

    def __init__(self, ifname: str, n: int = 64) -> None:
        import ctypes
        import mmap
        import struct

        self.n = n
        self.sock = socket.socket(AF_XDP, socket.SOCK_RAW)
        ifindex = socket.if_nametoindex(ifname)
        try:
            self.umem = mmap.mmap(-1, n * self.FRAME)
            addr = ctypes.addressof(ctypes.c_char.from_buffer(self.umem))
            s = self.sock
            # struct xdp_umem_reg (v2): addr, len, chunk_size, headroom, flags (+pad)
            s.setsockopt(SOL_XDP, XDP_UMEM_REG,
                         struct.pack("=QQIIII", addr, n * self.FRAME, self.FRAME, 0, 0, 0))
            for opt in (XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING, XDP_RX_RING):
                s.setsockopt(SOL_XDP, opt, struct.pack("I", n))
            # struct xdp_mmap_offsets: {producer, consumer, desc, flags} for rx, tx, fr, cr
            offs = struct.unpack("=16Q", s.getsockopt(SOL_XDP, XDP_MMAP_OFFSETS, 128))
            self.rx_off, fr_off = offs[0:3], offs[8:11]
            rw = mmap.PROT_READ | mmap.PROT_WRITE
            self.rx = mmap.mmap(s.fileno(), self.rx_off[2] + n * 16, mmap.MAP_SHARED, rw,
                                offset=0)
            self.fill = mmap.mmap(s.fileno(), fr_off[2] + n * 8, mmap.MAP_SHARED, rw,
                                  offset=XDP_UMEM_PGOFF_FILL_RING)
            for i in range(n):
                struct.pack_into("=Q", self.fill, fr_off[2] + i * 8, i * self.FRAME)
            struct.pack_into("=I", self.fill, fr_off[0], n)  # producer: n frames given
            sa = struct.pack("=HHIII", AF_XDP, XDP_COPY, ifindex, 0, 0)  # sockaddr_xdp
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.bind(s.fileno(), sa, len(sa)) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"bind AF_XDP socket to {ifname} queue 0: "
                                   f"{os.strerror(err)}")
        except BaseException:
            self.close()
            raise

    def received(self) -> list[bytes]:
        import struct

        prod = struct.unpack_from("=I", self.rx, self.rx_off[0])[0]
        cons = struct.unpack_from("=I", self.rx, self.rx_off[1])[0]
        out = []
        for i in range(cons, prod):
            addr, length, _ = struct.unpack_from("=QII", self.rx, self.rx_off[2] + i % self.n * 16)
            out.append(bytes(self.umem[addr:addr + length]))
        struct.pack_into("=I", self.rx, self.rx_off[1], prod)
        return out

    def close(self) -> None:
        for name in ("rx", "fill", "umem"):
            m = self.__dict__.pop(name, None)
            if m is not None:
                m.close()
        self.sock.close()


def test_xskmap_refuses_other_fds_and_unreadable_slots(km):
    x = km.maps["xsks"]
    assert isinstance(x, XSKMap) and x.type == "xskmap"
    tcp = socket.socket()
    try:
        with pytest.raises(MapError, match=f"map 'xsks' \\(xskmap\\): fd {tcp.fileno()} is "
                           "not an AF_XDP socket") as ei:
            x[0] = tcp
        assert ei.value.errno == errno.EOPNOTSUPP
    finally:
        tcp.close()
    with pytest.raises(TypeError, match="expected a AF_XDP socket or an fd"):
        x[0] = "eth0"
    for read in (lambda: x[0], lambda: 0 in x, lambda: list(x), lambda: len(x),
                 lambda: x.items(), lambda: list(x.popitems()), lambda: x.get(0)):
        with pytest.raises(TypeError, match="does not let user space read XSKMAP slots"):
            read()


def test_xskmap_redirects_packets_to_an_af_xdp_socket(km):
    x = km.maps["xsks"]
    with veth_pair() as pair:
        with in_netns(pair.ns_b):
            try:
                xsk = XskSocket(pair.dev_b)
            except OSError as e:
                if e.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
                    pytest.skip(f"no AF_XDP sockets in this kernel: {e}")
                raise
        rx = pair.udp_socket("b")
        try:
            x[0] = xsk.sock  # queue 0 -> this socket
            km.bss.xsk_port = rx.getsockname()[1]
            with in_netns(pair.ns_b):
                link = km.programs["to_xsk"].attach_xdp(pair.dev_b)
            try:
                # redirected: the UDP socket gets none, the AF_XDP socket all three
                assert pair.send_udp(3, receiver=rx, wait=0.3) == 0
                frames = xsk.received()
                assert km.bss.xsk_redirects == 3 and len(frames) == 3
                assert [f[-7:] for f in frames] == [b"pybpf 0", b"pybpf 1", b"pybpf 2"]
                assert all(f[12:14] == b"\x08\x00" for f in frames)  # whole Ethernet frames
                del x[0]  # empty slot: bpf_redirect_map falls back to XDP_PASS
                assert pair.send_udp(2, receiver=rx) == 2 and xsk.received() == []
                x[0] = xsk.sock.fileno()  # an fd works as well
                x.clear()
                assert pair.send_udp(1, receiver=rx) == 1 and xsk.received() == []
            finally:
                link.detach()
        finally:
            rx.close()
            xsk.close()
