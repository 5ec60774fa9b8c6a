"""Link update (BPF_LINK_UPDATE): the program of a live link is swapped while events
flow, and no event falls between the two programs: the old program's count plus the
new one's equals the events the test caused (a tcx link with continuous traffic; the
struct_ops update is in test_hooks_struct_ops.py). Links the kernel cannot update
(tracepoints are perf_event links) say so.
"""

from __future__ import annotations

import os
import threading

import pytest
from attach_util import hits, in_netns, veth_pair, wait_for
from conftest import require
from hooks_util import TCX_A, TCX_B, UPD_A, UPD_B, set_target

import pybpf
from pybpf import features

pytestmark = pytest.mark.kernel


def open_with(path: str, *names: str) -> pybpf.Object:
    o = pybpf.Object.open(path)
    for p in o.programs.values():
        p.autoload = p.name in names
    o.load()
    return o


def test_tracepoint_link_cannot_be_updated_and_keeps_counting(bpf_obj):
    """A tracepoint link is a perf_event link: the kernel has no update for it."""
    obj = open_with(bpf_obj("hooks"), "upd_a", "upd_b")
    try:
        set_target(obj, os.getpid())
        link = obj.programs["upd_a"].attach()
        with pytest.raises(pybpf.AttachError, match="cannot update a perf_event link"):
            link.update_program(obj.programs["upd_b"])
        for _ in range(5):
            os.getpgid(0)
        assert (hits(obj, UPD_A, 0), hits(obj, UPD_B, 0)) == (5, 0)
    finally:
        obj.close()


def test_tcx_link_update_counts_every_packet(bpf_obj):
    require(features.tcx())
    obj = open_with(bpf_obj("hooks"), "tcx_a", "tcx_b")
    try:
        with veth_pair() as pair:
            with in_netns(pair.ns_b):
                link = obj.programs["tcx_a"].attach_tcx(pair.dev_b)
            rx = pair.udp_socket("b")
            port = rx.getsockname()[1]
            sent = [0]
            stop = threading.Event()

            def flood() -> None:
                tx = pair.udp_socket("a")
                while not stop.is_set():
                    tx.sendto(b"u", (pair.addr_b, port))
                    sent[0] += 1
                tx.close()

            t = threading.Thread(target=flood)
            t.start()
            try:
                assert wait_for(lambda: hits(obj, TCX_A, port) >= 50, timeout=10)
                link.update_program(obj.programs["tcx_b"])
                assert wait_for(lambda: hits(obj, TCX_B, port) >= 50, timeout=10)
            finally:
                stop.set()
                t.join()
            assert link.info().prog_id == obj.programs["tcx_b"].info().id
            assert wait_for(lambda: hits(obj, TCX_A, port) + hits(obj, TCX_B, port)
                            == sent[0], timeout=3)
            rx.close()
    finally:
        obj.close()
