"""`pybpf gen`: the generated module runs, and its stub lets mypy catch a wrong field."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
    from skel import TypedMaps, val

    def main() -> None:
        with TypedMaps() as skel:
            skel.bss.target_tgid = 7
            skel.load()
            vals = skel.maps.vals
            vals[1] = val(count=5, bytes=10, pid=3)
            vals[2] = {"count": 1}
            skel.progs.derive.test_run(bytes(64))
            v: val = vals[2]
            total: int = v.count + v.bytes + v.pid
            assert (v.count, v.bytes, v.pid, v.flags) == (10, 11, 3, 0x100), v
            assert skel.bss.target_tgid == 7
            routes = skel.maps.routes
            routes["10.0.0.0/8"] = 3
            fifo = skel.maps.fifo
            fifo.push(1)
            print("ok", total)

    main()
"""

BAD = """
    from skel import TypedMaps

    with TypedMaps() as skel:
        skel.load()
        print(skel.maps.vals[1].countt)
        skel.bss.target_tgidd = 3
"""


def _mypy(tmp: Path, script: str) -> subprocess.CompletedProcess[str]:
    (tmp / "user.py").write_text(textwrap.dedent(script))
    env = dict(os.environ, MYPYPATH=str(ROOT), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           "--cache-dir", str(tmp / ".mypy"), "user.py"], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory, bpf_obj):
    pytest.importorskip("mypy")
    tmp = tmp_path_factory.mktemp("gen")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "pybpf", "gen", bpf_obj("typed_maps"), "-o",
                        str(tmp / "skel.py")], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp / "skel.pyi").exists()
    return tmp


def test_generated_module_runs_and_typechecks(gen_dir):
    (gen_dir / "user.py").write_text(textwrap.dedent(GOOD))
    env = dict(os.environ, PYTHONPATH=f"{ROOT}:{gen_dir}")
    run = subprocess.run([sys.executable, "user.py"], cwd=gen_dir, env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0 and run.stdout.startswith("ok 24"), run.stdout + run.stderr
    r = _mypy(gen_dir, GOOD)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_rejects_a_wrong_field(gen_dir):
    r = _mypy(gen_dir, BAD)
    assert r.returncode == 1
    assert '"val" has no attribute "countt"' in r.stdout, r.stdout
    assert 'has no attribute "target_tgidd"' in r.stdout, r.stdout


def test_gen_on_stdout_and_bad_input(bpf_obj, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "pybpf", "gen", bpf_obj("globals"), "--embed"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "OBJECT_BYTES: bytes | None = base64.b64decode(" in r.stdout
    ns: dict[str, object] = {}
    exec(compile(r.stdout, "skel_embedded", "exec"), ns)  # noqa: S102 - our generated code
    assert ns["gpoint"](x=1).x == 1  # type: ignore[operator,attr-defined]
    r = subprocess.run([sys.executable, "-m", "pybpf", "gen", str(tmp_path / "missing.o")],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "missing.o" in r.stderr


def test_stub_for_an_object_with_kernel_types_typechecks(tmp_path):
    """Kernel structs have fields named like their types (``struct rb_node rb_node``) and
    anonymous unions: the stub must still be valid for mypy --strict."""
    import pybpf

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "pybpf", "gen", pybpf.probe_path("execsnoop"),
                        "-o", str(tmp_path / "skel.py")], env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    res = _mypy(tmp_path, """
        from skel import Execsnoop

        def main() -> None:
            with Execsnoop() as skel:
                print(skel.progs)
    """)
    assert res.returncode == 0, res.stdout[-3000:]
