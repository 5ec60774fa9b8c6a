"""Lifecycle: one owner per kernel object, spec before load and live map after.

Against the real kernel. Each race runs many times in a child interpreter, so a
crash or a hang fails one test instead of killing the run:
- close from another thread during the first map operation (lazy BTF, fast path);
- a stale handle after its object closed and another map got its fd number: every
  operation raises ClosedError, and the other map's contents are untouched;
- global-variable and link operations racing close/detach;
- pins (EEXIST, unpin of a pin the map does not own), open_pinned kind checks;
- setters after load and live operations before load (StateError), repr after close.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from attach_util import unique
from conftest import compile_test_bpf

import pybpf
from pybpf import BPFError, ClosedError, Link, Map, MapError, OpenMap, StateError

pytestmark = pytest.mark.kernel

BPFFS = Path("/sys/fs/bpf")


def child(code: str, timeout: float = 120) -> str:
    """Run ``code`` in a fresh interpreter; fail on a crash, a hang or a non-zero exit."""
    pre = ("import os, random, sys, threading, time, pybpf\nfrom pybpf import ClosedError\n"
           "sys.setswitchinterval(1e-6)\n")  # threads switch often: close lands anywhere
    r = subprocess.run([sys.executable, "-c", pre + textwrap.dedent(code)],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (f"child died (rc {r.returncode})\nstdout: {r.stdout[-2000:]}"
                               f"\nstderr: {r.stderr[-4000:]}")
    return r.stdout


@pytest.fixture(scope="module")
def basic() -> str:
    return compile_test_bpf("basic")


@pytest.fixture
def pin_path():
    p = BPFFS / unique("pybpf_lifecycle_")
    yield p
    if p.exists():
        p.unlink()


# --- races, in child interpreters -----------------------------------------------------

def test_close_during_first_map_operation(basic):
    out = child(f"""
        ok = closed = 0
        for i in range(300):
            obj = pybpf.load({basic!r})
            m = obj.maps["counts"]
            go = threading.Barrier(2)
            res = []

            def op():
                go.wait()
                try:
                    m[7] = 70                       # first use: BTF, codecs, C ops
                    res.append(m[7])
                except ClosedError:
                    res.append("closed")

            t = threading.Thread(target=op)
            t.start()
            go.wait()
            time.sleep(random.random() * 0.002)
            obj.close()
            t.join()
            assert res in ([70], ["closed"]), res
            ok += res == [70]
            closed += res == ["closed"]
            try:
                m[7] = 1
                raise SystemExit("a write after close did not raise")
            except ClosedError as e:
                assert "counts" in str(e), e
        print("ok", ok, closed)
    """)
    assert out.startswith("ok ")


def test_stale_handle_never_reaches_a_reused_fd_number(basic):
    out = child(f"""
        obj = pybpf.load({basic!r})
        stale = obj.maps["counts"]
        stale[1] = 10
        walk = stale.keys_raw()
        assert next(walk) == (1).to_bytes(4, "little")
        fd = stale.fd
        obj.close()
        # Open maps until one gets the closed map's fd number (the lowest free one).
        others = []
        for _ in range(64):
            m = pybpf.create_map("hash", 4, 8, 128, key="u32", value="u64")
            others.append(m)
            if m.fd == fd:
                break
        victim = others[-1]
        assert victim.fd == fd, (fd, [o.fd for o in others])
        victim[1] = 111
        victim[2] = 222
        ops = [
            lambda: stale.__setitem__(1, 5), lambda: stale[1], lambda: stale.get(2),
            lambda: 2 in stale, lambda: stale.__delitem__(2), lambda: stale.pop(1),
            lambda: stale.update(bytes(4), bytes(8)), lambda: stale.lookup(bytes(4)),
            lambda: stale.delete((2).to_bytes(4, "little")), lambda: stale.fd,
            lambda: stale.info(), lambda: stale.update({{3: 3}}),
            lambda: stale.setdefault(4, 4), lambda: bool(stale), lambda: stale.freeze(),
            lambda: stale.pin("/sys/fs/bpf/pybpf-never-" + str(os.getpid())),
            lambda: stale.delete_batch([1, 2]), lambda: stale.update_batch([(1, 9)]),
        ]
        for i, op in enumerate(ops):
            try:
                op()
                raise SystemExit(f"stale operation {{i}} did not raise")
            except ClosedError as e:
                assert "counts" in str(e), (i, e)
        # A walk resumed after close: what it had fetched before close (A's keys only,
        # here nothing more), then ClosedError or its end; never the victim's keys.
        try:
            rest = list(walk)
        except ClosedError:
            rest = []
        assert rest == [], rest
        assert dict(victim.items()) == {{1: 111, 2: 222}}, dict(victim.items())
        print("ok", repr(stale))
    """)
    assert out.startswith("ok <HashMap 'counts'") and "(closed)" in out


def test_globals_and_sections_racing_close(basic):
    out = child(f"""
        bad = []
        for i in range(300):
            obj = pybpf.load({basic!r})
            bss, rodata = obj.bss, obj.rodata
            go = threading.Barrier(2)

            def reader():
                go.wait()
                while True:
                    try:
                        bss.bss_counter = 1
                        bss.bss_counter
                        rodata.neg_default
                    except ClosedError:
                        return
                    except Exception as e:
                        bad.append(repr(e))
                        return

            t = threading.Thread(target=reader)
            t.start()
            go.wait()
            time.sleep(random.random() * 0.002)
            obj.close()
            t.join()
        assert not bad, bad[:3]
        try:
            bss.bss_counter
            raise SystemExit("read after close")
        except ClosedError as e:
            assert ".bss" in str(e), e
        print("ok")
    """)
    assert out.strip() == "ok"


def test_link_info_racing_detach(basic):
    out = child(f"""
        bad = []
        obj = pybpf.load({basic!r})
        prog = obj.programs["count_exec"]
        for i in range(25):  # each detach waits for an RCU grace period
            link = prog.attach()
            go = threading.Barrier(2)

            def info():
                go.wait()
                while True:
                    try:
                        assert link.info().prog_id == prog.info().id
                    except ClosedError:
                        return
                    except Exception as e:
                        bad.append(repr(e))
                        return

            t = threading.Thread(target=info)
            t.start()
            go.wait()
            time.sleep(random.random() * 0.002)
            link.detach()
            t.join()
        assert not bad, bad[:3]
        assert obj.links == []
        print("ok", repr(link))
    """)
    assert out.startswith("ok <Link 'count_exec'") and "(detached)" in out


def test_attach_racing_object_close_leaves_no_link(basic):
    out = child(f"""
        from pybpf import list_links
        ours = set()  # our programs' ids (other processes attach things meanwhile)
        kept = []  # every Link stays referenced: only the objects' close may detach them
        for i in range(60):
            obj = pybpf.load({basic!r})
            prog = obj.programs["count_exec"]
            ours.add(prog.info().id)
            go = threading.Barrier(2)
            res = []

            def attach():
                go.wait()
                try:
                    res.append(prog.attach())
                except ClosedError:
                    res.append("closed")

            t = threading.Thread(target=attach)
            t.start()
            go.wait()
            if i % 2:  # half the closes right away (close wins), half after a while
                time.sleep(random.random() * 0.001)
            obj.close()
            t.join()
            assert len(res) == 1, res
            kept.append(res)
        attached = sum(1 for r in kept if r != ["closed"])
        assert 0 < attached < len(kept), attached  # the close landed on both sides
        left = [li for li in list_links() if li.prog_id in ours]
        assert not left, left
        print("ok")
    """)
    assert out.strip() == "ok"


# --- pins ------------------------------------------------------------------------------

def test_pin_eexist_keeps_pin_path_and_unpin_never_removes_a_foreign_pin(pin_path):
    with pybpf.create_map("hash", 4, 8, 8, key="u32", value="u64") as a, \
            pybpf.create_map("hash", 4, 8, 8, key="u32", value="u64") as b:
        a[1] = 11
        a.pin(pin_path)
        assert a.pin_path == str(pin_path)
        with pytest.raises(MapError, match="already pinned") as ei:
            b.pin(pin_path)
        assert ei.value.errno == 17  # EEXIST
        assert b.pin_path is None  # not the other map's path
        with pytest.raises(MapError, match="not pinned by this handle"):
            b.unpin()
        with pytest.raises(MapError, match="another one"):
            b.unpin(pin_path)
        assert pin_path.exists()
        with Map.open_pinned(pin_path) as again:
            assert again.id == a.id
            assert again.lookup((1).to_bytes(4, "little")) == (11).to_bytes(8, "little")
        a.unpin()
        assert not pin_path.exists() and a.pin_path is None


def test_object_map_pin_eexist(basic, pin_path):
    with pybpf.create_map("array", 4, 8, 1) as other, pybpf.load(basic) as obj:
        other.pin(pin_path)
        counts = obj.maps["counts"]
        with pytest.raises(MapError, match="already pinned"):
            counts.pin(pin_path)
        assert counts.pin_path is None
        with pytest.raises(MapError, match="another one"):
            counts.unpin(pin_path)
        assert Map.open_pinned(pin_path).id == other.id


def test_open_pinned_checks_the_kind_of_object(basic, pin_path):
    prog_pin = BPFFS / unique("pybpf_lifecycle_prog_")
    try:
        with pybpf.load(basic) as obj:
            obj.programs["count_exec"].pin(prog_pin)
            with pytest.raises(MapError, match="is a pinned program, not a map"):
                Map.open_pinned(prog_pin)
            obj.maps["counts"].pin(pin_path)
            with pytest.raises(BPFError, match="is a pinned map .*not a link"):
                Link.open_pinned(pin_path)
            assert pin_path.exists()  # the refused Link could not unpin the map
            assert Map.open_pinned(pin_path).id == obj.maps["counts"].id
    finally:
        if prog_pin.exists():
            prog_pin.unlink()


# --- spec before load, live map after ----------------------------------------------------

def test_open_map_has_no_live_operations(basic):
    with pybpf.Object.open(basic) as obj:
        om = obj.maps["counts"]
        assert isinstance(om, OpenMap) and not isinstance(om, Map)
        for op in (lambda: om.fd, lambda: om.lookup(bytes(4)), lambda: om[1],
                   lambda: om.__setitem__(1, 2), lambda: len(om), lambda: 1 in om,
                   lambda: list(om), lambda: om.items(), lambda: om.pin("/sys/fs/bpf/x"),
                   lambda: om.info(), lambda: om.keys_raw()):
            with pytest.raises(StateError, match=r"load the object first.*maps\['counts'\]"):
                op()
        with pytest.raises(AttributeError):
            om.no_such_attribute  # noqa: B018
        assert bool(om)
        obj.load()
        live = obj.maps["counts"]
        assert isinstance(live, Map) and live is not om
        # the handle kept across load points at the live map
        with pytest.raises(StateError, match=r"the loaded map is obj.maps\['counts'\]"):
            om[1] = 2
        with pytest.raises(StateError, match="only be set before load"):
            om.max_entries = 5
        assert om.max_entries == 128  # still describes the spec
    with pytest.raises(ClosedError):
        om.max_entries  # noqa: B018


def test_live_map_setters_raise_state_error(basic):
    with pybpf.load(basic) as obj:
        m = obj.maps["counts"]
        for attr in ("max_entries", "key_size", "value_size", "flags", "pin_path"):
            with pytest.raises(StateError, match="only be set before load"):
                setattr(m, attr, 1)
        with pytest.raises(StateError, match="only be set before load"):
            obj.rodata.target_pid = 1
        with pytest.raises(StateError, match="only be set before load"):
            obj.set_rodata("target_pid", 1)
        assert m.max_entries == m.info().max_entries == 128


def test_maps_before_load_configure_the_kernel_maps(basic, trigger_exec):
    donor = pybpf.create_map("array", 4, 8, 4, key="u32", value="u64")
    donor[2] = 77
    with pybpf.Object.open(basic) as obj:
        obj.maps["counts"].max_entries = 300
        obj.maps["pcpu"].type = "array"
        obj.maps["pcpu"].max_entries = 3
        obj.maps["arr"].reuse_fd(donor)
        obj.rodata.target_pid = 0
        obj.load()
        # what the kernel created, read back from the kernel
        assert obj.maps["counts"].info().max_entries == 300
        pc = obj.maps["pcpu"].info()
        assert (pc.type, pc.max_entries) == ("array", 3)
        assert obj.maps["arr"].id == donor.id and obj.maps["arr"][2] == 77
        obj.attach()
        pid = trigger_exec()
        assert obj.maps["counts"][pid] == 1  # the program runs with the resized map
    donor.close()


def test_autocreate_off_and_reuse_of_a_pinned_map(basic, pin_path):
    with pybpf.create_map("array", 4, 8, 4, key="u32", value="u64") as donor:
        donor[3] = 33
        donor.pin(pin_path)
        with pybpf.Object.open(basic) as obj:
            obj.maps["pcpu"].autocreate = False
            assert obj.maps["pcpu"].autocreate is False
            obj.maps["arr"].reuse_fd(pin_path)
            obj.load()
            assert "pcpu" not in obj.maps
            assert obj.maps["arr"].id == donor.id and obj.maps["arr"][3] == 33
            ours = {m.id for m in obj.maps.values()}
            kernel = {i.id for i in pybpf.list_maps()}
            assert ours <= kernel


def test_repr_after_close(basic):
    obj = pybpf.load(basic)
    om_obj = pybpf.Object.open(basic)
    om = om_obj.maps["counts"]
    m = obj.maps["counts"]
    link = obj.programs["count_exec"].attach()
    obj.close()
    om_obj.close()
    assert "closed" in repr(obj)
    assert repr(m) == ("<HashMap 'counts' type=hash key_size=4 value_size=8 "
                       "max_entries=128 (closed)>")
    assert "closed" in repr(om)
    assert "detached" in repr(link)
    with pytest.raises(ClosedError, match="counts"):
        m.fd  # noqa: B018
    with pytest.raises(ClosedError):
        obj.programs["count_exec"].attach()  # noqa: B018


def test_map_from_id_range_and_object_map_close_is_a_no_op(basic):
    with pytest.raises(MapError, match="map id 1099511627776: no such map"):
        Map.from_id(2 ** 40)
    with pybpf.load(basic) as obj:
        m = obj.maps["counts"]
        m.close()  # belongs to the object: still open
        m[5] = 6
        with Map.from_id(m.id) as again:
            assert again[5] == 6 and type(again) is type(m)
        assert again.closed and not m.closed
        with pytest.raises(ClosedError):
            again[5]  # noqa: B018
        assert m[5] == 6
    assert m.closed


def test_create_map_bad_input_is_map_error():
    with pytest.raises(MapError, match="unknown type 'hashh'"):
        pybpf.create_map("hashh", 4, 4, 4)
    with pytest.raises(MapError, match="max_entries=1099511627776 is not a 32-bit"):
        pybpf.create_map("hash", 4, 4, 1 << 40)
    with pytest.raises(MapError, match="key_size"):
        pybpf.create_map("hash", -1, 4, 4)


def test_signals_in_the_middle_of_map_operations_leave_no_borrow(basic):
    # a signal handler that raises (like KeyboardInterrupt) lands anywhere in the raw and
    # typed operations; every borrow is released on the way out, so that close() really
    # closes the fd at once afterwards
    out = child(f"""
        import signal

        class Tick(BaseException):
            pass

        zone = False  # raise only inside the try below (a signal elsewhere is ignored)

        def tick(*a):
            global zone
            if zone:
                zone = False
                raise Tick

        obj = pybpf.load({basic!r})
        m = obj.maps["counts"]
        bss = obj.bss
        m[1] = 1  # types resolved before the ticks start
        signal.signal(signal.SIGALRM, tick)
        signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
        hits = rounds = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            try:
                zone = True
                m[1] = 2
                m.lookup((1).to_bytes(4, "little"))
                m.update((3).to_bytes(4, "little"), bytes(8))
                m.pop(3, None)
                list(m.keys_raw())
                m.info()
                bss.bss_counter = 5
                bss.bss_counter
                zone = False
                rounds += 1
            except Tick:
                hits += 1
        signal.setitimer(signal.ITIMER_REAL, 0)
        assert hits > 10 and rounds > 10, (hits, rounds)
        assert m.owner.borrows == 0 and obj.owner.borrows == 0, (m.owner, obj.owner)
        fd = m.fd
        obj.close()
        assert not os.path.exists(f"/proc/self/fd/{{fd}}") or \\
            os.readlink(f"/proc/self/fd/{{fd}}") != "anon_inode:bpf-map", "fd still open"
        print("ok", hits, rounds)
    """)
    assert out.startswith("ok ")


def test_an_owner_collected_in_a_cycle_runs_its_closer_on_whole_objects():
    # an owner that is garbage-collected unclosed (here with a borrow that was never
    # released) closes through its closer before the collector clears the cycle it
    # is in: the closer still sees what it refers to (was: a half-cleared cycle)
    out = child("""
        import functools, gc
        from pybpf._fd import FD

        seen = []

        def closer(box):
            seen.append(len(box))

        for i in range(20):
            box = []
            o = FD(-1, "test owner", closer=functools.partial(closer, box))
            box.append(o)  # a cycle: owner -> closer -> box -> owner
            o.borrow()
            o.close()
            del o, box
            gc.collect()
        print(seen)
    """)
    assert out.strip() == str([1] * 20)


def test_handles_refuse_copy_and_pickle_and_repr_after_close(basic):
    # a copy would be a second owner of one fd: refused, naming the handle
    import copy
    import pickle

    obj = pybpf.load(basic)
    m = obj.maps["counts"]
    m[1] = 2
    prog = obj.programs["count_exec"]
    for h, name in ((obj, "Object 'basic'"), (m, "'counts'"), (prog, "'count_exec'")):
        for how, f in (("copied", copy.copy), ("copied", copy.deepcopy),
                       ("pickled", pickle.dumps)):
            with pytest.raises(TypeError, match=f"{name}.* cannot be {how}"):
                f(h)
    assert m[1] == 2  # still the one owner
    obj.close()
    assert "(closed)" in repr(prog) and "count_exec" in repr(prog)
    assert "(closed)" in repr(m)


def test_open_pinned_refuses_what_is_not_a_pin(tmp_path):
    d = f"/sys/fs/bpf/pybpf-notapin-{os.getpid()}"
    os.mkdir(d)
    try:
        for path, why in (("/dev/zero", "not on a BPF file system"),
                          (str(tmp_path), "directory"), (d, "directory"),
                          ("/etc/hostname", "not on a BPF file system")):
            for opener, what in ((Map.open_pinned, "map"), (pybpf.Link.open_pinned, "link")):
                with pytest.raises(pybpf.BPFError, match=f"{why}.*pinned {what}") as ei:
                    opener(path)
                assert path in str(ei.value)
    finally:
        os.rmdir(d)
