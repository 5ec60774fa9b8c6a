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
    """The active LSMs, None when securityfs is not mounted."""
    try:
        with open("/sys/kernel/security/lsm") as f:
            return f.read().strip().split(",")
    except FileNotFoundError:
        return None


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


def test_lsm_needs_the_bpf_lsm_active():
    feat = features.lsm()
    lsms = active_lsms()
    if lsms is not None and "bpf" not in lsms:
        assert not feat and "not active" in feat.reason
    # With the BPF LSM active, a real attach decides: test_guest_hooks checks agreement.
    assert kallsyms_has("bpf_lsm_file_open") or not feat


def test_summary_lists_every_hook_with_a_reason():
    hooks = features.summary()["hooks"]
    assert {"kprobes", "fentry", "lsm", "tcx", "uprobe_multi"} <= set(hooks)
    for name, h in hooks.items():
        assert isinstance(h["supported"], bool) and h["reason"], name


@pytest.mark.skipif(not os.environ.get("PYBPF_GUEST"),
                    reason="only in the qemu guest of tests/vm/run_guest.py")
def test_the_guest_has_the_hooks_it_is_booted_for():
    """The guest exists to run these hooks: a silent skip of all of them is a failure."""
    assert "bpf" in (active_lsms() or [])
    for feat in (features.kprobes(), features.trampolines(), features.lsm()):
        assert feat, feat
