"""Foreign objects as easy as their C front ends (issue 16), one test per point, on
tests/bpf/foreign.bpf.c (the shapes libbpf-tools objects have) and real events;
tests/test_conformance.py runs the real libbpf-tools objects beside the C tools."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import warnings

import pytest
from _child import readline
from attach_util import BUILD, TESTS, hits
from conftest import require

import pybpf
from pybpf import features, names, symbolize
from pybpf.errors import describe_errno
from pybpf.histogram import LinearHistogram, Log2Histogram, format_linear, format_log2

PROGS = ("exec_btf", "exec_btf_twin", "exec_raw", "readline_ret", "user_stack",
         "kernel_stack")


def _open(path: str, keep=PROGS, entries: int | None = 16) -> pybpf.Object:
    obj = pybpf.Object.open(path)
    obj.select_programs(keep)
    if entries is not None:
        obj.maps["unsized"].max_entries = entries
    return obj


def _exec_n(n: int) -> None:
    for _ in range(n):
        subprocess.run(["/bin/true"], check=True)


# --- point 1: uprobes on aliased symbols -------------------------------------------
def test_uprobe_on_versioned_alias_resolves_like_perf(bpf_obj):
    """libc's clock_nanosleep has two versions at one address: libbpf 1.1 says
    "ambiguous"; pybpf resolves it, exposes the path and offset, and the probe fires
    once per call."""
    target = symbolize.resolve_uprobe("libc.so.6", "clock_nanosleep")
    assert "clock_nanosleep" in target.names
    # the dynamic loader's own answer: the function's address in this process, as a
    # file offset through /proc/self/maps
    libc = ctypes.CDLL("libc.so.6")
    addr = ctypes.cast(libc.clock_nanosleep, ctypes.c_void_p).value
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= addr < hi:
                assert os.path.realpath(parts[5]) == os.path.realpath(target.path)
                assert addr - lo + int(parts[2], 16) == target.offset
                break
        else:
            raise AssertionError("clock_nanosleep is not mapped")
    with pybpf.load(bpf_obj("attach_user")) as obj:
        code = "import time\nfor _ in range(7): time.sleep(0.001)"
        proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline()\n"
                                 + code], stdin=subprocess.PIPE)
        link = obj.programs["on_add"].attach_uprobe("libc.so.6", "clock_nanosleep",
                                                    pid=proc.pid)
        assert link.uprobe.offset == target.offset
        assert os.path.samefile(link.uprobe.path, target.path)
        proc.communicate(b"go\n", timeout=30)
        assert hits(obj, 1, proc.pid) == 7  # UPROBE: counted by the program per pid
    # a short library name in a process's view, as BCC and libbpf-tools read "c:func"
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        seen = symbolize.resolve_uprobe("c", "clock_nanosleep", sleeper.pid)
        assert seen.path.startswith(f"/proc/{sleeper.pid}/root/")
        assert os.path.samefile(seen.path, target.path) and seen.offset == target.offset
    finally:
        sleeper.kill()
        sleeper.wait()
    with pytest.raises(pybpf.AttachError, match="symbol 'pybpf_none' not found in") as ei:
        symbolize.resolve_uprobe("libc.so.6", "pybpf_none")
    assert ei.value.errno == errno.ENOENT
    libc = symbolize.load_elf(target.path)
    assert libc is not None
    ifuncs = sorted(n for n, defs in libc.by_name.items() if all(d.ifunc for d in defs))
    if ifuncs:  # memcpy & co: a probe on the resolver would never fire; say so
        with pytest.raises(pybpf.AttachError, match="indirect function"):
            symbolize.resolve_uprobe("libc.so.6", ifuncs[0])


# --- point 2: choosing programs -----------------------------------------------------
def test_alternatives_and_program_choice(bpf_obj):
    path = bpf_obj("foreign")
    with _open(path) as obj:
        assert [[p.name for p in g] for g in obj.alternatives()] == \
            [["exec_btf", "exec_btf_twin", "exec_raw"]]
        dropped = obj.choose_alternatives()
        if features.tp_btf():  # both tp_btf programs stay: they are not each other's twin
            assert dropped == {"exec_raw": "exec_btf"}
        else:
            assert dropped == {"exec_btf": "exec_raw", "exec_btf_twin": "exec_raw"}
        obj.load()
        for name, prog in obj.programs.items():
            if prog.autoload and name.startswith("exec"):
                prog.attach()
        _exec_n(3)
        bss = obj.bss
        if features.tp_btf():
            assert bss.btf_hits >= 3 and bss.twin_hits >= 3 and bss.raw_hits == 0
        else:
            assert bss.raw_hits >= 3 and bss.btf_hits == bss.twin_hits == 0
        with pytest.raises(pybpf.StateError, match="only be chosen before load"):
            obj.select_programs(["exec_raw"])
    with pybpf.Object.open(path) as obj:
        assert obj.select_programs("exec_*", exclude="exec_raw") == ["exec_btf",
                                                                     "exec_btf_twin"]
        assert [n for n, p in obj.programs.items() if p.autoload] == ["exec_btf",
                                                                      "exec_btf_twin"]
        with pytest.raises(KeyError, match="no program matches 'nope'.*exec_btf"):
            obj.select_programs(["nope"])


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pybpf", "run", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_pybpf_run_program_flags(bpf_obj):
    require(features.tp_btf())
    path = bpf_obj("foreign")
    skip = ("--no-program", "missing_*", "--no-program", "readline_ret", "--no-program",
            "user_stack", "--max-entries", "unsized=8")

    def bss(out: str) -> dict[str, int]:
        maps = json.loads(out.strip().splitlines()[-1])["maps"]
        entry = next(v for k, v in maps.items() if k.endswith(".bss"))[0]["value"]
        return {k: int(v) for k, v in entry.items()}

    r = subprocess.Popen([sys.executable, "-m", "pybpf", "run", path, *skip, "--duration",
                          "2", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    assert r.stderr is not None
    head = ""  # up to "attached N of M" (its --duration starts then): execs after it count
    while "attached" not in head and (line := readline(r, r.stderr)):
        head += line
    _exec_n(3)
    out, err = r.communicate(timeout=60)
    err = head + err
    assert r.returncode == 0, err
    assert "'exec_raw' not loaded: it counts the same events as 'exec_btf'" in err
    got = bss(out)
    assert got["btf_hits"] >= 3 and got["raw_hits"] == 0
    # --program chooses exactly; --all-programs keeps both twins
    r = _run(path, "--program", "exec_raw", "--program", "kernel_stack", "--max-entries",
             "unsized=8", "--duration", "0.2", "--json")
    assert r.returncode == 0, r.stderr
    assert "attached 2 of" in r.stderr and "exec_raw" in r.stderr and "exec_btf" not in \
        r.stderr.split("attached")[1]
    r = _run(path, *skip, "--all-programs", "--duration", "0.2")
    assert r.returncode == 0 and "not loaded" not in r.stderr, r.stderr
    r = _run(path, "--program", "nope")
    assert r.returncode == 1 and "no program matches 'nope'" in r.stderr


# --- point 3: unsized maps -------------------------------------------------------
def test_unsized_map_names_the_attribute_and_the_fix(bpf_obj):
    path = bpf_obj("foreign")
    with _open(path, keep=("exec_btf",), entries=None) as obj:
        before = {m.id for m in pybpf.list_maps()}
        with pytest.raises(pybpf.LoadError) as ei:
            obj.load()
        e = ei.value
        assert e.errno == errno.EINVAL and e.map == "unsized"
        msg = str(e)
        assert "'unsized'" in msg and "max_entries is 0" in msg
        assert "obj.maps['unsized'].max_entries = N" in msg and "--max-entries unsized=N" in msg
        assert {m.id for m in pybpf.list_maps()} - before == set()  # refused before creating
    with _open(path, keep=("exec_btf",), entries=5) as obj:
        obj.load()
        assert obj.maps["unsized"].info().max_entries == 5
    r = _run(path, "--program", "exec_btf", "--duration", "0.1")
    assert r.returncode == 1 and "--max-entries unsized=N" in r.stderr, r.stderr


# --- point 4: errors that agree with themselves --------------------------------------
@pytest.mark.parametrize("prog,target", [("missing_fentry", "pybpf_no_such_function_xyz"),
                                         ("missing_tp_btf", "pybpf_no_such_tracepoint_xyz")])
def test_missing_attach_target_error_agrees(bpf_obj, prog, target):
    with _open(bpf_obj("foreign"), keep=(prog,)) as obj:
        with pytest.raises(pybpf.LoadError) as ei:
            obj.load()
    e = ei.value
    assert e.program == prog and e.errno == errno.ESRCH
    assert describe_errno(e.errno) in str(e) and f"'{prog}'" in str(e) and target in str(e)
    assert "EPERM" not in e.message


def test_not_supported_errors_name_the_program(bpf_obj):
    if features.trampolines():
        pytest.skip("this kernel loads fentry programs")
    with pytest.raises(pybpf.NotSupportedError) as ei:
        pybpf.load(bpf_obj("fentry_only"))
    e = ei.value
    assert e.program == "on_unlinkat" and describe_errno(e.errno) in str(e)


# --- point 5: the smaller ones -------------------------------------------------------
def test_unsigned_rodata_all_ones(bpf_obj):
    path = bpf_obj("foreign")
    with _open(path, keep=("exec_btf",)) as obj:
        obj.set_rodata("targ_uid", -1)             # C's (uid_t)-1: no filter
        obj.rodata.max_ns = -1
        assert obj.rodata.targ_uid == 0xFFFFFFFF and obj.rodata.max_ns == (1 << 64) - 1
        with pytest.raises(ValueError, match="out of range"):
            obj.rodata.targ_uid = -(1 << 31) - 1
        with pytest.raises(ValueError, match="out of range"):
            obj.rodata.small = 256
        obj.load()
        obj.attach()
        _exec_n(2)
        assert obj.bss.btf_hits >= 2               # the kernel saw all-ones: no filter
        with pytest.raises(pybpf.StateError, match="only be set before load"):
            obj.set_rodata("targ_uid", 0)
        with pytest.raises(pybpf.StateError, match="frozen at load"):
            obj.rodata.targ_uid = 0
    with _open(path, keep=("exec_btf",)) as obj:
        obj.rodata.targ_uid = 54321                 # nobody here has this uid
        obj.load()
        obj.attach()
        _exec_n(2)
        assert obj.bss.btf_hits == 0


def test_missing_section_is_a_pybpf_error(bpf_obj):
    with pybpf.Object.open(bpf_obj("foreign")) as obj:
        with pytest.raises(pybpf.ObjectError, match=r"no \.data section.*sections: .*\.rodata"
                           ) as ei:
            _ = obj.data
        assert ei.value.errno == errno.ENOENT


def test_every_setter_after_load_is_a_state_error(bpf_obj):
    """Issue 11: a setter after load is a StateError by construction, whichever."""
    with _open(bpf_obj("foreign"), keep=("exec_btf",)) as obj:
        spec = obj.maps["unsized"]  # the OpenMap, kept across load
        obj.load()
        prog = obj.programs["exec_btf"]
        m = obj.maps["unsized"]
        setters = [
            lambda: setattr(prog, "autoload", False), lambda: prog.set_autoload(True),
            lambda: prog.set_type("raw_tracepoint"), lambda: prog.set_expected_attach_type(0),
            lambda: prog.set_attach_target("sched_process_fork"),
            lambda: setattr(prog, "log_level", 1), lambda: setattr(prog, "log_size", 4096),
            lambda: obj.set_rodata("targ_uid", 1), lambda: setattr(obj.rodata, "small", 1),
            lambda: obj.select_programs(None), lambda: obj.choose_alternatives(),
            lambda: setattr(m, "max_entries", 4), lambda: setattr(m, "value_size", 8),
            lambda: setattr(m, "key_size", 8), lambda: setattr(m, "flags", 0),
            lambda: setattr(m, "pin_path", "/sys/fs/bpf/x"),
            lambda: setattr(spec, "max_entries", 4), lambda: setattr(spec, "type", "array"),
            lambda: setattr(spec, "key_size", 4), lambda: setattr(spec, "value_size", 8),
            lambda: setattr(spec, "flags", 0), lambda: setattr(spec, "autocreate", False),
            lambda: setattr(spec, "pin_path", None), lambda: spec.reuse_fd(m),
            lambda: obj.load(),
        ]
        for setter in setters:
            with pytest.raises(pybpf.StateError):
                setter()
        assert obj.programs["exec_btf"].autoload and m.max_entries == 16
    # a live operation before load is one too
    with pybpf.Object.open(bpf_obj("foreign")) as obj:
        with pytest.raises(pybpf.StateError, match="load the object first"):
            _ = obj.programs["exec_btf"].fd


def test_attach_reports_programs_it_cannot_auto_attach(bpf_obj):
    path = bpf_obj("foreign")
    with _open(path, keep=("exec_btf", "readline_ret")) as obj:
        obj.load()
        with pytest.raises(pybpf.AttachError, match="readline_ret.*attach_uprobe") as ei:
            obj.attach(strict=True)
        assert ei.value.program == "readline_ret" and obj.links == []
        prog = obj.programs["readline_ret"]
        assert not prog.auto_attachable and obj.programs["exec_btf"].auto_attachable
        with pytest.raises(pybpf.AttachError, match="'uretprobe/readline' names no target.*"
                           "attach_uprobe") as ei:
            prog.attach()
        assert ei.value.program == "readline_ret"
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            links = obj.attach()
        assert [ln.program for ln in links] == ["exec_btf"]
        assert any(issubclass(x.category, pybpf.AttachWarning) and "readline_ret" in
                   str(x.message) and "uretprobe/readline" in str(x.message) for x in w)
        assert "attach_uprobe" in obj.not_attached["readline_ret"]
        for ln in links:
            ln.detach()
        obj.programs["readline_ret"].autoattach = False  # "I attach it myself": silent
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            obj.attach()
        assert dict(obj.not_attached) == {}


def test_gen_output_is_an_importable_module(bpf_obj, tmp_path):
    out = tmp_path / "fskel"
    r = subprocess.run([sys.executable, "-m", "pybpf", "gen", bpf_obj("foreign"), "-o",
                        str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path)) == ["fskel.py", "fskel.pyi"]
    r = subprocess.run([sys.executable, "-c", "import fskel"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out2 = tmp_path / "other.py"
    subprocess.run([sys.executable, "-m", "pybpf", "gen", bpf_obj("foreign"), "-o",
                    str(out2)], check=True, capture_output=True, timeout=60)
    assert (tmp_path / "other.pyi").exists() and not (tmp_path / "other.py.pyi").exists()


CTRL_C_DURING_CLOSE = r"""
import os, signal, sys, time, pybpf

def opened():
    obj = pybpf.Object.open(PATH)
    obj.select_programs(["exec_btf"])
    obj.maps["unsized"].max_entries = 4
    obj.load()
    obj.attach()
    for _ in range(4):
        obj.programs["exec_btf"].attach_trace()
    return obj

class CtrlC:
    def close(self):  # closed first by obj.close(): the signal lands inside close()
        for _ in range(2):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.02)

def link_ids(obj):
    return {ln.info().id for ln in obj.links}

for round in range(5):
    obj = opened()
    ids = link_ids(obj)
    stopper = CtrlC()
    obj.close_with(stopper)
    try:
        obj.close()
    except KeyboardInterrupt:
        pass
    else:
        raise SystemExit("the Ctrl-C during close() was lost")
    assert obj.closed
    assert not ids & {ln.id for ln in pybpf.list_links()}, "links left attached"
    # the second Ctrl-C while the first one is handled: close finishes, no new error
    obj = opened()
    ids = link_ids(obj)
    stopper = CtrlC()
    obj.close_with(stopper)
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        obj.close()
    assert obj.closed and not ids & {ln.id for ln in pybpf.list_links()}
print("OK")
"""


def test_ctrl_c_during_close_finishes_the_close(bpf_obj):
    code = f"PATH = {bpf_obj('foreign')!r}\n" + CTRL_C_DURING_CLOSE
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "OK", r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr


# --- point 6: symbolize -----------------------------------------------------------
def _cxx_target() -> str:
    src = TESTS / "native" / "foreign_target.cc"
    out = BUILD / "foreign_target"
    if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return str(out)
    gxx = shutil.which("g++") or shutil.which("clang++")
    if gxx is None:
        pytest.skip("no C++ compiler (g++) to build the symbolize test binary")
    BUILD.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"foreign_target.tmp{os.getpid()}")
    subprocess.run([gxx, "-O1", "-g", "-fno-omit-frame-pointer", "-o", str(tmp), str(src)],
                   check=True)
    os.replace(tmp, out)
    return str(out)


SPIN = "_ZN8pybpf_ns6Worker4spinEi"


def test_symbolize_frames_aliases_demangling_and_lines(bpf_obj):
    binary = _cxx_target()
    src_lines = (TESTS / "native" / "foreign_target.cc").read_text().splitlines()
    spin_line = next(i for i, ln in enumerate(src_lines, 1) if "int Worker::spin(int n)" in ln)
    with _open(bpf_obj("foreign"), keep=("user_stack", "kernel_stack")) as obj:
        proc = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout is not None and readline(proc) == "ready\n"
        obj.rodata.target_pid = proc.pid
        obj.load()
        prog = obj.programs["user_stack"]
        prog.attach_uprobe(binary, SPIN, pid=proc.pid, cookie=1)
        prog.attach_uprobe("libc.so.6", "__select", pid=proc.pid, cookie=2)
        proc.stdin.write("go\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        # read the stacks while the process lives (its maps name its files)
        deadline = time.monotonic() + 10
        while len(obj.maps["user_stack_of"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        stacks = obj.maps["stacks"]
        spin_id, sel_id = obj.maps["user_stack_of"][1], obj.maps["user_stack_of"][2]
        spin = stacks.frames(spin_id, pid=proc.pid, lines=True)
        sel = stacks.frames(sel_id, pid=proc.pid)
        names_only = stacks.symbolize(sel_id, pid=proc.pid, names_only=True)
        text = stacks.symbolize(spin_id, pid=proc.pid)
        proc.communicate("exit\n", timeout=30)
    top = spin[0]
    assert top.name == "pybpf_ns::Worker::spin(int)" and top.offset == 0
    assert top.module == binary and not top.kernel
    assert top.file and top.file.endswith("foreign_target.cc")
    assert top.line in (spin_line, spin_line + 1)  # the declaration or its brace
    if shutil.which("addr2line") and shutil.which("nm"):  # binutils' reading of the DWARF
        nm = subprocess.run(["nm", binary], capture_output=True, text=True).stdout
        vaddr = next(ln.split()[0] for ln in nm.splitlines() if ln.endswith(" " + SPIN))
        a2l = subprocess.run(["addr2line", "-e", binary, "0x" + vaddr], capture_output=True,
                             text=True).stdout.strip()
        assert a2l.endswith(f"foreign_target.cc:{top.line}"), a2l
    spin_line = top.line
    assert text[0] == "pybpf_ns::Worker::spin(int)+0x0 [foreign_target]"
    assert str(top) == f"{text[0]} (foreign_target.cc:{spin_line})"
    assert sel[0].name == "select" and sel[0].offset == 0   # not __select: the C tools' pick
    assert names_only[0] == "select"
    assert "main" in names_only


def test_symbolize_kernel_frames(bpf_obj):
    with _open(bpf_obj("foreign"), keep=("kernel_stack",)) as obj:
        obj.rodata.target_pid = os.getpid()
        obj.load()
        obj.attach()
        os.getppid()
        sid = obj.maps["kernel_stack_of"][os.getpid()]
        frames = obj.maps["stacks"].frames(sid)
        text = obj.maps["stacks"].symbolize(sid)
        only = obj.maps["stacks"].symbolize(sid, names_only=True)
    assert any(f.name and "do_syscall_64" in f.name for f in frames)
    for f, t, n in zip(frames, text, only):
        assert f.kernel and f.name == n
        expect = f"{f.name}+{f.offset:#x}" + (f" [{f.module}]" if f.module else "")
        assert t == expect  # the documented form, never "name [mod]+0x..."


def test_demangle():
    assert symbolize.demangle("_ZN8pybpf_ns6Worker4spinEi") == "pybpf_ns::Worker::spin(int)"
    assert symbolize.demangle("_ZN4core3fmt5write17h0123456789abcdefE") == "core::fmt::write"
    assert symbolize.demangle("main") == "main"


# --- point 7: helpers -----------------------------------------------------------------
def test_syscall_names_agree_with_the_kernel():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    assert libc.syscall(names.syscall_number("getppid")) == os.getppid()
    assert libc.syscall(names.syscall_number("getpid")) == os.getpid()
    assert names.syscall_name(names.syscall_number("openat")) == "openat"
    assert names.syscall_number("sys_getpid") == names.syscall_number("getpid")
    assert names.syscall_name(99999) == "[unknown: 99999]"
    with pytest.raises(KeyError, match="no system call named 'nope'"):
        names.syscall_number("nope")
    # the kernel's own numbering for a tracepoint's syscall: its format file
    fmt = "/sys/kernel/tracing/events/syscalls/sys_enter_getppid/id"
    if os.path.exists(fmt) and os.uname().machine == "x86_64":
        assert names.syscall_table()[110] == "getppid"


def test_errno_and_signal_names():
    assert names.errno_name(errno.ENOENT) == "ENOENT" and names.errno_name(524) == "ENOTSUPP"
    assert names.signal_name(9) == "SIGKILL" and names.signal_name(2) == "SIGINT"
    import signal

    assert names.signal_name(signal.SIGRTMIN + 3) == "SIGRTMIN+3"
    assert names.signal_name(200) == "signal 200"


def test_histogram_printers():
    # libbpf-tools' print_log2_hist / print_linear_hist (trace_helpers.c), by hand
    assert format_log2([0, 3, 1], "usecs").splitlines() == [
        "     usecs               : count    distribution",
        "         0 -> 1          : 0        |                                        |",
        "         2 -> 3          : 3        |****************************************|",
        "         4 -> 7          : 1        |*************                           |"]
    wide = [0] * 33 + [2]
    rows = format_log2(wide, "nsecs").splitlines()
    assert rows[0] == f"{'':15}{'nsecs':<29} : count    distribution"
    assert rows[-1] == f"{1 << 33:>20} -> {(1 << 34) - 1:<20} : 2        |{'*' * 20}|"
    assert format_log2([0, 0]) == "" and format_linear([]) == ""
    assert format_linear([0, 2, 0, 4], base=10, step=5, unit="runqlen").splitlines() == [
        "     runqlen       : count     distribution",
        "        15         : 2        |********************                    |",
        "        25         : 4        |****************************************|"]
    h = Log2Histogram([1, 2], unit="msecs")
    assert h.total == 3 and h.buckets() == [(0, 1, 1), (2, 3, 2)] and str(h) == h.format()
    lh = LinearHistogram([0, 1], base=1, step=2)
    assert lh.buckets() == [(3, 1)] and lh.to_dict()["total"] == 1
    # the older home still works
    from pybpf.tools.biolatency import Log2Histogram as Old

    assert Old is Log2Histogram


def test_frame_text_forms():
    f = symbolize.Frame(0x10, "f", 0x4, None)
    assert str(f) == "f+0x4"
    assert str(symbolize.Frame(0x10, "g", 0x124, "bpf")) == "g+0x124 [bpf]"
    assert str(symbolize.Frame(0x4e20, None, 0x4e20, "/usr/lib/libfoo.so", kernel=False)) == \
        "0x4e20 [libfoo.so]"
    assert str(symbolize.Frame(0x4e20, None)) == "0x4e20"
    assert struct.calcsize("<Q") == 8
