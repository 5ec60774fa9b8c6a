"""Hostile objects: the fuzz corpus and a short fuzz run, each input in a worker subprocess.

A crash of libbpf would kill the interpreter, so every input runs in the fuzz
harness's worker process (tests/fuzz/fuzz_objects.py); the test asserts the
worker answered with a pybpf exception -- not a signal, a hang or another
exception. The long run (20,000 mutations per probe) is documented in
docs/hardening.md.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
CORPUS = TESTS / "fuzz_corpus"

_spec = importlib.util.spec_from_file_location("fuzz_objects", TESTS / "fuzz" / "fuzz_objects.py")
assert _spec is not None and _spec.loader is not None
fuzz = importlib.util.module_from_spec(_spec)
sys.modules["fuzz_objects"] = fuzz  # dataclasses look their module up
_spec.loader.exec_module(fuzz)

MANIFEST = json.loads((CORPUS / "MANIFEST.json").read_text())
CASES = sorted(k for k in MANIFEST if not k.startswith("_"))


@pytest.fixture(scope="module")
def worker():
    w = fuzz.Worker(timeout=30)
    yield w
    w.close()


def test_corpus_is_complete():
    on_disk = sorted(p.name for p in CORPUS.glob("*.bpf.o"))
    assert on_disk == CASES, "every corpus file needs a MANIFEST.json entry and vice versa"


@pytest.mark.parametrize("case", CASES)
def test_corpus_input_gives_pybpf_exception(worker, case):
    expect = MANIFEST[case]
    res = worker.run((CORPUS / case).read_bytes())
    assert res["r"] == "pybpf", f"{case}: {res}"
    assert (res["stage"], res["exc"]) == (expect["stage"], expect["exception"]), res
    assert expect["match"] in res["msg"], res["msg"]
    assert "malformed BPF object" in res["msg"] or expect["stage"] == "load"


def test_valid_objects_pass_validation(bpf_obj):
    """The validator must never reject what clang builds (shipped probes, test objects)."""
    from pybpf import _validate

    paths = fuzz.default_probes() + [bpf_obj(n) for n in ("basic", "attach_trace",
                                                           "bad_verifier")]
    for p in paths:
        _validate.check_object(Path(p).read_bytes(), p)


@pytest.mark.parametrize("probe", [os.path.basename(p) for p in fuzz.default_probes()])
def test_short_fuzz_run(probe, tmp_path):
    """Some mutations of a shipped probe through open and load: only pybpf errors."""
    seed = int(os.environ.get("PYBPF_FUZZ_SEED", "7"))
    n = int(os.environ.get("PYBPF_FUZZ_ITERATIONS", "80"))
    path = str(Path(fuzz.ROOT) / "pybpf" / "probes" / probe)
    st = fuzz.fuzz_probe(path, seed=seed, start=0, iterations=n, jobs=1, timeout=30,
                         out=tmp_path, progress=False)
    assert sum(st.counts.values()) == n
    assert not st.bad, f"{probe} seed {seed}: {st.bad}"
    # the mutations reach both stages: some are refused at open, some go on to load
    reached_load = st.counts["ok"] + sum(v for k, v in st.exceptions.items()
                                         if k.startswith("load:"))
    assert st.exceptions.get("open:ObjectError", 0) > 0 and reached_load > 0, (
        dict(st.counts), dict(st.exceptions))
