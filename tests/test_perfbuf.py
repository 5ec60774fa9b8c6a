"""PerfBuffer against a real program: samples emitted by the test's own getppid() calls."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from collections.abc import Callable

import pytest
from _events_obj import EVENT, MODE_PERF, Events, events_object

from pybpf import MapError, PerfBuffer

pytestmark = pytest.mark.kernel


@pytest.fixture
def ev(bpf_obj):
    with events_object(bpf_obj("events")) as e:
        yield e


def test_samples_reach_the_callback_with_their_cpu(ev: Events) -> None:
    got: list[tuple[int, bytes]] = []
    with PerfBuffer(ev.maps["pb"], callback=lambda cpu, r: got.append((cpu, r)),
                    with_cpu=True) as pb:
        assert pb.buffer_count >= 1
        ev.emit(200, MODE_PERF, cookie=3)
        assert pb.poll(1.0) == 200
        assert pb.stats().lost == 0
    assert [EVENT.unpack_from(r)[0] for _, r in got] == list(range(200))
    assert {len(r) for _, r in got} == {36}  # 32 bytes + the kernel's alignment padding
    assert all(EVENT.unpack_from(r)[3] == 3 for _, r in got)
    assert len({cpu for cpu, _ in got}) == 1  # one trigger: one CPU


def _overflow_each_cpu(ev: Events, pb: PerfBuffer, received: Callable[[], int],
                       cookie: int = 7) -> dict[int, int]:
    """Pinned to each CPU in turn, twice: 1000 samples into that CPU's 4 KiB buffer (about 85
    fit), a read, then one more sample, before which the kernel writes its LOST record
    (on the same CPU: pinned, so it cannot land in another CPU's buffer). Reads until
    every sample is received or counted lost; returns the samples the program itself
    failed to output on each CPU (its per-CPU drop counter)."""
    want: dict[int, int] = {}
    cpus = sorted(os.sched_getaffinity(0))
    for cpu in cpus + cpus:  # twice each: a loss reported after an earlier one
        before = ev.drops_by_cpu()[cpu]
        sent = received() + pb.lost + 1001
        with ev.on_cpu(cpu):
            ev.emit(1000, MODE_PERF, cookie=cookie)
            pb.poll(1.0)
            ev.emit(1, MODE_PERF, cookie=cookie)
        deadline = time.monotonic() + 10
        while received() + pb.lost < sent and time.monotonic() < deadline:
            pb.poll(0.1)
        lost_now = ev.drops_by_cpu()[cpu] - before
        assert lost_now > 0, f"the program on CPU {cpu} never failed an output"
        want[cpu] = want.get(cpu, 0) + lost_now
        assert pb.lost_by_cpu().get(cpu, 0) == want[cpu], f"lost on CPU {cpu}"
    return want


def test_lost_samples_are_counted_and_reported(ev: Events) -> None:
    reports: list[tuple[int, int]] = []
    got: list[bytes] = []
    with PerfBuffer(ev.maps["pb"], callback=got.append, pages=1,
                    lost_callback=lambda cpu, n: reports.append((cpu, n))) as pb:
        want = _overflow_each_cpu(ev, pb, lambda: len(got))
        st = pb.stats()
    # what the kernel said was lost, per CPU, is what the program failed to output there
    assert st.lost_by_cpu == want
    assert st.lost == sum(want.values()) == ev.drops()
    assert st.received == len(got) == 2 * 1001 * len(want) - st.lost
    by_cpu: dict[int, int] = {}
    for cpu, n in reports:
        by_cpu[cpu] = by_cpu.get(cpu, 0) + n
    assert by_cpu == want  # the callback was told each loss once, with its CPU


def test_batches_and_numpy(ev: Events) -> None:
    np = pytest.importorskip("numpy")
    with PerfBuffer(ev.maps["pb"]) as pb:
        ev.emit(64, MODE_PERF)
        batch = pb.read(1.0)
        assert len(batch) == 64 and batch.fixed_size == 36
        assert batch.source(0).startswith("cpu")
        arr = batch.numpy("event")
        assert (arr["seq"] == np.arange(64)).all()
        ev.emit(5, MODE_PERF)
        assert list(pb.read_numpy("event", 1.0)["seq"]) == [64, 65, 66, 67, 68]


def test_callback_that_raises_keeps_the_rest(ev: Events) -> None:
    seen: list[int] = []

    def cb(rec: bytes) -> None:
        seen.append(EVENT.unpack_from(rec)[0])
        if len(seen) == 4:
            raise KeyError("stop")

    with PerfBuffer(ev.maps["pb"], callback=cb, decode=None) as pb:
        ev.emit(20, MODE_PERF)
        with pytest.raises(KeyError):
            pb.poll(1.0)
        assert pb.consume() == 16
    assert seen == list(range(20))


def test_iterator_and_asyncio(ev: Events) -> None:
    with PerfBuffer(ev.maps["pb"], decode="event") as pb:
        ev.emit(3, MODE_PERF, cookie=11)
        assert [e.seq for e in pb.events(timeout=0.2)] == [0, 1, 2]

        async def main() -> list[int]:
            asyncio.get_running_loop().call_later(0.05, ev.emit, 4, MODE_PERF)
            out = []
            async for e in pb:
                out.append(e.seq)
                if len(out) == 4:
                    break
            return out

        assert asyncio.run(main()) == [3, 4, 5, 6]


def test_bad_input(ev: Events) -> None:
    with pytest.raises(MapError, match="not a perf_event_array"):
        PerfBuffer(ev.maps["rb"])
    with pytest.raises(ValueError, match="power of two"):
        PerfBuffer(ev.maps["pb"], pages=3)
    pb = PerfBuffer(ev.maps["pb"])
    pb.close()
    pb.close()
    with pytest.raises(Exception) as ei:
        pb.poll(0)
    assert getattr(ei.value, "errno", None) == errno.EBADF or "closed" in str(ei.value)


def test_large_batches_stay_valid_after_later_reads(ev: Events) -> None:
    np = pytest.importorskip("numpy")
    with PerfBuffer(ev.maps["pb"], pages=64) as pb:
        ev.emit(2000, MODE_PERF)
        first = pb.read(1.0)
        assert len(first) == 2000
        a = first.numpy("event")
        ev.emit(2000, MODE_PERF)
        b = pb.read(1.0).numpy("event")
        assert (a["seq"] == np.arange(2000)).all()
        assert (b["seq"] == np.arange(2000, 4000)).all()
        assert pb.lost == 0


def _check_records(records: list[tuple[int, bytes]], cookie: int) -> dict[int, list[int]]:
    """Every sample intact (seq, cookie, seq**2: a sample split where the buffer
    wraps is put back together); returns the seqs per CPU, in arrival order."""
    per_cpu: dict[int, list[int]] = {}
    for cpu, rec in records:
        seq, pid, _kind, ck, square = EVENT.unpack_from(rec)
        assert (pid, ck, square) == (os.getpid(), cookie, seq * seq)
        per_cpu.setdefault(cpu, []).append(seq)
    return per_cpu


def test_samples_wrapping_around_the_buffers_arrive_once_in_order(ev: Events) -> None:
    # pages=1: 4 KiB per CPU; 80 samples of 48 bytes (3840) per round, read after
    # each round, so records wrap around the end of the 4 KiB buffers
    with PerfBuffer(ev.maps["pb"], pages=1) as pb:
        rounds = 7
        records: list[tuple[int, bytes]] = []
        for _ in range(rounds):
            ev.emit(80, MODE_PERF, cookie=5)
            batch = pb.read(1.0)
            records += list(zip(batch.tags, batch))
            while len(batch):
                batch = pb.read(0)
                records += list(zip(batch.tags, batch))
        total = 80 * rounds
        assert len(records) == total and {len(r) for _, r in records} == {36}
        per_cpu = _check_records(records, 5)
        assert sorted(s for seqs in per_cpu.values() for s in seqs) == list(range(total))
        assert all(seqs == sorted(seqs) for seqs in per_cpu.values())
        assert pb.lost == 0 and ev.drops() == 0
    # a lent buffer smaller than one step: the rest waits in the kernel, in order
    with PerfBuffer(ev.maps["pb"], pages=1, max_batch_bytes=36 * 7) as pb:
        ev.emit(80, MODE_PERF, cookie=5)
        got = [EVENT.unpack_from(r)[0] for r in pb.read(1.0)]
        assert len(got) == 7
        while len(got) < 80:
            batch = pb.read(0)
            assert 0 < len(batch) <= 7
            got += [EVENT.unpack_from(r)[0] for r in batch]
        assert got == list(range(total, total + 80))


def test_lost_samples_are_exact_and_kept_ones_arrive_once(ev: Events) -> None:
    got: list[tuple[int, bytes]] = []
    with PerfBuffer(ev.maps["pb"], pages=1, with_cpu=True,
                    callback=lambda cpu, r: got.append((cpu, r))) as pb:
        want = _overflow_each_cpu(ev, pb, lambda: len(got), cookie=9)
        lost = pb.lost
    per_cpu = _check_records(got, 9)
    seqs = sorted(s for v in per_cpu.values() for s in v)
    assert len(seqs) == len(set(seqs)) == len(got)  # none twice
    assert all(v == sorted(v) for v in per_cpu.values())
    assert set(per_cpu) == set(want)  # each CPU's samples came from that CPU's buffer
    assert 0 < lost == sum(want.values())  # the kernel's count == the program's failures
    total = 2 * 1001 * len(want)
    assert len(got) + lost == total
    assert len(set(range(total)) - set(seqs)) == lost  # exactly the missing ones


def test_max_batch_bytes_leaves_the_rest_in_the_kernel(ev: Events) -> None:
    with PerfBuffer(ev.maps["pb"], pages=64, max_batch_bytes=100 * 36) as pb:
        ev.emit(1000, MODE_PERF)
        sizes = []
        seqs: list[int] = []
        while len(seqs) < 1000:
            batch = pb.read(1.0)
            assert len(batch)
            sizes.append(len(batch))
            seqs += [EVENT.unpack_from(r)[0] for r in batch]
        assert sizes == [100] * 10 and seqs == list(range(1000))
        assert pb.lost == 0 and len(pb.read(0)) == 0
    with pytest.raises(ValueError, match="max_batch_bytes"):
        PerfBuffer(ev.maps["pb"], max_batch_bytes=0)


def test_closing_the_object_wakes_a_blocked_read(ev: Events) -> None:
    pb = PerfBuffer(ev.maps["pb"])
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(len(pb.read(None))))
    t.start()
    time.sleep(0.1)
    assert t.is_alive()
    t0 = time.monotonic()
    ev.obj.close()
    t.join(2.0)
    assert not t.is_alive() and time.monotonic() - t0 < 1.0
    assert result == [0] and pb.closed
