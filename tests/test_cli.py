"""The pybpf CLI end to end: inspect, run, features, prog/map/link, build, errors."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from _child import readline
from conftest import compile_test_bpf

import pybpf

pytestmark = pytest.mark.kernel


def cli(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess[str]:
    """The CLI in a new process (``python -m pybpf``)."""
    return subprocess.run([sys.executable, "-m", "pybpf", *args], capture_output=True,
                          text=True, timeout=timeout, check=False, **kw)


@pytest.fixture(scope="module")
def cli_obj() -> str:
    return compile_test_bpf("cli_run")


def test_help_lists_commands_with_examples():
    r = cli("--help")
    assert r.returncode == 0
    for cmd in ("inspect", "run", "features", "prog", "map", "link", "build", "execsnoop",
                "opensnoop", "tcpconnect", "biolatency", "profile", "audit", "firewall", "gen"):
        assert f"    {cmd}" in r.stdout, cmd
    assert "examples:" in r.stdout
    r = cli("run", "--help")
    assert r.returncode == 0 and "--set NAME=VALUE" in r.stdout and "examples:" in r.stdout
    r = cli()
    assert r.returncode == 2
    r = cli("nosuchcommand")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_inspect_without_privileges(cli_obj):
    # No capabilities at all: inspect must not need the kernel.
    r = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable,
                        "-m", "pybpf", "inspect", "--json", cli_obj], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0, r.stderr
    _check_inspect_json(json.loads(r.stdout), cli_obj)
    r = cli("inspect", cli_obj)
    assert r.returncode == 0
    _check_inspect_text(r.stdout, cli_obj)


def test_inspect_in_this_process(cli_obj, icli):
    """The same output from the CLI run in this process (and --all-structs)."""
    r = icli("inspect", "--json", cli_obj)
    assert r.returncode == 0, r.stderr
    _check_inspect_json(json.loads(r.stdout), cli_obj)
    r = icli("inspect", cli_obj)
    assert r.returncode == 0, r.stderr
    _check_inspect_text(r.stdout, cli_obj)
    own = icli("inspect", cli_obj).stdout
    every = icli("inspect", "--all-structs", cli_obj).stdout
    assert "STRUCTS (of maps, globals and events; --all-structs for all)" in own
    assert "\nSTRUCTS\n" in every and len(every) > len(own)
    assert "task_struct" in every and "task_struct" not in own


def _check_inspect_json(info: dict, cli_obj: str) -> None:
    """What ``inspect --json`` must say of tests/bpf/cli_run.bpf.c (from its source and
    from libbpf's view of the object)."""
    assert info["path"] == cli_obj
    assert info["license"] == "Dual BSD/GPL"
    assert info["core_relocations"] == 2  # task->real_parent->tgid
    with pybpf.Object.open(cli_obj) as obj:
        prog = obj.programs["cli_getcwd"]
        assert info["programs"] == [{"name": "cli_getcwd", "type": "tracepoint",
                                     "section": "tracepoint/syscalls/sys_enter_getcwd",
                                     "instructions": prog.instruction_count,
                                     "autoload": True}]
    maps = {m["name"]: m for m in info["maps"]}
    assert maps["stats"]["type"] == "hash"
    assert (maps["stats"]["key_size"], maps["stats"]["value_size"],
            maps["stats"]["max_entries"]) == (4, 24, 64)
    assert maps["cli_events"]["type"] == "ringbuf"
    assert maps["cli_events"]["max_entries"] == 64 * 1024
    glob = {g["name"]: g for g in info["globals"]}
    assert glob["tag"] == {"name": "tag", "section": ".rodata", "type": "const volatile __s32",
                           "size": 4, "value": -1}
    assert glob["targ_pid"]["value"] == 0 and glob["targ_pid"]["size"] == 4
    assert glob["total_calls"] == {"name": "total_calls", "section": ".bss", "type": "__u64",
                                   "size": 8, "value": 0}
    assert not any(n.startswith("__pybpf_event__") for n in glob)
    own = {s["name"]: s for s in info["structs"] if s["own"]}
    assert set(own) == {"cli_event", "cli_stat"}
    assert own["cli_event"]["kind"] == "struct" and own["cli_event"]["size"] == 28
    assert [(m["name"], m["type"]) for m in own["cli_event"]["members"]] == [
        ("pid", "__u32"), ("ppid", "__u32"), ("tag", "__s32"), ("comm", "char[16]")]


def _check_inspect_text(out: str, cli_obj: str) -> None:
    lines = out.splitlines()
    assert lines[0].startswith(f"{cli_obj}: license 'Dual BSD/GPL', ")
    hdr = lines.index("PROGRAMS") + 1
    assert lines[hdr].split() == ["NAME", "TYPE", "SECTION", "INSNS"]
    with pybpf.Object.open(cli_obj) as obj:
        insns = obj.programs["cli_getcwd"].instruction_count
    assert lines[hdr + 1].split() == ["cli_getcwd", "tracepoint",
                                      "tracepoint/syscalls/sys_enter_getcwd", str(insns)]
    m0 = lines.index("MAPS") + 1
    assert lines[m0].split() == ["NAME", "TYPE", "KEY", "VALUE", "MAX_ENTRIES", "FLAGS"]
    rows = {ln.split()[0]: ln.split() for ln in lines[m0 + 1:m0 + 8] if ln.strip()}
    assert rows["stats"][1:5] == ["hash", "4", "24", "64"]
    # Columns line up: every row of the maps table has "TYPE" at the same column, and
    # numbers are right-aligned under their header's end.
    col = lines[m0].index("TYPE")
    assert lines[m0 + 1][col - 2:col] == "  " and lines[m0 + 1][col] != " "
    stats_line = next(ln for ln in lines[m0 + 1:] if ln.startswith("stats "))
    end = lines[m0].index("VALUE") + len("VALUE")
    assert stats_line[end - 2:end] == "24"
    g0 = next(i for i, ln in enumerate(lines) if ln.startswith("GLOBALS")) + 1
    assert lines[g0].split() == ["NAME", "SECTION", "TYPE", "VALUE"]
    tag = next(ln for ln in lines[g0:] if ln.startswith("tag "))
    assert tag.split()[1] == ".rodata" and tag.split()[-1] == "-1"
    assert "cli_event" in out and "__u32 pid, __u32 ppid, __s32 tag, char[16] comm" in out


def test_inspect_errors(tmp_path, icli):
    r = icli("inspect", str(tmp_path / "missing.bpf.o"))
    assert r.returncode == 1 and "does not exist" in r.stderr
    bad = tmp_path / "bad.bpf.o"
    bad.write_bytes(b"#!/bin/sh\n" * 10)
    r = icli("inspect", str(bad))
    assert r.returncode == 1 and "not an ELF file" in r.stderr


def test_run_prints_decoded_events_and_dumps_maps(cli_obj):
    me = os.getpid()
    p = subprocess.Popen([sys.executable, "-m", "pybpf", "run", cli_obj, "--set",
                          f"targ_pid={me}", "--set", "tag=42", "--duration", "2", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = readline(p, p.stderr)
        assert "attached 1 of 1 programs" in line, line + p.stderr.read()
        for _ in range(5):
            os.getcwd()
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    comm = open(f"/proc/{me}/comm").read().strip()
    ring = [x["event"] for x in lines if x.get("map") == "cli_events"]
    assert ring == [{"pid": me, "ppid": os.getppid(), "tag": 42, "comm": comm}] * 5
    perf = [x["event"] for x in lines if x.get("map") == "cli_perf"]
    assert perf == [{"pid": me, "ppid": os.getppid(), "tag": -42, "comm": comm}] * 5
    maps = lines[-1]["maps"]
    assert maps["stats"] == [{"key": me, "value": {"calls": 5, "last_comm": comm}}]
    assert maps["cli_run.bss"] == [{"key": 0, "value": {"total_calls": 5}}]


def test_run_in_this_process_prints_what_the_kernel_counted(cli_obj, icli):
    """``pybpf run`` in this process while a thread of it calls getcwd(2) until the
    program has counted 5 calls (its ``stats`` map, read by id): the printed events and
    the final dump are exactly what the program recorded."""
    me = os.getpid()
    comm: list[str] = []

    def kernel_count() -> int:
        for info in pybpf.list_maps():
            if info.name == "stats":
                with contextlib.suppress(pybpf.BPFError):
                    with pybpf.Map.from_id(info.id) as m:
                        raw = m.lookup(me.to_bytes(4, "little"))
                        if raw is not None:
                            return int.from_bytes(raw[:8], "little")
        return 0

    def caller() -> None:
        comm.append(open(f"/proc/self/task/{threading.get_native_id()}/comm").read().strip())
        deadline = time.monotonic() + 20
        while kernel_count() < 5 and time.monotonic() < deadline:
            os.getcwd()
            time.sleep(0.02)

    t = threading.Thread(target=caller)
    t.start()
    try:
        r = icli("run", cli_obj, "--set", f"targ_pid={me}", "--set", "tag=42",
                 "--duration", "8", "--json")
    finally:
        t.join()
    assert r.returncode == 0, r.stderr
    assert "attached 1 of 1 programs (cli_getcwd)" in r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    maps = lines[-1]["maps"]
    (stat,) = maps["stats"]
    calls = stat["value"]["calls"]
    assert stat == {"key": me, "value": {"calls": calls, "last_comm": comm[0]}} and calls >= 5
    assert maps["cli_run.bss"] == [{"key": 0, "value": {"total_calls": calls}}]
    assert "pybpf_ringbuf_drops" not in maps  # pybpf's own counter (cli_run has one)
    event = {"pid": me, "ppid": os.getppid(), "comm": comm[0]}
    ring = [x["event"] for x in lines if x.get("map") == "cli_events"]
    assert ring == [{**event, "tag": 42}] * calls
    perf = [x["event"] for x in lines if x.get("map") == "cli_perf"]
    assert perf == [{**event, "tag": -42}] * calls


def test_run_errors(cli_obj, icli):
    r = icli("run", cli_obj, "--set", "nope=1")
    assert r.returncode == 1 and "no read-only global named 'nope'" in r.stderr
    r = icli("run", cli_obj, "--set", "tag")
    assert r.returncode == 1 and "NAME=VALUE" in r.stderr
    r = icli("run", cli_obj, "--set", "tag=99999999999")
    assert r.returncode == 1 and "out of range" in r.stderr


def test_prog_map_link_commands(cli_obj, icli):
    with pybpf.load(cli_obj) as obj:
        obj.attach()
        prog_id = obj.programs["cli_getcwd"].info().id
        stats_id = obj.maps["stats"].info().id
        os.getcwd()
        r = icli("prog", "list", "--json")
        assert r.returncode == 0, r.stderr
        progs = {p["id"]: p for p in json.loads(r.stdout)}
        assert progs[prog_id]["name"] == "cli_getcwd" and progs[prog_id]["type"] == "tracepoint"
        assert stats_id in progs[prog_id]["map_ids"]
        r = icli("prog", "list")
        assert r.stdout.splitlines()[0].split() == ["ID", "TYPE", "NAME", "TAG", "XLATED",
                                                    "JITED", "MAPS"]
        row = next(x for x in r.stdout.splitlines() if x.split()[0] == str(prog_id))
        info = obj.programs["cli_getcwd"].info()
        assert row.split()[1:4] == ["tracepoint", "cli_getcwd", info.tag]
        r = icli("prog", "show", str(prog_id), "--json")
        assert json.loads(r.stdout)["name"] == "cli_getcwd"

        r = icli("map", "list", "--json")
        maps = {m["id"]: m for m in json.loads(r.stdout)}
        assert maps[stats_id]["name"] == "stats" and maps[stats_id]["type"] == "hash"
        r = icli("map", "list")
        assert r.stdout.splitlines()[0].split() == ["ID", "TYPE", "NAME", "KEY", "VALUE",
                                                    "MAX_ENTRIES", "FLAGS", "BTF"]
        row = next(x for x in r.stdout.splitlines() if x.split()[0] == str(stats_id))
        assert row.split()[1:7] == ["hash", "stats", "4", "24", "64", "0x0"]
        r = icli("map", "show", str(stats_id), "--json")
        assert json.loads(r.stdout)["value_size"] == 24
        r = icli("map", "dump", str(stats_id), "--json")
        assert r.returncode == 0, r.stderr
        entries = {e["key"]: e["value"] for e in json.loads(r.stdout)}
        mine = entries[os.getpid()]
        assert mine["calls"] >= 1
        assert mine["last_comm"] == open("/proc/self/comm").read().strip()
        # By pinned path too, typed through the kernel's copy of the object's BTF.
        pin = f"/sys/fs/bpf/pybpf-cli-test-{os.getpid()}"
        obj.maps["stats"].pin(pin)
        try:
            r = icli("map", "dump", pin)
            assert r.returncode == 0, r.stderr
            assert f'{os.getpid()}: {{"calls":' in r.stdout
        finally:
            os.unlink(pin)

        link_ids = {lk.info().id for lk in obj.links}
        r = icli("link", "list", "--json")
        links = {x["id"]: x for x in json.loads(r.stdout)}
        for lid in link_ids:
            assert links[lid]["prog_id"] == prog_id
        r = icli("link", "list")
        assert r.returncode == 0 and r.stdout.splitlines()[0].split() == ["ID", "TYPE", "PROG"]
        for lid in link_ids:
            row = next(x for x in r.stdout.splitlines() if x.split()[0] == str(lid))
            assert str(prog_id) in row.split()[1:], row
    r = icli("map", "dump", "4000000000")
    assert r.returncode == 1 and "map id 4000000000" in r.stderr
    r = icli("prog", "show", "4000000000")
    assert r.returncode == 1 and "no program with id" in r.stderr
    r = icli("map", "dump", "/sys/fs/bpf/pybpf-no-such-pin")
    assert r.returncode == 1 and "no pinned map" in r.stderr


def test_features(icli):
    r = icli("features", "--json")
    assert r.returncode == 0, r.stderr
    f = json.loads(r.stdout)
    assert f["kernel"] == os.uname().release
    assert f["program_types"]["tracepoint"] is True and f["map_types"]["ringbuf"] is True
    assert f["hooks"]["fentry"]["supported"] is bool(pybpf.features.trampolines())
    r = icli("features")
    assert r.returncode == 0 and "HOOKS" in r.stdout and "PROGRAM TYPES" in r.stdout
    lines = r.stdout.splitlines()
    h0 = lines.index("HOOKS") + 1
    assert lines[h0].split() == ["HOOK", "SUPPORTED", "WHY"]
    table = lines[h0 + 1:lines.index("", h0)]
    hooks = {ln.split()[0]: ln.split()[1] for ln in table}
    assert hooks == {k: "yes" if v["supported"] else "no" for k, v in f["hooks"].items()}
    assert any(ln.split() == ["CAPABILITY", "SYMBOL", "SINCE", "HERE", "PATH"] for ln in lines)


def test_build(tmp_path, icli):
    src = tmp_path / "mine.bpf.c"
    src.write_text('#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n'
                   'int hits = 0;\nSEC("xdp") int pass_all(struct xdp_md *ctx)\n'
                   '{ hits++; return XDP_PASS; }\nchar LICENSE[] SEC("license") = "GPL";\n')
    r = icli("build", str(src), "-o", str(tmp_path / "mine.o"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "mine.o")
    with pybpf.Object.open(tmp_path / "mine.o") as obj:
        assert obj.programs["pass_all"].type == "xdp"
    bad = tmp_path / "bad.bpf.c"
    bad.write_text("int x = ;\n")
    r = icli("build", str(bad))
    assert r.returncode == 1 and "does not compile" in r.stderr and "error: expected" in r.stderr


def test_features_helpers(icli):
    r = icli("features", "--helpers", "xdp", "--json")
    assert r.returncode == 0, r.stderr
    helpers = {h["name"]: h["supported"] for h in json.loads(r.stdout)["helpers"]}
    # Verifier facts: XDP programs may adjust their packet head, not use skb helpers
    # nor the tracing-only legacy bpf_probe_read.
    assert helpers["xdp_adjust_head"] is True and helpers["map_lookup_elem"] is True
    assert helpers["skb_store_bytes"] is False and helpers["skb_vlan_push"] is False
    assert helpers["probe_read"] is False
    r = icli("features", "--helpers", "nosuchtype")
    assert r.returncode == 1 and "unknown program type 'nosuchtype'" in r.stderr


def test_listing_without_privileges_says_why():
    for what in (("prog", "list"), ("map", "list"), ("link", "list")):
        r = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all",
                            sys.executable, "-m", "pybpf", *what], capture_output=True,
                           text=True, check=False)
        assert r.returncode == 1
        assert r.stderr.startswith("pybpf: error: cannot list BPF ") and "CAP_SYS_ADMIN" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("args, words", [
    (("map", "dump", "99999999999"), "map id 99999999999: no such map"),
    (("map", "show", "4294967295"), "map id 4294967295"),
    (("build", "/etc/passwd", "-o", os.devnull + ".pybpf-never"), "/etc/passwd does not compile"),
    (("inspect", "/dev/zero"), "/dev/zero is a character device, not a regular file"),
])
def test_cli_bad_input_one_line_error(args, words):
    r = cli(*args)
    assert r.returncode in (1, 2), (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert words in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
