"""PerfBuffer against a real program: samples emitted by the test's own getppid() calls."""

from __future__ import annotations

import asyncio
import errno
import time

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


def test_lost_samples_are_counted_and_reported(ev: Events) -> None:
    reports: list[tuple[int, int]] = []
    got: list[bytes] = []
    with PerfBuffer(ev.maps["pb"], callback=got.append, pages=1,
                    lost_callback=lambda cpu, n: reports.append((cpu, n))) as pb:
        ev.emit(1000, MODE_PERF)  # one 4 KiB page per CPU holds ~90 samples
        pb.poll(1.0)
        ev.emit(1, MODE_PERF)  # the kernel reports the loss with the next sample
        deadline = time.monotonic() + 2
        while len(got) + pb.lost < 1001 and time.monotonic() < deadline:
            pb.poll(0.1)
        st = pb.stats()
    assert st.lost > 0
    assert st.received + st.lost == 1001
    assert sum(n for _, n in reports) == st.lost
    assert sum(st.lost_by_cpu.values()) == st.lost


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
