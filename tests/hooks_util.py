"""Helpers for tests/test_hooks_*.py: the hooks object, its counters, the uprobe target."""

from __future__ import annotations

import os
import struct
import subprocess

from attach_util import BUILD, TESTS, run

import pybpf

# hook ids of tests/bpf/hooks.bpf.c
TCX_A, TCX_B, B_AFTER_A, A_AFTER_B, TC_ALIAS = 1, 2, 3, 4, 5
UMULTI, URET, USESS_ENTRY, USESS_RETURN = 10, 11, 12, 13
KMULTI, KRET, KSESS = 20, 21, 22
NF_SEEN, NF_SEEN_DEFRAG = 30, 31
UPD_A, UPD_B = 40, 41
PERF_COOKIE = 50


def assert_route(link: pybpf.Link, symbol: str) -> None:
    """``link`` was made by libbpf's ``symbol`` exactly when the runtime libbpf exports
    it (a dlsym of its own here), else by pybpf's fallback, and
    pybpf.libbpf_capabilities() reports that same path."""
    from pybpf import _ffi

    present = _ffi.has_symbol(symbol)
    if present:
        assert link.via == f"libbpf {symbol}", (link.via, symbol)
    else:
        assert link.via and not link.via.startswith("libbpf"), (link.via, symbol)
    rows = [r for r in pybpf.libbpf_capabilities()["capabilities"].values()
            if r["symbol"] == symbol]
    if rows:  # newer than libbpf 1.1: a row of the table, present or not
        assert rows[0]["present"] == present
        assert rows[0]["path"].startswith(link.via), (rows[0], link.via)


def set_target(obj: pybpf.Object, tgid: int) -> None:
    """Count only events of process ``tgid`` (0: every process)."""
    obj.maps["target"].update(struct.pack("<I", 0), struct.pack("<I", tgid))


def hooks_target() -> str:
    """Build tests/native/hooks_target.c (cached)."""
    src = TESTS / "native" / "hooks_target.c"
    out = BUILD / "hooks_target"
    if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return str(out)
    BUILD.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"hooks_target.tmp{os.getpid()}")
    run("gcc", "-O2", "-g", "-o", str(tmp), str(src))
    os.replace(tmp, out)
    return str(out)


def start_target(*counts: int) -> subprocess.Popen[str]:
    """Start hooks_target with call counts; it waits for go(p) before calling anything."""
    return subprocess.Popen([hooks_target(), *map(str, counts)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def go(p: subprocess.Popen[str]) -> str:
    out, _ = p.communicate("go\n", timeout=30)
    assert p.returncode == 0
    return out.strip()
