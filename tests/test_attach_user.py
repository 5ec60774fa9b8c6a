"""User-space hooks on the real kernel: uprobe/uretprobe on a test binary built
here with gcc, a uprobe on a libc function found by library name, and a USDT
probe (systemtap's <sys/sdt.h>) read with <bpf/usdt.bpf.h>."""

from __future__ import annotations

import os
import subprocess

import pytest
from attach_util import hits, target_binary, val

import pybpf
from pybpf import AttachError

pytestmark = pytest.mark.kernel

# Hook ids of tests/bpf/attach_user.bpf.c
UPROBE, URETPROBE, LIBC, USDT, USDT_ARG1 = 1, 2, 3, 4, 5


@pytest.fixture(scope="module")
def target() -> str:
    return target_binary()


@pytest.fixture
def user_obj(bpf_obj):
    with pybpf.load(bpf_obj("attach_user")) as obj:
        yield obj


def run_target_pid(binary: str, a: int, b: int) -> int:
    """Run the test binary (prints a + b); returns its pid."""
    proc = subprocess.Popen([binary, str(a), str(b)], stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=120)
    assert out.strip() == str(a + b)
    return proc.pid


def test_uprobe_and_uretprobe_on_test_binary(user_obj, target):
    progs = user_obj.programs
    entry = progs["on_add"].attach_uprobe(target, "pybpf_target_add")
    ret = progs["on_add_ret"].attach_uprobe(target, "pybpf_target_add")
    assert entry.target == f"uprobe {target}:pybpf_target_add"
    assert ret.target == f"uretprobe {target}:pybpf_target_add"  # from the section name
    assert entry.info().type == "perf_event"
    pids = [run_target_pid(target, 20, 22), run_target_pid(target, -7, 3)]
    assert [hits(user_obj, UPROBE, p) for p in pids] == [1, 1]
    assert [hits(user_obj, URETPROBE, p) for p in pids] == [1, 1]
    assert val(user_obj, UPROBE, pids[0]) == 20 * 1000 + 22  # both arguments
    assert val(user_obj, UPROBE, pids[1]) == -7 * 1000 + 3
    assert val(user_obj, URETPROBE, pids[0]) == 42  # the return value
    assert val(user_obj, URETPROBE, pids[1]) == -4
    entry.detach()
    ret.detach()
    pid = run_target_pid(target, 1, 1)
    assert (hits(user_obj, UPROBE, pid), hits(user_obj, URETPROBE, pid)) == (0, 0)


def test_uprobe_pid_filter(user_obj, target):
    # pid 1 never runs the test binary: the probe must not fire for our child.
    with user_obj.programs["on_add"].attach_uprobe(target, "pybpf_target_add", pid=1):
        pid = run_target_pid(target, 1, 2)
        assert hits(user_obj, UPROBE, pid) == 0


def test_uprobe_by_offset(user_obj, target):
    from elftools.elf.elffile import ELFFile

    with open(target, "rb") as f:
        elf = ELFFile(f)
        sym = elf.get_section_by_name(".symtab").get_symbol_by_name("pybpf_target_add")[0]
        vaddr = sym["st_value"]
        # a file offset: the symbol's address within its loadable segment
        seg = next(s for s in elf.iter_segments()
                   if s["p_type"] == "PT_LOAD" and s["p_vaddr"] <= vaddr < s["p_vaddr"]
                   + s["p_memsz"])
        offset = vaddr - seg["p_vaddr"] + seg["p_offset"]
    with user_obj.programs["on_add"].attach_uprobe(target, offset=offset) as link:
        assert link.target == f"uprobe {target}:{offset:#x}"
        pid = run_target_pid(target, 5, 6)
        assert hits(user_obj, UPROBE, pid) == 1
        assert val(user_obj, UPROBE, pid) == 5006


def test_uprobe_on_libc_by_library_name(user_obj):
    me = os.getpid()
    with user_obj.programs["on_libc"].attach_uprobe("libc.so.6", "getpid", pid=me) as link:
        assert "libc.so.6:getpid" in link.target
        for _ in range(5):
            os.getpid()  # glibc's getpid(): no caching since 2.25
        assert hits(user_obj, LIBC, me) >= 5
    n = hits(user_obj, LIBC, me)
    os.getpid()
    assert hits(user_obj, LIBC, me) == n


def test_usdt_probe_reads_arguments(user_obj, target):
    with user_obj.programs["on_usdt"].attach_usdt(target, "pybpf_test", "added") as link:
        assert link.target == f"usdt {target}:pybpf_test:added"
        pid = run_target_pid(target, 30, 12)
        assert hits(user_obj, USDT, pid) == 1
        assert val(user_obj, USDT, pid) == 42  # arg0: the sum
        assert val(user_obj, USDT_ARG1, pid) == 30  # arg1: a
        prog_id = user_obj.programs["on_usdt"].info().id
        # one uprobe link per probe site, not a single fd; libbpf 1.3+ makes one
        # uprobe_multi link of them where the kernel has those (the Debian 13 guest)
        from pybpf import features

        multi = pybpf.libbpf_version() >= (1, 3) and bool(features.uprobe_multi())
        assert [li.type for li in pybpf.list_links() if li.prog_id == prog_id] == [
            "uprobe_multi" if multi else "perf_event"]
        with pytest.raises(pybpf.BPFError, match="no single fd"):
            _ = link.fd
        with pytest.raises(pybpf.BPFError, match="cannot be pinned"):
            link.pin(f"/sys/fs/bpf/pybpf-never-{os.getpid()}")
    assert hits(user_obj, USDT, run_target_pid(target, 1, 1)) == 0


def test_attach_keywords_dispatch_to_uprobe_and_usdt(user_obj, target):
    progs = user_obj.programs
    links = [progs["on_add"].attach(binary=target, function="pybpf_target_add"),
             progs["on_usdt"].attach(binary=target, provider="pybpf_test", name="added")]
    pid = run_target_pid(target, 2, 3)
    assert (hits(user_obj, UPROBE, pid), hits(user_obj, USDT, pid)) == (1, 1)
    for link in links:
        link.detach()


def test_uprobe_missing_symbol_and_binary(user_obj, target):
    prog = user_obj.programs["on_add"]
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(AttachError, match="no_such_function.*not found in") as exc:
        prog.attach_uprobe(target, "no_such_function")
    assert exc.value.target and "no_such_function" in exc.value.target
    with pytest.raises(AttachError, match="/nonexistent/bin.*does not exist"):
        prog.attach_uprobe("/nonexistent/bin", "main")
    with pytest.raises(AttachError, match="library 'libnothere.so.9' not found"):
        prog.attach_uprobe("libnothere.so.9", "f")
    with pytest.raises(AttachError, match="/etc/passwd is not an ELF binary"):
        prog.attach_uprobe("/etc/passwd", "main")
    with pytest.raises(AttachError, match="No such process.*ESRCH"):
        prog.attach_uprobe(target, "main", pid=0x3FFFFFF)
    usdt = user_obj.programs["on_usdt"]
    with pytest.raises(AttachError, match="USDT probe pybpf_test:nope not found in"):
        usdt.attach_usdt(target, "pybpf_test", "nope")
    with pytest.raises(AttachError, match="/etc/passwd is not an ELF binary"):
        usdt.attach_usdt("/etc/passwd", "pybpf_test", "added")
    assert user_obj.links == []
    assert len(os.listdir("/proc/self/fd")) == before
