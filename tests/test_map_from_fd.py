"""Map.from_fd: adopting a map fd from elsewhere (a pin opened by hand, SCM_RIGHTS).

The map is checked against what the kernel says of the fd: a kind other than a map is
refused and the caller's fd stays open; a map fd is owned and closed exactly once."""

from __future__ import annotations

import errno
import os

import pytest

import pybpf

pytestmark = pytest.mark.kernel


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_from_fd_owns_a_map_fd_and_sees_what_the_kernel_holds():
    src = pybpf.create_map("hash", 4, 8, 16, name=f"ffd{os.getpid() % 10000}")
    try:
        src.update((7).to_bytes(4, "little"), (99).to_bytes(8, "little"))
        with src.owner as fd:
            dup = os.dup(fd)
        m = pybpf.Map.from_fd(dup)
        assert (m.type, m.key_size, m.value_size, m.max_entries) == ("hash", 4, 8, 16)
        assert m.id == src.id  # the same kernel map
        assert m.lookup((7).to_bytes(4, "little")) == (99).to_bytes(8, "little")
        m.close()
        assert not _is_open(dup) or os.readlink(f"/proc/self/fd/{dup}") != "anon_inode:bpf-map"
        with pytest.raises(pybpf.ClosedError):
            m.lookup((7).to_bytes(4, "little"))
        # the source map is untouched by the adopted one's close
        assert src.lookup((7).to_bytes(4, "little")) == (99).to_bytes(8, "little")
    finally:
        src.close()


def test_from_fd_refuses_what_is_not_a_map_and_leaves_it_open(bpf_obj, tmp_path):
    with pybpf.Object.open(bpf_obj("basic")) as obj:
        obj.load()
        prog = next(iter(obj.programs.values()))
        pfd = os.dup(prog.fd)
        try:
            with pytest.raises(pybpf.MapError) as ei:
                pybpf.Map.from_fd(pfd)
            assert ei.value.errno == errno.EINVAL and "program" in str(ei.value)
            assert f"fd {pfd}" in str(ei.value)
            assert os.readlink(f"/proc/self/fd/{pfd}") == "anon_inode:bpf-prog"
        finally:
            os.close(pfd)
    f = tmp_path / "plain"
    f.write_text("x")
    ffd = os.open(f, os.O_RDONLY)
    try:
        with pytest.raises(pybpf.MapError, match="not a BPF map"):
            pybpf.Map.from_fd(ffd)
        assert _is_open(ffd)
    finally:
        os.close(ffd)
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(pybpf.MapError) as ei:
        pybpf.Map.from_fd(r)
    assert ei.value.errno == errno.EBADF and "not open" in str(ei.value)
    for bad in ("3", None, 3.0, True):
        with pytest.raises(pybpf.MapError, match="must be an int"):
            pybpf.Map.from_fd(bad)  # type: ignore[arg-type]
