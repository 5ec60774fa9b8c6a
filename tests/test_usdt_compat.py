"""USDT specs across libbpf versions (pybpf/_usdt.py): the runtime libbpf writes each probe
site's argument specs into the object's __bpf_usdt_specs map, the object's usdt.bpf.h
reads them. A spec kind the object does not know (libbpf 1.7's SIB addressing, written
into an object built with an older usdt.bpf.h) reads as 0 in silence: pybpf refuses it.

The SIB spec is planted by hand in the real map (this host's libbpf 1.1 never writes
one): the kernel side shows the zero it causes, then pybpf's check refuses it."""

from __future__ import annotations

import subprocess

import pytest
from attach_util import target_binary, val

import pybpf
from pybpf import AttachError, _usdt

pytestmark = pytest.mark.kernel

USDT, USDT_ARG1 = 4, 5  # hook ids of tests/bpf/attach_user.bpf.c


@pytest.fixture
def user_obj(bpf_obj):
    with pybpf.load(bpf_obj("attach_user")) as obj:
        yield obj


def run_pid(binary: str, a: int, b: int) -> int:
    p = subprocess.Popen([binary, str(a), str(b)], stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate(timeout=120)
    assert out.strip() == str(a + b)
    return p.pid


def live_specs(obj: pybpf.Object) -> dict[int, bytes]:
    specs = obj.maps[_usdt.SPECS_MAP]
    out = {}
    for i in range(specs.max_entries):
        v = specs.lookup(i.to_bytes(4, "little"))
        if v and any(v):
            out[i] = v
    return out


def test_runtime_specs_match_the_objects_layout(user_obj):
    target = target_binary()
    layout = _usdt.SpecLayout(user_obj.btf)
    # the layout every libbpf up to 1.6 compiles into objects (the 1.7 one has the same size)
    assert (layout.spec_size, layout.arg_size, layout.max_args) == (208, 16, 12)
    assert {0, 1, 2} <= set(layout.kinds)
    with user_obj.programs["on_usdt"].attach_usdt(target, "pybpf_test", "added"):
        specs = live_specs(user_obj)
        assert specs, "libbpf wrote no spec"
        kinds = [layout.arg_kinds(v) for v in specs.values()]
        assert all(len(k) == 2 for k in kinds)  # STAP_PROBE2(pybpf_test, added, r, a)
        assert all(k in layout.kinds for ks in kinds for k in ks)
        pid = run_pid(target, 30, 12)
        assert (val(user_obj, USDT, pid), val(user_obj, USDT_ARG1, pid)) == (42, 30)


def test_spec_kind_the_object_cannot_read_is_refused(user_obj):
    target = target_binary()
    prog = user_obj.programs["on_usdt"]
    prog_id = None
    with prog.attach_usdt(target, "pybpf_test", "added"):
        prog_id = prog.info().id
        specs_map = user_obj.maps[_usdt.SPECS_MAP]
        layout = _usdt.SpecLayout(user_obj.btf)
        (spec_id, value), *_ = live_specs(user_obj).items()
        # What libbpf >= 1.7 writes for argument 2 at a SIB operand: kind 3 in the low byte
        # of the word after val_off (little-endian; both layouts keep it there).
        planted = bytearray(value)
        planted[layout.args_off + layout.arg_size + 8] = 3
        specs_map.update(spec_id.to_bytes(4, "little"), bytes(planted))
        pid = run_pid(target, 30, 12)
        # The hazard is real: the object's bpf_usdt_arg() fails on kind 3 and BPF_USDT
        # passes on its 0, while argument 1 is still read.
        assert (val(user_obj, USDT, pid), val(user_obj, USDT_ARG1, pid)) == (42, 0)
        with pytest.raises(AttachError, match=r"argument 2 .*SIB.*rebuild the object") as exc:
            _usdt.check_specs(user_obj, specs_map, f"usdt {target}", "on_usdt")
        assert "usdt.bpf.h" in str(exc.value)
        # Through attach_usdt: the new attachment is refused and its link closed.
        before = sum(1 for li in pybpf.list_links() if li.prog_id == prog_id)
        with pytest.raises(AttachError, match="SIB") as exc:
            prog.attach_usdt(target, "pybpf_test", "added")
        assert exc.value.errno == 71  # EPROTO
        assert sum(1 for li in pybpf.list_links() if li.prog_id == prog_id) == before
