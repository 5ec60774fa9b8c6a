"""UserRingBuffer: records written from Python, drained by a program (bpf_user_ringbuf_drain)."""

from __future__ import annotations

import errno
import os
import struct
import time

import pytest
from _events_obj import Events, events_object

from pybpf import MapError, UserRingBuffer

pytestmark = pytest.mark.kernel
REQ = struct.Struct("<IIQ")


@pytest.fixture
def ev(bpf_obj):
    with events_object(bpf_obj("events")) as e:
        yield e


def out(ev: Events, idx: int) -> int:
    raw = ev.maps["out"].lookup(struct.pack("<I", idx))
    assert raw is not None
    return int.from_bytes(raw, "little")


def drained(ev: Events) -> int:
    raw = ev.maps["drained"].lookup(b"\0" * 4)
    assert raw is not None
    return int.from_bytes(raw, "little")


def test_program_drains_what_python_submits(ev: Events) -> None:
    with UserRingBuffer(ev.maps["urb"], encode="user_req") as urb:
        urb.submit(REQ.pack(1, 0, 111))
        urb.submit({"idx": 2, "value": 222})
        with urb.reserve(REQ.size) as buf:
            REQ.pack_into(buf, 0, 3, 0, 333)
        assert urb.submitted == 3
        assert drained(ev) == 0  # nothing runs the program yet
        os.getpgid(0)  # the program drains on this syscall
        assert drained(ev) == 3
        assert [out(ev, i) for i in (1, 2, 3)] == [111, 222, 333]
        for i in range(10, 40):
            urb.submit({"idx": i, "value": i * i})
        os.getpgid(0)
        assert drained(ev) == 33
        assert all(out(ev, i) == i * i for i in range(10, 40))


def test_a_reservation_that_raises_is_discarded(ev: Events) -> None:
    with UserRingBuffer(ev.maps["urb"]) as urb:
        with pytest.raises(ZeroDivisionError):
            with urb.reserve(REQ.size) as buf:
                REQ.pack_into(buf, 0, 5, 0, 555)
                1 / 0  # noqa: B018
        urb.submit(REQ.pack(6, 0, 666))
        os.getpgid(0)
        assert drained(ev) == 1
        assert out(ev, 5) == 0 and out(ev, 6) == 666


def test_full_ring_and_bad_input(ev: Events) -> None:
    with UserRingBuffer(ev.maps["urb"]) as urb:
        n = 0
        with pytest.raises(MapError, match="the ring is full") as ei:
            while True:
                urb.submit(REQ.pack(0, 0, n))
                n += 1
        assert ei.value.errno == errno.ENOSPC
        assert 16 * 1024 // 24 - 2 <= n <= 16 * 1024 // 24
        t0 = time.monotonic()
        with pytest.raises(MapError, match="still full after 0.05s") as ei:
            urb.submit(REQ.pack(0, 0, 0), timeout=0.05)
        assert ei.value.errno == errno.ENOSPC and time.monotonic() - t0 >= 0.04
        os.getpgid(0)
        assert drained(ev) == n
        urb.submit(REQ.pack(7, 0, 7))  # space again
        with pytest.raises(MapError) as ei:
            urb.submit(b"x" * (64 * 1024))
        assert ei.value.errno == errno.E2BIG
        with pytest.raises(TypeError, match="value must be bytes"):
            urb.submit(12)
    with pytest.raises(MapError, match="not a user_ringbuf"):
        UserRingBuffer(ev.maps["rb"])
