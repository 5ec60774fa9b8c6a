"""pybpf's PEP 517 build backend (``build-backend = "pybpf_backend"``, ``backend-path``).

Before setuptools compiles and packs anything it:

1. writes the cffi C source of ``pybpf._libbpf`` to ``build/cffi/_libbpf.c`` (the
   declarations live in ``pybpf/_cdef/``, one file per libbpf header);
2. provides the CO-RE probes ``pybpf/probes/*.bpf.o``: compiled from ``bpf_src/``
   with CMake and clang when the toolchain is there, else the prebuilt objects
   that the sdist carries are used as they are. ``PYBPF_BUILD_PROBES=1`` insists
   on compiling, ``PYBPF_BUILD_PROBES=0`` never compiles.

After setuptools built a wheel, :func:`retag_wheel` gives it the manylinux tag
its extensions qualify for: they need glibc only, and the glibc symbol versions
they reference decide ``manylinux_2_X``. The system ``libbpf.so.1`` (deliberately
not bundled: one libbpf per machine, updated by the distribution) is not linked:
the extension dlopen()s it at import and calls it through a table of function
pointers (:func:`libbpf_table_source`), so plain ``auditwheel show`` agrees with
the tag and ``auditwheel repair`` leaves the wheel as it is.

The module is named so it cannot shadow PyPA's ``build`` frontend; ``build.py``
in the checkout's root is the developer's in-place build.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CDEF_DIR = ROOT / "pybpf" / "_cdef"
# Order matters: later files use the types declared by earlier ones.
CDEF_FILES = ["libbpf_common.h", "libbpf.h", "bpf.h", "btf.h", "pybpf_batch.h", "pybpf_optional.h",
              "libbpf_optional.h", "pybpf.h"]
# The cdef files whose functions are libbpf's own, every one in libbpf MIN_LIBBPF: all
# must be in the runtime libbpf (pybpf/_ffi.py refuses to import otherwise).
LIBBPF_CDEF_FILES = ["libbpf_common.h", "libbpf.h", "bpf.h", "btf.h"]
# libbpf functions newer than MIN_LIBBPF, one prototype a line: NULL when absent.
OPTIONAL_CDEF_FILE = "libbpf_optional.h"
# libbpf functions only the C code calls (their types are not cffi's to declare).
NATIVE_LIBBPF = ["libbpf_set_print", "libbpf_register_prog_handler", "perf_buffer__buffer"]
NATIVE_DIR = ROOT / "pybpf" / "_native"
NATIVE_FILES = ["batch.c", "reader.c", "ring.c", "perf.c",  # the event readers, in order
                "btf.c"]  # BTF type sections
C_SOURCE = ROOT / "build" / "cffi" / "_libbpf.c"
PROBE_DIR = ROOT / "pybpf" / "probes"
BPF_CLANGS = ["clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14", "clang"]


def _log(msg: str) -> None:
    print(f"pybpf build: {msg}", file=sys.stderr, flush=True)


# --- the cffi binding -------------------------------------------------------------------

def cdef_functions(names: list[str]) -> list[str]:
    """The functions the cdef files NAMES (a self-contained prefix of CDEF_FILES) declare."""
    from cffi import FFI

    ffi = FFI()
    for name in names:
        ffi.cdef((CDEF_DIR / name).read_text(), override=False)
    return [key.split(" ", 1)[1] for key in ffi._parser._declarations
            if key.startswith("function ")]


_PROTOTYPE = re.compile(r"^(?P<ret>[^(]*?[\s*])(?P<name>\w+)\((?P<args>.*)\);$")


def optional_prototypes() -> dict[str, tuple[str, str]]:
    """{name: (return type, arguments)} of OPTIONAL_CDEF_FILE's one-line prototypes."""
    out = {}
    for line in (CDEF_DIR / OPTIONAL_CDEF_FILE).read_text().splitlines():
        m = _PROTOTYPE.match(line.strip())
        if m and not line.startswith(("/*", " *")):
            out[m["name"]] = (m["ret"].strip(), m["args"])
    return out


def _absent_stub(name: str, ret: str, args: str) -> str:
    """C for what a call of optional libbpf function NAME does while its pointer is
    NULL (the runtime libbpf lacks it): fail as libbpf fails, errno EOPNOTSUPP and
    NULL (pointer results) or -EOPNOTSUPP (int results), so a direct call through the
    cffi ``lib`` (or native code) returns an error instead of jumping to address 0."""
    if ret.endswith("*"):
        result = "NULL"
    elif ret in ("int", "long", "long long"):
        result = "-EOPNOTSUPP"
    else:
        raise ValueError(f"{OPTIONAL_CDEF_FILE}: {name} returns {ret!r}: say what its stub "
                         "returns in backend/pybpf_backend.py (_absent_stub)")
    return (f"static {ret} pybpf_absent_{name}({args})\n"
            f"{{\n\terrno = EOPNOTSUPP;\n\treturn {result};\n}}")


def libbpf_table_source() -> str:
    """C for the libbpf function table: libbpf is not linked (no DT_NEEDED libbpf.so.1,
    so the wheel is manylinux), it is dlopen()ed at import and every function pybpf
    calls is a pointer filled by dlsym (pybpf_libbpf_load in pybpf.c). After libbpf's
    headers, ``#define NAME(...) (*pybpf_p_NAME)(__VA_ARGS__)`` sends every call of the
    cffi wrappers and of the native code through its pointer. Required functions take their
    type from libbpf's headers; optional ones (newer than the headers may be) from their
    prototype in OPTIONAL_CDEF_FILE, with pybpf's copies of their option structs."""
    required = cdef_functions(LIBBPF_CDEF_FILES) + NATIVE_LIBBPF
    optional = optional_prototypes()
    lines = ["/* generated by backend/pybpf_backend.py (libbpf_table_source) */"]
    for name in required:
        lines.append(f"static __typeof__(&{name}) pybpf_p_{name};")
    for name, (ret, args) in optional.items():
        lines.append(f"static {ret} (*pybpf_p_{name})({args});")
        lines.append(_absent_stub(name, ret, args))
    for name in required:
        # function-like: ``struct bpf_obj_get_opts`` (a tag named like a function) stays
        lines.append(f"#define {name}(...) (*pybpf_p_{name})(__VA_ARGS__)")
    for name in optional:
        # absent from the runtime libbpf: its stub, never a jump to NULL
        lines.append(f"#define {name}(...) (pybpf_p_{name} ? (*pybpf_p_{name})(__VA_ARGS__)"
                     f" : pybpf_absent_{name}(__VA_ARGS__))")
    lines.append("static const struct pybpf_libbpf_sym pybpf_libbpf_syms[] = {")
    for name in required:
        lines.append(f'\t{{"{name}", (void **)&pybpf_p_{name}, 1}},')
    for name in optional:
        lines.append(f'\t{{"{name}", (void **)&pybpf_p_{name}, 0}},')
    lines.append("};")
    return "\n".join(lines) + "\n"


def make_ffibuilder() -> Any:
    from cffi import FFI

    builder = FFI()
    for name in CDEF_FILES:
        builder.cdef((CDEF_DIR / name).read_text(), override=False)
    # libbpf's headers (types only: nothing links libbpf), pybpf's copies of newer option
    # structs, the function table, then the binding glue and the event readers' native
    # code (pybpf/_native/), as one translation unit
    helpers = "\n".join(path.read_text() for path in
                        [CDEF_DIR / "pybpf.c", *(NATIVE_DIR / n for n in NATIVE_FILES)])
    builder.set_source(
        "pybpf._libbpf",
        "#include <errno.h>\n"
        "#include <stdbool.h>\n"
        "#include <bpf/libbpf.h>\n"
        "#include <bpf/bpf.h>\n"
        "#include <bpf/btf.h>\n"
        '#include "pybpf_optional.h"\n'
        "struct pybpf_libbpf_sym { const char *name; void **slot; int required; };\n"
        + libbpf_table_source() + helpers,
        libraries=["dl"],  # dlopen: in libc from glibc 2.34, libdl.so.2 before
        # pybpf.c includes pybpf_batch.h and sysbpf.h
        include_dirs=[str(CDEF_DIR), str(NATIVE_DIR)],
    )
    return builder


def emit_c_source() -> Path:
    C_SOURCE.parent.mkdir(parents=True, exist_ok=True)
    make_ffibuilder().emit_c_code(str(C_SOURCE))
    return C_SOURCE


# --- the probes -------------------------------------------------------------------------

def expected_probes() -> list[Path]:
    return [PROBE_DIR / (src.name[:-len(".bpf.c")] + ".bpf.o")
            for src in sorted((ROOT / "bpf_src").glob("*.bpf.c"))]


def probe_toolchain() -> list[str]:
    """What compiling the probes needs and this machine lacks (empty: all there)."""
    missing = []
    if shutil.which("cmake") is None:
        missing.append("cmake")
    if not any(shutil.which(c) for c in BPF_CLANGS):
        missing.append("clang")
    if not os.environ.get("VMLINUX_H"):
        if not (shutil.which("bpftool") or os.path.exists("/usr/sbin/bpftool")):
            missing.append("bpftool")
        if not os.path.exists("/sys/kernel/btf/vmlinux"):
            missing.append("kernel BTF (/sys/kernel/btf/vmlinux)")
    return missing


def compile_probes() -> None:
    """Compile bpf_src/*.bpf.c into pybpf/probes/ with CMake (see CMakeLists.txt)."""
    cmake = shutil.which("cmake")
    assert cmake is not None
    build_dir = ROOT / "build" / "bpf"
    args = [cmake, "-S", str(ROOT), "-B", str(build_dir), f"-DPYBPF_PROBE_DIR={PROBE_DIR}"]
    if os.environ.get("VMLINUX_H"):
        args.append(f"-DVMLINUX_H={os.environ['VMLINUX_H']}")
    subprocess.run(args, check=True, stdout=sys.stderr)
    subprocess.run([cmake, "--build", str(build_dir), "-j", str(os.cpu_count() or 2)],
                   check=True, stdout=sys.stderr)


def provide_probes() -> None:
    """Compile the probes, or keep the prebuilt ones (PYBPF_BUILD_PROBES decides)."""
    want = os.environ.get("PYBPF_BUILD_PROBES", "")
    if os.environ.get("PYBPF_SKIP_PROBES"):  # the older spelling of PYBPF_BUILD_PROBES=0
        want = "0"
    missing_objects = [p.name for p in expected_probes() if not p.exists()]
    missing_tools = probe_toolchain()
    if want == "0" or (want == "" and missing_tools and not missing_objects):
        if missing_objects:
            raise SystemExit(f"pybpf build: PYBPF_BUILD_PROBES=0 but no prebuilt "
                             f"{', '.join(missing_objects)} in {PROBE_DIR}")
        why = "PYBPF_BUILD_PROBES=0" if want == "0" else f"no {', '.join(missing_tools)}"
        _log(f"using the prebuilt probes in pybpf/probes ({why})")
        return
    if missing_tools:
        raise SystemExit(
            f"pybpf build: compiling the probes (bpf_src/) needs {', '.join(missing_tools)}"
            + (f"; no prebuilt {', '.join(missing_objects)} to fall back on (an sdist "
               "carries them)" if missing_objects else " (PYBPF_BUILD_PROBES=1)")
            + ": apt-get install clang llvm bpftool cmake")
    compile_probes()


def prepare() -> None:
    emit_c_source()
    provide_probes()


# --- the manylinux tag ------------------------------------------------------------------

# Libraries a manylinux extension may link without bundling them (PEP 600: glibc's own).
SYSTEM_LIBS = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1",
               "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}


def elf_needs(data: bytes) -> tuple[list[str], dict[str, set[str]]]:
    """(DT_NEEDED names, {library: symbol version names}) of a 64-bit little-endian ELF."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, _ = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
                for i in range(shnum)]

    def cstring(sec: int, off: int) -> str:
        start = sections[sec][4] + off
        return data[start:data.index(b"\0", start)].decode()

    needed: list[str] = []
    versions: dict[str, set[str]] = {}
    for _name, typ, _f, _a, off, size, link, _i, _al, _es in sections:
        if typ == 6:  # SHT_DYNAMIC
            for pos in range(off, off + size, 16):
                tag, val = struct.unpack_from("<qQ", data, pos)
                if tag == 0:
                    break
                if tag == 1:  # DT_NEEDED
                    needed.append(cstring(link, val))
        elif typ == 0x6FFFFFFE:  # SHT_GNU_verneed
            pos = off
            while True:
                _ver, cnt, file_off, aux, nxt = struct.unpack_from("<HHIII", data, pos)
                names = versions.setdefault(cstring(link, file_off), set())
                apos = pos + aux
                for _ in range(cnt):
                    _h, _fl, _o, name_off, anext = struct.unpack_from("<IHHII", data, apos)
                    names.add(cstring(link, name_off))
                    apos += anext
                if not nxt:
                    break
                pos += nxt
    return needed, versions


def manylinux_tag(libraries: list[bytes], arch: str) -> str | None:
    """The manylinux tag that extensions LIBRARIES (ELF images) qualify for, or None."""
    glibc = (2, 17)
    for data in libraries:
        needed, versions = elf_needs(data)
        if set(needed) - SYSTEM_LIBS:
            return None
        for names in versions.values():
            for v in names:
                m = re.fullmatch(r"GLIBC_(\d+)\.(\d+)(?:\.\d+)?", v)
                if m:
                    glibc = max(glibc, (int(m[1]), int(m[2])))
    return f"manylinux_{glibc[0]}_{glibc[1]}_{arch}"


def _record_line(name: str, body: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(body)}"


def retag_wheel(wheel_directory: str, filename: str) -> str:
    """Rename the ``linux_<arch>`` wheel FILENAME to the manylinux tag it qualifies for."""
    m = re.fullmatch(r"(.+)-(linux_(x86_64|aarch64))\.whl", filename)
    if not m:
        return filename
    path = Path(wheel_directory, filename)
    with zipfile.ZipFile(path) as zf:
        libs = [zf.read(n) for n in zf.namelist() if n.endswith(".so")]
        tag = manylinux_tag(libs, m[3])
        if tag is None:
            _log(f"{filename}: an extension links more than glibc; keeping the linux tag")
            return filename
        new_name = f"{m[1]}-{tag}.whl"
        fd, tmp = tempfile.mkstemp(dir=wheel_directory, suffix=".whl")
        os.close(fd)
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
            record_name = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
            record = []
            for info in zf.infolist():
                if info.filename == record_name:
                    continue
                body = zf.read(info)
                if info.filename.endswith(".dist-info/WHEEL"):
                    body = re.sub(rb"(Tag: \S+-\S+-)linux_\w+", rb"\g<1>" + tag.encode(), body)
                    record.append(_record_line(info.filename, body))
                else:
                    line = next((r for r in zf.read(record_name).decode().splitlines()
                                 if r.startswith(info.filename + ",")), None)
                    record.append(line or _record_line(info.filename, body))
                out.writestr(info, body)
            record.append(f"{record_name},,")
            out.writestr(zf.getinfo(record_name), "\n".join(record) + "\n")
    os.replace(tmp, Path(wheel_directory, new_name))
    path.unlink()
    _log(f"tagged {new_name}: the extensions need glibc only (libbpf.so.1 is dlopen()ed)")
    return new_name


# --- PEP 517 hooks: prepare, then delegate to setuptools ----------------------------------

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
    prepare()
    name = str(_setuptools().build_wheel(wheel_directory, config_settings, metadata_directory))
    return retag_wheel(wheel_directory, name)


def build_editable(wheel_directory: str, config_settings: Any = None,
                   metadata_directory: str | None = None) -> str:
    prepare()
    return str(_setuptools().build_editable(wheel_directory, config_settings,
                                            metadata_directory))


def build_sdist(sdist_directory: str, config_settings: Any = None) -> str:
    # The sdist carries the probes, so that installing it needs no clang.
    provide_probes()
    return str(_setuptools().build_sdist(sdist_directory, config_settings))

