"""Tracing hooks on the real kernel: tracepoint, raw_tracepoint, tp_btf (an exec),
perf_event (cpu-clock samples on every CPU), iter/task (our own pid in the output)."""

from __future__ import annotations

import os
import time

import pytest
from attach_util import hits, hits_by_key, val

import pybpf
from pybpf import IterLink

pytestmark = pytest.mark.kernel

# Hook ids of tests/bpf/attach_trace.bpf.c
TP, TP_AUTO, RAW_TP, RAW_TP_AUTO, TP_BTF, PERF = 1, 2, 3, 4, 5, 6
PERF_BY_PID = PERF + 100


@pytest.fixture
def trace_obj(bpf_obj):
    with pybpf.load(bpf_obj("attach_trace")) as obj:
        yield obj


def test_tracepoint_counts_exec_of_child(trace_obj, trigger_exec):
    link = trace_obj.programs["on_tp"].attach_tracepoint("sched", "sched_process_exec")
    assert link.target == "tracepoint sched:sched_process_exec"
    pids = [trigger_exec() for _ in range(3)]
    for pid in pids:
        assert hits(trace_obj, TP, pid) == 1
        assert val(trace_obj, TP, pid) == pid  # the tracepoint's own pid field
    assert hits(trace_obj, TP, os.getpid()) == 0
    link.detach()
    pid = trigger_exec()
    assert hits(trace_obj, TP, pid) == 0


def test_raw_tracepoint_counts_exec_of_child(trace_obj, trigger_exec):
    with trace_obj.programs["on_raw_tp"].attach_raw_tracepoint("sched_process_exec") as link:
        assert link.info().type == "raw_tracepoint"
        pid = trigger_exec()
        assert hits(trace_obj, RAW_TP, pid) == 1
        assert val(trace_obj, RAW_TP, pid) == pid  # args[1]: old_pid
    assert link.detached
    assert hits(trace_obj, RAW_TP, trigger_exec()) == 0


def test_tp_btf_counts_exec_of_child(trace_obj, trigger_exec):
    prog = trace_obj.programs["on_tp_btf"]
    assert prog.type == "tracing"
    with prog.attach_trace() as link:
        assert link.info().type == "raw_tracepoint"  # the kernel's link type for tp_btf
        pid = trigger_exec()
        assert hits(trace_obj, TP_BTF, pid) == 1
        assert val(trace_obj, TP_BTF, pid) == pid  # p->tgid through BTF
    assert hits(trace_obj, TP_BTF, trigger_exec()) == 0


def test_attach_dispatches_on_program_type(trace_obj, trigger_exec):
    progs = trace_obj.programs
    links = [progs["on_tp"].attach(category="sched", name="sched_process_exec"),
             progs["on_raw_tp"].attach(name="sched_process_exec")]
    pid = trigger_exec()
    assert (hits(trace_obj, TP, pid), hits(trace_obj, RAW_TP, pid)) == (1, 1)
    for link in links:
        link.detach()


def test_object_attach_auto_attaches_named_sections(trace_obj, trigger_exec):
    links = trace_obj.attach()
    by_prog = {link.program: link for link in links}
    # Bare "tracepoint"/"raw_tp" sections and perf_event name no target: skipped.
    assert set(by_prog) == {"on_tp_auto", "on_raw_tp_auto", "on_tp_btf", "dump_task"}
    assert isinstance(by_prog["dump_task"], IterLink)
    pid = trigger_exec()
    assert hits(trace_obj, TP_AUTO, pid) == 1
    assert hits(trace_obj, RAW_TP_AUTO, pid) == 1
    assert hits(trace_obj, TP_BTF, pid) == 1
    assert hits(trace_obj, TP, pid) == 0
    assert sorted(id(x) for x in trace_obj.links) == sorted(id(x) for x in links)


def _online_cpus() -> list[int]:
    with open("/sys/devices/system/cpu/online") as f:
        spans = [part.split("-") for part in f.read().strip().split(",")]
    return [c for s in spans for c in range(int(s[0]), int(s[-1]) + 1)]


def _burn(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def test_perf_event_cpu_clock_on_every_cpu(trace_obj):
    prog = trace_obj.programs["on_sample"]
    group = prog.attach_perf_event(frequency=1000)
    try:
        links = group.links  # type: ignore[attr-defined]
        assert [link.target for link in links] == [
            f"perf_event cpu-clock cpu {c}" for c in _online_cpus()]
        assert all(link.info().type == "perf_event" for link in links)
        _burn(0.3)  # cpu-clock samples land in this process on whichever CPU it runs
        assert hits(trace_obj, PERF_BY_PID, os.getpid()) > 0
        per_cpu = hits_by_key(trace_obj, PERF)
        assert sum(per_cpu.values()) > 0
        assert set(per_cpu) <= set(_online_cpus())
    finally:
        group.detach()
    assert all(link.detached for link in links)
    before = hits(trace_obj, PERF_BY_PID, os.getpid())
    _burn(0.1)
    assert hits(trace_obj, PERF_BY_PID, os.getpid()) == before


def test_perf_event_single_pid(trace_obj):
    prog = trace_obj.programs["on_sample"]
    with prog.attach_perf_event(frequency=1000, pid=os.getpid()) as group:
        assert len(group.links) == 1  # type: ignore[attr-defined]
        _burn(0.2)
        samples = hits_by_key(trace_obj, PERF_BY_PID)
    # Only this process was sampled (its threads share the pid key).
    assert samples.get(os.getpid(), 0) > 0
    assert set(samples) == {os.getpid()}


def test_perf_event_on_given_perf_fd(trace_obj):
    from pybpf._ffi import lib

    # cpu-clock (PERF_TYPE_SOFTWARE 1, config 0), 1000 Hz, this process, any CPU
    pfd = lib.pybpf_perf_event_open(1, 0, 1000, 1, os.getpid(), -1, -1, 0, 0)
    assert pfd >= 0, os.strerror(-pfd)
    try:
        with trace_obj.programs["on_sample"].attach_perf_event(pfd) as link:
            assert link.target == f"perf_event fd {pfd}"
            assert link.info().type == "perf_event"
            _burn(0.2)
            assert hits(trace_obj, PERF_BY_PID, os.getpid()) > 0
        os.fstat(pfd)  # the caller's fd stays open: the link used its own copy
    finally:
        os.close(pfd)
    fds = len(os.listdir("/proc/self/fd"))
    with open("/dev/null") as not_perf:
        with pytest.raises(pybpf.AttachError, match=f"perf_event fd {not_perf.fileno()}"):
            trace_obj.programs["on_sample"].attach_perf_event(not_perf.fileno())
    assert len(os.listdir("/proc/self/fd")) == fds
    assert trace_obj.links == []


def test_iter_task_lists_own_pid(trace_obj):
    with trace_obj.programs["dump_task"].attach_iter() as it:
        assert isinstance(it, IterLink)
        assert it.info().type == "iter"
        out = it.read().decode()
        rows = [line.split(" ", 2) for line in out.splitlines()]
        mine = [r for r in rows if r[0] == str(os.getpid())]
        assert mine, out[:500]
        assert any(r[1] == str(os.getpid()) for r in mine)  # the main thread
        assert [r for r in rows if r[0] == str(os.getppid())]  # and our parent
        again = it.read().decode()  # each read is a new pass
        assert str(os.getpid()) in again
