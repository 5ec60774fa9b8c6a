"""Program options before load: verifier logs of successful loads (log_level,
log_size, verifier_log), attach targets set at run time (set_attach_target), and a
flow dissector on a network namespace (tests/bpf/program_more.bpf.c)."""

from __future__ import annotations

import errno
import os
import socket
import struct
import subprocess

import pytest
from attach_util import run, veth_pair
from conftest import require

import pybpf
from pybpf import features


def _open(bpf_obj, *, keep: tuple[str, ...]) -> pybpf.Object:
    """The test object with only the programs in ``keep`` loaded."""
    obj = pybpf.Object.open(bpf_obj("program_more"))
    for name, prog in obj.programs.items():
        prog.autoload = name in keep
    return obj


# --- verifier logs of successful loads -------------------------------------------------

def test_verifier_log_of_a_successful_load(bpf_obj):
    with _open(bpf_obj, keep=("logged", "dissect", "retarget")) as obj:
        logged, dissect = obj.programs["logged"], obj.programs["dissect"]
        obj.programs["retarget"].set_attach_target("sched_process_exec")
        assert logged.log_level == 0 and logged.verifier_log is None
        logged.log_level = 1
        dissect.log_level = 2 | 4  # every instruction's state, plus statistics
        assert logged.log_level == 1 and logged.verifier_log is None  # not loaded yet
        obj.load()
        log1 = logged.verifier_log
        assert log1 is not None and log1.startswith("processed ")
        n = int(log1.split()[1])
        assert n > 0 and "(limit 1000000)" in log1
        log2 = dissect.verifier_log
        assert log2 is not None and "(95) exit" in log2 and "verification time" in log2
        assert "stack depth" in log2
        n2 = int(log2[log2.index("processed "):].split()[1])
        assert n2 >= dissect.info().xlated_size // 8 > 0
        assert obj.programs["retarget"].verifier_log is None  # no level set: no log kept
        # the logged program is a normal program: it runs
        obj.bss.target_tgid = os.getpid()
        with logged.attach():
            for _ in range(3):
                os.getppid()
        assert obj.bss.getppids == 3
        with pytest.raises(pybpf.StateError, match="log_level can only be set before load"):
            logged.log_level = 2


def test_verifier_log_settings_are_checked(bpf_obj):
    with _open(bpf_obj, keep=("logged",)) as obj:
        p = obj.programs["logged"]
        with pytest.raises(ValueError, match="log_level must be 0 or a combination"):
            p.log_level = 32
        with pytest.raises(ValueError, match="log_size must be an int from 128"):
            p.log_size = 16
        p.log_level = 2
        p.log_size = 128  # far too small for a level-2 log
        with pytest.raises(pybpf.LoadError) as ei:
            obj.load()
        assert ei.value.errno == errno.ENOSPC and ei.value.program == "logged"
        assert "did not fit in log_size=128 bytes" in str(ei.value)
        assert "set a larger log_size" in str(ei.value)
    with _open(bpf_obj, keep=("logged",)) as obj:
        p = obj.programs["logged"]
        p.log_level = 2
        p.log_size = 1 << 16
        obj.load()
        assert "processed " in (p.verifier_log or "")


def test_a_rejected_program_with_log_level_set_still_gives_a_verifier_error(bpf_obj):
    """libbpf prints no log that went to the program's own buffer: pybpf reads it."""
    obj = pybpf.Object.open(bpf_obj("bad_verifier"))
    with obj:
        prog = obj.programs["null_deref"]
        prog.log_level = 1
        with pytest.raises(pybpf.VerifierError) as ei:
            obj.load()
        e = ei.value
        assert e.program == "null_deref"  # (6.1 logs carry no "@ file:line")
        assert "invalid mem access 'map_value_or_null'" in e.reason
        assert "R0 invalid mem access" in e.log and "processed " in e.log  # the whole log
        assert prog.verifier_log is None  # not loaded


# --- attach targets set before load ---------------------------------------------------

def test_tp_btf_program_without_a_target_fails_clearly(bpf_obj):
    with _open(bpf_obj, keep=("retarget",)) as obj:
        with pytest.raises(pybpf.LoadError, match="section 'tp_btf' names no attach target; "
                           r"call set_attach_target\(\) before load") as ei:
            obj.load()
        assert ei.value.program == "retarget"


def test_set_attach_target_on_tp_btf_fires_on_that_tracepoint(bpf_obj):
    with _open(bpf_obj, keep=("retarget",)) as obj:
        prog = obj.programs["retarget"]
        prog.set_attach_target("sched_process_exec")
        obj.load()
        # the kernel reports the target: the tracepoint's btf_trace_ typedef in vmlinux
        from pybpf._ffi import ffi, lib

        vmlinux = lib.btf__load_vmlinux_btf()
        assert vmlinux != ffi.NULL
        try:
            want = lib.btf__find_by_name_kind(vmlinux, b"btf_trace_sched_process_exec", 8)
        finally:
            lib.btf__free(vmlinux)
        info = prog.info()
        assert want > 0 and info.attach_btf_id == want and info.attach_btf_obj_id > 0
        obj.bss.target_tgid = os.getpid()
        with prog.attach():  # bare tp_btf: the target set above is the one attached
            child = subprocess.Popen(["/bin/true"])
            child.wait()
        assert obj.bss.execs == 1 and obj.bss.last_exec_pid == child.pid


def test_set_attach_target_errors(bpf_obj):
    with _open(bpf_obj, keep=("retarget", "logged")) as obj:
        prog = obj.programs["retarget"]
        with pytest.raises(pybpf.AttachError) as ei:
            prog.set_attach_target("pybpf_no_such_tracepoint")
        assert ei.value.errno == errno.ESRCH and ei.value.program == "retarget"
        assert ei.value.target == "pybpf_no_such_tracepoint"
        assert "no 'pybpf_no_such_tracepoint' in kernel BTF" in str(ei.value)
        with pytest.raises(pybpf.AttachError, match=r"'logged' \(tracepoint\) has no BTF "
                           "attach target"):
            obj.programs["logged"].set_attach_target("sched_process_exec")
        with pytest.raises(TypeError, match="must be a function or tracepoint name"):
            prog.set_attach_target("")
        prog.set_attach_target("sched_process_fork")  # a later call replaces the target
        prog.set_attach_target("sched_process_exec")
        obj.load()
        with pytest.raises(pybpf.StateError, match="the attach target can only be set before "
                           "load"):
            prog.set_attach_target("sched_process_exit")


def test_set_attach_target_in_a_bpf_program_that_lacks_it(bpf_obj):
    """With target_prog, the name is looked up in that program's BTF."""
    with _open(bpf_obj, keep=("logged",)) as target, _open(bpf_obj, keep=()) as obj:
        target.load()
        with pytest.raises(pybpf.AttachError) as ei:
            obj.programs["retarget_fentry"].set_attach_target("pybpf_nope",
                                                              target.programs["logged"])
        assert "program 'logged'" in str(ei.value) and ei.value.target == "pybpf_nope"


def test_freplace_target_set_in_another_program(bpf_obj):
    """The extension's target is resolved in the target program's BTF at
    set_attach_target(); loading it needs trampolines (skips on the probe)."""
    with _open(bpf_obj, keep=("xdp_target",)) as target, \
            _open(bpf_obj, keep=("new_verdict",)) as ext:
        target.load()
        tp = target.programs["xdp_target"]
        assert tp.test_run(bytes(64)).retval == 2  # XDP_PASS
        prog = ext.programs["new_verdict"]
        assert prog.type == "ext"
        with pytest.raises(pybpf.AttachError, match="no 'pybpf_nope' in program 'xdp_target'"):
            prog.set_attach_target("pybpf_nope", tp)
        prog.set_attach_target("pybpf_verdict", tp)
        require(features.trampolines())
        ext.load()
        with prog.attach():
            assert tp.test_run(bytes(64)).retval == 1  # XDP_DROP: replaced
        assert tp.test_run(bytes(64)).retval == 2


def test_set_attach_target_on_fentry(bpf_obj):
    with _open(bpf_obj, keep=("retarget_fentry",)) as obj:
        prog = obj.programs["retarget_fentry"]
        with pytest.raises(pybpf.AttachError, match="no 'pybpf_no_such_function' in kernel"):
            prog.set_attach_target("pybpf_no_such_function")
        prog.set_attach_target("do_unlinkat")  # resolved in BTF before any load
        require(features.trampolines())
        obj.load()
        with prog.attach():
            for i in range(3):
                path = f"/tmp/pybpf-fentry-{os.getpid()}-{i}"
                open(path, "w").close()
                os.unlink(path)
        assert obj.bss.execs >= 3


# --- flow dissector -----------------------------------------------------------------

def _udp_frame(sport: int, dport: int) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + 4, 1, 0, 64, 17, 0,
                     socket.inet_aton("10.1.2.3"), socket.inet_aton("10.4.5.6"))
    udp = struct.pack("!HHHH", sport, dport, 8 + 4, 0) + b"data"
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp


def test_flow_dissector_test_run_fills_the_flow_keys(bpf_obj):
    with _open(bpf_obj, keep=("dissect",)) as obj:
        prog = obj.programs["dissect"]
        obj.load()
        out = prog.test_run(_udp_frame(4242, 53))
        assert out.retval == 0  # BPF_OK
        nhoff, thoff, addr_proto, is_frag, _, _, ip_proto, n_proto, sport, dport, src, dst = \
            struct.unpack_from("<HHHBBBBHHH4s4s", out.data)
        assert (nhoff, thoff, addr_proto, is_frag, ip_proto) == (14, 34, 0x0800, 0, 17)
        assert socket.ntohs(sport) == 4242 and socket.ntohs(dport) == 53
        assert socket.ntohs(n_proto) == 0x0800
        assert (socket.inet_ntoa(src), socket.inet_ntoa(dst)) == ("10.1.2.3", "10.4.5.6")
        assert prog.test_run(bytes(64)).retval == 2  # not IPv4: BPF_DROP


def test_flow_dissector_on_a_netns_sees_the_packets(bpf_obj):
    with _open(bpf_obj, keep=("dissect",)) as obj, veth_pair() as pair:
        obj.load()
        # RPS on b's device: the kernel dissects every received packet to pick a CPU
        run("ip", "netns", "exec", pair.ns_b, "sh", "-c",
            f"echo 1 > /sys/class/net/{pair.dev_b}/queues/rx-0/rps_cpus")
        rx = pair.udp_socket("b")
        try:
            obj.bss.target_port = rx.getsockname()[1]
            assert pair.send_udp(5, receiver=rx) == 5 and obj.bss.dissected == 0
            link = obj.programs["dissect"].attach(netns=f"/run/netns/{pair.ns_b}")
            try:
                got = pair.send_udp(10, receiver=rx)
                assert got == 10 and obj.bss.dissected == 10
            finally:
                link.detach()
            assert pair.send_udp(10, receiver=rx) == 10 and obj.bss.dissected == 10
        finally:
            rx.close()
