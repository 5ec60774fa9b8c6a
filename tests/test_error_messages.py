"""What the kernel refused, in words: every pybpf error the kernel causes is a BPFError
(an OSError) carrying the kernel's errno, and its message gives the errno's meaning
and its symbolic name next to the thing concerned. The errnos expected are the ones
the kernel gives for what the test did (a full map, a key present already, a missing
key or map id, a tracepoint that does not exist)."""

from __future__ import annotations

import errno
import os
import struct

import pytest

import pybpf
from pybpf import BPFError, UpdateFlags

pytestmark = pytest.mark.kernel


def _says(exc: BaseException, err: int, *names: str, meaning: bool = True) -> None:
    """``exc`` is a BPFError and an OSError with errno ``err``, and its message has
    each of ``names`` and (``meaning``) the errno's meaning and symbolic name."""
    assert isinstance(exc, BPFError) and isinstance(exc, OSError)
    assert exc.errno == err, (exc.errno, str(exc))
    text = str(exc)
    if meaning:
        assert f"{os.strerror(err)} ({errno.errorcode[err]})" in text, text
    for name in names:
        assert name in text, (name, text)


def test_map_refusals_name_the_map_and_the_errno():
    name = f"errmsg{os.getpid() % 100000}"
    with pybpf.create_map("hash", 4, 8, 2, name=name) as m:
        key = [struct.pack("<I", k) for k in range(3)]
        m.update(key[0], bytes(8))
        m.update(key[1], bytes(8))
        with pytest.raises(BPFError) as ei:
            m.update(key[2], bytes(8))  # a third key in a map of 2
        _says(ei.value, errno.E2BIG, name)
        with pytest.raises(BPFError) as ei:
            m.update(key[0], bytes(8), UpdateFlags.NOEXIST)
        _says(ei.value, errno.EEXIST, name, "already present", meaning=False)
        with pytest.raises(BPFError) as ei:
            m.update(key[2], bytes(8), UpdateFlags.EXIST)
        _says(ei.value, errno.ENOENT, name, meaning=False)


def test_a_missing_map_id_names_the_errno():
    ids = {info.id for info in pybpf.list_maps()}
    missing = max(ids, default=0) + 1_000_000
    with pytest.raises(BPFError) as ei:
        pybpf.Map.from_id(missing)
    _says(ei.value, errno.ENOENT, str(missing))


def test_attach_to_a_missing_tracepoint_names_program_target_and_errno(bpf_obj):
    with pybpf.load(bpf_obj("basic")) as obj:
        prog = obj.programs["count_exec"]
        with pytest.raises(pybpf.AttachError) as ei:
            prog.attach_tracepoint("syscalls", f"sys_enter_no_such_{os.getpid()}")
        _says(ei.value, errno.ENOENT, "count_exec", f"sys_enter_no_such_{os.getpid()}",
              "does not exist", meaning=False)


def test_a_closed_map_is_ebadf_naming_the_map():
    name = f"errclosed{os.getpid() % 100000}"
    m = pybpf.create_map("array", 4, 8, 1, name=name)
    m.close()
    with pytest.raises(pybpf.ClosedError) as ei:
        m.lookup(bytes(4))
    exc = ei.value
    assert isinstance(exc, ValueError) and isinstance(exc, OSError)
    assert exc.errno == errno.EBADF and name in str(exc), (exc.errno, str(exc))


def test_a_missing_file_is_a_file_not_found_error_with_its_path(tmp_path):
    path = str(tmp_path / "absent.bpf.o")
    with pytest.raises(FileNotFoundError) as ei:
        pybpf.Object.open(path)
    exc = ei.value
    assert isinstance(exc, BPFError)
    assert exc.errno == errno.ENOENT and exc.filename == path and path in str(exc)
