"""pip install pybpf, for real: the sdist built from this checkout by PyPA's frontend
installs into a clean venv that cannot see the checkout, its wheel carries a manylinux
tag auditwheel agrees with, and the installed package runs the bundled probes. Also the
runtime libbpf check (MIN_LIBBPF, checked against what the built extension links) and
the table of optional newer libbpf symbols."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from pybpf import _ffi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "backend"))
import pybpf_backend  # noqa: E402


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that points Python at this checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH", "VIRTUAL_ENV")}
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, timeout: float = 300, **extra: str) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=clean_env(**extra), capture_output=True, text=True,
                         timeout=timeout, check=False)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout + res.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The sdist (``python -m build --sdist`` in the checkout's root), and the wheel pip
    builds from a copy of it in a directory with no checkout files."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--sdist", "--outdir", str(out)], cwd=REPO)
    (sdist,) = out.glob("pybpf-*.tar.gz")
    away = tmp_path_factory.mktemp("away")
    shutil.copy2(sdist, away / sdist.name)
    # PYBPF_BUILD_PROBES=0: the sdist's prebuilt probes, as on a machine without clang.
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(away / "wheels"),
         sdist.name], cwd=away, PYBPF_BUILD_PROBES="0")
    (wheel,) = (away / "wheels").glob("pybpf-*.whl")
    return away / sdist.name, wheel


@pytest.mark.slow
def test_sdist_carries_what_building_needs(built):
    import tarfile

    sdist, _ = built
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    srcs = sorted(p.name for p in (REPO / "bpf_src").glob("*.bpf.c"))
    assert srcs
    needed = {"pyproject.toml", "CMakeLists.txt", "backend/pybpf_backend.py", "LICENSE",
              "LICENSES/GPL-2.0-only.txt", "pybpf/_cdef/pybpf.c", "pybpf/_native/fd.c",
              "pybpf/_native/values.c", "pybpf/_native/values.h",
              "pybpf/_fastpath.c", "pybpf/py.typed", "pybpf/_cdef/libbpf_optional.h",
              "pybpf/include/pybpf_common.h", "pybpf/include/pybpf_scope.h",
              *(f"bpf_src/{s}" for s in srcs),
              *(f"pybpf/probes/{s[:-2]}.o" for s in srcs)}
    assert needed <= names, sorted(needed - names)
    assert not [n for n in names if n.endswith(".so")]


@pytest.mark.slow
def test_wheel_is_manylinux_and_auditwheel_agrees(built, tmp_path):
    _, wheel = built
    m = re.fullmatch(r"pybpf-[^-]+-cp(\d+)-cp\d+-manylinux_(\d+)_(\d+)_x86_64\.whl", wheel.name)
    assert m, wheel.name
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        tags = zf.read(next(n for n in names if n.endswith(".dist-info/WHEEL"))).decode()
        libs = [zf.read(n) for n in names if n.endswith(".so")]
    assert f"Tag: cp{m[1]}-cp{m[1]}-manylinux_{m[2]}_{m[3]}_x86_64" in tags
    assert len(libs) == 2  # _libbpf, _fastpath; libbpf itself is not grafted
    assert not [n for n in names if "libbpf.so" in n or ".libs/" in n]
    assert "pybpf/py.typed" in names
    # the BPF headers pybpf.toolchain.compile puts on the include path
    assert {"pybpf/include/pybpf_common.h", "pybpf/include/pybpf_scope.h"} <= set(names)
    assert {f"pybpf/probes/{p.name[:-2]}.o" for p in (REPO / "bpf_src").glob("*.bpf.c")} \
        <= set(names)
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert any(n.endswith("licenses/LICENSES/GPL-2.0-only.txt") for n in names)
    assert "License-Expression: Apache-2.0 AND GPL-2.0-only" in meta
    assert "Project-URL: Source," in meta
    assert "Classifier: Programming Language :: Python :: 3.13" in meta
    for data in libs:
        needed, _ = pybpf_backend.elf_needs(data)
        assert set(needed) <= {"libc.so.6", "libdl.so.2"}, needed  # libbpf: dlopen()ed

    # auditwheel, plain: the wheel is consistent with its manylinux tag as it is (no
    # exclude flags), and repairing it changes nothing.
    show = run([sys.executable, "-m", "auditwheel", "show", str(wheel)], cwd=tmp_path)
    text = " ".join(show.split())
    assert f'is consistent with the following platform tag: "manylinux_{m[2]}_{m[3]}_x86_64"' \
        in text, show
    assert (int(m[2]), int(m[3])) <= (2, 34)
    repaired = tmp_path / "repaired"
    out = run([sys.executable, "-m", "auditwheel", "repair", "-w", str(repaired), str(wheel)],
              cwd=tmp_path)
    assert [p.name for p in repaired.glob("*.whl")] == [wheel.name], out


@pytest.mark.slow
@pytest.mark.kernel
def test_wheel_installs_into_a_clean_venv_and_runs_the_probes(built, tmp_path):
    sdist, wheel = built
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    py = str(venv / "bin" / "python")
    run([py, "-m", "pip", "install", "-q", str(wheel)], cwd=tmp_path, timeout=300)
    code = ("import json, pybpf; from pybpf import _ffi; "
            "print(json.dumps([pybpf.__file__, _ffi.MIN_LIBBPF, pybpf.libbpf_version()]))")
    where, minimum, version = json.loads(run([py, "-c", code], cwd=tmp_path).splitlines()[-1])
    assert where.startswith(str(venv)), where
    assert tuple(version) >= tuple(minimum)
    # the prebuilt probes, from the installed package: real exec events
    out = run([str(venv / "bin" / "pybpf"), "execsnoop", "--demo"], cwd=tmp_path, timeout=120)
    assert re.search(r"^echo\s+\d+.*hello from pybpf", out, re.M), out
    assert re.search(r"(\d+) exec events captured", out), out
    if shutil.which("clang") or any(shutil.which(f"clang-{v}") for v in range(14, 20)):
        # the installed toolchain compiles a source that includes pybpf's BPF headers
        src = tmp_path / "uses_headers.bpf.c"
        src.write_text(USES_HEADERS)
        code = ("import sys, pybpf; from pybpf import toolchain; "
                "out = toolchain.compile(sys.argv[1]); "
                "o = pybpf.Object.open(out); "
                "print(sorted(o.maps), toolchain.INCLUDE_DIR); o.close()")
        out = run([py, "-c", code, str(src)], cwd=tmp_path)
        assert "pybpf_ringbuf_drops" in out and f"{venv}/lib/" in out, out


USES_HEADERS = """\
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "pybpf_common.h"
#include "pybpf_scope.h"

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 4096);
} events SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
    __u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (!pybpf_in_scope(tgid))
        return 0;
    pybpf_count_drop();
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""


# --- the runtime libbpf ----------------------------------------------------------------

def _loaded_libbpf() -> str:
    """The path of the libbpf.so.1 this process dlopen()ed at import."""
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "libbpf.so" in line}
    assert len(paths) == 1, paths
    return paths.pop()


def _default_versions(path: str) -> dict[str, tuple[int, int]]:
    """{symbol: version node} of the default (@@) version of each function PATH defines."""
    from elftools.elf.elffile import ELFFile

    out = {}
    with open(path, "rb") as f:
        elf = ELFFile(f)
        versym = elf.get_section_by_name(".gnu.version")
        nodes = {}
        for vd, aux in elf.get_section_by_name(".gnu.version_d").iter_versions():
            name = next(aux).name
            if name.startswith("LIBBPF_"):
                nodes[vd["vd_ndx"]] = tuple(int(x) for x in name[7:].split(".")[:2])
        for i, sym in enumerate(elf.get_section_by_name(".dynsym").iter_symbols()):
            ndx = versym.get_symbol(i).entry["ndx"]
            if isinstance(ndx, int) and not ndx & 0x8000 and ndx in nodes \
                    and sym["st_shndx"] != "SHN_UNDEF":
                out[sym.name] = nodes[ndx]
    return out


def test_min_libbpf_is_what_the_function_table_requires():
    """MIN_LIBBPF is the newest version node among the functions the extension's table
    requires (neither understated nor overstated), and each optional row's "since" is
    the node that added it, in the libbpf loaded here."""
    versions = _default_versions(_loaded_libbpf())
    table = _ffi._table()
    required = [name for name, req, _ in table if req]
    assert len(required) > 150
    assert max(versions[n] for n in required) == _ffi.MIN_LIBBPF
    optional = {name for name, req, _ in table if not req}
    assert optional == set(_ffi.OPTIONAL)  # one table: libbpf_optional.h and OPTIONAL agree
    for name in optional:
        if name in versions:
            assert versions[name] == _ffi.OPTIONAL[name].since, name


def test_extension_does_not_link_libbpf():
    """The extensions need glibc only: libbpf is dlopen()ed at import, so no DT_NEEDED
    libbpf.so.1 (no manylinux policy allows it) and no undefined libbpf symbol."""
    from elftools.elf.elffile import ELFFile

    from pybpf import _fastpath, _libbpf

    for mod in (_libbpf, _fastpath):
        data = Path(mod.__file__).read_bytes()
        needed, versions = pybpf_backend.elf_needs(data)
        assert set(needed) <= {"libc.so.6", "libdl.so.2"}, needed
        assert set(versions) <= {"libc.so.6", "libdl.so.2"}, versions
        with open(mod.__file__, "rb") as f:
            undefined = [s.name for s in ELFFile(f).get_section_by_name(".dynsym").iter_symbols()
                         if s["st_shndx"] == "SHN_UNDEF" and s.name]
        foreign = [n for n in undefined if re.match(r"(bpf|btf|libbpf|ring|perf_buffer|"
                                                    r"user_ring_buffer)_", n)]
        assert not foreign, foreign
    assert _loaded_libbpf().endswith("libbpf.so.1") or ".so.1." in _loaded_libbpf()


def test_version_check_names_found_and_needed():
    with pytest.raises(ImportError, match=r"needs libbpf 1\.1 or newer, but the system "
                                          r"libbpf\.so\.1 is libbpf 1\.0: .*libbpf1"):
        _ffi.check_libbpf_version((1, 0))
    with pytest.raises(_ffi.LibbpfVersionError, match=r"libbpf 0\.8"):
        _ffi.check_libbpf_version((0, 8))
    for ok in [(1, 1), (1, 5), (1, 10), (2, 0)]:
        _ffi.check_libbpf_version(ok)
    with pytest.raises(_ffi.LibbpfVersionError, match=r"needs libbpf 1\.6 .* is libbpf 1\.5"):
        _ffi.check_libbpf_version((1, 5), (1, 6))


def _import_with_libbpf(tmp_path: Path, c_source: str | None) -> subprocess.CompletedProcess[str]:
    """``import pybpf`` in a child whose dynamic linker finds first (LD_LIBRARY_PATH) a
    libbpf.so.1 built here from C_SOURCE (None: a file that is not a library)."""
    lib = tmp_path / "libbpf.so.1"
    if c_source is None:
        lib.write_text("not an ELF file\n")
    else:
        cc = shutil.which("cc") or shutil.which("gcc")
        assert cc, "a C compiler (the tests build helpers with it)"
        (tmp_path / "fake.c").write_text(textwrap.dedent(c_source))
        subprocess.run([cc, "-shared", "-fPIC", "-Wl,-soname,libbpf.so.1", "-o", str(lib),
                        str(tmp_path / "fake.c")], check=True)
    return subprocess.run([sys.executable, "-c", "import pybpf"], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "LD_LIBRARY_PATH": str(tmp_path)})


def test_import_refuses_an_old_libbpf(tmp_path):
    """A libbpf.so.1 that says 1.0 (a stand-in built here): the check at import names
    both versions and what it lacks."""
    res = _import_with_libbpf(tmp_path, """\
        unsigned int libbpf_major_version(void) { return 1; }
        unsigned int libbpf_minor_version(void) { return 0; }
        const char *libbpf_version_string(void) { return "v1.0"; }
        """)
    assert res.returncode == 1
    assert "LibbpfVersionError: pybpf needs libbpf 1.1 or newer, but the system libbpf.so.1 " \
           "is libbpf 1.0 (it lacks " in res.stderr, res.stderr


def test_import_refuses_a_libbpf_lacking_functions(tmp_path):
    """One that claims 1.1 but lacks functions pybpf calls: refused, naming them (never a
    NULL call later)."""
    res = _import_with_libbpf(tmp_path, """\
        unsigned int libbpf_major_version(void) { return 1; }
        unsigned int libbpf_minor_version(void) { return 1; }
        int bpf_object__load(void *obj) { return 0; }
        """)
    assert res.returncode == 1
    assert re.search(r"LibbpfVersionError: pybpf needs libbpf 1\.1 or newer, but the system "
                     r"libbpf\.so\.1 is libbpf 1\.1 \(it lacks [a-z_]+, ", res.stderr), res.stderr
    assert "bpf_object__load," not in res.stderr


def test_import_refuses_an_unloadable_libbpf(tmp_path):
    """A libbpf.so.1 the dynamic linker cannot load (as when none is installed): a pybpf
    error naming the library, the version needed and the loader's reason."""
    res = _import_with_libbpf(tmp_path, None)
    assert res.returncode == 1
    assert re.search(r"LibbpfVersionError: pybpf needs the system libbpf\.so\.1 \(libbpf "
                     r"1\.1 or newer\) and cannot load it \(.*libbpf\.so\.1.*\): install the "
                     r"distribution's libbpf", res.stderr), res.stderr


def test_optional_symbols_follow_the_runtime_version():
    version = pybpf_version()
    caps = _ffi.libbpf_capabilities()
    assert tuple(caps["version"]) == version
    assert caps["minimum"] == "1.1"
    for entry in _ffi.OPTIONAL.values():
        fn = _ffi.optional(entry.symbol)
        # every row's "since" is right: present exactly from that version on
        assert (fn is not None) == (version >= entry.since), entry.symbol
        row = caps["capabilities"][entry.capability]
        assert row["present"] == (fn is not None)
        assert row["path"].startswith(f"libbpf {entry.symbol}" if fn and entry.used_by
                                      else entry.fallback)
    with pytest.raises(KeyError):
        _ffi.optional("bpf_object__load")  # not optional: 1.1 has it, a required row
    assert _ffi.has_symbol("bpf_object__load")  # dlsym on the loaded libbpf finds it
    assert not _ffi.has_symbol("bpf_no_such_function")


def test_optional_call_through_its_signature():
    token_create = _ffi.optional("bpf_token_create")
    if token_create is None:
        assert pybpf_version() < (1, 4)
        return
    opts = _ffi.ffi.new("struct pybpf_token_create_opts *")
    opts.sz = _ffi.ffi.sizeof("struct pybpf_token_create_opts")
    assert token_create(-1, opts) < 0  # an fd that is no bpffs: refused, not a crash


def test_absent_optional_functions_fail_instead_of_jumping_to_null():
    """Every optional function the runtime libbpf lacks, called straight through the
    cffi ``lib`` (bypassing optional()), fails like libbpf does (errno EOPNOTSUPP; NULL
    or -EOPNOTSUPP) instead of calling address 0. In a child: the bug is a SIGSEGV."""
    from _child import run_child

    source = pybpf_backend.libbpf_table_source()
    for name in _ffi.OPTIONAL:
        assert f"pybpf_absent_{name}(__VA_ARGS__)" in source, name
    absent = [name for name in _ffi.OPTIONAL if _ffi.optional(name) is None]
    got = run_child("""
        from pybpf._ffi import ffi, lib
        out = {}
        for name in P["absent"]:
            fn = getattr(lib, name)
            args = [ffi.NULL if ffi.typeof(fn).args[i].kind == "pointer" else 0
                    for i in range(len(ffi.typeof(fn).args))]
            ffi.errno = 0
            r = fn(*args)
            err = ffi.errno
            out[name] = [r == ffi.NULL if ffi.typeof(fn).result.kind == "pointer" else r, err]
        emit(out)
    """, params={"absent": absent}, what="absent optional libbpf functions")
    for name in absent:
        result, err = got[name]
        assert result in (True, -errno.EOPNOTSUPP), (name, result)
        assert err == errno.EOPNOTSUPP, (name, err)


def test_features_command_reports_libbpf_paths():
    res = subprocess.run([sys.executable, "-m", "pybpf", "features", "--json"],
                         capture_output=True, text=True, timeout=120, check=True)
    data = json.loads(res.stdout)
    assert data["libbpf_api"]["minimum"] == "1.1"
    assert set(data["libbpf_api"]["capabilities"]) == {o.capability for o in _ffi.OPTIONAL.values()}
    res = subprocess.run([sys.executable, "-m", "pybpf", "features"], capture_output=True,
                         text=True, timeout=120, check=True)
    assert "LIBBPF" in res.stdout and "tcx attach" in res.stdout


def pybpf_version() -> tuple[int, int]:
    import pybpf

    return pybpf.libbpf_version()
