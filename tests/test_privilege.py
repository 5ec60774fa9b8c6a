"""Privilege: an unprivileged user gets BPFPermissionError naming the capability, never a crash.

A real user is created for the test (useradd) and the interpreter runs as it
through setpriv, which drops every capability on the switch from root. The
interpreter lives under /root (mode 0700 here), so the child runs in a private
mount namespace where the interpreter's prefix is bind-mounted at a
world-readable path; nothing is visible outside that namespace.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest

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
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    name], check=True, capture_output=True)
    try:
        out = subprocess.run(["id", "-u", name], check=True, capture_output=True, text=True)
        yield name, int(out.stdout)
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def run_as(user: str, script: str, *args: str, module: str | None = None
           ) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (or ``-m module``) with ``args`` as ``user``, without capabilities."""
    prefix = sys.base_prefix
    exe = Path(os.path.realpath(sys.executable)).relative_to(os.path.realpath(prefix))
    with tempfile.TemporaryDirectory(prefix="pybpf-priv-") as tmp:
        os.chmod(tmp, 0o755)
        mnt = Path(tmp) / "py"
        mnt.mkdir()
        os.chmod(mnt, 0o755)
        script_path = Path(tmp) / "child.py"
        script_path.write_text(script)
        os.chmod(script_path, 0o644)
        target = f"-m {module}" if module else str(script_path)
        inner = (f"mount --bind {prefix} {mnt} && exec setpriv --reuid={user} --regid={user} "
                 f"--init-groups --inh-caps=-all {mnt / exe} {target} "
                 + " ".join(shlex.quote(a) for a in args))
        import site

        sites = [str(mnt / Path(p).relative_to(os.path.realpath(prefix)))
                 for p in site.getsitepackages() if p.startswith(os.path.realpath(prefix))]
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp,
               "PYTHONPATH": os.pathsep.join([str(ROOT), *sites]),
               "PYTHONDONTWRITEBYTECODE": "1"}
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               inner], env=env, capture_output=True, text=True, timeout=120)


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
