"""Helpers for the attach tests: hit counters, netns/veth pairs, cgroup2, test binary.

Everything created here carries this process's pid in its name and is removed
by the context managers, so concurrent test runs never share kernel objects.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pybpf

TESTS = Path(__file__).resolve().parent
BUILD = TESTS.parent / "build" / "test-bin"
CLONE_NEWNET = 0x40000000
_counter = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)


def unique(prefix: str) -> str:
    """A name no other test run uses: prefix + pid + a per-process counter."""
    return f"{prefix}{os.getpid()}x{next(_counter)}"


# --- reading the (hook, key) -> value maps of tests/bpf/attach_common.h ----------

def hits(obj: pybpf.Object, hook: int, key: int) -> int:
    """Hit count of ``hook`` for ``key`` (a pid, a port...), 0 when never hit."""
    raw = obj.maps["hits"].lookup(struct.pack("<II", hook, key))
    return 0 if raw is None else struct.unpack("<Q", raw)[0]


def val(obj: pybpf.Object, hook: int, key: int) -> int | None:
    """Last value ``hook`` stored for ``key``, None when never stored."""
    raw = obj.maps["vals"].lookup(struct.pack("<II", hook, key))
    return None if raw is None else struct.unpack("<q", raw)[0]


def hits_by_key(obj: pybpf.Object, hook: int) -> dict[int, int]:
    """Every key ``hook`` counted, with its count."""
    out = {}
    m = obj.maps["hits"]
    for k in getattr(m, "keys_raw", m.keys)():  # raw bytes keys on every Map kind
        h, key = struct.unpack("<II", k)
        if h == hook:
            raw = obj.maps["hits"].lookup(k)
            if raw is not None:
                out[key] = struct.unpack("<Q", raw)[0]
    return out


def wait_for(cond, timeout: float = 10.0, interval: float = 0.01) -> bool:  # type: ignore[no-untyped-def]
    """Poll ``cond()`` until true or ``timeout`` seconds pass; returns the last result.

    It returns as soon as ``cond()`` holds, so the limit costs nothing when the test
    passes: it is wide for a loaded machine (the kernel frees a closed link's program
    from a workqueue, packets cross a veth in softirq)."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() > deadline:
            return bool(cond())
        time.sleep(interval)


def open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


# --- network namespaces ---------------------------------------------------------

def run(*argv: str) -> str:
    res = subprocess.run(list(argv), capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed: {res.stderr.strip()}")
    return res.stdout


@contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Move this thread into netns ``name`` (``ip netns`` name) for the block.

    Sockets created inside stay in that namespace; interface names and
    indexes resolve there (so attach_xdp/attach_tc find the netns' devices).
    """
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(there, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into netns {name}: {os.strerror(err)}")
        try:
            yield
        finally:
            if _libc.setns(here, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "cannot return to the original netns")
    finally:
        os.close(here)
        os.close(there)


@dataclass
class VethPair:
    """Two namespaces joined by a veth pair: ``a`` (10.77.0.1) <-> ``b`` (10.77.0.2)."""

    ns_a: str
    ns_b: str
    dev_a: str
    dev_b: str
    addr_a: str = "10.77.0.1"
    addr_b: str = "10.77.0.2"

    def udp_socket(self, side: str, port: int = 0) -> socket.socket:
        """A UDP socket in netns ``side`` ("a" or "b"), bound to its address."""
        ns, addr = (self.ns_a, self.addr_a) if side == "a" else (self.ns_b, self.addr_b)
        with in_netns(ns):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((addr, port))
        return s

    def send_udp(self, count: int, *, receiver: socket.socket | None = None,
                 port: int | None = None, wait: float = 1.0) -> int:
        """Send ``count`` datagrams a -> b; return how many ``receiver`` got.

        ``receiver`` (a socket from ``udp_socket("b")``) is drained until
        ``count`` arrived or ``wait`` seconds passed.
        """
        sender = self.udp_socket("a")
        own_rx = receiver is None
        rx = receiver if receiver is not None else self.udp_socket("b", port or 0)
        try:
            dport = rx.getsockname()[1]
            for i in range(count):
                sender.sendto(b"pybpf %d" % i, (self.addr_b, dport))
            got = 0
            rx.settimeout(0.05)
            deadline = time.monotonic() + wait
            while got < count and time.monotonic() < deadline:
                try:
                    rx.recv(64)
                    got += 1
                except socket.timeout:
                    pass
            return got
        finally:
            sender.close()
            if own_rx:
                rx.close()

    def tc(self, side: str, *args: str) -> str:
        ns, dev = (self.ns_a, self.dev_a) if side == "a" else (self.ns_b, self.dev_b)
        return run("tc", "-n", ns, *[dev if a == "DEV" else a for a in args])

    def link_show(self, side: str) -> str:
        ns, dev = (self.ns_a, self.dev_a) if side == "a" else (self.ns_b, self.dev_b)
        return run("ip", "-n", ns, "-d", "link", "show", dev)


@contextmanager
def veth_pair() -> Iterator[VethPair]:
    """Create two netns and a veth pair between them; remove both at the end."""
    n = f"{os.getpid()}x{next(_counter)}"
    pair = VethPair(ns_a=f"pybpf-{n}-a", ns_b=f"pybpf-{n}-b", dev_a=f"pva{n}"[:15],
                    dev_b=f"pvb{n}"[:15])
    created: list[str] = []
    try:
        for ns in (pair.ns_a, pair.ns_b):
            run("ip", "netns", "add", ns)
            created.append(ns)
        run("ip", "link", "add", pair.dev_a, "netns", pair.ns_a, "type", "veth", "peer",
            "name", pair.dev_b, "netns", pair.ns_b)
        for ns, dev, addr in ((pair.ns_a, pair.dev_a, pair.addr_a),
                              (pair.ns_b, pair.dev_b, pair.addr_b)):
            run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")
        yield pair
    finally:
        for ns in created:  # deleting a netns deletes its end of the veth, and so both
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


# --- cgroup v2 -------------------------------------------------------------------

def cgroup2_mount() -> str | None:
    """Mount point of the cgroup2 hierarchy, from /proc/mounts."""
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return fields[1]
    return None


@contextmanager
def new_cgroup() -> Iterator[str]:
    """A fresh cgroup v2 directory (removed at the end; its processes must be gone)."""
    mnt = cgroup2_mount()
    if mnt is None:
        import pytest

        pytest.skip("no cgroup2 hierarchy mounted (/proc/mounts)")
    path = os.path.join(mnt, unique("pybpf-test-"))
    os.mkdir(path)
    try:
        yield path
    finally:
        for _ in range(100):
            try:
                os.rmdir(path)
                break
            except OSError:  # EBUSY until the moved child is fully gone
                time.sleep(0.02)


# --- the uprobe/USDT test binary -------------------------------------------------

def target_binary(padded: bool = False) -> str:
    """Build tests/native/attach_target.c with gcc into build/test-bin (cached).
    ``padded``: with a function before pybpf_target_add (at another file offset)."""
    src = TESTS / "native" / "attach_target.c"
    stem = "attach_target_padded" if padded else "attach_target"
    out = BUILD / stem
    if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return str(out)
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        import pytest

        pytest.skip("no C compiler (gcc) to build the uprobe test binary")
    BUILD.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{stem}.tmp{os.getpid()}")
    extra = ["-DPYBPF_PAD", "-fno-toplevel-reorder"] if padded else []
    run(gcc, "-O2", "-g", *extra, "-o", str(tmp), str(src))
    os.replace(tmp, out)
    return str(out)
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        import pytest

        pytest.skip("no C compiler (gcc) to build the uprobe test binary")
    BUILD.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"attach_target.tmp{os.getpid()}")
    run(gcc, "-O2", "-g", "-o", str(tmp), str(src))
    os.replace(tmp, out)
    return str(out)
