"""Kernel-function hooks fire for real where the kernel has them, and the
feature probes agree with what the kernel actually does.

The host kernel (6.18 here) lacks kprobes and refuses trampolines, so the firing
tests skip there with the probe's reason; the qemu guest of tests/vm/run_guest.py
(Debian 6.1, booted with the BPF LSM) runs them. The agreement test runs on
every kernel: whatever a probe says, a real program must load and attach (or
fail to) the same way.
"""

from __future__ import annotations

import errno
import os
import struct
import subprocess
import time
from pathlib import Path

import pytest
from conftest import require

import pybpf
from pybpf import features

pytestmark = [pytest.mark.kernel, pytest.mark.guest]

PROGRAMS = ("on_kprobe", "on_fentry", "on_fexit", "on_file_open")


def open_only(path: str, *enabled: str, **rodata: int) -> pybpf.Object:
    """Open guest_hooks.bpf.o with only ``enabled`` programs autoloaded."""
    obj = pybpf.Object.open(path)
    try:
        for name in PROGRAMS:
            obj.programs[name].autoload = name in enabled
        obj.set_rodata("target_tgid", os.getpid())
        for name, value in rodata.items():
            obj.set_rodata(name, value)
    except BaseException:
        obj.close()
        raise
    return obj


def unlink_twice(tmp_path) -> int:
    """unlinkat(dirfd, "victim") on an existing then a missing file; returns dirfd."""
    (tmp_path / "victim").write_text("x")
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.unlink("victim", dir_fd=dfd)
        with pytest.raises(FileNotFoundError):
            os.unlink("victim", dir_fd=dfd)
    finally:
        os.close(dfd)
    return dfd


def test_kprobe_fires_with_arguments(bpf_obj, tmp_path):
    require(features.kprobes())
    with open_only(bpf_obj("guest_hooks"), "on_kprobe") as obj:
        obj.load()
        link = obj.programs["on_kprobe"].attach_kprobe("do_unlinkat")
        assert obj.bss.kprobe_hits == 0
        dfd = unlink_twice(tmp_path)
        assert obj.bss.kprobe_hits == 2
        assert obj.bss.kprobe_dfd == dfd
        link.detach()
        unlink_twice(tmp_path)
        assert obj.bss.kprobe_hits == 2  # detached: no more hits


def test_fentry_and_fexit_fire_with_arguments_and_return(bpf_obj, tmp_path):
    require(features.trampolines())
    with open_only(bpf_obj("guest_hooks"), "on_fentry", "on_fexit") as obj:
        obj.load()
        obj.programs["on_fentry"].attach_trace()
        obj.programs["on_fexit"].attach_trace()
        dfd = unlink_twice(tmp_path)
        assert obj.bss.fentry_hits == 2 and obj.bss.fexit_hits == 2
        assert obj.bss.fentry_dfd == dfd
        assert obj.bss.fexit_ret == -errno.ENOENT  # the second unlink's return value


def test_lsm_hook_sees_the_open_of_one_file(bpf_obj, tmp_path):
    require(features.lsm())
    target = tmp_path / "watched"
    target.write_text("x")
    other = tmp_path / "other"
    other.write_text("y")
    with open_only(bpf_obj("guest_hooks"), "on_file_open",
                   target_ino=os.stat(target).st_ino) as obj:
        obj.load()
        obj.programs["on_file_open"].attach_lsm()
        for _ in range(3):
            target.read_text()
        other.read_text()
        assert obj.bss.lsm_hits == 3


@pytest.mark.parametrize("probe, programs", [
    (features.kprobes, ("on_kprobe",)),
    (features.trampolines, ("on_fentry", "on_fexit")),
    (features.lsm, ("on_file_open",)),
], ids=["kprobes", "trampolines", "lsm"])
def test_probe_agrees_with_a_real_attach(bpf_obj, probe, programs):
    """Whatever the probe says, a real program loads and attaches exactly when it says so."""
    feat = probe()
    attached = []
    error: Exception | None = None
    with open_only(bpf_obj("guest_hooks"), *programs) as obj:
        try:
            obj.load()
            for name in programs:
                prog = obj.programs[name]
                if prog.type == "kprobe":
                    attached.append(prog.attach_kprobe("do_unlinkat"))
                else:
                    attached.append(prog.attach_trace())
        except pybpf.NotSupportedError as exc:
            error = exc  # any other error is a failure of its own, not agreement
    if feat:
        assert error is None, f"probe says {feat}, a real attach gave {error!r}"
        assert len(attached) == len(programs)
    else:
        assert error is not None, f"probe says {feat}, yet every program attached"
        # refused for the reason the probe found, not some other failure
        assert feat.reason in str(error), (feat.reason, str(error))


SHIPPED = sorted(p.name[:-len(".bpf.o")]
                 for p in (Path(pybpf.__file__).parent / "probes").glob("*.bpf.o"))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_probe_relocates_and_loads(name):
    """Every shipped CO-RE object (built once, on the host) loads on this kernel.

    Programs for hooks this kernel lacks (by the feature probes) are left out, as
    the tools do; everything else must pass CO-RE relocation and the verifier."""
    with pybpf.Object.open(pybpf.probe_path(name)) as obj:
        for prog in obj.programs.values():
            feat = features.for_program(prog)
            if feat is not None and not feat:
                prog.autoload = False
        loaded = [p for p in obj.programs.values() if p.autoload]
        assert loaded, f"{name}: no program this kernel can run"
        obj.load()
        assert all(p.fd >= 0 for p in loaded)


def _exec_events(raw: list[bytes]) -> list[tuple[int, int, int, int]]:
    """(pid, ppid, uid, retval) of execsnoop's struct event records."""
    return [struct.unpack_from("<IIIi", r) for r in raw]


def test_shipped_execsnoop_loads_and_reports_an_exec():
    """The probe built once on the host (pybpf/probes/) relocates and runs on this kernel."""
    path = pybpf.probe_path("execsnoop")
    got: list[bytes] = []
    with pybpf.Object.open(path) as obj:
        obj.load()
        obj.attach()
        with pybpf.RingBuffer(obj.maps["events"], callback=got.append) as rb:
            ok = subprocess.Popen(["/bin/true", "pybpf-guest-exec"])
            ok.wait()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                rb.poll(0.2)
                pids = {ev[0] for ev in _exec_events(got)}
                if ok.pid in pids:
                    break
    assert ok.returncode == 0
    mine = [ev for ev in _exec_events(got) if ev[0] == ok.pid]
    assert mine == [(ok.pid, os.getpid(), os.getuid(), 0)]
