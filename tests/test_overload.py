"""Overload: a producer that outruns its consumer fills the ring; nothing is lost uncounted.

tests/bpf/hardening.bpf.c's ``produce`` writes 1000 64-byte records per run
into a 16 KiB ring (about 227 fit). A consumer that reads once per burst sees
the ring overflow every time; every record must be either delivered or
counted by the program in ``pybpf_ringbuf_drops``, the consumer must keep
receiving after each overflow, and its memory must not grow with the number
of bursts.
"""

from __future__ import annotations

import os
import struct

import pytest

import pybpf
from pybpf import RingBuffer

pytestmark = pytest.mark.kernel

BURST = 1000


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def test_overrun_ring_counts_drops_and_consumer_keeps_going(bpf_obj):
    with pybpf.load(bpf_obj("hardening")) as obj, RingBuffer(obj.maps["events"]) as rb:
        produce = obj.programs["produce"]
        last_seq = -1
        received = 0
        rss = []
        rounds = 300
        for rnd in range(rounds):
            produce.test_run(repeat=0)  # one burst of 1000 reservations
            assert rb.pending_bytes() > 0
            batch = rb.read(0)
            assert 100 < len(batch) < BURST, f"round {rnd}: {len(batch)} records"
            seqs = [struct.unpack_from("<Q", r)[0] for r in batch.records()]
            # each burst's survivors arrive in order and after the previous ones
            assert seqs == sorted(seqs) and seqs[0] > last_seq
            assert seqs[-1] < (rnd + 1) * BURST
            last_seq = seqs[-1]
            received += len(seqs)
            if rnd in (30, rounds - 1):
                rss.append(_rss_kb())
        st = rb.stats()
        assert st.received == received
        assert st.pending_bytes == 0
        # the accounting closes: delivered + counted drops == produced
        assert st.dropped == rounds * BURST - received
        assert st.dropped > rounds * BURST // 2
        assert rb.drops() == st.dropped
        assert _bss_u64(obj, "produced") == rounds * BURST
        # a consumer falling behind holds one batch at a time, not a growing backlog
        assert rss[1] - rss[0] < 2048, f"RSS grew by {rss[1] - rss[0]} KB"


def test_slow_consumer_with_a_callback_survives_overflow(bpf_obj):
    """The callback path too: a consumer slower than the producer keeps getting records."""
    got: list[int] = []
    with pybpf.load(bpf_obj("hardening")) as obj:
        with RingBuffer(obj.maps["events"],
                        callback=lambda data: got.append(struct.unpack_from("<Q", data)[0])) as rb:
            for _ in range(20):
                obj.programs["produce"].test_run(repeat=0)
                obj.programs["produce"].test_run(repeat=0)  # two bursts per poll
                rb.poll(0)
            st = rb.stats()
    assert got == sorted(got) and len(got) == st.received
    assert st.dropped == 40 * BURST - st.received and st.dropped > 0


def _bss_u64(obj: pybpf.Object, var: str) -> int:
    name = next(n for n, m in obj.maps.items() if m.internal and n.endswith(".bss"))
    sec = obj.btf.datasec(".bss")
    assert sec is not None
    off = next(m.offset for m in sec.members if m.name == var)
    raw = obj.maps[name].lookup(b"\0" * 4)
    assert raw is not None
    return int(struct.unpack_from("<Q", raw, off)[0])
