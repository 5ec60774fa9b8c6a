"""pybpf.features hook probes agree with direct evidence from the running kernel.

The evidence is read independently of the probes' own method: the kernel's symbol
table, tracefs files, the kernel's BTF list of attach types, the active LSMs.
Run on the host (6.18: no kprobes, tcx) and in the 6.1 guest of
tests/vm/run_guest.py (kprobes, trampolines, BPF LSM; no tcx, no uprobe_multi).
"""

from __future__ import annotations

import functools
import os
import re
import struct
import subprocess

import pytest

from pybpf import features

pytestmark = [pytest.mark.kernel, pytest.mark.guest]


@functools.cache
def _kallsyms() -> str:
    with open("/proc/kallsyms") as f:
        return f.read()


def kallsyms_has(symbol: str) -> bool:
    """Whether the kernel's symbol table has ``symbol`` (a function built in)."""
    return re.search(rf" {re.escape(symbol)}$", _kallsyms(), re.MULTILINE) is not None


def btf_names(*names: str) -> dict[str, bool]:
    """Whether each name is in the kernel's BTF string table (every enum value the
    kernel was built with, e.g. of ``enum bpf_attach_type``, has its name there).

    Read straight from /sys/kernel/btf/vmlinux's header and string section, not
    through pybpf (and fast under emulation: no type parsing)."""
    with open("/sys/kernel/btf/vmlinux", "rb") as f:
        data = f.read()
    magic, _ver, _flags, hdr_len, _toff, _tlen, str_off, str_len = struct.unpack_from(
        "<HBBIIIII", data)
    assert magic == 0xEB9F, "not little-endian BTF"
    strings = data[hdr_len + str_off:hdr_len + str_off + str_len]
    assert b"\0BPF_TRACE_FENTRY\0" in strings  # the table is what we think it is
    return {n: b"\0" + n.encode() + b"\0" in strings for n in names}


def active_lsms() -> list[str] | None:
    """The active LSMs from securityfs; where it is not mounted, read in a private mount
    namespace that mounts it (nothing changes outside). None if neither works."""
    try:
        with open("/sys/kernel/security/lsm") as f:
            return f.read().strip().split(",")
    except FileNotFoundError:
        pass
    try:
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t securityfs none /sys/kernel/security && "
                            "cat /sys/kernel/security/lsm"],
                           capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip().split(",") if r.returncode == 0 and r.stdout.strip() else None


def test_kprobes_match_kernel_symbols_and_pmu():
    feat = features.kprobes()
    assert bool(feat) == kallsyms_has("register_kprobe"), feat
    assert bool(feat) == os.path.exists("/sys/bus/event_source/devices/kprobe"), feat
    if os.path.exists("/sys/kernel/tracing/events"):  # tracefs mounted
        assert bool(feat) == os.path.exists("/sys/kernel/tracing/kprobe_events"), feat


def test_tcx_matches_the_kernels_attach_types():
    feat = features.tcx()
    assert bool(feat) == btf_names("BPF_TCX_INGRESS")["BPF_TCX_INGRESS"], feat


def test_xdp_link_matches_the_kernels_link_types():
    feat = features.bpf_link_xdp()
    assert bool(feat) == btf_names("BPF_LINK_TYPE_XDP")["BPF_LINK_TYPE_XDP"], feat


def test_uprobe_multi_matches_the_kernels_attach_types():
    feat = features.uprobe_multi()
    assert bool(feat) == btf_names("BPF_TRACE_UPROBE_MULTI")["BPF_TRACE_UPROBE_MULTI"], feat
    assert feat.reason  # says which errno decided


def test_lsm_probe_agrees_with_the_active_lsms_and_a_real_load():
    """The lsm probe's verdict and reason match the active LSM list and what the kernel
    does with a real BPF LSM program (tests/bpf/guest_hooks.bpf.c's on_file_open)."""
    from conftest import compile_test_bpf

    import pybpf

    feat = features.lsm()
    lsms = active_lsms()
    if lsms is not None and "bpf" not in lsms:
        assert not feat and "not active" in feat.reason, feat
    if feat:
        assert kallsyms_has("bpf_lsm_file_open"), feat
    with pybpf.Object.open(compile_test_bpf("guest_hooks")) as obj:
        for prog in obj.programs.values():
            prog.autoload = prog.name == "on_file_open"
        try:
            obj.load()
            obj.programs["on_file_open"].attach_lsm().detach()
        except pybpf.NotSupportedError as exc:
            error: pybpf.BPFError | None = exc
        else:
            error = None
    if feat:
        assert error is None, f"probe says {feat}, a real LSM program gave {error!r}"
    else:
        # the real load fails as the probe said, for the reason it gave
        assert error is not None, f"probe says {feat}, yet a real LSM program attached"
        assert feat.reason in str(error), (feat.reason, str(error))
        if "refused to load" in feat.reason:
            assert os.strerror(error.errno) in feat.reason, (error.errno, feat.reason)


def test_summary_lists_every_hook_as_its_probe_says():
    hooks = features.summary()["hooks"]
    probes = {"kprobes": features.kprobes(), "fentry": features.trampolines(),
              "lsm": features.lsm(), "tcx": features.tcx(),
              "uprobe_multi": features.uprobe_multi()}
    assert set(probes) <= set(hooks)
    for name, feat in probes.items():
        assert hooks[name] == {"supported": bool(feat), "reason": feat.reason}, (name, feat)
    for name, h in hooks.items():
        assert h["supported"] in (True, False) and h["reason"], name


@pytest.mark.skipif(not os.environ.get("PYBPF_GUEST"),
                    reason="only in the qemu guest of tests/vm/run_guest.py")
def test_the_guest_has_the_hooks_it_is_booted_for():
    """The guest exists to run these hooks: a silent skip of all of them is a failure."""
    assert "bpf" in (active_lsms() or [])
    for feat in (features.kprobes(), features.trampolines(), features.lsm()):
        assert feat, feat
