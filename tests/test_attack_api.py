"""Inputs beyond the issues' examples (issues 11 and 16), each found failing on main:
pins another object owns, bad arguments of every public call, bounded config reads,
sizes an object leaves at 0, ``pybpf gen -o`` paths, unresolved kernel addresses.
Anything that loads runs in a child interpreter with a timeout."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
from _child import run_child

import pybpf
from pybpf.symbolize import kernel_frame

pytestmark = pytest.mark.kernel


def _cli(*argv: str, cwd: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pybpf", *argv], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def test_missing_pin_is_a_pybpf_error_and_a_file_not_found(tmp_path):
    path = f"/sys/fs/bpf/pybpf-attack-nothing-{os.getpid()}"
    for opener in (pybpf.Map.open_pinned, pybpf.Link.open_pinned):
        with pytest.raises(pybpf.BPFNotFoundError) as info:
            opener(path)
        assert isinstance(info.value, FileNotFoundError) and info.value.filename == path
        assert path in str(info.value)
    with pytest.raises(pybpf.BPFNotFoundError):
        pybpf.Object.open(str(tmp_path / "missing.bpf.o"))


PINS = r"""
import pybpf, _integrity_obj as io
from pybpf import BPFError
d = P["dir"]
a = io.load(P["path"], tag=1, attach=False)
b = io.load(P["path"], tag=2, attach=False)
prog = a.programs["mark"]
b.maps["h"].pin(d + "/theirs")
prog.pin(d + "/mine")
res = {}
for label, path in (("another map's pin", d + "/theirs"), ("a file outside bpffs", P["file"])):
    try:
        prog.unpin(path)
        res[label] = "removed"
    except BPFError as e:
        res[label] = type(e).__name__
res["their pin survives"] = os.path.exists(d + "/theirs")
res["the file survives"] = os.path.exists(P["file"])
prog.unpin(d + "/mine")
res["own pin removed"] = not os.path.exists(d + "/mine")
m = pybpf.Map.open_pinned(d + "/theirs")
res["opened pin_path"] = m.pin_path
m.unpin()  # the map opened from the pin is the map pinned there: removed
res["unpin of opened map"] = not os.path.exists(d + "/theirs")
emit(res)
"""


def test_program_unpin_never_removes_another_objects_pin(bpf_obj, tmp_path):
    d = f"/sys/fs/bpf/pybpf-attack-{os.getpid()}"
    os.makedirs(d, exist_ok=True)
    victim = tmp_path / "victim"
    victim.write_text("x")
    try:
        v = run_child(PINS, timeout=30, what="program unpin",
                      params={"path": bpf_obj("integrity"), "dir": d, "file": str(victim)})
    finally:
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)
    assert v == {"another map's pin": "BPFError", "a file outside bpffs": "BPFError",
                 "their pin survives": True, "the file survives": True,
                 "own pin removed": True, "opened pin_path": f"{d}/theirs",
                 "unpin of opened map": True}, v


BAD_ARGS = r"""
import pybpf, _integrity_obj as io
from pybpf import BPFError
a = io.load(P["path"], attach=False)
h = a.maps["h"]
res = {}
def probe(label, fn):
    try:
        fn()
        res[label] = "no error"
    except BaseException as e:
        res[label] = [type(e).__name__, isinstance(e, BPFError), str(e)[:200]]
for what, args in (("key_size None", ("hash", None, 8, 4)),
                   ("key_size str", ("hash", "4", 8, 4)),
                   ("max_entries float", ("hash", 4, 8, 4.0)),
                   ("value_size -1", ("hash", 4, -1, 4))):
    probe(f"create_map {what}", lambda: pybpf.create_map(*args))
probe("create_map name 5", lambda: pybpf.create_map("hash", 4, 8, 4, name=5))
for fl in (1.5, None, "x", -1):
    probe(f"update flags={fl!r}", lambda: h.update({1: 1}, flags=fl))
    probe(f"raw update flags={fl!r}", lambda: pybpf.Map.update(h, bytes(4), bytes(8), fl))
probe("raw key 3 bytes", lambda: pybpf.Map.update(h, bytes(3), bytes(8)))
probe("raw value 9 bytes", lambda: pybpf.Map.update(h, bytes(4), bytes(9)))
probe("raw key str", lambda: pybpf.Map.lookup(h, "abcd"))
for chunk in (0, 1.5, None):
    probe(f"lookup_batch({chunk!r})", lambda: list(h.lookup_batch(chunk)))
o = pybpf.Object.open(P["path"])
for attr, value in (("max_entries", -1), ("key_size", None), ("value_size", 1.5),
                    ("max_entries", 2**40), ("type", 9999), ("type", "nosuch"), ("type", None)):
    probe(f"OpenMap.{attr}={value!r}", lambda: setattr(o.maps["h"], attr, value))
arr = a.maps["arr"]
probe("del arr[0]", lambda: arr.__delitem__(0))
probe("h.update(1, 2, 3)", lambda: h.update(1, 2, 3))
for value in (2**70, None, "x", 1.5):
    probe(f"bss.hits={value!r}", lambda: setattr(a.bss, "hits", value))
h[1] = 7
res["map unchanged"] = [list(h.keys()), h[1]]
emit(res)
"""


def test_bad_arguments_raise_pybpf_errors_naming_the_map(bpf_obj):
    v = run_child(BAD_ARGS, timeout=30, what="bad arguments",
                  params={"path": bpf_obj("integrity")})
    assert v.pop("map unchanged") == [[1], 7]
    bad = {k: r for k, r in v.items() if r == "no error" or not r[1]}
    assert bad == {}, bad
    def named(label: str, msg: str) -> bool:
        if label.startswith("create_map"):
            return True
        if label.startswith("bss"):
            return ".bss: hits" in msg
        return "'h'" in msg or "'arr'" in msg

    unnamed = {k: r for k, r in v.items() if not named(k, r[2])}
    assert unnamed == {}, unnamed


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "directory"])
def test_agent_config_refuses_non_regular_files(kind, tmp_path):
    path = {"dev_zero": "/dev/zero", "directory": str(tmp_path)}.get(kind, "")
    if kind == "fifo":
        path = str(tmp_path / "config.toml")
        os.mkfifo(path)
    r = _cli("agent", "--check", path, timeout=30)  # a read of it would hang: timeout fails
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "not a regular file" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


UNSIZED = r"""
import pybpf
res = {}
try:
    pybpf.Object.open(P["path"]).load()
    res["load"] = "no error"
except pybpf.LoadError as e:
    res["load"] = [e.map, str(e)]
obj = pybpf.Object.open(P["path"])
obj.maps["nokey"].key_size = 4
obj.maps["noval"].value_size = 8
obj.maps["noent"].max_entries = 16
with obj.load():
    res["sizes"] = {n: [obj.maps[n].info().key_size, obj.maps[n].info().value_size,
                        obj.maps[n].info().max_entries] for n in ("nokey", "noval", "noent")}
emit(res)
"""


def test_key_size_zero_is_named_and_settable(bpf_obj, tmp_path):
    path = bpf_obj("unsized_maps")
    v = run_child(UNSIZED, timeout=30, what="unsized maps", params={"path": path})
    name, msg = v["load"]
    assert name == "nokey" and "key_size is 0" in msg and ".key_size = N" in msg, v
    assert "--key-size nokey=N" in msg, v
    # the kernel's view of the maps it created (MapInfo from BPF_OBJ_GET_INFO_BY_FD)
    assert v["sizes"] == {"nokey": [4, 8, 4], "noval": [4, 8, 4], "noent": [4, 8, 16]}, v
    r = _cli("run", path, "--duration", "0.1", "--key-size", "nokey=4",
             "--value-size", "noval=8", "--max-entries", "noent=16", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    r = _cli("run", path, "--duration", "0.1", cwd=str(tmp_path))
    assert r.returncode == 1 and "Traceback" not in r.stderr and "key_size" in r.stderr


def test_gen_output_to_a_directory_or_with_a_stub_suffix(bpf_obj, tmp_path):
    obj = bpf_obj("basic")
    (tmp_path / "out").mkdir()
    for target, expect in (("out", "out/basic"), ("new/", None), ("skel.pyi", "skel")):
        r = _cli("gen", obj, "-o", target, cwd=str(tmp_path))
        if expect is None:  # a directory that does not exist: a one-line error
            assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
            continue
        assert r.returncode == 0, r.stderr
        for suffix in (".py", ".pyi"):
            assert (tmp_path / (expect + suffix)).is_file(), (target, sorted(
                str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")))
    assert not list(tmp_path.rglob("*.pyi.py")) and not (tmp_path / "out" / ".py").exists()
    r = subprocess.run([sys.executable, "-c", "import basic; print(basic.__name__)"],
                       cwd=tmp_path / "out", capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "basic", r.stderr


def _kallsyms() -> list[tuple[int, str, str | None]]:
    out = []
    with open("/proc/kallsyms") as f:
        for line in f:
            parts = line.split()
            if parts[1] in "tT" and int(parts[0], 16):
                out.append((int(parts[0], 16), parts[2],
                            parts[3].strip("[]") if len(parts) > 3 else None))
    return out


def test_kernel_addresses_no_symbol_covers_are_unresolved():
    syms = _kallsyms()
    if not syms:
        pytest.skip("/proc/kallsyms shows no addresses (kptr_restrict)")
    top = max(a for a, _n, _m in syms)
    by_name = {n: a for a, n, m in syms if m is None}
    for addr in (0x4E20, top + (1 << 24), 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFF600000):
        f = kernel_frame(addr)
        assert f.name is None and str(f) == f"{addr:#x}", (hex(addr), f)
    if "_etext" in by_name:  # past the end of the kernel's text, before init text
        f = kernel_frame(by_name["_etext"] + 0x10)
        assert f.name is None, f
    f = kernel_frame(by_name["vfs_read"] + 5)
    assert (f.name, f.offset, f.module, str(f)) == ("vfs_read", 5, None, "vfs_read+0x5")


def _cgroup_root() -> str | None:
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if parts[2] == "cgroup2":
                return parts[1]
    return None


def _gone(path: str, timeout: float = 8.0) -> bool:
    deadline = time.monotonic() + timeout
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not os.path.exists(path)


def test_audit_process_group_sigkill_leaves_nothing_running(tmp_path):
    """``kill -9 -PGID`` (a service manager, a terminal) kills the auditor and everything
    in its process group at once; a daemon the audited command started in a session of
    its own must not run on unaudited, and the cgroup must go."""
    root = _cgroup_root()
    if root is None:
        pytest.skip("no cgroup v2 hierarchy mounted")
    gc_file = tmp_path / "gc"
    daemon = f'setsid sh -c "echo \\$\\$ > {gc_file}; while true; do sleep 0.1; done" &'
    p = subprocess.Popen([sys.executable, "-m", "pybpf", "audit", "--output",
                          str(tmp_path / "out.jsonl"), "--", "sh", "-c",
                          daemon + " while true; do sleep 0.1; done"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    gc = 0
    cgroup = None
    try:
        deadline = time.monotonic() + 30
        while not gc_file.exists() or not gc_file.read_text().strip():
            assert time.monotonic() < deadline, "the audited command never started its daemon"
            time.sleep(0.05)
        gc = int(gc_file.read_text())
        with open(f"/proc/{gc}/cgroup") as f:
            rel = next(ln[3:].strip() for ln in f if ln.startswith("0::"))
        cgroup = os.path.join(root, rel.lstrip("/"))
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
        daemon_gone = _gone(f"/proc/{gc}")
        cgroup_gone = _gone(cgroup)
    finally:
        if gc:
            with contextlib.suppress(ProcessLookupError):
                os.kill(gc, signal.SIGKILL)
        if cgroup and os.path.isdir(cgroup):
            time.sleep(0.3)
            with contextlib.suppress(OSError):
                os.rmdir(cgroup)
    assert daemon_gone, "the audited command's daemon runs on, unaudited"
    assert cgroup_gone, f"cgroup left behind: {cgroup}"


def test_run_set_refuses_text_for_an_integer_global(bpf_obj, tmp_path):
    """``--set target_pid=abc`` used to write the bytes of "abc" into the int."""
    r = _cli("run", bpf_obj("integrity"), "--set", "target_pid=abc", "--duration", "0.1",
             cwd=str(tmp_path))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "target_pid" in r.stderr and "expected int" in r.stderr, r.stderr


@pytest.mark.parametrize("source, kw", [
    (None, {}), (5, {}), ("a\0b", {}), ("OBJ", {"name": 5}), ("OBJ", {"kconfig": 5}),
    ("OBJ", {"btf_custom_path": "x\0"}),
])
def test_object_open_bad_arguments_are_object_errors(bpf_obj, source, kw):
    src = bpf_obj("basic") if source == "OBJ" else source
    with pytest.raises(pybpf.ObjectError) as info:
        pybpf.Object.open(src, **kw)
    assert str(info.value)


@pytest.mark.parametrize("argv", [["execsnoop", "--duration", "-1"],
                                  ["opensnoop", "--duration", "nan"],
                                  ["biolatency", "--interval", "0"],
                                  ["profile", "--duration", "inf"]])
def test_tool_durations_must_be_positive_seconds(argv, tmp_path):
    """``--interval 0`` printed forever, ``--duration -1``/``nan`` exited 0 at once."""
    r = _cli(*argv, cwd=str(tmp_path), timeout=30)
    assert r.returncode == 2 and "Traceback" not in r.stderr, (r.returncode, r.stderr)
    assert "seconds above 0" in r.stderr, r.stderr
