"""Compile BPF C sources the way pybpf's own probes are built.

``compile("prog.bpf.c", "prog.bpf.o")`` runs clang ``-target bpf -g -O2`` with a
``vmlinux.h`` generated from the running kernel's BTF (by bpftool, cached), the
libbpf headers, and the arch define; then strips DWARF and keeps BTF.
"""

from __future__ import annotations

import errno
import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path

from ._source import check_regular, read_regular
from .errors import BPFError

__all__ = ["find_clang", "vmlinux_h", "compile", "CompileError", "INCLUDE_DIR"]

#: pybpf's BPF headers (``pybpf_common.h``: event header and loss accounting,
#: ``pybpf_scope.h``: the tools' scope filter), shipped in the package; compile()
#: puts this directory on clang's include path.
INCLUDE_DIR = Path(__file__).resolve().parent / "include"

_CLANGS = ["clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14", "clang"]


class CompileError(BPFError):
    """clang failed; ``.output`` has its diagnostics."""

    def __init__(self, source: str, output: str) -> None:
        super().__init__(errno.EINVAL, f"clang failed to compile {source}:\n{output.strip()}")
        self.output = output


def find_clang() -> str:
    """Path of a clang that can target BPF (``$CLANG`` first)."""
    env = os.environ.get("CLANG")
    if env:
        return env
    for name in _CLANGS:
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError(errno.ENOENT, "no clang found (apt-get install clang-19)", "clang")


def _find_strip(clang: str) -> str | None:
    suffix = os.path.basename(clang)[len("clang"):]
    for name in (f"llvm-strip{suffix}", "llvm-strip"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pybpf"


def vmlinux_h(btf_path: str = "/sys/kernel/btf/vmlinux", *, directory: str | None = None) -> str:
    """Directory holding a ``vmlinux.h`` for ``btf_path`` (generated once, cached)."""
    digest = hashlib.sha256(read_regular(btf_path, "BTF file", error=BPFError)).hexdigest()[:16]
    out_dir = Path(directory) if directory else _cache_dir() / f"vmlinux-{digest}"
    header = out_dir / "vmlinux.h"
    if header.exists():
        return str(out_dir)
    bpftool = shutil.which("bpftool") or next(
        (p for p in ("/usr/sbin/bpftool", "/sbin/bpftool") if os.path.exists(p)), None)
    if bpftool is None:
        raise FileNotFoundError(errno.ENOENT, "bpftool not found (apt-get install bpftool)",
                                "bpftool")
    out_dir.mkdir(parents=True, exist_ok=True)
    res = subprocess.run([bpftool, "btf", "dump", "file", btf_path, "format", "c"],
                         capture_output=True, check=False)
    if res.returncode != 0:
        raise BPFError(errno.EINVAL, f"bpftool could not dump {btf_path}: "
                                     f"{res.stderr.decode(errors='replace').strip()}")
    tmp = header.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(res.stdout)
    tmp.replace(header)
    return str(out_dir)


def _arch() -> str:
    m = platform.machine()
    return {"x86_64": "x86", "aarch64": "arm64", "s390x": "s390", "ppc64le": "powerpc",
            "riscv64": "riscv"}.get(m, m)


def compile(source: str | os.PathLike[str], output: str | os.PathLike[str] | None = None, *,
            include_dirs: list[str] | None = None, defines: dict[str, str] | None = None,
            strip: bool = True, extra_args: list[str] | None = None) -> str:
    """Compile a BPF C file to a CO-RE object; returns the output path."""
    src = os.fspath(source)
    check_regular(src, "BPF source", error=BPFError)  # clang would block on a FIFO
    out = os.fspath(output) if output else (src[:-2] if src.endswith(".c") else src) + ".o"
    clang = find_clang()
    cmd = [clang, "-target", "bpf", "-g", "-O2", f"-D__TARGET_ARCH_{_arch()}",
           "-I", vmlinux_h(), "-I", os.path.dirname(os.path.abspath(src)),
           "-Wall", "-Wno-unused-function"]
    # pybpf's own BPF headers (pybpf_common.h, pybpf_scope.h): package data, so an
    # installed pybpf compiles sources that include them
    cmd += ["-I", str(INCLUDE_DIR)]
    for d in include_dirs or []:
        cmd += ["-I", d]
    # <linux/errno.h> (pulled in by usdt.bpf.h) includes <asm/errno.h>, which
    # Debian/Ubuntu keep under the multiarch directory clang -target bpf skips.
    multiarch = f"/usr/include/{platform.machine()}-linux-gnu"
    if os.path.isdir(multiarch):
        cmd += ["-idirafter", multiarch]
    for k, v in (defines or {}).items():
        cmd.append(f"-D{k}={v}")
    cmd += list(extra_args or [])
    # "-x c": a source named anything else (foo.txt, /etc/passwd) is still compiled as C,
    # not passed through as a linker input that -c silently ignores.
    cmd += ["-x", "c", "-c", src, "-o", out]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False,
                         stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise CompileError(src, res.stderr)
    if not os.path.isfile(out):
        raise CompileError(src, f"clang wrote no object file {out}\n{res.stderr}")
    if strip:
        tool = _find_strip(clang)
        if tool:
            res = subprocess.run([tool, "-g", out], capture_output=True, text=True,
                                 check=False, stdin=subprocess.DEVNULL)
            if res.returncode != 0:
                raise CompileError(src, f"{os.path.basename(tool)} -g {out} failed:\n"
                                        f"{res.stderr}")
    return out
