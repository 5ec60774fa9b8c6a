"""The section table (pybpf/_sections.py): newer SEC() names open and load on the
linked libbpf (1.1 knows none of them), with the program and attach types the kernel
expects; the table decides auto-attach, retprobes and probes; .struct_ops.link maps
get BPF_F_LINK.
"""

from __future__ import annotations

import pytest

import pybpf
from pybpf import _sections, features

pytestmark = pytest.mark.kernel

EXPECTED = {  # program -> (type, expected attach type) from the section name alone
    "tcx_a": ("sched_cls", "tcx_ingress"), "tc_alias": ("sched_cls", "tcx_egress"),
    "nk_primary": ("sched_cls", "netkit_primary"), "nk_peer": ("sched_cls", "netkit_peer"),
    "umulti": ("kprobe", "trace_uprobe_multi"), "uret": ("kprobe", "trace_uprobe_multi"),
    "usess": ("kprobe", "trace_uprobe_session"), "kmulti": ("kprobe", "trace_kprobe_multi"),
    "kret": ("kprobe", "trace_kprobe_multi"), "ksess": ("kprobe", "trace_kprobe_session"),
    "nf_count": ("netfilter", "netfilter"),
}


def test_newer_section_names_open_with_their_types(bpf_obj):
    obj = pybpf.Object.open(bpf_obj("hooks"))
    try:
        got = {n: (p.type, p.expected_attach_type) for n, p in obj.programs.items()
               if n in EXPECTED}
        assert got == EXPECTED
    finally:
        obj.close()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_program_loads_where_the_kernel_has_its_hook(bpf_obj, name):
    """Each program loads alone; a load may fail only where its row's probe says the
    kernel lacks the hook (e.g. no netfilter program type before 6.4)."""
    obj = pybpf.Object.open(bpf_obj("hooks"))
    try:
        for p in obj.programs.values():
            p.autoload = p.name == name
        row = _sections.lookup(obj.programs[name].section)
        assert row is not None and row.probe is not None
        feat = getattr(features, row.probe)()
        try:
            obj.load()
        except (pybpf.LoadError, pybpf.NotSupportedError):
            if feat:
                raise
            pytest.skip(f"{feat.name}: {feat.reason}")
        assert obj.programs[name].fd >= 0
    finally:
        obj.close()


def test_registered_only_what_libbpf_lacks():
    reg = _sections.registered()
    v = pybpf.libbpf_version()
    if tuple(v[:2]) < (1, 3):
        assert {"tcx/ingress", "netfilter", "uprobe.multi+", "netkit/peer"} <= set(reg)
    assert "tracepoint+" not in reg and "kprobe.multi+" not in reg  # libbpf 1.1 has these


@pytest.mark.parametrize("section,method,auto,ret,probe", [
    ("tcx/ingress", "attach_tcx", False, False, "tcx"),
    ("tc", "attach_tc", False, False, None),
    ("uprobe.multi/bin:f*", "attach_uprobe_multi", True, False, "uprobe_multi"),
    ("uprobe.multi", "attach_uprobe_multi", False, False, "uprobe_multi"),
    ("uretprobe.multi/bin:f", "attach_uprobe_multi", True, True, "uprobe_multi"),
    ("kprobe.session/vfs_*", "attach_kprobe_multi", True, False, "kprobe_session"),
    ("kretprobe.multi/vfs_*", "attach_kprobe_multi", True, True, "kprobe_multi"),
    ("kretprobe/do_exit", "attach_kprobe", True, True, "kprobes"),
    ("uprobe/x", "attach_uprobe", False, False, None),
    ("uprobe//bin/sh:main", "attach_uprobe", True, False, None),
    ("tp_btf/sched_switch", "attach_trace", True, False, "tp_btf"),
    ("netfilter", "attach_netfilter", False, False, "netfilter"),
    ("perf_event", "attach_perf_event", False, False, None),
    ("struct_ops/x", "attach_struct_ops", False, False, "struct_ops_link"),
    ("iter/task", "attach_iter", True, False, None),
])
def test_table_rows(section, method, auto, ret, probe):
    row = _sections.lookup(section)
    assert row is not None
    assert (row.method, _sections.auto_attachable(section), row.retprobe, row.probe) == \
        (method, auto, ret, probe)
    if probe:
        assert callable(getattr(features, probe))


def test_struct_ops_link_maps_flagged(bpf_obj):
    obj = pybpf.Object.open(bpf_obj("hooks_cc"))
    try:
        assert {m.name: m.type for m in obj.maps.values()} == {
            "calls": "array", "cc_a": "struct_ops", "cc_b": "struct_ops"}
        assert obj.maps["cc_a"].flags & (1 << 13)
        assert not obj.maps["calls"].flags & (1 << 13)
    finally:
        obj.close()
