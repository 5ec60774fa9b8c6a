"""Build pybpf in place, in a checkout: ``python build.py``.

Writes the cffi C source and provides the probes as the build backend does
(``backend/pybpf_backend.py``, which ``pip install .``, ``pip wheel .`` and
``python -m build`` use), then compiles ``pybpf._libbpf`` and ``pybpf._fastpath``
into ``pybpf/`` so that ``PYTHONPATH=$PWD python3 ...`` runs this checkout.

``python -m build`` run from the checkout's root finds this file before PyPA's
``build`` package: it hands over to that frontend instead (see the end).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent


def _backend() -> Any:
    sys.path.insert(0, str(ROOT / "backend"))
    import pybpf_backend

    return pybpf_backend


def compile_fastpath(out_dir: Path) -> None:
    """Compile pybpf/_fastpath.c (the ``pybpf._fastpath`` entry of pyproject.toml's
    ext-modules) into OUT_DIR/pybpf/."""
    from setuptools import Distribution, Extension

    dist = Distribution({"name": "pybpf", "ext_modules": [
        Extension("pybpf._fastpath", [str(ROOT / "pybpf" / "_fastpath.c"),
                                      str(ROOT / "pybpf" / "_native" / "fd.c"),
                                      str(ROOT / "pybpf" / "_native" / "values.c"),
                                      str(ROOT / "pybpf" / "_native" / "sysmap.c")])]})
    cmd: Any = dist.get_command_obj("build_ext")
    cmd.build_lib = str(out_dir)
    cmd.build_temp = str(out_dir / "tmp")
    cmd.ensure_finalized()
    cmd.run()


def build_in_place() -> None:
    backend = _backend()
    backend.prepare()
    inplace = ROOT / "build" / "inplace"
    backend.make_ffibuilder().compile(tmpdir=str(inplace), verbose=False)
    compile_fastpath(inplace)
    built = [*(inplace / "pybpf").glob("_libbpf*.so"), *(inplace / "pybpf").glob("_fastpath*.so")]
    for so in built:
        # Replace atomically: a running process may have the old file mapped.
        tmp = ROOT / "pybpf" / (so.name + ".tmp")
        shutil.copy2(so, tmp)
        os.replace(tmp, ROOT / "pybpf" / so.name)
    print(f"built {', '.join(so.name for so in built)} and probes in {backend.PROBE_DIR}")


def _run_pypa_build() -> None:
    """``python -m build`` in the checkout's root: run PyPA's frontend, not this file."""
    import runpy

    here = {"", ".", str(ROOT), os.getcwd()}
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") not in
                   {os.path.abspath(h or ".") for h in here}]
    sys.modules.pop("build", None)
    runpy.run_module("build", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    spec = globals().get("__spec__")
    if spec is not None and spec.name == "build":
        _run_pypa_build()
    else:
        build_in_place()
