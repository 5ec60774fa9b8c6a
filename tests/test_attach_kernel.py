"""Kernel-function hooks: kprobe/kretprobe, ksyscall/kretsyscall, fentry/fexit,
fmod_ret, lsm. Each test triggers the hook from this process and checks the
arguments and return values the program saw; where the kernel lacks the hook
(decided by pybpf.features probes) the test skips with the probe's reason, and
a companion test checks that pybpf says so with NotSupportedError."""

from __future__ import annotations

import errno
import os

import pytest
from attach_util import hits, open_fds, val
from conftest import require

import pybpf
from pybpf import AttachError, NotSupportedError, features

pytestmark = [pytest.mark.kernel, pytest.mark.guest]

# Hook ids of tests/bpf/attach_kprobe.bpf.c, attach_fentry.bpf.c, attach_lsm.bpf.c
KPROBE, KRETPROBE, KSYSCALL, KRETSYSCALL = 1, 2, 3, 4
FENTRY, FEXIT, FMOD_RET = 1, 2, 3
LSM_DENIED = 1


def unlink_twice(tmp_path) -> int:
    """unlinkat(dirfd, ...) on an existing then a missing file; returns dirfd."""
    (tmp_path / "victim").write_text("x")
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.unlink("victim", dir_fd=dfd)  # do_unlinkat(dfd, ...) -> 0
        with pytest.raises(FileNotFoundError):
            os.unlink("victim", dir_fd=dfd)  # -> -ENOENT
    finally:
        os.close(dfd)
    return dfd


# --- kprobes ---------------------------------------------------------------------------

@pytest.fixture
def kprobe_obj(bpf_obj):
    with pybpf.load(bpf_obj("attach_kprobe")) as obj:  # kprobe programs load everywhere
        yield obj


def test_kprobe_and_kretprobe(kprobe_obj, tmp_path):
    require(features.kprobes())
    progs = kprobe_obj.programs
    entry = progs["on_unlinkat"].attach_kprobe("do_unlinkat")
    ret = progs["on_unlinkat_ret"].attach_kprobe("do_unlinkat")  # kretprobe by section
    assert entry.target == "kprobe do_unlinkat"
    assert ret.target == "kretprobe do_unlinkat"
    me = os.getpid()
    dfd = unlink_twice(tmp_path)
    assert hits(kprobe_obj, KPROBE, me) == 2
    assert val(kprobe_obj, KPROBE, me) == dfd  # first argument
    assert hits(kprobe_obj, KRETPROBE, me) == 2
    assert val(kprobe_obj, KRETPROBE, me) == -errno.ENOENT  # last return value
    entry.detach()
    ret.detach()
    unlink_twice(tmp_path)
    assert hits(kprobe_obj, KPROBE, me) == 2


def test_ksyscall_and_kretsyscall(kprobe_obj):
    require(features.kprobes())
    progs = kprobe_obj.programs
    with progs["on_getpgid"].attach_ksyscall("getpgid") as entry, \
            progs["on_getpgid_ret"].attach_ksyscall("getpgid") as ret:
        assert entry.target == "ksyscall getpgid"
        assert ret.target == "kretsyscall getpgid"
        parent = os.getppid()
        expected = os.getpgid(parent)
        me = os.getpid()
        assert hits(kprobe_obj, KSYSCALL, me) == 1
        assert val(kprobe_obj, KSYSCALL, me) == parent  # the syscall's argument
        assert val(kprobe_obj, KRETSYSCALL, me) == expected  # and its result
        with pytest.raises(ProcessLookupError):
            os.getpgid(0x3FFFFFF)
        assert val(kprobe_obj, KRETSYSCALL, me) == -errno.ESRCH


def test_kprobe_auto_attach_from_sections(kprobe_obj, tmp_path):
    require(features.kprobes())
    links = kprobe_obj.attach()
    assert sorted(link.program for link in links) == [
        "on_getpgid", "on_getpgid_ret", "on_unlinkat", "on_unlinkat_ret"]
    me = os.getpid()
    unlink_twice(tmp_path)
    os.getpgid(0)
    assert hits(kprobe_obj, KPROBE, me) == 2
    assert hits(kprobe_obj, KRETPROBE, me) == 2
    assert hits(kprobe_obj, KSYSCALL, me) == 1
    assert val(kprobe_obj, KSYSCALL, me) == 0
    assert hits(kprobe_obj, KRETSYSCALL, me) == 1


def test_kprobe_missing_function(kprobe_obj):
    require(features.kprobes())
    fds = open_fds()
    with pytest.raises(AttachError, match="pybpf_no_such_function") as exc:
        kprobe_obj.programs["on_unlinkat"].attach_kprobe("pybpf_no_such_function")
    assert "pybpf_no_such_function" in (exc.value.target or "")
    assert kprobe_obj.links == []
    assert open_fds() == fds


def test_kprobes_missing_is_not_supported(kprobe_obj):
    feat = features.kprobes()
    if feat:
        pytest.skip("this kernel has kprobes")
    fds = open_fds()
    progs = kprobe_obj.programs
    attempts = [lambda: progs["on_unlinkat"].attach_kprobe("do_unlinkat"),
                lambda: progs["on_unlinkat_ret"].attach(function="do_unlinkat"),
                lambda: progs["on_getpgid"].attach_ksyscall("getpgid"),
                lambda: progs["on_getpgid_ret"].attach()]
    for attempt in attempts:
        with pytest.raises(NotSupportedError) as exc:
            attempt()
        assert exc.value.reason == feat.reason
        assert feat.reason in str(exc.value)
    with pytest.raises(NotSupportedError):
        kprobe_obj.attach()
    assert kprobe_obj.links == []
    assert open_fds() == fds


# --- BPF trampolines -----------------------------------------------------------------

def test_fentry_and_fexit(bpf_obj, tmp_path):
    require(features.trampolines())
    obj = pybpf.Object.open(bpf_obj("attach_fentry"))
    with obj:
        obj.programs["fake_getpgid"].autoload = False
        obj.load()
        progs = obj.programs
        with progs["on_unlink_entry"].attach_trace() as entry, \
                progs["on_unlink_exit"].attach() as exit_:
            assert entry.info().type == "tracing"
            assert exit_.info().type == "tracing"
            me = os.getpid()
            dfd = unlink_twice(tmp_path)
            assert hits(obj, FENTRY, me) == 2
            assert val(obj, FENTRY, me) == dfd
            assert hits(obj, FEXIT, me) == 2
            assert val(obj, FEXIT, me) == -errno.ENOENT
        unlink_twice(tmp_path)
        assert hits(obj, FENTRY, me) == 2


def test_fmod_ret_changes_return_value(bpf_obj):
    require(features.fmod_ret())
    obj = pybpf.Object.open(bpf_obj("attach_fentry"))
    with obj:
        for name in ("on_unlink_entry", "on_unlink_exit"):
            obj.programs[name].autoload = False
        obj.set_rodata("target_pid", os.getpid())
        obj.load()
        me = os.getpid()
        real = os.getpgid(me)
        assert real != 4242
        link = obj.programs["fake_getpgid"].attach()
        assert os.getpgid(me) == 4242  # the hook's result became the syscall's
        assert hits(obj, FMOD_RET, me) == 1
        link.detach()
        assert os.getpgid(me) == real


def test_trampolines_missing_is_not_supported(bpf_obj):
    feat = features.trampolines()
    if feat:
        pytest.skip("this kernel has BPF trampolines")
    obj = pybpf.Object.open(bpf_obj("attach_fentry"))
    with obj, pytest.raises(NotSupportedError) as exc:
        obj.load()
    assert feat.reason in str(exc.value)


# --- BPF LSM -----------------------------------------------------------------------------

def test_lsm_denies_open_of_one_file(bpf_obj, tmp_path):
    require(features.lsm())
    denied = tmp_path / "denied"
    allowed = tmp_path / "allowed"
    denied.write_text("secret")
    allowed.write_text("fine")
    st = os.stat(denied)
    obj = pybpf.Object.open(bpf_obj("attach_lsm"))
    with obj:
        obj.set_rodata("target_ino", st.st_ino)
        # the kernel's dev_t: major << 20 | minor
        obj.set_rodata("target_dev", os.major(st.st_dev) << 20 | os.minor(st.st_dev))
        obj.load()
        with obj.programs["deny_open"].attach_lsm() as link:
            assert link.info().type == "tracing"
            with pytest.raises(PermissionError):
                open(denied).close()
            assert allowed.read_text() == "fine"
            assert hits(obj, LSM_DENIED, os.getpid()) == 1
        assert denied.read_text() == "secret"


def test_lsm_missing_is_not_supported(bpf_obj):
    feat = features.lsm()
    if feat:
        pytest.skip("this kernel has the BPF LSM")
    obj = pybpf.Object.open(bpf_obj("attach_lsm"))
    with obj, pytest.raises(NotSupportedError) as exc:
        obj.load()
    assert feat.reason in str(exc.value)
