"""Shared test fixtures: BPF objects compiled from tests/bpf/, kernel feature skips."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import pybpf
from pybpf import features, toolchain

TESTS = Path(__file__).resolve().parent
BUILD = TESTS.parent / "build" / "test-bpf"


def compile_test_bpf(name: str) -> str:
    """Compile tests/bpf/NAME.bpf.c (cached on mtime) and return the object path."""
    src = TESTS / "bpf" / f"{name}.bpf.c"
    out = BUILD / f"{name}.bpf.o"
    BUILD.mkdir(parents=True, exist_ok=True)
    deps = [src, *(TESTS / "bpf").glob("*.h")]
    if not out.exists() or out.stat().st_mtime < max(d.stat().st_mtime for d in deps):
        tmp = out.with_suffix(f".tmp{os.getpid()}.o")
        toolchain.compile(src, tmp)
        os.replace(tmp, out)
    return str(out)


@pytest.fixture(scope="session")
def bpf_obj():
    """``bpf_obj("name")`` -> path of the compiled tests/bpf/name.bpf.o."""
    return compile_test_bpf


def require(feature: features.Feature) -> None:
    """Skip the test with the probe's reason unless the kernel has ``feature``."""
    if not feature:
        pytest.skip(f"{feature.name}: {feature.reason}")


@pytest.fixture
def trigger_exec():
    """Run a short-lived process; returns its pid."""

    def run(*argv: str) -> int:
        p = subprocess.Popen(list(argv or ["/bin/true"]), stdout=subprocess.DEVNULL)
        p.wait()
        return p.pid

    return run


def pytest_report_header(config):
    return (f"kernel {os.uname().release}, libbpf {'.'.join(map(str, pybpf.libbpf_version()))}")
