"""Shared test fixtures: BPF objects compiled from tests/bpf/, kernel feature skips."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import pybpf
from pybpf import features, toolchain

TESTS = Path(__file__).resolve().parent
# PYBPF_TEST_BPF_DIR: where compiled test objects go (for a read-only checkout: the
# qemu guest of tests/vm/run_guest.py points it at tmpfs if it cannot overlay build/).
BUILD = Path(os.environ.get("PYBPF_TEST_BPF_DIR") or TESTS.parent / "build" / "test-bpf")


# A background job of a non-interactive shell (`cmd &` in a script, nohup, some CI
# runners) starts with SIGINT ignored, and an ignored signal stays ignored across exec:
# Python then installs no KeyboardInterrupt handler, in this process or in the child
# interpreters the tests start, and the tests that interrupt a child with SIGINT waited
# for ever. The suite runs with Python's own handler, which exec resets to the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


if os.environ.get("MUTANT_UNDER_TEST") == "stats":
    # mutmut 3 (pyproject.toml [tool.mutmut]) first records which tests reach which
    # functions, in this process only: child interpreters that import the mutated pybpf
    # run it unrecorded ("none" matches no mutant). When it tests a mutant, children
    # inherit its name and run the mutant too.
    _popen_init = subprocess.Popen.__init__

    def _unrecorded_popen(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs["env"] = dict(kwargs.get("env") or os.environ, MUTANT_UNDER_TEST="none")
        _popen_init(self, *args, **kwargs)

    subprocess.Popen.__init__ = _unrecorded_popen  # type: ignore[method-assign]


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


@contextmanager
def loaded_for_me(name: str, *, attach: bool = True) -> Iterator[pybpf.Object]:
    """tests/bpf/NAME.bpf.c with its ``target_pid`` set to this process, loaded and
    (``attach``) attached; closed after the block."""
    obj = pybpf.Object.open(compile_test_bpf(name))
    obj.set_rodata("target_pid", os.getpid())
    with obj:
        obj.load()
        if attach:
            obj.attach()
        yield obj


@pytest.fixture(scope="session")
def bpf_obj():
    """``bpf_obj("name")`` -> path of the compiled tests/bpf/name.bpf.o."""
    return compile_test_bpf


@contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """Hold the file lock /run/lock/pybpf-tests-NAME.lock for the block.

    For what is shared by every process on the machine and cannot be given a name of
    its own (the user database that ``useradd`` edits): two test runs at once (two
    clones, or one run overlapping the next) wait for each other instead of failing.
    Everything else the tests create carries the pid in its name (attach_util.unique)."""
    lock_dir = "/run/lock" if os.path.isdir("/run/lock") else "/tmp"
    fd = os.open(os.path.join(lock_dir, f"pybpf-tests-{name}.lock"),
                 os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only fd of this open file releases the lock


def require(feature: features.Feature) -> None:
    """Skip the test with the probe's reason unless the kernel has ``feature``."""
    if not feature:
        pytest.skip(f"{feature.name}: {feature.reason}")


@pytest.fixture
def icli(capsys):
    """The CLI in this process (``pybpf.cli.main``): same code, no interpreter start-up."""
    from pybpf.cli import main

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        capsys.readouterr()
        try:
            rc = main(list(args))
        except SystemExit as exc:
            rc = int(exc.code or 0)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), rc, out, err)

    return run


@pytest.fixture
def trigger_exec():
    """Run a short-lived process; returns its pid."""

    def run(*argv: str) -> int:
        p = subprocess.Popen(list(argv or ["/bin/true"]), stdout=subprocess.DEVNULL)
        p.wait()
        return p.pid

    return run


def pytest_report_header(config):
    hooks = ", ".join(f"{f.name} {'yes' if f else 'no'}" for f in (
        features.kprobes(), features.trampolines(), features.lsm(), features.tcx(),
        features.uprobe_multi()))
    return (f"kernel {os.uname().release}, libbpf {'.'.join(map(str, pybpf.libbpf_version()))}"
            f"\nhooks: {hooks}")


def pytest_collection_modifyitems(config, items):
    """Tests that use compiled test objects (the ``bpf_obj`` fixture, or
    ``compile_test_bpf`` in their module) are ``kernel`` tests: the qemu guest of
    tests/vm/run_guest.py runs them too, even if their module forgot the marker.
    In the guest, tests of the files PYBPF_GUEST_FILES names are marked ``guest``."""
    uses: dict[str, bool] = {}
    guest_files = set(os.environ.get("PYBPF_GUEST_FILES", "").split())
    for item in items:
        if item.path.name in guest_files:
            item.add_marker(pytest.mark.guest)
        path = str(item.path)
        if path not in uses:
            try:
                uses[path] = "compile_test_bpf(" in Path(path).read_text()
            except OSError:
                uses[path] = False
        if uses[path] or "bpf_obj" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kernel)
