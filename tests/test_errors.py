"""Bad input and refusals: each a clear pybpf exception naming the thing."""

from __future__ import annotations

import logging
import os
import subprocess

import pytest

import pybpf
from pybpf import NotSupportedError, ObjectError, VerifierError, features


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="/nonexistent/x.bpf.o does not exist"):
        pybpf.Object.open("/nonexistent/x.bpf.o")


def test_directory(tmp_path):
    with pytest.raises(pybpf.ObjectError, match="is a directory"):
        pybpf.Object.open(tmp_path)


def test_not_elf(tmp_path):
    p = tmp_path / "text.bpf.o"
    p.write_text("this is not an ELF file at all, just text, long enough for a header" * 2)
    with pytest.raises(ObjectError, match=r"text\.bpf\.o: not a BPF object: not an ELF file"):
        pybpf.Object.open(p)


def test_truncated(bpf_obj, tmp_path):
    data = open(bpf_obj("basic"), "rb").read()
    for cut in (10, 63, 200, len(data) // 2):
        before = _fd_count()
        with pytest.raises(ObjectError) as ei:
            pybpf.Object.open(data[:cut], name="cut")
        assert "cut" in str(ei.value)
        assert _fd_count() == before


def test_elf_for_another_machine(tmp_path):
    src = tmp_path / "host.c"
    src.write_text("int f(void) { return 1; }\n")
    obj = tmp_path / "host.o"
    subprocess.run(["gcc", "-c", str(src), "-o", str(obj)], check=True)
    with pytest.raises(ObjectError, match=r"ELF for x86-64 \(e_machine 62\), expected EM_BPF"):
        pybpf.Object.open(obj)


def test_verifier_error_names_program_reason_and_source_line(bpf_obj):
    obj = pybpf.Object.open(bpf_obj("bad_verifier"))
    with pytest.raises(VerifierError) as ei:
        obj.load()
    err = ei.value
    assert err.program == "null_deref"
    assert err.errno == 13  # EACCES: the verifier's refusal
    assert "invalid mem access" in err.reason
    assert err.source_file and err.source_file.endswith("bad_verifier.bpf.c")
    src_lines = open(os.path.join(os.path.dirname(__file__), "bpf",
                                  "bad_verifier.bpf.c")).read().splitlines()
    assert "*v += 1" in src_lines[err.source_line - 1]
    text = str(err)
    assert "null_deref" in text and "*v += 1" in text and "invalid mem access" in text
    assert "processed" in err.log  # the whole log is kept
    assert len(text.splitlines()) < 8  # ...but str() is a summary
    with pytest.raises(pybpf.StateError, match="cannot be retried"):
        obj.load()
    obj.close()


def test_libbpf_messages_go_to_logger_not_stderr(bpf_obj, caplog, capfd):
    with caplog.at_level(logging.WARNING, logger="pybpf.libbpf"):
        with pytest.raises(VerifierError):
            pybpf.load(bpf_obj("bad_verifier"))
    assert any("null_deref" in r.getMessage() for r in caplog.records)
    assert all(r.name == "pybpf.libbpf" for r in caplog.records)
    out, err = capfd.readouterr()
    assert "libbpf" not in err and "libbpf" not in out


def test_load_twice(bpf_obj):
    with pybpf.load(bpf_obj("basic")) as obj:
        with pytest.raises(pybpf.StateError, match="already loaded"):
            obj.load()


def test_trampoline_refused_is_not_supported_with_probe_reason(bpf_obj):
    feat = features.trampolines()
    if feat:
        pytest.skip("this kernel supports fentry; the refusal path cannot be exercised")
    with pytest.raises(NotSupportedError) as ei:
        pybpf.load(bpf_obj("fentry_only"))
    assert ei.value.reason == feat.reason
    assert "on_unlinkat" in str(ei.value)


def test_fd_not_leaked_on_failed_loads(bpf_obj):
    path = bpf_obj("bad_verifier")
    before = _fd_count()
    for _ in range(20):
        with pytest.raises(VerifierError):
            pybpf.load(path)
    assert _fd_count() == before


def test_bpf_errors_are_oserrors_with_the_kernels_errno(bpf_obj):
    """The README: errors are rooted at BPFError, an OSError: ``except OSError`` catches
    a real refusal, with errno/strerror as the kernel or libbpf gave them."""
    import errno as errno_

    for name in ("BPFError", "ObjectError", "LoadError", "VerifierError", "AttachError",
                 "MapError", "NotSupportedError", "BPFPermissionError", "ClosedError"):
        cls = getattr(pybpf, name)
        assert issubclass(cls, pybpf.BPFError) and issubclass(cls, OSError), name
    assert issubclass(pybpf.BPFPermissionError, PermissionError)
    # libbpf refuses the object: EOPNOTSUPP, caught as OSError
    try:
        pybpf.Object.open(bpf_obj("legacy_maps"))
    except OSError as e:
        assert type(e) is ObjectError and e.errno == errno_.EOPNOTSUPP
        assert e.strerror and os.strerror(errno_.EOPNOTSUPP) in str(e)
    else:
        raise AssertionError("legacy maps were accepted")
    # the verifier refuses a program: its errno, caught as OSError
    with pybpf.Object.open(bpf_obj("bad_verifier")) as obj:
        try:
            obj.load()
        except OSError as e:
            assert isinstance(e, VerifierError) and e.errno in (errno_.EACCES, errno_.EINVAL)
        else:
            raise AssertionError("the verifier accepted bad_verifier.bpf.o")
    # the kernel refuses an attach: XDP on an ifindex no device has
    with pybpf.load(bpf_obj("basic")) as obj:
        with pytest.raises(OSError) as ei:
            obj.programs["xdp_pass"].attach_xdp(0x7FFFFFF0)
        assert isinstance(ei.value, pybpf.BPFError) and ei.value.errno in (
            errno_.ENODEV, errno_.EINVAL), ei.value
