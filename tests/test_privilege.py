"""Privilege: an unprivileged user gets BPFPermissionError naming the capability, never a crash.

A real user is created for the test (useradd) and the interpreter runs as it
through setpriv, which drops every capability on the switch from root
(tests/priv_util.py: the child sees the modules this process sees, through bind
mounts in a private mount namespace, from a virtualenv too).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest
from conftest import machine_lock
from priv_util import run_as

import pybpf

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creating a user needs root")

SCRIPT = textwrap.dedent("""
    import json, sys
    import pybpf
    out = {}
    with open("/proc/self/status") as f:
        out["capeff"] = next(l.split()[1] for l in f if l.startswith("CapEff:"))
    out["uid"] = __import__("os").getuid()
    obj = pybpf.Object.open(sys.argv[1])
    out["programs"] = {n: p.type for n, p in obj.programs.items()}
    out["maps"] = {n: m.type for n, m in obj.maps.items()}
    out["btf_types"] = len(obj.btf)
    try:
        obj.load()
        out["load"] = {"type": "loaded"}
    except Exception as e:
        out["load"] = {"type": type(e).__name__, "msg": str(e), "errno": e.errno,
                       "missing": getattr(e, "missing", None),
                       "permission_error": isinstance(e, PermissionError),
                       "bpf_error": isinstance(e, pybpf.BPFError)}
    obj.close()
    print(json.dumps(out))
""")


@pytest.fixture
def unprivileged_user():
    for tool in ("useradd", "userdel", "setpriv", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    name = f"pybpf{uuid.uuid4().hex[:8]}"
    # useradd/userdel lock /etc/passwd and give up at once if another one holds it
    with machine_lock("useradd"):
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", name], check=True, capture_output=True)
    try:
        out = subprocess.run(["id", "-u", name], check=True, capture_output=True, text=True)
        yield name, int(out.stdout)
    finally:
        with machine_lock("useradd"):
            subprocess.run(["userdel", name], capture_output=True)


def test_unprivileged_load_names_the_missing_capability(unprivileged_user):
    user, uid = unprivileged_user
    with tempfile.TemporaryDirectory(prefix="pybpf-priv-obj-") as tmp:
        os.chmod(tmp, 0o755)
        obj = Path(tmp) / "execsnoop.bpf.o"
        shutil.copy(pybpf.probe_path("execsnoop"), obj)
        os.chmod(obj, 0o644)
        proc = run_as(user, SCRIPT, str(obj))
    assert proc.returncode == 0, f"child died ({proc.returncode}): {proc.stderr[-2000:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["uid"] == uid and int(out["capeff"], 16) == 0
    # opening and inspecting needs no privilege
    assert out["programs"] and set(out["programs"].values()) == {"tracepoint"}
    assert out["maps"]["events"] == "ringbuf"
    assert out["btf_types"] > 10
    # loading does, and the error says which capability is missing
    load = out["load"]
    assert load["type"] == "BPFPermissionError", load
    assert load["permission_error"] and load["bpf_error"]
    assert load["errno"] in (1, 13)
    assert "CAP_BPF" in load["missing"]
    assert "CAP_BPF" in load["msg"], load["msg"]


def test_unprivileged_inspect_and_gen_work(unprivileged_user):
    user, _uid = unprivileged_user
    with tempfile.TemporaryDirectory(prefix="pybpf-priv-obj-") as tmp:
        os.chmod(tmp, 0o777)
        obj = Path(tmp) / "execsnoop.bpf.o"
        shutil.copy(pybpf.probe_path("execsnoop"), obj)
        os.chmod(obj, 0o644)
        proc = run_as(user, "", "inspect", "--json", str(obj), module="pybpf")
        assert proc.returncode == 0, proc.stderr[-2000:]
        info = json.loads(proc.stdout)
        assert "events" in json.dumps(info) and "tracepoint" in json.dumps(info)
        out = Path(tmp) / "execsnoop_skel.py"
        proc = run_as(user, "", "gen", "-o", str(out), str(obj), module="pybpf")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert out.stat().st_uid == _uid and out.with_suffix(".pyi").exists()
        assert "class" in out.read_text()


VENV_CHILD = textwrap.dedent("""
    import json, sys
    import elftools, pybpf
    obj = pybpf.Object.open(sys.argv[1])
    print(json.dumps({"elftools": elftools.__file__, "pybpf": pybpf.__file__,
                      "programs": sorted(obj.programs)}))
""")


def test_run_as_from_a_virtualenv(unprivileged_user, tmp_path):
    """A contributor's usual setup: a virtualenv (in a directory others cannot enter)
    that holds the dependencies itself. The unprivileged child imports them from it."""
    user, _uid = unprivileged_user
    import cffi
    import elftools
    import pycparser

    home = Path(tempfile.mkdtemp(prefix="pybpf-venv-home-"))  # mode 0700, like /root
    try:
        venv = home / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                       timeout=120)
        (site,) = venv.glob("lib/python*/site-packages")
        for mod in (elftools, cffi, pycparser):  # installed in the venv (copied: no network)
            shutil.copytree(Path(mod.__file__).parent, site / mod.__name__)
        for backend in Path(cffi.__file__).parent.parent.glob("_cffi_backend*.so"):
            shutil.copy(backend, site)
        obj = Path(tempfile.mkdtemp(prefix="pybpf-priv-obj-")) / "execsnoop.bpf.o"
        os.chmod(obj.parent, 0o755)
        shutil.copy(pybpf.probe_path("execsnoop"), obj)
        os.chmod(obj, 0o644)
        driver = textwrap.dedent(f"""
            import json, sys
            assert sys.prefix != sys.base_prefix  # really inside the venv
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from priv_util import run_as
            p = run_as({user!r}, {VENV_CHILD!r}, {str(obj)!r})
            print(json.dumps([p.returncode, p.stdout, p.stderr]))
        """)
        r = subprocess.run([str(venv / "bin" / "python"), "-c", driver],
                           env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
                           capture_output=True, text=True, timeout=180)
        shutil.rmtree(obj.parent)
        assert r.returncode == 0, r.stderr[-3000:]
        rc, out, err = json.loads(r.stdout.strip().splitlines()[-1])
        assert rc == 0, err[-3000:]
        child = json.loads(out.strip().splitlines()[-1])
        # elftools came from the venv's copy (a bind mount of its site-packages at
        # .../mnt/pN), not from the base interpreter's prefix (.../mnt/py)
        assert "/mnt/p" in child["elftools"] and "/mnt/py/" not in child["elftools"], child
        assert child["pybpf"].endswith("pybpf/__init__.py")
        assert child["programs"] and all("exec" in p for p in child["programs"])
    finally:
        shutil.rmtree(home)
