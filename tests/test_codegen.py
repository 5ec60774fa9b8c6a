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


# Wrong value types, one per line (the test matches mypy's errors by line number).
BAD_TYPES = """
    from skel import TypedMaps, val

    def main() -> None:
        with TypedMaps() as skel:
            val(count="five")
            skel.bss.target_tgid = "seven"
            skel.maps.vals[1] = "not a val"
            name: str = skel.maps.vals[2].pid
            skel.maps.vals["one"] = val()
            skel.data.kstack_id = 1.5
            skel.maps.churn[3] = b"x"

    main()
"""
BAD_TYPE_LINES = {
    6: 'Argument "count" to "val" has incompatible type "str"; expected "int"',
    7: 'expression has type "str", variable has type "int"',
    8: 'expression has type "str", target has type "val | Mapping[str, Any]',
    9: 'expression has type "int", variable has type "str"',
    10: 'Invalid index type "str" for "HashMap[int, val]"; expected type "int"',
    11: 'expression has type "float", variable has type "int"',
    12: 'expression has type "bytes", target has type "int | Mapping[str, Any]',
}


KERNEL_USER = """
    from kskel import Execsnoop

    def main() -> None:
        with Execsnoop() as skel:
            print(skel.progs)
"""


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory, bpf_obj):
    pytest.importorskip("mypy")
    import pybpf

    tmp = tmp_path_factory.mktemp("gen")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # typed_maps for the user scripts; the execsnoop probe because kernel structs have
    # fields named like their types ("struct rb_node rb_node") and anonymous unions
    for obj, out in ((bpf_obj("typed_maps"), "skel.py"),
                     (pybpf.probe_path("execsnoop"), "kskel.py")):
        r = subprocess.run([sys.executable, "-m", "pybpf", "gen", obj, "-o", str(tmp / out)],
                           env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert (tmp / out).with_suffix(".pyi").exists()
    return tmp


@pytest.fixture(scope="module")
def mypy_out(gen_dir):
    """One mypy --strict run over the four user scripts (mypy start-up is the cost)."""
    for name, src in (("good.py", GOOD), ("bad.py", BAD), ("bad_types.py", BAD_TYPES),
                      ("kernel_user.py", KERNEL_USER)):
        (gen_dir / name).write_text(textwrap.dedent(src))
    env = dict(os.environ, MYPYPATH=str(ROOT), PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir",
                        str(gen_dir / ".mypy"), "good.py", "bad.py", "bad_types.py",
                        "kernel_user.py"],
                       cwd=gen_dir, env=env, capture_output=True, text=True, timeout=300)
    return r.stdout + r.stderr


def test_generated_module_runs_and_typechecks(gen_dir, mypy_out):
    env = dict(os.environ, PYTHONPATH=f"{ROOT}:{gen_dir}")
    run = subprocess.run([sys.executable, "good.py"], cwd=gen_dir, env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0 and run.stdout.startswith("ok 24"), run.stdout + run.stderr
    assert "good.py:" not in mypy_out, mypy_out


def test_mypy_rejects_a_wrong_field(mypy_out):
    assert 'bad.py:6: error: "val" has no attribute "countt"' in mypy_out, mypy_out
    assert 'has no attribute "target_tgidd"' in mypy_out, mypy_out


def test_mypy_rejects_wrong_value_types(mypy_out):
    """The README: the stub makes mypy check value types, not only field names."""
    errors = {}
    for line in mypy_out.splitlines():
        if line.startswith("bad_types.py:") and ": error: " in line:
            errors.setdefault(int(line.split(":")[1]), []).append(line)
    assert sorted(errors) == sorted(BAD_TYPE_LINES), mypy_out
    for lineno, what in BAD_TYPE_LINES.items():
        assert what in " ".join(errors[lineno]), errors[lineno]


def test_stub_for_an_object_with_kernel_types_typechecks(mypy_out):
    assert "kskel.pyi" not in mypy_out and "kernel_user.py:" not in mypy_out, mypy_out[-3000:]


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
