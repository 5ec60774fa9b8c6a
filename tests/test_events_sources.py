"""Where each record came from. One reader over several rings, each with its own
``decode``: every record goes through the decoder of the map it came from, whichever
way it is read. A perf buffer read once after producers on several CPUs: each sample
carries the CPU it was written on. (tests/bpf/events.bpf.c; the expected sources,
CPUs and sequence numbers are the test's own emits, pinned to each CPU in turn.)"""

from __future__ import annotations

import os

import pytest
from _events_obj import EVENT, MODE_PERF, MODE_RB, MODE_RB2, Events, events_object

from pybpf import PerfBuffer, RingBuffer

pytestmark = pytest.mark.kernel


@pytest.fixture
def ev(bpf_obj):
    with events_object(bpf_obj("events")) as e:
        yield e


def _tagger(name: str):
    return lambda rec: (name, EVENT.unpack_from(rec)[0])


def _two_rings(ev: Events) -> RingBuffer:
    rb = RingBuffer()
    rb.add(ev.maps["rb"], decode=_tagger("rb"))
    rb.add(ev.maps["rb2"], decode=_tagger("rb2"))
    return rb


def _emit_both(ev: Events) -> list[tuple[str, int]]:
    """5 records into rb, then 3 into rb2; the program numbers them 0..7 in that order."""
    start = ev.next_seq()
    ev.emit(5, MODE_RB)
    ev.emit(3, MODE_RB2)
    return [("rb", start + i) for i in range(5)] + [("rb2", start + 5 + i) for i in range(3)]


def test_batches_decode_each_record_by_its_own_ring(ev: Events) -> None:
    with _two_rings(ev) as rb:
        want = _emit_both(ev)
        got: list[tuple[str, int]] = []
        while True:
            batch = rb.read(0)
            if not len(batch):
                break
            got += batch.decoded()
            assert [batch.source(i) for i in range(len(batch))] == [g[0] for g in got[-len(batch):]]
    assert sorted(got) == want


def test_events_and_callbacks_decode_each_record_by_its_own_ring(ev: Events) -> None:
    with _two_rings(ev) as rb:
        want = _emit_both(ev)
        got = list(rb.events(timeout=0.2))
    assert sorted(got) == want
    seen: list[tuple[str, object]] = []
    rb = RingBuffer()
    rb.add(ev.maps["rb"], lambda x: seen.append(("cb-rb", x)), decode=_tagger("rb"))
    rb.add(ev.maps["rb2"], lambda x: seen.append(("cb-rb2", x)), decode=_tagger("rb2"))
    with rb:
        want = _emit_both(ev)
        assert rb.poll(1.0) + rb.poll(0.05) == 8
    assert sorted(x for _, x in seen) == want
    assert all(cb == f"cb-{x[0]}" for cb, x in seen)


def _emit_on_each_cpu(ev: Events, cpus: list[int]) -> dict[int, int]:
    """Pinned to each CPU in turn, 20 samples of one size into the perf buffer; each
    sample's sequence number -> the CPU it was emitted on."""
    where: dict[int, int] = {}
    for cpu in cpus:
        start = ev.next_seq()
        with ev.on_cpu(cpu):
            ev.emit(20, MODE_PERF)
        where.update({start + i: cpu for i in range(20)})
    return where


def test_perf_samples_of_several_cpus_in_one_read_keep_their_cpu(ev: Events) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("one CPU available to this process: samples of two CPUs cannot be made")
    with PerfBuffer(ev.maps["pb"]) as pb:
        where = _emit_on_each_cpu(ev, cpus)
        batch = pb.read(1.0)
        assert len(batch) == len(where)  # every CPU's samples in this one read
        got = {EVENT.unpack_from(r)[0]: (batch.tags[i], batch.source(i))
               for i, r in enumerate(batch)}
    assert got == {seq: (cpu, f"cpu{cpu}") for seq, cpu in where.items()}
    seen: dict[int, int] = {}
    with PerfBuffer(ev.maps["pb"], callback=lambda cpu, r: seen.update(
            {EVENT.unpack_from(r)[0]: cpu}), with_cpu=True) as pb:
        where = _emit_on_each_cpu(ev, cpus)
        assert pb.poll(1.0) == len(where)
    assert seen == where


def test_records_by_position_from_either_end(ev: Events) -> None:
    """``batch[i]`` and ``batch[-i]`` are the records the program wrote i-th from the
    start and from the end (fixed-size records of one ring)."""
    with RingBuffer(ev.maps["rb"]) as rb:
        start = ev.next_seq()
        ev.emit(10, MODE_RB)
        batch = rb.read(1.0)
        assert len(batch) == 10
        seq = [EVENT.unpack_from(batch[i])[0] - start for i in range(-10, 10)]
        assert seq == list(range(10)) * 2
        assert [EVENT.unpack_from(r)[0] - start for r in batch[-3:]] == [7, 8, 9]
        for bad in (10, -11):
            with pytest.raises(IndexError):
                batch[bad]
