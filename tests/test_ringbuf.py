"""RingBuffer against a real program: records emitted by the test's own getppid() calls."""

from __future__ import annotations

import asyncio
import errno
import os
import select
import struct
import threading
import time

import pytest
from _events_obj import EVENT, MODE_DISCARD, MODE_MIXED, MODE_RB, MODE_RB2, Events, events_object

import pybpf
from pybpf import ClosedError, MapError, RingBuffer

pytestmark = pytest.mark.kernel


@pytest.fixture
def ev(bpf_obj):
    with events_object(bpf_obj("events")) as e:
        yield e


def seqs(records):
    return [EVENT.unpack_from(r)[0] for r in records]


def test_callback_receives_every_record_in_order(ev: Events) -> None:
    got: list[bytes] = []
    with RingBuffer(ev.maps["rb"], callback=got.append) as rb:
        ev.emit(500, cookie=0xABC)
        assert rb.poll(timeout=1.0) == 500
        assert rb.poll(timeout=0.05) == 0
        st = rb.stats()
    assert seqs(got) == list(range(500))
    seq, pid, kind, cookie, square = EVENT.unpack(got[123])
    assert (pid, kind, cookie, square) == (os.getpid(), 0, 0xABC, 123 * 123)
    assert st.received == 500 and st.dropped == 0 and st.pending_bytes == 0


def test_consume_does_not_wait_and_old_api_still_works(ev: Events) -> None:
    got: list[bytes] = []
    rb = RingBuffer(ev.maps["rb"], callback=got.append)
    t0 = time.monotonic()
    assert rb.consume() == 0
    assert time.monotonic() - t0 < 0.1
    ev.emit(3)
    assert rb.consume() == 3
    rb.close()
    assert rb.closed
    with pytest.raises(pybpf.ClosedError):
        rb.poll(0)


def test_iterator_decodes_btf_struct_and_stops_after_timeout(ev: Events) -> None:
    rb = RingBuffer(ev.maps["rb"], decode="event")
    ev.emit(5, cookie=99)
    t0 = time.monotonic()
    out = list(rb.events(timeout=0.2))
    elapsed = time.monotonic() - t0
    rb.close()
    assert [e.seq for e in out] == [0, 1, 2, 3, 4]
    assert all(e.cookie == 99 and e.pid == os.getpid() for e in out)
    assert out[3].square == 9
    assert 0.15 < elapsed < 2.0


def test_leaving_the_iterator_early_keeps_the_rest(ev: Events) -> None:
    with RingBuffer(ev.maps["rb"]) as rb:
        ev.emit(10)
        first = []
        for rec in rb.events(timeout=0.5):
            first.append(rec)
            if len(first) == 3:
                break
        rest = rb.read(timeout=0.5)
        assert seqs(first) + seqs(rest) == list(range(10))
        assert rb.received == 10


def test_many_rings_with_their_own_callbacks(ev: Events) -> None:
    a: list[bytes] = []
    b: list[bytes] = []
    with RingBuffer(ev.maps["rb"], callback=a.append) as rb:
        rb.add(ev.maps["rb2"], b.append)
        ev.emit(4, MODE_RB)
        ev.emit(6, MODE_RB2)
        n = 0
        deadline = time.monotonic() + 2
        while n < 10 and time.monotonic() < deadline:
            n += rb.poll(0.5)
        assert seqs(a) == [0, 1, 2, 3] and seqs(b) == [4, 5, 6, 7, 8, 9]
        ev.emit(2, MODE_RB)
        ev.emit(2, MODE_RB2)
        batch = rb.read(0.5)
        assert sorted(batch.source(i) for i in range(len(batch))) == ["rb", "rb", "rb2", "rb2"]
        assert rb.maps == [ev.maps["rb"], ev.maps["rb2"]]


def test_batch_and_numpy_views(ev: Events) -> None:
    np = pytest.importorskip("numpy")
    with RingBuffer(ev.maps["rb"]) as rb:
        ev.emit(300, cookie=5)
        batch = rb.read(1.0)
        assert len(batch) == 300 and batch.fixed_size == 32
        assert len(batch.data) == 300 * 32
        assert seqs(batch.records()) == list(range(300))
        arr = batch.numpy("event")
        assert arr.dtype.names == ("seq", "pid", "kind", "cookie", "square")
        assert (arr["seq"] == np.arange(300)).all()
        assert (arr["square"] == np.arange(300) ** 2).all()
        assert (arr["cookie"] == 5).all()
        ev.emit(7)
        arr2 = rb.read_numpy(np.dtype([("seq", "<u8"), ("pid", "<u4")]), timeout=1.0)
        assert list(arr2["seq"]) == list(range(300, 307))


def test_large_batches_are_views_that_stay_valid(ev: Events) -> None:
    np = pytest.importorskip("numpy")
    with RingBuffer(ev.maps["rb"]) as rb:
        ev.emit(1000)
        first = rb.read(1.0)
        assert not isinstance(first.data, bytes)  # a view of the consumer's buffer
        a = first.numpy("event")
        ev.emit(1000)
        b = rb.read(1.0).numpy("event")
        del first
        ev.emit(1000)
        c = rb.read(1.0, copy=True)
        assert isinstance(c.data, bytes)
        assert (a["seq"] == np.arange(1000)).all()  # not overwritten by later reads
        assert (b["seq"] == np.arange(1000, 2000)).all()
        assert seqs(c.records()) == list(range(2000, 3000))
        assert not a.flags.writeable


def test_a_read_loop_alternates_between_two_buffers(ev: Events) -> None:
    np = pytest.importorskip("numpy")

    def addr(batch: pybpf.RecordBatch) -> int:
        return int(np.frombuffer(batch.data, np.uint8).ctypes.data)

    with RingBuffer(ev.maps["rb"]) as rb:
        addrs = []
        prev = None
        for i in range(4):
            ev.emit(600)
            batch = rb.read(1.0)  # the previous batch is still alive during the read
            assert not isinstance(batch.data, bytes)  # a view of a lent buffer
            assert seqs(batch.records()) == list(range(600 * i, 600 * (i + 1)))
            if prev is not None:  # not overwritten by this read
                assert seqs(prev.records()) == list(range(600 * (i - 1), 600 * i))
            addrs.append(addr(batch))
            prev = batch
        # two buffers, each reused once nothing views it (no fresh pages to fault)
        assert addrs[0] == addrs[2] != addrs[1] == addrs[3]


def test_variable_length_records_in_one_ring(ev: Events) -> None:
    np = pytest.importorskip("numpy")
    with RingBuffer(ev.maps["rb"]) as rb:
        ev.emit(101, MODE_MIXED)
        batch = rb.read(1.0)
        assert list(batch.sizes) == [16 if i % 2 == 0 else 40 for i in range(101)]
        assert batch.fixed_size is None
        with pytest.raises(ValueError, match="differ in size"):
            batch.numpy("ev_small")
        parts = batch.numpy_by_kind({1: "ev_small", 2: "ev_big"})
        small, big = parts[1], parts[2]
        assert list(small["seq"]) == list(range(0, 101, 2))
        assert (small["value"] == small["seq"].astype(np.uint64) * 2).all()
        assert list(big["seq"]) == list(range(1, 101, 2))
        assert (big["name"] == b"big-record-name").all()
        by_size = batch.numpy_by_kind({16: "ev_small", 40: "ev_big"}, by_size=True)
        assert len(by_size[16]) == 51 and len(by_size[40]) == 50
        with pytest.raises(ValueError, match="no dtype"):
            batch.numpy_by_kind({1: "ev_small"})


def test_callback_that_raises_loses_nothing(ev: Events) -> None:
    got: list[int] = []

    def cb(rec: bytes) -> None:
        s = EVENT.unpack_from(rec)[0]
        got.append(s)
        if s in (9, 50):
            raise RuntimeError(f"bad record {s}")

    with RingBuffer(ev.maps["rb"], callback=cb) as rb:
        ev.emit(100)
        with pytest.raises(RuntimeError, match="bad record 9"):
            rb.poll(1.0)
        assert got == list(range(10)) and rb.received == 10
        with pytest.raises(RuntimeError, match="bad record 50"):
            rb.poll(1.0)
        assert rb.poll(0) == 49
        assert got == list(range(100)) and rb.received == 100


def test_full_ring_drops_are_counted_not_hidden(ev: Events) -> None:
    with RingBuffer(ev.maps["rb"]) as rb:
        ev.emit(3000)  # 64 KiB ring, 40 bytes per record: about 1638 fit
        batch = rb.read(1.0)
        st = rb.stats()
        assert 1000 < len(batch) < 3000 and len(rb.read(0)) == 0
        assert ev.next_seq() == 3000  # what the program tried to emit
        assert st.dropped == ev.next_seq() - len(batch)
        assert seqs(batch.records()) == list(range(len(batch)))


def test_max_batch_bytes_leaves_the_rest_in_the_ring(ev: Events) -> None:
    with RingBuffer(ev.maps["rb"], max_batch_bytes=10 * 32) as rb:
        ev.emit(25)
        first = rb.read(1.0)
        assert len(first) == 10
        assert rb.pending_bytes() == 15 * 40
        rest = rb.read(0).records() + rb.read(0).records()
        assert seqs(first.records() + rest) == list(range(25))
    with RingBuffer(ev.maps["rb"], max_batch_bytes=16) as rb:  # smaller than one record
        ev.emit(3)
        assert [seqs(rb.read(1.0)) for _ in range(3)] == [[25], [26], [27]]
        ev.emit(3)  # borrow() too: one record a time, never nothing forever
        got = []
        for _ in range(3):
            with rb.borrow(1.0) as b:
                got.append(seqs(b))
        assert got == [[28], [29], [30]] and rb.pending_bytes() == 0


def test_discarded_records_are_skipped_by_every_reader(ev: Events) -> None:
    kept = [s for s in range(60) if s % 3 != 2]
    with RingBuffer(ev.maps["rb"]) as rb:
        ev.emit(30, MODE_DISCARD)
        assert seqs(rb.read(1.0)) == kept[:20]  # copied: the uniform fast path stops there
        ev.emit(30, MODE_DISCARD)
        with rb.borrow(1.0) as b:  # viewed in place: offsets skip the discarded ones
            assert seqs(b) == kept[20:]
        assert rb.pending_bytes() == 0 and len(rb.read(0)) == 0
    assert ev.drops() == 0


def test_fileno_works_with_select(ev: Events) -> None:
    with RingBuffer(ev.maps["rb"]) as rb:
        assert select.select([rb], [], [], 0.05)[0] == []
        ev.emit(1)
        assert select.select([rb], [], [], 1.0)[0] == [rb]
        assert len(rb.read(0)) == 1
        assert select.select([rb], [], [], 0.05)[0] == []


def test_asyncio_async_for_and_poll_async(ev: Events) -> None:
    async def main() -> tuple[list[int], int, float]:
        loop = asyncio.get_running_loop()
        rb = RingBuffer(ev.maps["rb"], decode="event")
        loop.call_later(0.05, ev.emit, 5)
        got: list[int] = []
        async for e in rb:
            got.append(e.seq)
            if len(got) == 5:
                break
        t0 = time.monotonic()
        empty = await rb.poll_async(timeout=0.1)
        waited = time.monotonic() - t0
        cb_got: list[dict] = []
        rb2 = RingBuffer(ev.maps["rb"], callback=cb_got.append, decode="event")
        loop.call_later(0.05, ev.emit, 3)
        n = await rb2.poll_async(timeout=2.0)
        rb.close()
        rb2.close()
        return got + [c.seq for c in cb_got], empty + n * 1000, waited

    got, code, waited = asyncio.run(main())
    assert got == [0, 1, 2, 3, 4, 5, 6, 7]
    assert code == 3000  # poll_async: 0 on timeout, then 3 records
    assert 0.08 < waited < 1.0


def test_close_from_another_thread_wakes_a_blocked_poll(ev: Events) -> None:
    rb = RingBuffer(ev.maps["rb"], callback=lambda r: None)
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(rb.poll(None)))
    t.start()
    time.sleep(0.1)
    assert t.is_alive()
    with pytest.raises(RuntimeError, match="one consumer thread"):
        rb.poll(0)
    rb.close()
    t.join(2.0)
    assert not t.is_alive() and result == [0]


def test_closing_the_object_wakes_a_blocked_poll_and_read(ev: Events) -> None:
    rb = RingBuffer(ev.maps["rb"], callback=lambda r: None)
    rb2 = RingBuffer(ev.maps["rb2"])
    result: list[object] = []
    threads = [threading.Thread(target=lambda: result.append(rb.poll(None))),
               threading.Thread(target=lambda: result.append(len(rb2.read(None))))]
    for t in threads:
        t.start()
    time.sleep(0.1)
    assert all(t.is_alive() for t in threads)
    t0 = time.monotonic()
    ev.obj.close()
    for t in threads:
        t.join(2.0)
    assert not any(t.is_alive() for t in threads)
    assert time.monotonic() - t0 < 1.0
    assert result == [0, 0] and rb.closed and rb2.closed
    with pytest.raises(ClosedError):
        rb.poll(0)


def test_one_thread_polls_while_another_updates_maps(ev: Events) -> None:
    got: list[bytes] = []
    stop = threading.Event()
    with RingBuffer(ev.maps["rb"], callback=got.append) as rb:
        def consumer() -> None:
            while not stop.is_set():
                rb.poll(0.05)
            rb.consume()

        t = threading.Thread(target=consumer)
        t.start()
        for i in range(200):
            ev.emit(10, cookie=i)  # map update from this thread, then trigger
            if i % 20 == 19:
                time.sleep(0.002)  # let the consumer keep up: the ring holds ~1600
        time.sleep(0.1)
        stop.set()
        t.join(5)
    recs = [EVENT.unpack(r) for r in got]
    assert rb.stats().dropped == 0
    assert [r[0] for r in recs] == list(range(2000))
    assert [r[3] for r in recs] == [i // 10 for i in range(2000)]


def test_bad_input_is_named(ev: Events) -> None:
    with pytest.raises(MapError, match="'cfg' is a array map, not a ringbuf"):
        RingBuffer(ev.maps["cfg"])
    with pytest.raises(TypeError, match="Map objects"):
        RingBuffer("rb")  # type: ignore[arg-type]
    with RingBuffer(ev.maps["rb"]) as rb:
        with pytest.raises(MapError) as ei:
            rb.add(ev.maps["rb"])
        assert ei.value.errno == errno.EEXIST
        with pytest.raises(LookupError, match="no struct 'nope'"):
            rb.add(ev.maps["rb2"], decode="nope")
        ev.emit(1)
        with pytest.raises(TypeError, match="no callback"):
            rb.poll(1.0)
        assert len(rb.read(0)) == 1  # the record was kept


def test_borrow_reads_the_ring_in_place_and_gives_space_back(ev: Events) -> None:
    np = pytest.importorskip("numpy")
    with RingBuffer(ev.maps["rb"]) as rb:
        ev.emit(1000)
        with rb.borrow(1.0) as batch:
            assert len(batch) == 1000 and batch.fixed_size == 32
            assert rb.pending_bytes() == 1000 * 40  # not consumed yet
            arr = batch.numpy("event")
            assert (arr["seq"] == np.arange(1000)).all()
            assert batch[999] == EVENT.pack(999, os.getpid(), 0, 7, 999 * 999)
        assert rb.pending_bytes() == 0 and rb.received == 1000
        # a block that raises consumed its records all the same (they were handed
        # over): they never come twice
        ev.emit(10)
        with pytest.raises(ZeroDivisionError):
            with rb.borrow(1.0) as batch:
                assert len(batch) == 10
                1 / 0  # noqa: B018
        assert rb.pending_bytes() == 0 and rb.received == 1010
        ev.emit(2)
        with rb.borrow(1.0) as batch:
            assert seqs(batch) == [1010, 1011]
            with pytest.raises(RuntimeError, match="borrow"):  # no other read meanwhile
                rb.read(0)
        with rb.borrow(0.05) as batch:
            assert len(batch) == 0
        # mixed sizes: offsets are given
        ev.emit(5, MODE_MIXED)
        with rb.borrow(1.0) as batch:
            assert list(batch.sizes) == [16, 40, 16, 40, 16]
            assert [struct.unpack_from("<I", r)[0] for r in batch] == [1, 2, 1, 2, 1]
        ev.emit(3)
        with rb.borrow(1.0) as batch:
            view = batch.numpy("event")
            rb.close()  # the view's mapping outlives the consumer
            assert list(view["seq"]) == [1017, 1018, 1019]


def test_batch_arrays_written_when_records_stop_being_uniform(ev: Events) -> None:
    # Uniform records carry no per-record arrays in C; the first record of
    # another ring (or size) makes them appear for all records before it.
    with RingBuffer(ev.maps["rb"], ev.maps["rb2"]) as rb:
        ev.emit(70, MODE_RB)
        ev.emit(3, MODE_RB2)
        ev.emit(2, MODE_MIXED)
        deadline = time.monotonic() + 2
        while rb.pending_bytes() < 70 * 40 + 3 * 40 + 24 + 48 and time.monotonic() < deadline:
            time.sleep(0.01)
        batch = rb.read(1.0)
        assert len(batch) == 75
        # ring by ring: rb's 70 + 2 mixed, then rb2's 3
        assert list(batch.tags) == [0] * 72 + [1] * 3
        assert list(batch.sizes) == [32] * 70 + [40, 16] + [32] * 3  # seq 73 is odd: big
        assert list(batch.offsets) == ([32 * i for i in range(70)] + [2240, 2280] +
                                       [2296 + 32 * i for i in range(3)])
        assert seqs(batch[:70]) == list(range(70))
        assert [struct.unpack_from("<I", r)[0] for r in batch[70:72]] == [2, 1]
        assert seqs(batch[72:]) == [70, 71, 72]
        assert batch.fixed_size is None and len(batch.data) == 73 * 32 + 56


def test_decoder_that_raises_in_the_c_loop_keeps_the_rest(ev: Events) -> None:
    got: list[int] = []

    def dec(rec: bytes) -> int:
        s = int(EVENT.unpack_from(rec)[0])
        if s == 30:
            raise ValueError("undecodable 30")
        return s

    with RingBuffer(ev.maps["rb"], callback=got.append, decode=dec) as rb:
        ev.emit(64)
        with pytest.raises(ValueError, match="undecodable 30"):
            rb.poll(1.0)
        assert got == list(range(30)) and rb.received == 31  # 30 was taken, not delivered
        assert rb.poll(0) == 33
        assert got == list(range(30)) + list(range(31, 64)) and rb.received == 64


def test_read_numpy_with_a_dtype_that_does_not_fit_keeps_the_records(ev: Events) -> None:
    pytest.importorskip("numpy")
    with RingBuffer(ev.maps["rb"]) as rb:
        ev.emit(5)
        with pytest.raises(ValueError, match="records are 32 bytes"):
            rb.read_numpy("V64", 1.0)  # 64-byte records wanted: nothing is handed over
        assert rb.received == 0
        batch = rb.read(1.0)
        assert len(batch) == 5 and rb.received == 5


def test_a_record_its_decoder_rejects_is_consumed_with_the_error(ev: Events) -> None:
    start = ev.next_seq()

    def decode(rec: bytes) -> int:
        seq = int(EVENT.unpack_from(rec)[0])
        if seq == start + 1:
            raise ValueError("bad record")
        return seq

    with RingBuffer(ev.maps["rb"], decode=decode) as rb:
        ev.emit(4)
        got: list[int] = []
        with pytest.raises(ValueError, match="bad record"):
            for seq in rb.events(1.0):
                got.append(seq - start)
        got.extend(seq - start for seq in rb.events(0.05))  # the stream goes on
        assert got == [0, 2, 3] and rb.received == 4
