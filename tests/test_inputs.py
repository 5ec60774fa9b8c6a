"""Bad input gets a pybpf error naming the object: files that are not regular files,
out-of-range numbers, array indexes past the end, odd C member names, unprivileged
listing. Anything that could hang runs in a child interpreter with a timeout."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import compile_test_bpf

import pybpf
from pybpf.errors import BPFPermissionError, MapError, ObjectError
from pybpf.mapkinds import create_map
from pybpf.types import plain

ROOT = Path(__file__).resolve().parents[1]


def child(code: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


OPEN_CHILD = """
import sys, pybpf
try:
    pybpf.Object.open(sys.argv[1], **({"btf_custom_path": sys.argv[2]} if len(sys.argv) > 2
                                       else {}))
except pybpf.ObjectError as e:
    print("ObjectError", e.errno, e.path if len(sys.argv) == 2 else "", e)
"""


@pytest.fixture
def specials(tmp_path):
    fifo = tmp_path / f"fifo{os.getpid()}"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock_path))
    sparse = tmp_path / "sparse.bpf.o"
    with open(sparse, "wb") as f:
        f.truncate(1 << 40)  # 1 TiB, no blocks
    yield {"FIFO": str(fifo), "socket": str(sock_path), "directory": str(tmp_path),
           "character device": "/dev/zero", "sparse": str(sparse)}
    s.close()


@pytest.mark.parametrize("kind", ["FIFO", "socket", "directory", "character device"])
def test_open_refuses_non_regular_files_before_reading(specials, kind):
    path = specials[kind]
    r = child(OPEN_CHILD, path)  # a FIFO would block forever in open() or read()
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ObjectError"), r.stdout + r.stderr
    assert f" {path} is a {kind}, not a regular file" in r.stdout, r.stdout
    assert f" {path} " in r.stdout.split("ObjectError", 1)[1]  # .path is set


@pytest.mark.parametrize("dev", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_open_refuses_devices(dev):
    with pytest.raises(ObjectError, match=f"{dev} is a character device") as ei:
        pybpf.Object.open(dev)
    assert ei.value.path == dev


def test_open_refuses_huge_sparse_file_by_size(specials):
    path = specials["sparse"]
    r = child(OPEN_CHILD, path, timeout=10)  # reading 1 TiB would time out or OOM
    assert r.returncode == 0, r.stderr
    assert f"{path} is {1 << 40} bytes, over the limit of {256 << 20} bytes" in r.stdout, \
        r.stdout + r.stderr


def test_btf_custom_path_fifo_refused(specials):
    r = child(OPEN_CHILD, pybpf.probe_path("execsnoop"), specials["FIFO"])
    assert r.returncode == 0, r.stderr
    assert f"BTF file (btf_custom_path) {specials['FIFO']} is a FIFO" in r.stdout, \
        r.stdout + r.stderr


def test_regular_file_still_opens(tmp_path):
    src = Path(pybpf.probe_path("execsnoop"))
    copy = tmp_path / "copy.bpf.o"
    copy.write_bytes(src.read_bytes())
    with pybpf.Object.open(copy) as obj:
        assert "events" in obj.maps


@pytest.mark.parametrize("cmd", ["inspect", "build"])
def test_cli_refuses_fifo(specials, cmd):
    r = subprocess.run([sys.executable, "-m", "pybpf", cmd, specials["FIFO"]],
                       capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert f"{specials['FIFO']} is a FIFO, not a regular file" in r.stderr


# --- numbers out of range: pybpf errors naming the map --------------------------------
def test_out_of_range_numbers_name_the_map():
    m = create_map("hash", 4, 8, 16, name="h4range", key="u32", value="u64")
    try:
        for call in (lambda: m.update({1: 2}, flags=2**70),
                     lambda: m.update({1: 2}, flags=-1),
                     lambda: m.lookup(b"\0" * 4, flags=2**64),
                     lambda: m.update_batch([(1, 2)], flags=2**70),
                     lambda: pybpf.Map.update(m, b"\1\0\0\0", b"\0" * 8, flags=2**70)):
            with pytest.raises(MapError, match="map 'h4range': flags .* not a 64-bit"):
                call()
        assert 1 not in m  # nothing was written
    finally:
        m.close()
    for kw in ({"key_size": 2**40}, {"value_size": -1}, {"max_entries": 2**32},
               {"flags": 2**40}):
        args = {"key_size": 4, "value_size": 8, "max_entries": 4, **kw}
        flags = args.pop("flags", 0)
        what = next(iter(kw))
        with pytest.raises(MapError, match=f"map 'h4bad': {what}=.* not a 32-bit"):
            create_map("hash", args["key_size"], args["value_size"], args["max_entries"],
                       name="h4bad", flags=flags)
    with pytest.raises(MapError, match="map id 1099511627776: no such map") as ei:
        pybpf.Map.from_id(2**40)
    assert ei.value.map == str(2**40)


def test_array_index_past_the_end_names_index_and_size():
    a = create_map("array", 4, 8, 4, name="h4arr", key="u32", value="u64")
    pa = create_map("percpu_array", 4, 8, 4, name="h4parr", key="u32", value="u64")
    try:
        a[3] = 7
        assert a[3] == 7
        for call in (lambda: a.__setitem__(4, 1), lambda: a.update({4: 1}),
                     lambda: a.update({3: 1, 4: 1, 5: 1})):
            with pytest.raises(MapError, match=r"map 'h4arr' \(array\): index 4 is past the "
                                               r"end \(max_entries 4\)"):
                call()
        with pytest.raises(MapError, match=r"map 'h4parr' \(percpu_array\): index 9 "):
            pa[9] = 1
        assert "is full" not in str(pytest.raises(MapError, a.__setitem__, 4, 1).value)
    finally:
        a.close()
        pa.close()


def test_task_storage_key_out_of_range():
    with pybpf.load(compile_test_bpf("typed_maps")) as obj:
        m = obj.maps["tstore"]
        for key in (2**40, -5):
            with pytest.raises(ValueError, match=f"map 'tstore' .*key {key} is not a file "
                                                 "descriptor"):
                m[key] = 1


def test_items_raw_on_typed_map():
    m = create_map("hash", 4, 8, 16, name="h4raw", key="u32", value="u64")
    try:
        m[1] = 5
        m[2] = 6
        assert sorted(m.items_raw()) == [((1).to_bytes(4, "little"), (5).to_bytes(8, "little")),
                                         ((2).to_bytes(4, "little"), (6).to_bytes(8, "little"))]
    finally:
        m.close()


# --- C member names that are Python keywords, dunders, the class's own names ----------
ORDINALS = {"in": 1, "class": 2, "__init__": 3, "__slots__": 4, "_asdict": 5, "_fields": 6,
            "__class__": 7, "def": 8, "in_": 9}


def test_odd_member_names_round_trip_through_the_kernel():
    with pybpf.Object.open(compile_test_bpf("member_names")) as obj:
        obj.load()
        names = obj.maps["names"]
        obj.programs["fill"].test_run(bytes(64))  # names[3] = the ordinals, by the kernel
        v = names[3]
        assert plain(v) == ORDINALS
        assert v.in_ == 1 and v.in__ == 9 and v.__init___ == 3 and v._asdict_ == 5
        assert callable(v._asdict) and len(type(v)._fields) == len(ORDINALS)
        assert type(v)() is not None  # __init__ still the constructor
        # plain()'s output (C names) writes back; the kernel adds each member's ordinal
        names[1] = plain(v)
        obj.programs["derive"].test_run(bytes(64))
        assert plain(names[2]) == {k: 2 * n for k, n in ORDINALS.items()}
        # so do _asdict() (attribute names), the instance and a tuple
        for form in (v._asdict(), v, v._astuple()):
            names[1] = {"in": 0}  # reset: only `in` set, the rest zero
            assert plain(names[1]) == {k: (0 if k != "in" else 0) for k in ORDINALS}
            names[1] = form
            obj.programs["derive"].test_run(bytes(64))
            assert plain(names[2]) == {k: 2 * n for k, n in ORDINALS.items()}, form
        with pytest.raises(TypeError, match="has no field 'nope'"):
            names[1] = {"in": 1, "nope": 2}


# --- listing needs CAP_SYS_ADMIN: an error, not [] ------------------------------------
LIST_CHILD = """
import json, os, pybpf
out = {"uid": os.getuid()}
for name in ("list_programs", "list_maps", "list_links"):
    try:
        out[name] = {"result": len(getattr(pybpf, name)())}
    except Exception as e:
        out[name] = {"type": type(e).__name__, "msg": str(e), "errno": e.errno,
                     "missing": getattr(e, "missing", None)}
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="switching uid needs root")
def test_unprivileged_listing_raises():
    # Another uid with no capability but CAP_DAC_READ_SEARCH (to read the interpreter and
    # this checkout wherever they live: /root, a virtualenv, site-packages anywhere).
    import shutil

    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    assert len(pybpf.list_programs()) >= 0  # root: works
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path[1:]]),
           "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/"}
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "--inh-caps=-all,+dac_read_search", "--ambient-caps=+dac_read_search",
                        sys.executable, "-c", LIST_CHILD], env=env, capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["uid"] == 65534
    for name, what in (("list_programs", "programs"), ("list_maps", "maps"),
                       ("list_links", "links")):
        res = out[name]
        assert res.get("type") == BPFPermissionError.__name__, res
        assert res["errno"] == 1 and res["missing"] == ["CAP_SYS_ADMIN"], res
        assert f"cannot list BPF {what}" in res["msg"] and "CAP_SYS_ADMIN" in res["msg"]
