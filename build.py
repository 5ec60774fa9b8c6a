"""Build pybpf: the cffi extension bound to the system libbpf, and the BPF probes.

Three ways in:

* ``pip install .`` / ``pip install -e .``: this file is the PEP 517 backend
  (``build-backend = "build"`` in pyproject.toml).  Before setuptools builds the
  wheel it (1) writes the cffi C source to ``build/cffi/_libbpf.c`` and (2) runs
  CMake to compile ``bpf_src/*.bpf.c`` into ``pybpf/probes/``.  setuptools then
  compiles the C source as the ``pybpf._libbpf`` extension, linked to
  ``libbpf.so.1``.
* ``python build.py``: the same two steps, then compiles the extension in place
  (``pybpf/_libbpf*.so``) for working from a checkout.
* ``ffibuilder``: the cffi builder object, for tools that expect one.

The cffi declarations live in ``pybpf/_cdef/``, one file per libbpf header.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
CDEF_DIR = ROOT / "pybpf" / "_cdef"
# Order matters: later files use the types declared by earlier ones.
CDEF_FILES = ["libbpf_common.h", "libbpf.h", "bpf.h", "btf.h", "pybpf_batch.h", "pybpf.h"]
NATIVE_DIR = ROOT / "pybpf" / "_native"
NATIVE_FILES = ["batch.c", "reader.c", "ring.c", "perf.c"]  # in dependency order
C_SOURCE = ROOT / "build" / "cffi" / "_libbpf.c"
PROBE_DIR = ROOT / "pybpf" / "probes"


def make_ffibuilder() -> Any:
    from cffi import FFI

    builder = FFI()
    for name in CDEF_FILES:
        builder.cdef((CDEF_DIR / name).read_text(), override=False)
    # the binding glue, then the event readers' native code (pybpf/_native/), as one
    # translation unit
    helpers = "\n".join((path).read_text() for path in
                        [CDEF_DIR / "pybpf.c", *(NATIVE_DIR / n for n in NATIVE_FILES)])
    builder.set_source(
        "pybpf._libbpf",
        "#include <stdbool.h>\n"
        "#include <bpf/libbpf.h>\n"
        "#include <bpf/bpf.h>\n"
        "#include <bpf/btf.h>\n" + helpers,
        libraries=["bpf"],
        include_dirs=[str(CDEF_DIR)],  # pybpf.c includes pybpf_batch.h
    )
    return builder


def emit_c_source() -> Path:
    C_SOURCE.parent.mkdir(parents=True, exist_ok=True)
    make_ffibuilder().emit_c_code(str(C_SOURCE))
    return C_SOURCE


def build_probes() -> None:
    """Compile bpf_src/*.bpf.c into pybpf/probes/ with CMake."""
    cmake = shutil.which("cmake")
    if cmake is None:
        raise SystemExit("pybpf build: cmake not found (apt-get install cmake)")
    build_dir = ROOT / "build" / "bpf"
    subprocess.run(
        [cmake, "-S", str(ROOT), "-B", str(build_dir), f"-DPYBPF_PROBE_DIR={PROBE_DIR}"],
        check=True,
        stdout=sys.stderr,
    )
    subprocess.run([cmake, "--build", str(build_dir), "-j", str(os.cpu_count() or 2)],
                   check=True, stdout=sys.stderr)


def _prepare() -> None:
    emit_c_source()
    if not os.environ.get("PYBPF_SKIP_PROBES"):
        build_probes()


# --- PEP 517 backend: prepare, then delegate to setuptools -------------------

def _setuptools() -> Any:
    from setuptools import build_meta

    return build_meta


def get_requires_for_build_wheel(config_settings: Any = None) -> list[str]:
    return list(_setuptools().get_requires_for_build_wheel(config_settings))


def get_requires_for_build_editable(config_settings: Any = None) -> list[str]:
    return list(_setuptools().get_requires_for_build_editable(config_settings))


def get_requires_for_build_sdist(config_settings: Any = None) -> list[str]:
    return list(_setuptools().get_requires_for_build_sdist(config_settings))


def prepare_metadata_for_build_wheel(metadata_directory: str, config_settings: Any = None) -> str:
    return str(_setuptools().prepare_metadata_for_build_wheel(metadata_directory, config_settings))


def prepare_metadata_for_build_editable(metadata_directory: str,
                                        config_settings: Any = None) -> str:
    return str(_setuptools().prepare_metadata_for_build_editable(metadata_directory,
                                                                 config_settings))


def build_wheel(wheel_directory: str, config_settings: Any = None,
                metadata_directory: str | None = None) -> str:
    _prepare()
    return str(_setuptools().build_wheel(wheel_directory, config_settings, metadata_directory))


def build_editable(wheel_directory: str, config_settings: Any = None,
                   metadata_directory: str | None = None) -> str:
    _prepare()
    return str(_setuptools().build_editable(wheel_directory, config_settings,
                                            metadata_directory))


def build_sdist(sdist_directory: str, config_settings: Any = None) -> str:
    emit_c_source()
    return str(_setuptools().build_sdist(sdist_directory, config_settings))


ffibuilder = None if __name__ == "build" else make_ffibuilder()

def compile_fastpath(out_dir: Path) -> None:
    """Compile pybpf/_fastpath.c (the ``pybpf._fastpath`` entry of pyproject.toml's
    ext-modules) into OUT_DIR/pybpf/."""
    from setuptools import Distribution, Extension

    dist = Distribution({"name": "pybpf", "ext_modules": [
        Extension("pybpf._fastpath", [str(ROOT / "pybpf" / "_fastpath.c"),
                                      str(ROOT / "pybpf" / "_native" / "fd.c")])]})
    cmd: Any = dist.get_command_obj("build_ext")
    cmd.build_lib = str(out_dir)
    cmd.build_temp = str(out_dir / "tmp")
    cmd.ensure_finalized()
    cmd.run()


if __name__ == "__main__":
    _prepare()
    make_ffibuilder().compile(tmpdir=str(ROOT / "build" / "inplace"), verbose=False)
    compile_fastpath(ROOT / "build" / "inplace")
    built = [*(ROOT / "build" / "inplace" / "pybpf").glob("_libbpf*.so"),
             *(ROOT / "build" / "inplace" / "pybpf").glob("_fastpath*.so")]
    for so in built:
        # Replace atomically: a running process may have the old file mapped.
        tmp = ROOT / "pybpf" / (so.name + ".tmp")
        shutil.copy2(so, tmp)
        os.replace(tmp, ROOT / "pybpf" / so.name)
    print(f"built {', '.join(so.name for so in built)} and probes in {PROBE_DIR}")
