"""uprobe_multi, uretprobe_multi and uprobe sessions: one link on many functions of a
test binary, by glob pattern, names or offsets, with per-function cookies and a pid
filter. Counts come from the BPF side; expected counts from what the test binary did.
Sections uprobe.multi / uretprobe.multi / uprobe.session are newer than libbpf 1.1.
"""

from __future__ import annotations

import pytest
from attach_util import hits
from conftest import require
from hooks_util import (
    UMULTI,
    URET,
    USESS_ENTRY,
    USESS_RETURN,
    assert_route,
    go,
    hooks_target,
    set_target,
    start_target,
)

import pybpf
from pybpf import features
from pybpf.attach.uprobe_multi import resolve

pytestmark = pytest.mark.kernel

FUNCS = ["pybpf_hook_one", "pybpf_hook_three", "pybpf_hook_two"]  # sorted: pattern order


@pytest.fixture
def obj(bpf_obj):
    require(features.uprobe_multi())
    o = pybpf.Object.open(bpf_obj("hooks"))
    # the session program only where the kernel has uprobe sessions (6.13+): a kernel
    # without them refuses the whole object otherwise
    wanted = ("umulti", "uret", "usess") if features.uprobe_session() else ("umulti", "uret")
    for p in o.programs.values():
        p.autoload = p.name in wanted
    o.load()
    yield o
    o.close()


def test_pattern_with_cookies_counts_each_function(obj):
    p = start_target(3, 5, 7)
    set_target(obj, p.pid)
    link = obj.programs["umulti"].attach_uprobe_multi(
        hooks_target(), "pybpf_hook_*", cookies={"pybpf_hook_one": 101,
                                                 "pybpf_hook_two": 102,
                                                 "pybpf_hook_three": 103})
    assert sorted(link.targets) == FUNCS
    assert link.info().type == "uprobe_multi"
    assert_route(link, "bpf_program__attach_uprobe_multi")
    go(p)
    assert [hits(obj, UMULTI, c) for c in (101, 102, 103)] == [3, 5, 7]
    link.detach()
    p = start_target(2, 2, 2)
    set_target(obj, p.pid)
    go(p)
    assert [hits(obj, UMULTI, c) for c in (101, 102, 103)] == [3, 5, 7]  # detached


def test_names_offsets_and_sequence_cookies(obj):
    path = hooks_target()
    offs = resolve(path, ["pybpf_hook_two", "pybpf_hook_three"])
    p = start_target(1, 4, 6)
    set_target(obj, p.pid)
    link = obj.programs["umulti"].attach_uprobe_multi(path, offsets=list(offs.values()),
                                                      cookies=[7, 8])
    assert_route(link, "bpf_program__attach_uprobe_multi")
    go(p)
    assert (hits(obj, UMULTI, 7), hits(obj, UMULTI, 8)) == (4, 6)


def test_uretprobe_multi_sees_return_values(obj):
    p = start_target(2, 0, 0)
    set_target(obj, p.pid)
    obj.programs["uret"].attach_uprobe_multi(hooks_target(), ["pybpf_hook_one"], cookies=[9])
    go(p)
    assert hits(obj, URET, 9) == 2
    from attach_util import val

    assert val(obj, URET, 9) == 1 + 1  # the last call: pybpf_hook_one(1) returns 2


def test_pid_filter_ignores_other_processes(obj):
    mine, other = start_target(4, 0, 0), start_target(9, 0, 0)
    set_target(obj, 0)  # the BPF side counts every process: the link must filter
    link = obj.programs["umulti"].attach_uprobe_multi(hooks_target(), "pybpf_hook_one",
                                                      cookies=[55], pid=mine.pid)
    assert_route(link, "bpf_program__attach_uprobe_multi")
    go(other)
    go(mine)
    assert hits(obj, UMULTI, 55) == 4


def test_uprobe_session_entry_and_return(obj):
    require(features.uprobe_session())
    p = start_target(0, 3, 0)
    set_target(obj, p.pid)
    link = obj.programs["usess"].attach_uprobe_multi(hooks_target(), "pybpf_hook_two",
                                                     cookies=[5])
    assert link.target.startswith("uprobe_session ")
    # the session attach type, not uprobe_multi's (libbpf 1.1 has no route for sessions)
    assert link.via == "bpf_link_create(BPF_TRACE_UPROBE_SESSION)"
    go(p)
    assert (hits(obj, USESS_ENTRY, 5), hits(obj, USESS_RETURN, 5)) == (3, 3)


def test_auto_attach_from_section_name(obj, tmp_path):
    """SEC("uprobe.multi/PATH:PATTERN") names its targets: Object.attach() attaches it."""
    from pybpf import toolchain

    try:
        toolchain.find_clang()
    except Exception as e:  # noqa: BLE001 - a userspace without clang (the Debian 13 guest)
        pytest.skip(f"this test compiles its object at run time: {e}")
    path = hooks_target()
    src = tmp_path / "um_auto.bpf.c"
    src.write_text(
        '#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n'
        "struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1);"
        " __type(key, __u32); __type(value, __u64); } n SEC(\".maps\");\n"
        "const volatile __u32 tgid = 0;\n"
        f'SEC("uretprobe.multi/{path}:pybpf_hook_t*")\n'
        "int um(void *ctx) { __u32 z = 0; __u64 *v = bpf_map_lookup_elem(&n, &z);\n"
        "  if (v && (bpf_get_current_pid_tgid() >> 32) == tgid) __sync_fetch_and_add(v, 1);"
        " return 0; }\n"
        'char LICENSE[] SEC("license") = "GPL";\n')
    out = tmp_path / "um_auto.bpf.o"
    toolchain.compile(src, out)
    p = start_target(1, 4, 6)
    o = pybpf.Object.open(str(out))
    try:
        o.set_rodata("tgid", p.pid)
        links = o.attach()
        assert len(links) == 1 and links[0].target.startswith("uretprobe_multi ")
        assert sorted(links[0].targets) == ["pybpf_hook_three", "pybpf_hook_two"]
        go(p)
        import struct

        assert struct.unpack("<Q", o.maps["n"].lookup(struct.pack("<I", 0)))[0] == 4 + 6
    finally:
        o.close()


def test_errors(obj):
    prog = obj.programs["umulti"]
    with pytest.raises(pybpf.AttachError, match="no function matches"):
        prog.attach_uprobe_multi(hooks_target(), "no_such_*")
    with pytest.raises(pybpf.AttachError, match="not found"):
        prog.attach_uprobe_multi(hooks_target(), ["pybpf_hook_one", "nope"])
    with pytest.raises(pybpf.AttachError, match="does not exist"):
        prog.attach_uprobe_multi("/nonexistent/bin", "x")
    with pytest.raises(ValueError, match="2 cookies for 3"):
        prog.attach_uprobe_multi(hooks_target(), "pybpf_hook_*", cookies=[1, 2])
    with pytest.raises(TypeError, match="exactly one"):
        prog.attach_uprobe_multi(hooks_target())
