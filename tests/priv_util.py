"""Run Python as an unprivileged user, with exactly this interpreter's view of modules.

Only the standard library: tests/test_privilege.py also calls it from a virtualenv's
interpreter that has nothing but this project's dependencies.

The interpreter and its modules may live where the user cannot reach them (pyenv under
/root, mode 0700; a virtualenv in a private directory). The child runs in a private mount
namespace where the interpreter's prefix and each directory on this process's
``sys.path`` are bind-mounted at world-readable paths; nothing is visible outside that
namespace. The child starts with ``-S`` and ``PYTHONPATH`` set to those paths, so it
imports from the same places as this process, a virtualenv's site-packages included,
and from nowhere else.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child_view(mnt: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """(bind mounts (source, target), PYTHONPATH) reproducing this process's imports:
    the project root first, then every directory on ``sys.path`` in order. Entries
    inside the interpreter's prefix are reached through its mount at ``mnt/py``."""
    prefix = os.path.realpath(sys.base_prefix)
    binds: list[tuple[str, Path]] = [(prefix, mnt / "py")]
    path: list[str] = []
    seen: set[str] = set()
    for entry in [str(ROOT), *sys.path]:
        if not entry or not os.path.isdir(entry):
            continue
        real = os.path.realpath(entry)
        if real in seen:
            continue
        seen.add(real)
        if real == prefix or real.startswith(prefix + os.sep):
            path.append(str(mnt / "py" / os.path.relpath(real, prefix)))
        else:
            target = mnt / f"p{len(binds)}"
            binds.append((real, target))
            path.append(str(target))
    return binds, path


def run_as(user: str, script: str, *args: str, module: str | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (or ``-m module``) with ``args`` as ``user``, without capabilities."""
    prefix = os.path.realpath(sys.base_prefix)
    exe = Path(os.path.realpath(sys.executable)).relative_to(prefix)
    with tempfile.TemporaryDirectory(prefix="pybpf-priv-") as tmp:
        os.chmod(tmp, 0o755)
        mnt = Path(tmp) / "mnt"
        binds, path = child_view(mnt)
        for _src, target in binds:
            target.mkdir(parents=True)
        for d in (mnt, *(t for _s, t in binds)):
            os.chmod(d, 0o755)
        script_path = Path(tmp) / "child.py"
        script_path.write_text(script)
        os.chmod(script_path, 0o644)
        target = f"-m {module}" if module else shlex.quote(str(script_path))
        mounts = " && ".join(f"mount --bind {shlex.quote(src)} {shlex.quote(str(dst))}"
                             for src, dst in binds)
        inner = (f"{mounts} && exec setpriv --reuid={user} --regid={user} --init-groups "
                 f"--inh-caps=-all {shlex.quote(str(mnt / 'py' / exe))} -S {target} "
                 + " ".join(shlex.quote(a) for a in args))
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "PYTHONPATH": os.pathsep.join(path),
               "PYTHONDONTWRITEBYTECODE": "1"}
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               inner], env=env, capture_output=True, text=True,
                              timeout=timeout)
