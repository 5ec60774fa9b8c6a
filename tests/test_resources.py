"""Resources: nothing leaks across many cycles, at garbage collection, at SIGKILL; pins outlive.

Other helpers' tests load programs concurrently, so "nothing left behind" is
checked on the ids of the programs, maps and links *these* tests created
(kernel ids are allocated cyclically and not reused soon), never by comparing
global counts.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _child import readline

import pybpf

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[1]


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _live(prog_ids=(), map_ids=(), link_ids=()) -> tuple[set[int], set[int], set[int]]:
    progs = {p.id for p in pybpf.list_programs()} & set(prog_ids)
    maps = {m.id for m in pybpf.list_maps()} & set(map_ids)
    links = {k.id for k in pybpf.list_links()} & set(link_ids)
    return progs, maps, links


def _wait_gone(prog_ids=(), map_ids=(), link_ids=(), timeout=5.0):
    """The kernel frees objects after the last reference (maps via a work queue)."""
    deadline = time.monotonic() + timeout
    while True:
        live = _live(prog_ids, map_ids, link_ids)
        if not any(live) or time.monotonic() > deadline:
            return live
        time.sleep(0.05)


def _ids(obj: pybpf.Object, links) -> tuple[list[int], list[int], list[int]]:
    progs = [p.info().id for p in obj.programs.values() if p.autoload]
    maps = [m.id for m in obj.maps.values()]
    return progs, maps, [ln.info().id for ln in links]


def test_1000_cycles_keep_fds_rss_flat_and_leave_nothing(bpf_obj):
    # hardening.bpf.o: a raw tracepoint (detached in microseconds, unlike a perf-event
    # tracepoint), a `syscall` program, a ring buffer, a per-CPU array and .bss
    data = Path(bpf_obj("hardening")).read_bytes()
    created: tuple[set[int], set[int], set[int]] = (set(), set(), set())

    def cycle(record: bool) -> None:
        obj = pybpf.Object.open(data, name="cycle")
        obj.load()
        links = obj.attach()
        assert [ln.program for ln in links] == ["count_syscalls"]
        if record:
            for acc, ids in zip(created, _ids(obj, links)):
                acc.update(ids)
        obj.close()

    for _ in range(30):  # warm up caches (feature probes, vmlinux BTF, allocator arenas)
        cycle(False)
    gc.collect()
    fds0, rss0 = _fds(), _rss_kb()
    for i in range(1000):
        cycle(i % 10 == 0)
    gc.collect()
    fds1, rss1 = _fds(), _rss_kb()
    assert fds1 == fds0, f"fd count went from {fds0} to {fds1} over 1000 cycles"
    # a leaked object (its parsed ELF, BTF and program copies) is tens of KB per cycle
    assert rss1 - rss0 < 4096, f"RSS grew by {rss1 - rss0} KB over 1000 cycles"
    assert len(created[0]) == 200 and len(created[1]) == 300 and len(created[2]) == 100
    left = _wait_gone(*created)
    assert left == (set(), set(), set()), f"left behind (progs, maps, links): {left}"


def test_dropped_objects_are_freed_by_gc(bpf_obj):
    obj = pybpf.load(bpf_obj("hardening"))
    links = obj.attach()
    ids = _ids(obj, links)
    assert all(ids) and all(_live(*ids))
    del obj, links
    gc.collect()
    assert _wait_gone(*ids) == (set(), set(), set())


def test_dropped_links_are_detached_by_gc(bpf_obj):
    with pybpf.load(bpf_obj("hardening")) as obj:
        link = obj.programs["count_syscalls"].attach_auto()
        link_id = link.info().id
        assert _live(link_ids=[link_id])[2]
        del link
        obj._links.clear()  # the object's own list is the only other reference
        gc.collect()
        assert _wait_gone(link_ids=[link_id])[2] == set()


def _child(code: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_while_polling_leaves_no_program_attached():
    child = _child("""
        import pybpf
        obj = pybpf.load(pybpf.probe_path("execsnoop"))
        links = obj.attach()
        rb = pybpf.RingBuffer(obj.maps["events"], callback=lambda data: None)
        progs = [p.info().id for p in obj.programs.values()]
        print(" ".join(map(str, progs)), "|", " ".join(str(k.info().id) for k in links),
              "|", " ".join(str(m.id) for m in obj.maps.values()), flush=True)
        while True:
            rb.poll(1.0)
    """)
    try:
        line = readline(child)
        assert "|" in line, child.stderr.read() if child.poll() is not None else line
        progs, links, maps = ([int(x) for x in part.split()] for part in line.split("|"))
        assert progs and links and all(_live(progs, maps, links))
        subprocess.run(["/bin/true"])  # an exec while it polls: events flow
        time.sleep(0.2)
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert _wait_gone(progs, maps, links) == (set(), set(), set())


def test_pinned_link_survives_its_process_and_unpin_removes_it(bpf_obj):
    from pybpf import _fs

    pin_dir = Path("/sys/fs/bpf")
    try:
        _fs.check_pin_path(str(pin_dir / "x"))
    except pybpf.BPFError as exc:
        pytest.skip(f"bpffs not available: {exc}")
    pin = pin_dir / f"pybpf_test_link_{os.getpid()}"
    child = _child(f"""
        import pybpf
        obj = pybpf.Object.open({bpf_obj("basic")!r})
        obj.programs["xdp_pass"].autoload = False
        obj.load()
        link = obj.programs["count_exec"].attach_auto()
        link.pin({str(pin)!r})
        print(link.info().id, obj.programs["count_exec"].info().id, flush=True)
        obj.close()
    """)
    try:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        link_id, prog_id = map(int, out.split())
        # the process is gone: the link and its program are still in the kernel
        assert _live([prog_id], [], [link_id]) == ({prog_id}, set(), {link_id})
        with pybpf.enable_stats():
            before = next(p.run_count for p in pybpf.list_programs() if p.id == prog_id)
            subprocess.run(["/bin/true"])
            after = next(p.run_count for p in pybpf.list_programs() if p.id == prog_id)
        assert after > before, "the pinned link's program no longer runs on exec"
        link = pybpf.Link.open_pinned(pin)
        assert link.info().id == link_id
        link.unpin()
        assert not pin.exists()
        link.detach()
        assert _wait_gone([prog_id], [], [link_id]) == (set(), set(), set())
    finally:
        if pin.exists():
            pin.unlink()
