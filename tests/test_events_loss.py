"""Loss accounting against what the BPF program itself did: every record it tried
to emit (its ``seq`` counter) is either received once or counted as dropped --
with two rings in one object, and with producers pinned to each CPU in turn."""

from __future__ import annotations

import os
import threading

import pytest
from _events_obj import EVENT, MODE_RB, MODE_RB2, Events, events_object

from pybpf import RingBuffer
from pybpf.tools._common import ProbeSession

pytestmark = pytest.mark.kernel


@pytest.fixture
def ev(bpf_obj):
    with events_object(bpf_obj("events")) as e:
        yield e


def drain(rb: RingBuffer) -> list[int]:
    seqs: list[int] = []
    while True:
        batch = rb.read(0)
        if not len(batch):
            return seqs
        seqs += [EVENT.unpack_from(r)[0] for r in batch]


def test_two_rings_of_one_object_count_each_drop_once(ev: Events) -> None:
    with RingBuffer(ev.maps["rb"], ev.maps["rb2"]) as rb:
        ev.emit(3000, MODE_RB)  # 64 KiB ring, 40 bytes a record: about 1638 fit
        ev.emit(1000, MODE_RB2)  # 16 KiB ring: about 409 fit
        # what the rings hold before a read: every record the program got a place for,
        # 32 bytes and the kernel's 8-byte header each
        assert rb.stats().pending_bytes == (4000 - ev.drops()) * 40
        seqs = drain(rb)
        assert rb.stats().pending_bytes == 0
        tried = ev.next_seq()  # what the program emitted or failed to
        assert tried == 4000 and len(seqs) == len(set(seqs))
        assert 1500 < len(seqs) < 2500  # both rings overflowed
        st = rb.stats()
        assert st.received == len(seqs)
        assert st.dropped == tried - len(seqs)  # once per object, not once per ring


def _emit_on(ev: Events, cpu: int, count: int) -> None:
    err: list[BaseException] = []

    def producer() -> None:
        try:
            os.sched_setaffinity(0, {cpu})  # this thread only
            assert os.sched_getaffinity(0) == {cpu}
            ev.emit(count, MODE_RB)
        except BaseException as exc:  # noqa: BLE001 - reported below
            err.append(exc)

    t = threading.Thread(target=producer)
    t.start()
    t.join(10)
    assert not err, err


def test_drops_are_read_from_every_cpu(ev: Events) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("one CPU available to this process: a per-CPU count cannot be told apart")
    received = 0
    with RingBuffer(ev.maps["rb"]) as rb:
        for cpu in cpus:  # fill the ring from one CPU at a time, then drain it
            _emit_on(ev, cpu, 3000)
            got = drain(rb)
            received += len(got)
            tried = ev.next_seq()
            assert 1000 < len(got) < 3000  # this CPU's producer overflowed the ring
            assert rb.stats().dropped == tried - received, f"after the producer on CPU {cpu}"
        assert rb.received == received


def test_rings_of_two_objects_add_up_their_drop_counters(bpf_obj) -> None:
    """Each object counts its programs' failed reservations in its own counter: a
    RingBuffer over rings of two objects reports the sum of both counters."""
    with events_object(bpf_obj("events")) as a, events_object(bpf_obj("events")) as b:
        with RingBuffer(a.maps["rb"], b.maps["rb"]) as rb:
            b.configure(0)
            a.emit(3000, MODE_RB)  # both programs run; only a's emits
            a.configure(0)
            b.emit(2500, MODE_RB)
            seqs = drain(rb)
            da, db = a.drops(), b.drops()
            assert da > 0 and db > 0  # both rings overflowed, each program counted its own
            assert a.next_seq() + b.next_seq() == 5500
            assert rb.stats().dropped == da + db == 5500 - len(seqs)
            assert rb.received == len(seqs)


class _NoReader(ProbeSession):
    """A probe session over tests/bpf/events.bpf.c that reads no ring: its ``dropped``
    comes from the drop counter map itself."""

    event_struct = ""


def test_probe_session_without_a_reader_counts_drops_of_every_cpu(bpf_obj) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("one CPU available to this process: a per-CPU count cannot be told apart")
    with _NoReader(path=bpf_obj("events"), rodata={"target_pid": os.getpid()}) as s:
        ev = Events(s.obj)
        for cpu in cpus:  # the first CPU's producer fills the ring, the others find it full
            with ev.on_cpu(cpu):
                ev.emit(3000, MODE_RB)
        by_cpu = ev.drops_by_cpu()
        assert all(by_cpu[cpu] > 0 for cpu in cpus), by_cpu
        with RingBuffer(s.obj.maps["rb"], drops_map=s.obj.maps["pybpf_ringbuf_drops"]) as rb:
            received = len(drain(rb))
        assert 1000 < received < 3000
        assert s.dropped == ev.next_seq() - received == sum(by_cpu)
