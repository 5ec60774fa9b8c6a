"""What the CLI commands print, checked against what the kernel and the object hold.

Every command runs in this process (``pybpf.cli.main``), so that mutation testing
(scripts/mutation.py cli) credits these tests. The object is tests/bpf/cli_kinds.bpf.c:
expected values come from its source (sizes, initial values, the structs it owns) and
from what its programs recorded about the getcwd(2) calls and the CPU time this test
caused (read from the kernel's maps by id), never from the code under test.
``pybpf run`` is stopped by SIGTERM, as a service manager stops it, once the kernel has
counted what the test caused.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import compile_test_bpf
from elftools.elf.elffile import ELFFile

import pybpf
from pybpf._clicmds import _core_relo_count, _parse_value

pytestmark = pytest.mark.kernel

BIG = 120  # entries the program puts in ck_big (cli_kinds.bpf.c)
OWN = {"ck_stat", "ck_value", "ck_item", "ck_inner", "ck_cfg", "ck_record"}
REC = struct.Struct("<IIIII8s")  # struct ck_record: pid, seq, flag, ppid, kind, prefix
CK_GETCWD = 1  # enum ck_kind
CPU = max(os.sched_getaffinity(0))  # where the thread that causes the events runs
TWINS = {"ck_fork_btf", "ck_fork_raw"}  # two ways to one event


@pytest.fixture(scope="module")
def kinds() -> str:
    return compile_test_bpf("cli_kinds")


def _ncpus() -> int:
    """Possible CPUs, from the kernel's own list (per-CPU values come one per CPU)."""
    text = open("/sys/devices/system/cpu/possible").read().strip()
    return sum(int(b) - int(a) + 1 if "-" in r else 1
               for r in text.split(",") for a, _, b in [r.partition("-")])


def _col_end(header: str, word: str) -> int:
    return header.index(word) + len(word)


def _right_aligned(header: str, row: str, word: str, cell: str) -> None:
    """In ``row``, ``cell`` ends where the header's ``word`` ends (right-aligned)."""
    end = _col_end(header, word)
    assert row[:end].endswith(" " + cell) or row[:end] == cell, (header, row, word, cell)


# --- inspect --------------------------------------------------------------------------
def test_inspect_shows_what_the_source_declares(kinds, icli):
    r = icli("inspect", "--json", kinds)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert r.stdout.startswith('{\n  "path": ')  # indented for people
    assert info["license"] == "GPL" and info["core_relocations"] == 2  # real_parent, tgid
    progs = {p["name"]: p for p in info["programs"]}
    assert progs["ck_clock"]["type"] == "perf_event" and progs["ck_clock"]["autoload"]
    maps = {m["name"]: m for m in info["maps"]}
    assert (maps["ck_sized"]["max_entries"], maps["ck_sized"]["value_size"]) == (0, 32)
    assert maps["ck_outer"]["type"] == "array_of_maps"
    assert maps["ck_pcpu"]["type"] == "percpu_array"
    assert (maps["ck_stats"]["internal"], maps["cli_kind.rodata"]["internal"]) == (False, True)
    glob = {g["name"]: g for g in info["globals"]}
    assert set(glob) == {"targ_pid", "flag", "prefix", "ck_cfg", "ck_seq", "ck_spare",
                         "ck_last", "ck_task", "LINUX_KERNEL_VERSION"}  # not LICENSE
    assert glob["LINUX_KERNEL_VERSION"] == {"name": "LINUX_KERNEL_VERSION",
                                            "section": ".kconfig", "type": "unsigned int",
                                            "size": 4}  # an extern: no value before load
    assert glob["ck_cfg"] == {"name": "ck_cfg", "section": ".data", "type": "ck_cfg_t",
                              "size": 12, "value": {"limit": 3, "label": "cfg"}}
    assert glob["prefix"] == {"name": "prefix", "section": ".rodata",
                              "type": "const volatile char[8]", "size": 8, "value": "pre"}
    assert glob["flag"]["value"] == 5 and glob["ck_seq"]["value"] == 0
    assert glob["ck_last"]["value"] == {"pid": 0, "seq": 0, "flag": 0, "ppid": 0,
                                        "kind": 0, "prefix": ""}
    structs = {s["name"]: s for s in info["structs"]}
    assert {n for n, s in structs.items() if s["own"]} == OWN
    assert structs["task_struct"]["own"] is False  # only pointed to
    assert [(m["name"], m["type"], m["offset"]) for m in structs["ck_value"]["members"]] == [
        ("items", "struct ck_item[2]", 0), ("owner", "struct task_struct *", 16),
        ("hits", "__u64", 24)]
    assert structs["ck_item"]["kind"] == "struct" and structs["ck_item"]["size"] == 8
    assert all(type(m["offset"]) is int for s in structs.values() for m in s["members"])

    r = icli("inspect", kinds)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"{kinds}: license 'GPL', 2 CO-RE relocations"
    p0 = lines.index("PROGRAMS") + 1
    prog_rows = lines[p0:lines.index("", p0)]
    with pybpf.Object.open(kinds) as obj:
        insns = {n: p.instruction_count for n, p in obj.programs.items()}
    for name, n in insns.items():
        row = next(ln for ln in prog_rows if ln.startswith(name + " "))
        _right_aligned(prog_rows[0], row, "INSNS", str(n))
    m0 = lines.index("MAPS") + 1
    map_rows = lines[m0:lines.index("", m0)]
    sized = next(ln for ln in map_rows if ln.startswith("ck_sized "))
    assert sized.split()[1:] == ["hash", "4", "32", "0", "0x0"]
    for word, cell in (("KEY", "4"), ("VALUE", "32"), ("MAX_ENTRIES", "0")):
        end = _col_end(map_rows[0], word)
        assert sized[:end].endswith(" " + cell), (word, sized)
    # the .rodata map: BPF_F_RDONLY_PROG | BPF_F_MMAPABLE, in hex
    rodata = next(ln for ln in map_rows if ln.split()[0].endswith(".rodata"))
    assert rodata.split()[-1] == hex(0x80 | 0x400)
    g0 = lines.index("GLOBALS") + 1
    rows = {ln.split()[0]: ln for ln in lines[g0:lines.index("", g0)]}
    assert rows["ck_cfg"].split(None, 3)[1:] == [".data", "ck_cfg_t",
                                                 '{"limit":3,"label":"cfg"}']
    assert rows["prefix"].endswith('  "pre"')
    assert rows["LINUX_KERNEL_VERSION"].split() == ["LINUX_KERNEL_VERSION", ".kconfig",
                                                    "unsigned", "int", '""']
    own = [ln for ln in lines if ln.startswith("  struct ")]
    assert "  struct ck_item (8 bytes): __u32 a, __u16 b" in own
    assert "  struct ck_value (32 bytes): struct ck_item[2] items, " \
           "struct task_struct * owner, __u64 hits" in own
    assert {ln.split()[1] for ln in own} == OWN
    every = icli("inspect", "--all-structs", kinds).stdout
    assert "\nSTRUCTS\n" in every and "  struct task_struct (" in every


def _btf_ext(path: str) -> bytes:
    with open(path, "rb") as f:
        return ELFFile(f).get_section_by_name(".BTF.ext").data()


def test_core_relocation_count_stays_inside_the_section(kinds):
    """The .BTF.ext parser of ``inspect``: the source's two CO-RE reads, and nothing
    read past a header, a section or a record that the data does not hold."""
    ext = _btf_ext(kinds)
    assert _core_relo_count(ext) == 2
    hdr_len, = struct.unpack_from("<I", ext, 4)
    core_off, core_len = struct.unpack_from("<II", ext, 24)
    start = hdr_len + core_off

    def with_(off: int, fmt: str, *vals: int) -> bytes:
        b = bytearray(ext)
        struct.pack_into(fmt, b, off, *vals)
        return bytes(b)

    assert _core_relo_count(ext[:31]) == 0  # shorter than a header
    assert _core_relo_count(with_(0, "<H", 0x9FEB)) == 0  # the other byte order's magic
    assert _core_relo_count(with_(4, "<I", 24)) == 0  # a header without CO-RE fields
    assert _core_relo_count(with_(28, "<I", 0)) == 0  # no CO-RE relocations
    assert _core_relo_count(ext[:start + core_len - 1]) == 0  # the section cut short
    # a section info whose records run past the end of the section: not counted
    _sec, n = struct.unpack_from("<II", ext, start + 4)
    assert _core_relo_count(with_(start + 8, "<I", n + 1)) == 0
    assert _core_relo_count(with_(start + 8, "<I", 0xFFFFFFFF)) == 0  # an unsigned count
    # records twice as long: the first section's run past the end
    rec, = struct.unpack_from("<I", ext, start)
    assert _core_relo_count(with_(start, "<I", rec * 2)) == 0
    # an empty section info at the end of the section: counts nothing more
    tail = struct.pack("<II", 0, 0)
    grown = bytearray(ext[:start + core_len] + tail)
    struct.pack_into("<I", grown, 28, core_len + len(tail))
    assert _core_relo_count(bytes(grown)) == 2


# --- run --------------------------------------------------------------------------------
def test_set_values_parse_as_the_help_says():
    """``--set NAME=VALUE``: "int, true/false or text" (any case), ints in any base."""
    for word in ("true", "TRUE", "Yes", "on", "ON"):
        assert _parse_value(word) == 1, word
    for word in ("false", "False", "NO", "off", "Off"):
        assert _parse_value(word) == 0, word
    assert (_parse_value("0x1f"), _parse_value("-7"), _parse_value("0o17")) == (31, -7, 15)
    assert _parse_value("ab") == b"ab" and _parse_value("truely") == b"truely"


def _stats(pid: int) -> tuple[int, int]:
    """(getcwd calls, perf samples) that ck_getcwd/ck_clock counted for ``pid``, from
    any loaded ck_stats map (read by id)."""
    best = (0, 0)
    for info in pybpf.list_maps():
        if info.name == "ck_stats":
            with contextlib.suppress(pybpf.BPFError), pybpf.Map.from_id(info.id) as m:
                raw = m.lookup(pid.to_bytes(4, "little"))
                if raw is not None:
                    best = max(best, struct.unpack("<QQ", raw))
    return best


def _run_until(icli: Callable[..., Any], args: list[str],
               done: Callable[[int, int], bool]) -> tuple[Any, float]:
    """``pybpf run ARGS`` in this process while a thread (on CPU only) calls getcwd(2)
    and spins (CPU time for the perf_event program) until ``done(calls, samples)`` holds of
    what the kernel counted, then sends SIGTERM. Returns the result and the seconds
    from SIGTERM to the return."""
    me = os.getpid()
    default = signal.getsignal(signal.SIGTERM)
    sent: list[float] = []

    def driver() -> None:
        os.sched_setaffinity(0, {CPU})  # this thread only: per-CPU counts on one CPU
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            calls, ticks = _stats(me)
            if done(calls, ticks) and signal.getsignal(signal.SIGTERM) is not default:
                sent.append(time.monotonic())
                os.kill(me, signal.SIGTERM)
                return
            os.getcwd()
            spin = time.monotonic() + 0.02
            while time.monotonic() < spin:
                pass

    t = threading.Thread(target=driver)
    t.start()
    try:
        r = icli("run", *args, "--duration", "60")
    finally:
        t.join()
    assert signal.getsignal(signal.SIGTERM) is default  # given back
    assert sent, f"the kernel never counted enough: {r.stderr}"
    return r, time.monotonic() - sent[0]


def test_run_text_output_of_every_kind(kinds, icli):
    """Events decoded with --event-type, a perf_event program attached to sampling,
    --set of an int by word and of a char array by text, --max-entries, SIGTERM,
    and the final dump of each kind of map as text."""
    me = os.getpid()
    r, stopped = _run_until(icli, [kinds, "--set", f"targ_pid={me}", "--set", "flag=TRUE",
                                   "--set", "prefix=a=b", "--max-entries", "ck_sized=8",
                                   "--event-type", "struct ck_record"],
                            lambda calls, ticks: calls >= 3 and ticks >= 1)
    assert r.returncode == 0, r.stderr
    assert stopped < 30  # SIGTERM stops it (--duration was 60)
    err = r.stderr.splitlines()
    # of the two ways to one event, the better one the kernel supports (probed) is loaded
    (note,) = [ln for ln in err if "not loaded" in ln]
    m = re.fullmatch(r"pybpf run: cli_kinds: program '(\w+)' not loaded: it counts the same "
                     r"events as '(\w+)' \(--all-programs keeps both\)", note)
    assert m and {m[1], m[2]} == TWINS, note
    kept = m[2]
    (nowhere,) = [ln for ln in err if "ck_nowhere" in ln]
    assert nowhere.startswith("pybpf run: program 'ck_nowhere' (tracepoint/syscalls/"
                              "sys_enter_pybpf_none) not attached: ") and "ENOENT" in nowhere
    assert f"pybpf run: cli_kinds: attached 3 of 5 programs (ck_getcwd, ck_clock, {kept}); " \
           "Ctrl-C to stop" in err
    out = r.stdout.splitlines()
    stats = next(out[i + 1] for i, ln in enumerate(out) if ln.startswith("map ck_stats:"))
    m = re.fullmatch(rf'  {me}: {{"calls":(\d+),"ticks":(\d+)}}', stats)
    assert m, stats
    calls, ticks = int(m[1]), int(m[2])
    assert calls >= 3 and ticks >= 1
    ppid = os.getppid()
    events = [ln for ln in out if ln.startswith("ck_raw: ")]
    assert events == [f'ck_raw: {{"pid":{me},"seq":{i},"flag":1,"ppid":{ppid},'
                      f'"kind":{CK_GETCWD},"prefix":"a=b"}}' for i in range(1, calls + 1)]

    def section(name: str) -> list[str]:
        i = next(i for i, ln in enumerate(out) if ln.startswith(f"map {name}:"))
        end = next((j for j in range(i + 1, len(out)) if not out[j].startswith("  ")),
                   len(out))
        return out[i:end]

    assert section("ck_counts") == ["map ck_counts: 4 entries, 3 all-zero not shown",
                                    f"  1: {calls}"]
    head, row = section("ck_pcpu")  # slot 1 is zero on every CPU
    assert head == "map ck_pcpu: 2 entries, 1 all-zero not shown"
    per_cpu = json.loads(row.split(": ", 1)[1])
    assert row.startswith("  0: [") and len(per_cpu) == _ncpus()
    assert per_cpu[CPU] == sum(per_cpu) == calls
    hexes = [(i).to_bytes(4, "little").hex() for i in (1, calls)]
    assert section("ck_rawarr") == ["map ck_rawarr: 2 entries, 1 all-zero not shown",
                                    f'  "{hexes[0]}": "{hexes[1]}"']
    big = section("ck_big")
    from pybpf._clicmds import _TEXT_LIMIT
    shown = min(BIG, _TEXT_LIMIT)
    assert big[0] == f"map ck_big: {BIG} entries" and len(big) == 1 + shown + 1
    assert {ln for ln in big[1:-1]} <= {f"  {i}: {me}" for i in range(BIG)}
    assert big[-1] == f"  ... {BIG - shown} more (--json shows every entry)"
    assert section("ck_sized") == ["map ck_sized: 0 entries"]
    assert section("ck_plain") == [
        "map ck_plain: 1 entries",
        f'  "{me.to_bytes(4, "little").hex()}": "{calls.to_bytes(4, "little").hex()}"']
    bss = json.loads(section("cli_kind.bss")[1].split(": ", 1)[1])
    assert bss == {"ck_seq": calls, "ck_spare": 0, "ck_task": 0,
                   "ck_last": {"pid": me, "seq": calls, "flag": 1, "ppid": ppid,
                               "kind": CK_GETCWD, "prefix": "a=b"}}
    assert section("cli_kind.data") == ["map cli_kind.data: 1 entries",
                                        '  0: {"ck_cfg":{"limit":3,"label":"cfg"}}']
    assert not any(ln.startswith(("map cli_kind.rodata", "map ck_raw:")) for ln in out)


def test_run_json_raw_events_and_program_choice(kinds, icli):
    """Without --event-type a record is its bytes (hex);
    --program loads only one program; the final dump as JSON has every entry."""
    me = os.getpid()
    r, _ = _run_until(icli, [kinds, "--set", f"targ_pid={me}", "--program", "ck_getcwd",
                             "--max-entries", "ck_sized=4", "--json"],
                      lambda calls, ticks: calls >= 2)
    assert r.returncode == 0, r.stderr
    assert "attached 1 of 5 programs (ck_getcwd);" in r.stderr
    assert "not loaded" not in r.stderr  # --program chose
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    maps = lines[-1]["maps"]
    (stat,) = maps["ck_stats"]
    calls = stat["value"]["calls"]
    assert stat == {"key": me, "value": {"calls": calls, "ticks": 0}}  # ck_clock not loaded
    events = [x for x in lines if x.get("map") == "ck_raw"]
    recs = [REC.unpack(bytes.fromhex(x["event"])) for x in events]
    assert recs == [(me, i, 5, os.getppid(), CK_GETCWD, b"pre\0\0\0\0\0")
                    for i in range(1, calls + 1)]
    assert all(isinstance(x["time_unix_nano"], int) for x in events)
    assert sorted(e["key"] for e in maps["ck_big"]) == list(range(BIG))
    assert maps["ck_counts"] == [{"key": i, "value": calls if i == 1 else 0}
                                 for i in range(4)]
    assert maps["ck_plain"] == [{"key": me.to_bytes(4, "little").hex(),
                                 "value": calls.to_bytes(4, "little").hex()}]
    pcpu = maps["ck_pcpu"]
    assert [e["key"] for e in pcpu] == [0, 1] and pcpu[0]["value"][CPU] == calls
    assert sum(pcpu[0]["value"]) == calls and pcpu[1]["value"] == [0] * _ncpus()
    (wide,) = maps["ck_wide"]  # __u64[9] on each CPU: the program counts in the last
    assert wide["value"] == [[0] * 8 + [calls if cpu == CPU else 0]
                             for cpu in range(_ncpus())]
    assert maps["ck_sized"] == [] and "ck_raw" not in maps
    assert not any(k.endswith(".rodata") for k in maps)


@pytest.mark.parametrize("mode", [[], ["--json"]])
def test_run_streams_events_into_a_pipe(kinds, monkeypatch, mode):
    """Into a pipe (``pybpf run ... | jq``), each event line goes out when it is read,
    not when the run ends: the run is only stopped once a line of the event the test
    caused came through the pipe."""
    from pybpf.cli import main

    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    pipe = io.TextIOWrapper(io.BufferedWriter(io.FileIO(wfd, "w"), buffer_size=1 << 16))
    monkeypatch.setattr(sys, "stdout", pipe)
    me = os.getpid()
    default = signal.getsignal(signal.SIGTERM)
    got = bytearray()
    streamed: list[bytes] = []

    def driver() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(BlockingIOError):
                got.extend(os.read(rfd, 1 << 16))
            if b"ck_raw" in got and signal.getsignal(signal.SIGTERM) is not default:
                streamed.append(bytes(got))
                os.kill(me, signal.SIGTERM)
                return
            if _stats(me)[0] < 3:  # three events, far less than the pipe's buffer
                os.getcwd()
            time.sleep(0.02)

    t = threading.Thread(target=driver)
    t.start()
    try:
        rc = main(["run", kinds, "--set", f"targ_pid={me}", "--program", "ck_getcwd",
                   "--max-entries", "ck_sized=2", "--duration", "40", *mode])
    finally:
        t.join()
        pipe.close()
        with contextlib.suppress(BlockingIOError):
            got.extend(os.read(rfd, 1 << 20))
        os.close(rfd)
    assert rc == 0 and streamed, got.decode()
    first = streamed[0].decode().splitlines()[0]
    assert first.startswith('{"map": "ck_raw", "event": "' if mode else "ck_raw: "), first


def test_run_objects_without_btf_or_rodata(tmp_path, icli):
    """An object compiled without BTF runs for its --duration (no records to type,
    no consumers): its socket program has no target to auto-attach to, which run
    says. An object without .rodata refuses --set by the variable's name."""
    src = os.path.join(os.path.dirname(__file__), "bpf", "nobtf.bpf.c")
    out = tmp_path / "nobtf.bpf.o"
    subprocess.run([pybpf.toolchain.find_clang(), "-target", "bpf", "-O2", "-I",
                    f"/usr/include/{os.uname().machine}-linux-gnu", "-c", src, "-o", str(out)],
                   check=True)
    t0 = time.monotonic()
    r = icli("run", str(out), "--duration", "0.3")
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 >= 0.3
    err = r.stderr.splitlines()
    assert len(err) == 2 and err[0].startswith(
        "pybpf run: program 'accept_all' (socket) not attached: ")
    assert err[1] == "pybpf run: nobtf: attached 0 of 1 programs (none); Ctrl-C to stop"
    assert r.stdout == ""
    r = icli("inspect", str(out))
    assert r.stdout.splitlines()[0] == f"{out}: license 'GPL', 0 CO-RE relocations"
    info = json.loads(icli("inspect", "--json", str(out)).stdout)
    assert (info["globals"], info["structs"], info["maps"]) == ([], [], [])
    r = icli("run", compile_test_bpf("pinned"), "--set", "x=abc")
    assert r.returncode == 1 and "no read-only global named 'x'" in r.stderr, r.stderr


@pytest.mark.parametrize("args, words", [
    (["--event-type", "struct ck_nosuch"],
     "--event-type: no type 'struct ck_nosuch' in the object's BTF"),
    (["--max-entries", "ck_sized=x"], "--max-entries takes MAP=N (N a decimal count), "
                                      "got 'ck_sized=x'"),
    (["--key-size", "ck_sized"], "--key-size takes MAP=N"),
    (["--value-size", "ck_sized= "], "--value-size takes MAP=N"),
    (["--max-entries", "ck_nosuch=3"], "no map named 'ck_nosuch' (maps: ck_stats, "),
    (["--no-program", "ck_nosuch"], "ck_nosuch"),
    (["--set", "prefix"], "--set takes NAME=VALUE, got 'prefix'"),
])
def test_run_refuses_bad_options_before_loading(kinds, icli, args, words):
    r = icli("run", kinds, *args, "--duration", "1")
    assert r.returncode == 1 and words in r.stderr, r.stderr
    assert "attached" not in r.stderr
    if args[0] == "--event-type":
        assert f"({kinds})" in r.stderr


def test_run_sizes_maps_and_keeps_every_way(kinds, icli):
    """--key-size/--value-size/--max-entries reach the map (the kernel's map info);
    --all-programs and --no-program."""
    me = os.getpid()
    seen: list[tuple[int, int, int]] = []

    def done(calls: int, ticks: int) -> bool:
        for info in pybpf.list_maps():
            if info.name == "ck_sized":
                seen.append((info.key_size, info.value_size, info.max_entries))
        return calls >= 1

    r, _ = _run_until(icli, [kinds, "--set", f"targ_pid={me}", "--no-program", "ck_clock",
                             "--no-program", "ck_nowhere", "--all-programs",
                             "--max-entries", "ck_sized=12", "--value-size", "ck_sized=32",
                             "--key-size", "ck_sized=4"], done)
    assert r.returncode == 0, r.stderr
    assert (4, 32, 12) in seen
    # --all-programs: both ways to the fork event load; ck_clock and ck_nowhere do not
    assert "not loaded" not in r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if " attached " in ln]
    m = re.fullmatch(r"pybpf run: cli_kinds: attached (\d) of 5 programs \((.*)\); "
                     r"Ctrl-C to stop", line)
    assert m and m[2].split(", ")[:2] == ["ck_getcwd", "ck_fork_btf"]
    assert int(m[1]) == len(m[2].split(", ")) and "ck_fork_raw" in m[2]


# --- prog / map / link ------------------------------------------------------------------
def test_prog_map_link_text(kinds, icli):
    with pybpf.Object.open(kinds) as obj:
        obj.rodata["targ_pid"] = os.getpid()
        obj.maps["ck_sized"].max_entries = 2
        obj.load()
        prog = obj.programs["ck_getcwd"]
        link = prog.attach_auto()
        for _ in range(3):
            os.getcwd()
        pinfo, linfo = prog.info(), link.info()
        plain = obj.maps["ck_plain"].info()
        counts = obj.maps["ck_counts"].info()

        r = icli("prog", "show", str(pinfo.id))
        rows = dict(ln.split(None, 1) for ln in r.stdout.splitlines())
        assert rows["id"] == str(pinfo.id) and rows["name"] == '"ck_getcwd"'
        assert rows["type"] == '"tracepoint"' and rows["tag"] == f'"{pinfo.tag}"'
        assert json.loads(rows["map_ids"]) == list(pinfo.map_ids)
        r = icli("prog", "show", str(pinfo.id), "--json")
        row = json.loads(r.stdout)
        assert r.returncode == 0 and set(row) == set(rows) == {
            "id", "name", "type", "tag", "xlated_size", "jited_size", "verified_insns",
            "map_ids", "btf_id", "run_count", "run_time_ns"}
        assert (row["verified_insns"], row["btf_id"], row["xlated_size"]) == (
            pinfo.verified_insns, pinfo.btf_id, pinfo.xlated_size)
        assert row["run_count"] >= 0 and row["run_time_ns"] >= 0
        r = icli("prog", "list")
        lines = r.stdout.splitlines()
        mine = next(ln for ln in lines if ln.split()[0] == str(pinfo.id))
        assert mine.split()[4:] == [str(pinfo.xlated_size), str(pinfo.jited_size),
                                    ",".join(map(str, pinfo.map_ids))]
        for word, cell in (("ID", str(pinfo.id)), ("XLATED", str(pinfo.xlated_size)),
                           ("JITED", str(pinfo.jited_size))):
            _right_aligned(lines[0], mine, word, cell)

        r = icli("map", "show", str(plain.id))
        rows = dict(ln.split(None, 1) for ln in r.stdout.splitlines())
        assert (rows["name"], rows["type"], rows["key_size"], rows["btf_id"]) == (
            '"ck_plain"', '"hash"', "4", str(plain.btf_id))
        r = icli("map", "list")
        lines = r.stdout.splitlines()
        mine = next(ln for ln in lines if ln.split()[0] == str(counts.id))
        assert mine.split()[1:] == ["array", "ck_counts", "4", "8", "4", "0x0",
                                    str(counts.btf_id)]
        for word, cell in (("ID", str(counts.id)), ("KEY", "4"), ("VALUE", "8"),
                           ("MAX_ENTRIES", "4")):
            _right_aligned(lines[0], mine, word, cell)

        # an array typed by the kernel's copy of the object's BTF; a map without types
        r = icli("map", "dump", str(counts.id))
        assert r.stdout.splitlines() == ["0: 0", "1: 3", "2: 0", "3: 0"], r.stdout
        assert r.stderr.strip() == "(4 entries)"
        r = icli("map", "dump", str(plain.id))
        assert r.stdout.splitlines() == [f'"{os.getpid().to_bytes(4, "little").hex()}": '
                                         f'"{(3).to_bytes(4, "little").hex()}"']
        assert r.stderr.strip() == "(1 entries, no BTF: raw bytes)"
        r = icli("map", "dump", str(obj.maps["ck_rawarr"].info().id))
        assert r.stdout.splitlines() == [f'"{(i).to_bytes(4, "little").hex()}": "{v}"'
                                         for i, v in ((0, "00000000"), (1, "03000000"))]
        # .bss: a value type (the section), no key type
        r = icli("map", "dump", str(obj.maps["cli_kind.bss"].info().id))
        (line,) = r.stdout.splitlines()
        assert line.startswith('0: {"ck_seq":3,') and r.stderr.strip() == "(1 entries)"
        r = icli("map", "dump", str(plain.id), "--json")
        assert json.loads(r.stdout) == [{"key": os.getpid().to_bytes(4, "little").hex(),
                                         "value": (3).to_bytes(4, "little").hex()}]
        ring = obj.maps["ck_raw"].info()
        r = icli("map", "dump", str(ring.id))
        assert r.returncode == 1
        assert r.stderr.strip() == f"pybpf map dump: map {ring.id} (ringbuf) has no " \
                                   "entries to dump"

        r = icli("link", "list")
        lines = r.stdout.splitlines()
        mine = next(ln for ln in lines if ln.split()[0] == str(linfo.id))
        assert mine.split()[1:] == [linfo.type, str(pinfo.id)]
        _right_aligned(lines[0], mine, "ID", str(linfo.id))
        _right_aligned(lines[0], mine, "PROG", str(pinfo.id))
        r = icli("link", "list", "--json")
        assert r.returncode == 0
        assert {"id": linfo.id, "type": linfo.type, "prog_id": pinfo.id} in json.loads(r.stdout)
        r = icli("map", "list", "--json")
        assert r.returncode == 0
        assert {"id": plain.id, "name": "ck_plain", "type": "hash", "key_size": 4,
                "value_size": 4, "max_entries": 4, "flags": 0,
                "btf_id": plain.btf_id} in json.loads(r.stdout)
        link.detach()


# --- features / build ---------------------------------------------------------------------
def test_features_text_agrees_with_json(icli):
    f = json.loads(icli("features", "--json").stdout)
    r = icli("features")
    assert r.returncode == 0
    out = r.stdout
    assert out.startswith(f"kernel {f['kernel']}, libbpf {f['libbpf']}\n")
    for title, key in (("PROGRAM TYPES", "program_types"), ("MAP TYPES", "map_types")):
        i = out.index(f"\n{title}\n")
        block = out[i:].splitlines()[2:4]
        yes = sorted(k for k, v in f[key].items() if v)
        no = sorted(k for k, v in f[key].items() if not v)
        assert block[0] == f"  supported ({len(yes)}): {' '.join(yes)}"
        assert block[1] == f"  not supported ({len(no)}): {' '.join(no) or '-'}"
    api = f["libbpf_api"]
    assert f"\nLIBBPF {api['libbpf']} (pybpf needs {api['minimum']}+)" in out
    lines = out.splitlines()
    for name, cap in api["capabilities"].items():
        row = next(ln for ln in lines if ln.startswith(name + "  "))
        assert row[len(name):].split()[:3] == [cap["symbol"], cap["since"],
                                               "yes" if cap["present"] else "no"]
        assert row.endswith("  " + cap["path"])

    h = json.loads(icli("features", "--helpers", "xdp", "--json").stdout)
    assert h["program_type"] == "xdp"
    r = icli("features", "--helpers", "xdp")
    assert r.returncode == 0
    out = r.stdout.splitlines()
    yes = [x["name"] for x in h["helpers"] if x["supported"]]
    no = [x["name"] for x in h["helpers"] if not x["supported"]]
    assert out[0] == f"helpers callable from xdp programs ({len(yes)}): {' '.join(yes)}"
    assert out[2] == f"not callable ({len(no)}): {' '.join(no) or '-'}"
    ids = [x["id"] for x in h["helpers"]]
    assert ids == sorted(ids) and all(not n.startswith("helper_") for n in yes)


def test_build_defines_and_errors(tmp_path, icli):
    src = tmp_path / "defs.bpf.c"
    src.write_text('#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n'
                   "int val = VAL;\nint flag = FLAG;\n"
                   'SEC("xdp") int pass_all(struct xdp_md *ctx) { val++; return XDP_PASS; }\n'
                   'char LICENSE[12] SEC("license") = "GPL \\xfe";\n')
    out = tmp_path / "defs.o"
    r = icli("build", str(src), "-o", str(out), "-D", "VAL=7", "-D", "FLAG")
    assert r.returncode == 0, r.stderr
    glob = {g["name"]: g.get("value") for g in
            json.loads(icli("inspect", "--json", str(out)).stdout)["globals"]}
    assert (glob["val"], glob["flag"]) == (7, 1)  # -D FLAG defines it as 1, as cc does
    # the license up to its NUL, a byte that is not UTF-8 replaced
    assert json.loads(icli("inspect", "--json", str(out)).stdout)["license"] == "GPL \ufffd"
    bad = tmp_path / "bad.bpf.c"
    bad.write_text("int x = ;\nint y = ;\nint z = ;\n")
    r = icli("build", str(bad))
    assert r.returncode == 1
    assert re.search(r"does not compile: \S*bad.bpf.c:1:\d+: error: .* \(and 2 more errors\)$",
                     r.stderr.strip()), r.stderr
    bad.write_text("int x = ;\n")
    r = icli("build", str(bad))
    assert r.returncode == 1 and r.stderr.rstrip().endswith("expected expression"), r.stderr
    r = icli("build")
    assert r.returncode == 2 and r.stderr.strip() == "pybpf build: give SRC.bpf.c, or --type DECL"


def test_build_type_writes_the_cache(tmp_path, icli):
    r = icli("build", "--type", "struct ck_pair { __u32 a; __u64 b; }",
             "--type-cache", str(tmp_path))
    assert r.returncode == 0, r.stderr
    (path,) = r.stdout.split()
    assert os.path.dirname(path) == str(tmp_path) and os.path.getsize(path) > 0
    assert os.listdir(tmp_path) == [os.path.basename(path)]
    assert r.stderr == ""


# --- upgrade ------------------------------------------------------------------------------
def test_upgrade_sets_globals_and_reports(icli):
    """``pybpf upgrade`` of a pinned deployment: its --set reaches the new build (the
    events the new program writes after the switch carry it), and the report says
    what happened to each pinned map; --to moves the deployment's pins."""
    src = compile_test_bpf("upgrade_events")  # the new build is the same object
    me = os.getpid()
    pin = f"/sys/fs/bpf/pybpf-cli-upg-{me}"
    to = f"{pin}-to"
    fd = os.open("/dev/null", os.O_RDONLY)
    obj = pybpf.Object.open(src)
    obj.set_rodata("target_tgid", me)
    obj.set_rodata("target_fd", fd)
    obj.set_rodata("build", 1)
    obj.load()
    os.mkdir(pin)
    try:
        for name in ("stats", "events", "seen"):
            obj.maps[name].pin(f"{pin}/{name}")
        obj.programs["on_lseek"].attach_auto().pin(f"{pin}/link")
        os.lseek(fd, 1, os.SEEK_SET)
        obj.close()  # the deployment is its pins now
        r = icli("upgrade", src, "--from", pin, "--set", f"target_tgid={me}",
                 "--set", f"target_fd={fd}", "--set", "build=0x2")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        m = re.fullmatch(r"upgrade: [\d.]+ ms, both attached [\d.]+ ms, generation (\d+)",
                         lines[0])
        assert m, lines[0]
        assert {f"  map {n}: reused: same layout" for n in ("stats", "events", "seen")} \
            <= set(lines)
        assert f"  link on_lseek -> pinned {pin}/link [perf_event]: re-attached" in lines
        os.lseek(fd, 2, os.SEEK_SET)
        got: list[tuple[int, int]] = []
        with pybpf.Map.open_pinned(f"{pin}/events") as ev:
            rb = pybpf.RingBuffer(ev, callback=lambda d: got.append(struct.unpack_from("<QI", d)))
            rb.consume()
            rb.close()
        assert got == [(1, 1), (2, 2)]  # (offset, build): the new build has build=2
        r = icli("upgrade", src, "--from", pin, "--set", f"target_tgid={me}", "--json",
                 "--set", "target_fd")
        assert r.returncode == 1 and "--set takes NAME=VALUE, got 'target_fd'" in r.stderr
        r = icli("upgrade", src, "--from", pin, "--to", to, "--set", f"target_tgid={me}",
                 "--set", f"target_fd={fd}", "--set", "build=3", "--json")
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout)
        assert report["generation"] == int(m[1]) + 1
        assert not os.path.exists(pin) and {"stats", "events", "seen"} <= set(os.listdir(to))
        actions = {m["name"]: m["action"] for m in report["maps"]}
        assert {n: actions[n] for n in ("stats", "events", "seen")} == {
            "stats": "reused", "events": "reused", "seen": "reused"}
        assert [ln["program"] for ln in report["links"]] == ["on_lseek"]
        assert report["removed_pins"] == [] and report["warnings"] == []
        assert report["seconds"] >= report["both_attached_seconds"] >= 0
    finally:
        obj.close()
        os.close(fd)
        for d in (pin, to):
            if os.path.isdir(d):
                for name in os.listdir(d):
                    os.unlink(os.path.join(d, name))
                os.rmdir(d)
