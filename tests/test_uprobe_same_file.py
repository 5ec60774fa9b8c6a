"""A uprobe goes on the file whose symbols gave its offset, even when the path given
is replaced while attaching (a symlink flipped, a binary renamed over, a package
upgrade): pybpf opens the binary once and reads the symbols and attaches through that
open file (``/proc/self/fd/N``). Before, it read the symbols by path and attached by
path again: a swap in between put the probe at one file's offset in another file,
which misses the function, or breaks an instruction of a process running that file.

Two builds of tests/native/attach_target.c put ``pybpf_target_add`` at different file
offsets (checked with pyelftools). Another process flips a symlink between them
without pause while this one attaches by the symlink, 120 times: after each attach,
running both builds once must make the probe fire exactly once (the kernel's count per
pid, or per link cookie), and both builds must still compute their result. The same
for a uprobe_multi link."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from attach_util import hits, target_binary
from conftest import require
from hooks_util import UMULTI, set_target

import pybpf
from pybpf import features

pytestmark = pytest.mark.kernel

UPROBE = 1  # the hook id of on_add in tests/bpf/attach_user.bpf.c
FLIPPER = """
import os, sys
a, b, link = sys.argv[1:4]
tmp = link + ".new"
while True:
    for t in (a, b):
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(t, tmp)
        os.replace(tmp, link)
"""


def _file_offset(path: str, symbol: str) -> int:
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        elf = ELFFile(f)
        sym = elf.get_section_by_name(".symtab").get_symbol_by_name(symbol)[0]
        addr = sym["st_value"]
        for seg in elf.iter_segments():
            start, size = seg["p_vaddr"], seg["p_filesz"]
            if seg["p_type"] == "PT_LOAD" and start <= addr < start + size:
                return addr - seg["p_vaddr"] + seg["p_offset"]
    raise AssertionError(f"{symbol} is in no loadable segment of {path}")


def _run(binary: str) -> int:
    """Run a build (it prints 20 + 22); its pid."""
    proc = subprocess.Popen([binary, "20", "22"], stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out.strip() == "42", (binary, proc.returncode, out)
    return proc.pid


def _flipping(a: str, b: str, tmp_path) -> tuple[str, subprocess.Popen]:
    """A symlink to ``a``, and a process flipping it between ``a`` and ``b``."""
    assert _file_offset(a, "pybpf_target_add") != _file_offset(b, "pybpf_target_add")
    link_path = str(tmp_path / f"target{os.getpid()}")
    os.symlink(a, link_path)
    return link_path, subprocess.Popen([sys.executable, "-c", FLIPPER, a, b, link_path])


def test_uprobe_lands_in_the_file_it_was_resolved_in_while_the_path_flips(bpf_obj, tmp_path):
    a, b = target_binary(), target_binary(padded=True)
    link_path, flipper = _flipping(a, b, tmp_path)
    try:
        with pybpf.load(bpf_obj("attach_user")) as obj:
            prog = obj.programs["on_add"]
            wrong = []
            for i in range(120):
                with prog.attach_uprobe(link_path, "pybpf_target_add"):
                    pa, pb = _run(a), _run(b)
                    got = (hits(obj, UPROBE, pa), hits(obj, UPROBE, pb))
                if sorted(got) != [0, 1]:
                    wrong.append((i, got))
            assert not wrong, f"probes that fired in neither or both builds: {wrong[:10]}"
            assert flipper.poll() is None  # it flipped the whole time
    finally:
        flipper.kill()
        flipper.wait()


def test_uprobe_multi_lands_in_the_file_it_was_resolved_in_while_the_path_flips(
        bpf_obj, tmp_path):
    """The same with one uprobe_multi link (functions by name): the program counts by
    the link's cookie, every process (target 0)."""
    require(features.uprobe_multi())
    a, b = target_binary(), target_binary(padded=True)
    o = pybpf.Object.open(bpf_obj("hooks"))
    for p in o.programs.values():
        p.autoload = p.name == "umulti"
    with o:
        o.load()
        set_target(o, 0)
        link_path, flipper = _flipping(a, b, tmp_path)
        try:
            wrong = []
            for i in range(120):
                cookie = 1000 + i
                with o.programs["umulti"].attach_uprobe_multi(
                        link_path, ["pybpf_target_add"], cookies=[cookie]):
                    _run(a)
                    _run(b)
                got = hits(o, UMULTI, cookie)
                if got != 1:
                    wrong.append((i, got))
            assert not wrong, f"links that fired in neither or both builds: {wrong[:10]}"
            assert flipper.poll() is None
        finally:
            flipper.kill()
            flipper.wait()
