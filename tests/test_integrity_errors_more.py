"""Integrity (issue 11): every bad argument of every public entry point gets a pybpf
exception (an instance of BPFError, which may also be the TypeError/ValueError/KeyError
the Python protocol expects) whose message names what was wrong: the map, program, file
or errno. A table of cases, each run in one child interpreter batch per family (a crash
or hang fails that family, never the runner); the expected names come from the inputs
here (the integrity object's map and program names, the paths given)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from _child import run_child

import pybpf

pytestmark = pytest.mark.kernel

# Each case: (label, Python expression run in the child, names the message must contain
# at least one of). In the child: `a` the loaded integrity object; its maps h (hash),
# arr (array, 64 entries), lpm, odd, tstore, rbm (ringbuf), pbm (perf), urbm (user
# ringbuf); `prog` its loaded program 'mark'; `o`/`op`/`om` an opened, not loaded, copy
# (object, program 'mark', map 'h'); `ch`/`cprog` a map and program of a closed object;
# `BadIndex()`, `BadInt()`, `BadBytes()` keys whose conversion raises RuntimeError;
# `MISSING` a path that does not exist, `TMP` a directory outside bpffs.
NAN = "float('nan')"
BIG = "2**64"
NEG = "-2**63"

MAP_CASES = [
    *[(f"h[{k}]", f"h[{k}]", ["'h'"]) for k in ("None", "'x'", "1.5", "-1", BIG, NEG, NAN,
                                                 "b'\\0'")],
    *[(f"h[1] = {v}", f"h.__setitem__(1, {v})", ["'h'"])
      for v in ("None", "'x'", "1.5", "-1", BIG, NEG, NAN)],
    ("h.get(None)", "h.get(None)", ["'h'"]),
    ("del h[None]", "h.__delitem__(None)", ["'h'"]),
    ("h.pop(None)", "h.pop(None)", ["'h'"]),
    ("h.update_batch([(None, 1)])", "h.update_batch([(None, 1)])", ["'h'"]),
    ("h.delete_batch([None])", "h.delete_batch([None])", ["'h'"]),
    ("h.lookup_batch(-1)", "list(h.lookup_batch(-1))", ["'h'"]),
    ("h.lookup_batch('x')", "list(h.lookup_batch('x'))", ["'h'"]),
    ("h.lookup(None)", "h.lookup(None)", ["'h'"]),
    ("h.lookup(flags=-1)", "h.lookup(bytes(4), flags=-1)", ["'h'"]),
    ("h.delete(b'')", "h.delete(b'')", ["'h'"]),
    ("h[BadIndex()]", "h[BadIndex()]", ["'h'"]),
    ("h[BadInt()]", "h[BadInt()]", ["'h'"]),
    ("h[1] = BadIndex()", "h.__setitem__(1, BadIndex())", ["'h'"]),
    ("h.get(BadIndex())", "h.get(BadIndex())", ["'h'"]),
    ("h.lookup(BadBytes())", "h.lookup(BadBytes())", ["'h'"]),
    ("arr[64]", "arr[64]", ["'arr'"]),
    ("arr[64] = 1", "arr.__setitem__(64, 1)", ["'arr'"]),
    ("arr[2**32]", "arr[2**32]", ["'arr'"]),
    ("arr[-1]", "arr[-1]", ["'arr'"]),
    ("arr[BadIndex()]", "arr[BadIndex()]", ["'arr'"]),
    ("tstore[2**40]", "tstore[2**40]", ["'tstore'"]),
    ("tstore['x']", "tstore['x']", ["'tstore'"]),
    ("lpm[None]", "lpm[None]", ["'lpm'"]),
    ("odd[1] = {'nosuch': 1}", "odd.__setitem__(1, {'nosuch': 1})", ["'odd'"]),
    ("h.pin(None)", "h.pin(None)", ["'h'"]),
    ("h.pin('')", "h.pin('')", ["'h'"]),
    ("h.pin(NUL)", "h.pin('/sys/fs/bpf/a\\0b')", ["'h'"]),
    ("h.pin(MISSING dir)", "h.pin(MISSING + '/x')", ["'h'"]),
    ("h.pin(TMP)", "h.pin(TMP + '/x')", ["'h'"]),
    ("h.pin(5)", "h.pin(5)", ["'h'"]),
    ("h.unpin(MISSING)", "h.unpin(MISSING)", ["'h'", "MISSING"]),
    ("h.unpin(NUL)", "h.unpin('a\\0b')", ["'h'"]),
    ("h.unpin(5)", "h.unpin(5)", ["'h'"]),
    ("h.set_types(key=5)", "h.set_types(key=5)", ["'h'"]),
    ("h.set_types(key='struct nosuch')", "h.set_types(key='struct nosuch')", ["nosuch"]),
    ("closed ch[1]", "ch[1]", ["'h'"]),
    ("closed ch[1] = 1", "ch.__setitem__(1, 1)", ["'h'"]),
    ("closed ch.info()", "ch.info()", ["'h'"]),
    ("closed ch.keys()", "list(ch.keys())", ["'h'"]),
    ("closed ch.pin", "ch.pin('/sys/fs/bpf/x')", ["'h'"]),
    ("a.maps['nosuch']", "a.maps['nosuch']", ["nosuch"]),
    ("a.programs['nosuch']", "a.programs['nosuch']", ["nosuch"]),
]

OPEN_CASES = [
    *[(f"Map.open_pinned({p})", f"pybpf.Map.open_pinned({p})", n) for p, n in (
        ("None", ["None", "path"]), ("5", ["5", "path"]), ("''", ["''", "path"]),
        ("'a\\0b'", ["a\\x00b", "NUL"]), ("MISSING", ["MISSING"]), ("TMP", ["TMP"]))],
    *[(f"Link.open_pinned({p})", f"pybpf.Link.open_pinned({p})", n) for p, n in (
        ("None", ["None", "path"]), ("5", ["5", "path"]), ("''", ["''", "path"]),
        ("'a\\0b'", ["a\\x00b", "NUL"]), ("MISSING", ["MISSING"]), ("TMP", ["TMP"]))],
    *[(f"Map.from_id({i})", f"pybpf.Map.from_id({i})", ["map id", "map"])
      for i in ("'x'", "None", "-1", "0", BIG, "1.5", "True")],
    *[(f"create_map({args})", f"pybpf.create_map({args})", n) for args, n in (
        ("'nosuch', 4, 8, 4", ["nosuch"]), ("None, 4, 8, 4", ["None", "map type"]),
        ("'hash', 4, 8, 4, name='a\\0b'", ["name"]), ("'hash', 4, 8, 4, flags=-1", ["flags"]),
        ("'hash', 4, 8, 4, flags=2**64", ["flags"]), ("'hash', 0, 8, 4", ["key_size", "hash"]),
        ("'hash', 4, 8, 0", ["max_entries", "hash"]),
        ("'hash', 4, 8, float('nan')", ["max_entries"]))],
    ("btf_type(None)", "pybpf.btf_type(None)", ["None"]),
    ("btf_type(5)", "pybpf.btf_type(5)", ["5"]),
    ("btf_type('struct nosuch')", "pybpf.btf_type('struct nosuch')", ["nosuch"]),
    ("set_rodata('nosuch', 1)", "o.set_rodata('nosuch', 1)", ["nosuch"]),
    ("set_rodata(None, 1)", "o.set_rodata(None, 1)", ["None", "rodata"]),
    ("set_rodata('target_pid', 2**64)", "o.set_rodata('target_pid', 2**64)", ["target_pid"]),
    ("set_rodata('target_pid', None)", "o.set_rodata('target_pid', None)", ["target_pid"]),
    ("set_rodata('target_pid', nan)", f"o.set_rodata('target_pid', {NAN})", ["target_pid"]),
    ("bss.hits = nan", f"setattr(a.bss, 'hits', {NAN})", ["hits"]),
    ("bss.hits = 2**64", "setattr(a.bss, 'hits', 2**64)", ["hits"]),
    ("bss.hits = BadIndex()", "setattr(a.bss, 'hits', BadIndex())", ["hits"]),
    ("rodata.target_pid after load", "setattr(a.rodata, 'target_pid', 1)", ["target_pid"]),
    ("om.max_entries = nan", f"setattr(om, 'max_entries', {NAN})", ["'h'"]),
    ("om.flags = -1", "setattr(om, 'flags', -1)", ["'h'"]),
    ("om.flags = 2**64", "setattr(om, 'flags', 2**64)", ["'h'"]),
    ("om.pin_path = 5", "setattr(om, 'pin_path', 5)", ["'h'"]),
    ("om.write_initial_value(-1, b'x')", "om.write_initial_value(-1, b'x')", ["'h'"]),
    ("om.reuse_fd(None)", "om.reuse_fd(None)", ["'h'"]),
    ("om.reuse_fd(-1)", "om.reuse_fd(-1)", ["'h'"]),
    ("om.reuse_fd(MISSING)", "om.reuse_fd(MISSING)", ["'h'", "MISSING"]),
    ("om.reuse(5)", "om.reuse(5)", ["'h'"]),
    ("Object.open(btf_custom_path=5)", "pybpf.Object.open(P['path'], btf_custom_path=5)",
     ["btf_custom_path"]),
    ("Object.open(name=NUL)", "pybpf.Object.open(P['path'], name='a\\0b')", ["name"]),
    ("Object.open(upgrade_from=5)", "pybpf.Object.open(P['path'], upgrade_from=5)",
     ["upgrade_from"]),
]

PROG_CASES = [
    *[(f"op.set_type({v})", f"op.set_type({v})", ["'mark'"])
      for v in ("None", "'nosuch'", BIG, "-1", "1.5", "''")],
    *[(f"op.set_expected_attach_type({v})", f"op.set_expected_attach_type({v})", ["'mark'"])
      for v in ("None", "'nosuch'", BIG, "-1", "1.5")],
    *[(f"op.log_level = {v}", f"setattr(op, 'log_level', {v})", ["'mark'"])
      for v in ("None", "-1", BIG, "'x'", "1.5", "16")],
    *[(f"op.log_size = {v}", f"setattr(op, 'log_size', {v})", ["'mark'"])
      for v in ("None", "0", BIG, "'x'", NAN)],
    ("op.set_attach_target(None)", "op.set_attach_target(None)", ["'mark'"]),
    ("op.set_type after load", "prog.set_type('xdp')", ["'mark'"]),
    ("op.fd before load", "op.fd", ["'mark'"]),
    ("cprog.fd (closed)", "cprog.fd", ["'mark'"]),
    ("cprog.attach() (closed)", "cprog.attach()", ["'mark'"]),
    *[(f"prog.attach_tracepoint({args})", f"prog.attach_tracepoint({args})", ["'mark'"])
      for args in ("None, 'x'", "'syscalls', None", "'sys\\0calls', 'x'", "'', ''",
                   "'syscalls', 'sys_enter_getppid', cookie=-1",
                   "'syscalls', 'sys_enter_getppid', cookie=2**64",
                   "'syscalls', 'sys_enter_getppid', cookie='x'",
                   "'nosuch', 'nosuch'")],
    *[(f"prog.attach_raw_tracepoint({v})", f"prog.attach_raw_tracepoint({v})", ["'mark'"])
      for v in ("None", "5", "'a\\0b'")],
    *[(f"prog.attach_uprobe({args})", f"prog.attach_uprobe({args})", ["'mark'"])
      for args in ("None, 'main'", "MISSING, 'main'", "TMP, 'main'", "'/bin/true', 5",
                   "'/bin/true', 'main', pid='x'", "'/bin/true', 'main', pid=-2",
                   "'/bin/true', 'main', pid=2**64", "'/bin/true', 'nosuchsym'",
                   "'/bin/true', offset=-1", "'/bin/true', offset=2**64",
                   "'/bin/true', 'main', cookie=-1", "'/bin/t\\0rue', 'main'")],
    *[(f"prog.attach_usdt({args})", f"prog.attach_usdt({args})", ["'mark'"])
      for args in ("None, 'p', 'n'", "MISSING, 'p', 'n'", "'/bin/true', None, 'n'",
                   "'/bin/true', 'p', 'n', pid=-2")],
    *[(f"prog.attach_xdp({args})", f"prog.attach_xdp({args})", ["'mark'"])
      for args in ("None", "'nosuchif0'", "ifindex=-1", "ifindex=2**64", "ifindex='x'",
                   "5.5", "'lo', mode='nosuch'", "'l\\0o'")],
    *[(f"prog.attach_tc({args})", f"prog.attach_tc({args})", ["'mark'"])
      for args in ("None", "'nosuchif0'", "'lo', direction='sideways'", "ifindex=-1",
                   "'lo', priority=-1", "'lo', priority=2**64", "'lo', handle='x'")],
    *[(f"prog.attach_tcx({args})", f"prog.attach_tcx({args})", ["'mark'"])
      for args in ("None", "'nosuchif0'", "'lo', 'sideways'", "-1", "2**64")],
    *[(f"prog.attach_netfilter({args})", f"prog.attach_netfilter({args})", ["'mark'"])
      for args in ("'nosuch'", "'ipv4', 'nosuch'", "'ipv4', 'local_in', priority=2**64",
                   "None", "'ipv4', 'local_in', priority='x'")],
    *[(f"prog.attach_cgroup({v})", f"prog.attach_cgroup({v})", ["'mark'"])
      for v in ("MISSING", "-1", BIG, "1.5", "'a\\0b'")],
    *[(f"prog.attach_netns({v})", f"prog.attach_netns({v})", ["'mark'"])
      for v in ("MISSING", "None", "-1", "1.5", "TMP")],
    *[(f"prog.attach_socket({v})", f"prog.attach_socket({v})", ["'mark'"])
      for v in ("None", "-1", BIG, "'x'", "1.5")],
    *[(f"prog.attach_perf_event({args})", f"prog.attach_perf_event({args})", ["'mark'"])
      for args in ("-1", BIG, "'x'", "frequency=-1", "frequency='x'")],
    *[(f"prog.attach_kprobe_multi({v})", f"prog.attach_kprobe_multi({v})", ["'mark'"])
      for v in ("None", "5", "[]", "['a\\0b']")],
    *[(f"prog.attach_uprobe_multi({args})", f"prog.attach_uprobe_multi({args})", ["'mark'"])
      for args in ("None, 'x'", "MISSING, 'x'", "'/bin/true', None", "'/bin/true', 5")],
    *[(f"prog.attach_iter({args})", f"prog.attach_iter({args})", ["'mark'"])
      for args in ("map=5", "cgroup=-1", "cgroup=MISSING")],
    ("prog.attach_sockmap(None)", "prog.attach_sockmap(None)", ["'mark'"]),
    ("prog.attach_freplace(None, 'f')", "prog.attach_freplace(None, 'f')", ["'mark'"]),
    ("prog.attach_freplace(-1, 'f')", "prog.attach_freplace(-1, 'f')", ["'mark'"]),
    ("prog.attach_ksyscall(None)", "prog.attach_ksyscall(None)", ["'mark'"]),
    ("prog.attach(nosuch=1)", "prog.attach(nosuch=1)", ["'mark'"]),
    *[(f"prog.test_run({args})", f"prog.test_run({args})", ["'mark'"])
      for args in ("'x'", "None", "b'x', repeat=-1", "b'x', repeat=2**64", "b'x', repeat='x'",
                   "b'x', data_out_size=-1", "b'x', data_out_size=2**64", "ctx='x'")],
    ("prog.pin(None)", "prog.pin(None)", ["'mark'"]),
    ("prog.pin(NUL)", "prog.pin('/sys/fs/bpf/a\\0b')", ["'mark'"]),
    ("prog.pin(TMP)", "prog.pin(TMP + '/x')", ["'mark'"]),
    ("prog.unpin(None)", "prog.unpin(None)", ["'mark'"]),
    ("prog.unpin(MISSING)", "prog.unpin(MISSING)", ["'mark'", "MISSING"]),
]

EVENT_CASES = [
    ("RingBuffer(None)", "pybpf.RingBuffer(None)", ["None", "ring"]),
    ("RingBuffer(h)", "pybpf.RingBuffer(h)", ["'h'"]),
    *[(f"RingBuffer(rbm, max_batch_bytes={v})",
       f"pybpf.RingBuffer(rbm, max_batch_bytes={v})", ["'rb'"])
      for v in ("-1", "0", "'x'", BIG, NAN, "1.5")],
    *[(f"rb.poll({v})", f"rb.poll({v})", ["'rb'", "ring buffer"])
      for v in ("'x'", NAN, "b''", "[]")],
    *[(f"rb.read({v})", f"rb.read({v})", ["'rb'", "ring buffer"]) for v in ("'x'", NAN)],
    ("rb.add(None)", "rb.add(None)", ["None", "ring"]),
    ("rb.add(h)", "rb.add(h)", ["'h'"]),
    ("rb.add(rbm) twice", "rb.add(rbm)", ["'rb'"]),
    ("closed rb.poll", "crb.poll(0)", ["ring buffer"]),
    ("PerfBuffer(None)", "pybpf.PerfBuffer(None)", ["None", "perf"]),
    ("PerfBuffer(h)", "pybpf.PerfBuffer(h)", ["'h'"]),
    *[(f"PerfBuffer(pbm, pages={v})", f"pybpf.PerfBuffer(pbm, pages={v})", ["'pb'"])
      for v in ("3", "0", "-1", "'x'", BIG, "None", "1.5")],
    *[(f"PerfBuffer(pbm, max_batch_bytes={v})", f"pybpf.PerfBuffer(pbm, max_batch_bytes={v})",
       ["'pb'"]) for v in ("-1", "'x'", NAN)],
    ("UserRingBuffer(None)", "pybpf.UserRingBuffer(None)", ["None", "user ring"]),
    ("UserRingBuffer(h)", "pybpf.UserRingBuffer(h)", ["'h'"]),
    *[(f"urb.submit({v})", f"urb.submit({v})", ["'urb'"])
      for v in ("None", "b''", "'x'", "5", "b'x' * (1 << 20)")],
    *[(f"urb.submit(b'x'*8, timeout={v})", f"urb.submit(b'x' * 8, timeout={v})", ["'urb'"])
      for v in ("'x'", NAN, "''")],
    *[(f"urb.reserve({v})", f"urb.reserve({v}).__enter__()", ["'urb'"])
      for v in ("-1", "0", BIG, "'x'", "None", "1.5")],
    ("closed urb.submit", "curb.submit(b'x' * 8)", ["'urb'"]),
    ("RingBuffer(rbm, decode=5)", "pybpf.RingBuffer(rbm, decode=5)", ["'rb'"]),
    ("RingBuffer(rbm, decode='struct nosuch')", "pybpf.RingBuffer(rbm, decode='struct nosuch')",
     ["nosuch"]),
    ("RingBuffer(rbm, callback=5)", "pybpf.RingBuffer(rbm, callback=5)", ["'rb'"]),
    ("RingBuffer(rbm, drops_map=5)", "pybpf.RingBuffer(rbm, drops_map=5)", ["'rb'"]),
    ("PerfBuffer(pbm, callback=5)", "pybpf.PerfBuffer(pbm, callback=5)", ["'pb'"]),
    ("PerfBuffer(pbm, lost_callback=5)", "pybpf.PerfBuffer(pbm, lost_callback=5)", ["'pb'"]),
    ("UserRingBuffer(urbm, encode=5)", "pybpf.UserRingBuffer(urbm, encode=5)", ["'urb'"]),
    ("UserRingBuffer(urbm, encode='struct nosuch')",
     "pybpf.UserRingBuffer(urbm, encode='struct nosuch')", ["nosuch"]),
    *[(f"urb(encode='struct urec').submit({v})",
       f"pybpf.UserRingBuffer(urbm, encode='struct urec').submit({v})", ["'urb'"])
      for v in ("'x'", "{'idx': -1}", "{'idx': 2**40}", "{'nosuch': 1}", "{'idx': BadIndex()}")],
    ("odd[1]['nosuch']", "odd.__setitem__(1, {}) or odd[1]['nosuch']", ["nosuch"]),
    ("RecordBatch['x']", "pybpf.RecordBatch.empty()['x']", ["RecordBatch"]),
    ("RecordBatch[BadIndex()]", "pybpf.RecordBatch.empty()[BadIndex()]", ["RecordBatch"]),
]

MORE_CASES = [
    ("link.pin(None)", "link.pin(None)", ["'mark'"]),
    ("link.pin(NUL)", "link.pin('/sys/fs/bpf/a\\0b')", ["'mark'"]),
    ("link.pin(TMP)", "link.pin(TMP + '/x')", ["'mark'"]),
    ("link.update_program(None)", "link.update_program(None)", ["'mark'"]),
    ("link.update_program(5)", "link.update_program(5)", ["'mark'"]),
    ("link.update_prog_fd(-1, 'x')", "link.update_prog_fd(-1, 'x')", ["'mark'"]),
    ("link.update_prog_fd(2**64, 'x')", "link.update_prog_fd(2**64, 'x')", ["'mark'"]),
    ("link.update_prog_fd('x', 'x')", "link.update_prog_fd('x', 'x')", ["'mark'"]),
    ("detached link.info()", "dlink.info()", ["'mark'"]),
    ("detached link.pin", "dlink.pin('/sys/fs/bpf/x')", ["'mark'"]),
    ("h.update(flags=-1)", "h.update({1: 1}, flags=-1)", ["'h'"]),
    ("h.update_batch(flags=-1)", "h.update_batch([(1, 1)], flags=-1)", ["'h'"]),
    ("h.update_batch(5)", "h.update_batch(5)", ["'h'"]),
    ("h.update_batch([5])", "h.update_batch([5])", ["'h'"]),
    ("h.delete_batch(5)", "h.delete_batch(5)", ["'h'"]),
    ("h.update(1, 2, 3)", "h.update(1, 2, 3)", ["'h'"]),
    ("h.update(only_if_absent) present", "h.update({7: 1}, only_if_absent=True)", ["'h'"]),
    ("h.update(only_if_present) absent", "h.update({99: 1}, only_if_present=True)", ["'h'"]),
    ("h.setdefault(None, 1)", "h.setdefault(None, 1)", ["'h'"]),
    ("h.set(1, 2, x=3)", "h.set(1, 2, x=3)", ["'h'"]),
    ("h.pop(12345)", "h.pop(12345)", ["'h'"]),
    ("del h[12345]", "h.__delitem__(12345)", ["'h'"]),
    ("h[12345]", "h[12345]", ["'h'"]),
    ("h.lookup_and_delete(b'')", "h.lookup_and_delete(b'')", ["'h'"]),
    ("raw Map.update NOEXIST present",
     "pybpf.Map.update(h, (7).to_bytes(4, 'little'), bytes(8), 1)", ["'h'"]),
    ("Map.open_pinned(program pin)", "pybpf.Map.open_pinned(PROGPIN)", ["PROGPIN"]),
    ("Link.open_pinned(map pin)", "pybpf.Link.open_pinned(MAPPIN)", ["MAPPIN"]),
    ("om.set_types(value=None, key=5)", "om.set_types(key=5)", ["'h'"]),
    ("om.type = None", "setattr(om, 'type', None)", ["'h'"]),
    ("om.autocreate after load", "setattr(a.maps['h'], 'autocreate', False)", ["'h'"]),
    ("o.select_programs('nosuch')", "o.select_programs('nosuch')", ["nosuch"]),
    ("o.select_programs(5)", "o.select_programs(5)", ["5", "integrity"]),
    ("a.libbpf_map('nosuch')", "a.libbpf_map('nosuch')", ["nosuch"]),
    ("a.attach_struct_ops('nosuch')", "a.attach_struct_ops('nosuch')", ["nosuch"]),
    ("a.attach_struct_ops('h')", "a.attach_struct_ops('h')", ["'h'"]),
    ("a.upgrade(None)", "a.upgrade(None)", ["integrity", "None"]),
    ("a.upgrade(MISSING)", "a.upgrade(MISSING)", ["MISSING"]),
    ("a.take_over(5)", "a.take_over(5)", ["integrity", "5"]),
    ("a.close_with(5)", "a.close_with(5)", ["integrity", "5"]),
    ("o.load() twice", "a.load()", ["integrity"]),
    ("Object.open(TMP)", "pybpf.Object.open(TMP)", ["TMP"]),
    ("Object.open(b'')", "pybpf.Object.open(b'')", ["empty", "ELF", "object"]),
    ("Object.open(bytes 64)", "pybpf.Object.open(bytes(64))", ["ELF", "object"]),
    ("Object.open(path, pin_root_path=TMP)", "pybpf.Object.open(P['path'], pin_root_path=TMP)",
     ["TMP"]),
    ("Object.open(path, pin_root_path=5)", "pybpf.Object.open(P['path'], pin_root_path=5)",
     ["pin_root_path"]),
    ("pybpf.load(MISSING)", "pybpf.load(MISSING)", ["MISSING"]),
    ("probe_path(None)", "pybpf.probe_path(None)", ["None"]),
    ("probe_path('nosuch')", "pybpf.probe_path('nosuch')", ["nosuch"]),
    ("resolve_uprobe(None, 'x')", "pybpf.resolve_uprobe(None, 'x')", ["None", "binary"]),
    ("resolve_uprobe(MISSING, 'x')", "pybpf.resolve_uprobe(MISSING, 'x')", ["MISSING"]),
    ("resolve_uprobe('/bin/true', 'nosuchsym')", "pybpf.resolve_uprobe('/bin/true', 'nosuchsym')",
     ["nosuchsym"]),
    ("a.btf['nosuch']", "a.btf['nosuch']", ["nosuch"]),
    ("a.sections['nosuch']", "a.sections['nosuch']", ["nosuch"]),
    ("a.bss.set_type('hits', 5)", "a.bss.set_type('hits', 5)", ["hits"]),
    ("a.set_rodata after load", "a.set_rodata('target_pid', 1)", ["target_pid", "integrity"]),
]

FAMILIES = {"maps": MAP_CASES, "open": OPEN_CASES, "programs": PROG_CASES,
            "events": EVENT_CASES, "more": MORE_CASES}

CHILD = r"""
import pybpf, _integrity_obj as io
from pybpf import BPFError
a = io.load(P["path"], attach=False)
h, arr, lpm, odd, tstore = (a.maps[n] for n in ("h", "arr", "lpm", "odd", "tstore"))
rbm, pbm, urbm = a.maps["rb"], a.maps["pb"], a.maps["urb"]
prog = a.programs["mark"]
o = pybpf.Object.open(P["path"])
op, om = o.programs["mark"], o.maps["h"]
c = io.load(P["path"], attach=False)
ch, cprog = c.maps["h"], c.programs["mark"]
crb = pybpf.RingBuffer(c.maps["rb"])
curb = pybpf.UserRingBuffer(c.maps["urb"])
c.close()
h[7] = 7
dlink = prog.attach()
dlink.detach()
link = prog.attach()
PROGPIN, MAPPIN = P["pins"] + "/prog", P["pins"] + "/map"
prog.pin(PROGPIN)
h.pin(MAPPIN)
rb = pybpf.RingBuffer(rbm)
urb = pybpf.UserRingBuffer(urbm)
MISSING, TMP = P["missing"], P["tmp"]
class BadIndex:
    def __index__(self): raise RuntimeError("boom")
    def __int__(self): raise RuntimeError("boom")
    def __hash__(self): return 1
class BadInt:
    def __int__(self): raise RuntimeError("boom")
    def __hash__(self): return 2
class BadBytes:
    def __bytes__(self): raise RuntimeError("boom")
res = {}
for label, expr, _names in P["cases"]:
    try:
        eval(expr)
        res[label] = ["no error", False, ""]
    except BaseException as e:
        res[label] = [type(e).__name__, isinstance(e, BPFError), str(e)[:300]]
emit(res)
"""


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_bad_arguments_raise_pybpf_errors_naming_the_object(bpf_obj, tmp_path, family):
    cases = FAMILIES[family]
    missing = str(tmp_path / f"missing-{os.getpid()}")
    pins = f"/sys/fs/bpf/pybpf-errors-{family}-{os.getpid()}"
    os.makedirs(pins, exist_ok=True)
    try:
        v = run_child(CHILD, timeout=120, what=f"bad arguments: {family}",
                      params={"path": bpf_obj("integrity"), "cases": cases, "missing": missing,
                              "tmp": str(tmp_path), "pins": pins})
    finally:
        for name in os.listdir(pins):
            os.unlink(os.path.join(pins, name))
        os.rmdir(pins)
    subst = {"MISSING": missing, "TMP": str(tmp_path), "PROGPIN": pins + "/prog",
             "MAPPIN": pins + "/map"}
    bad = {}
    for label, _expr, names in cases:
        etype, is_bpf, msg = v[label]
        want = [subst.get(n, n) for n in names]
        if not is_bpf:
            bad[label] = f"not a pybpf error: {etype}: {msg}"
        elif not any(n in msg for n in want):
            bad[label] = f"{etype}: message names none of {want}: {msg}"
    assert bad == {}, "\n".join(f"{k}: {r}" for k, r in bad.items())


KEY_CAUSE = r"""
import pybpf, _integrity_obj as io
a = io.load(P["path"], attach=False)
h = a.maps["h"]
class Boom:
    def __init__(self, exc): self.exc = exc
    def __index__(self): raise self.exc
    def __hash__(self): return 1
res = {}
for label, exc in (("runtime", RuntimeError("boom")), ("kbint", KeyboardInterrupt()),
                   ("sysexit", SystemExit(3)), ("memory", MemoryError())):
    try:
        h[Boom(exc)]
        res[label] = "no error"
    except BaseException as e:
        res[label] = [type(e).__name__, isinstance(e, pybpf.MapTypeError),
                      e.__cause__ is exc, e is exc, str(e)]
emit(res)
"""


def test_a_key_whose_conversion_raises_is_named_and_chained(bpf_obj):
    v = run_child(KEY_CAUSE, timeout=30, what="key conversion raises",
                  params={"path": bpf_obj("integrity")})
    etype, is_map_type, chained, same, msg = v["runtime"]
    assert is_map_type and chained and "'h'" in msg and "boom" in msg, v["runtime"]
    for label in ("kbint", "sysexit", "memory"):
        assert v[label][3], f"{label} must propagate untouched: {v[label]}"


ARRAY_END = r"""
import pybpf, _integrity_obj as io
a = io.load(P["path"], attach=False)
arr = a.maps["arr"]
res = {}
for label, fn in (("get", lambda: arr[64]), ("set", lambda: arr.__setitem__(64, 1)),
                  ("pop", lambda: arr.pop(64))):
    try:
        fn()
        res[label] = "no error"
    except BaseException as e:
        res[label] = [isinstance(e, KeyError), isinstance(e, pybpf.MapError),
                      getattr(e, "map", None), str(e)]
emit(res)
"""


def test_array_index_past_the_end_is_a_key_error_naming_map_index_and_size(bpf_obj):
    v = run_child(ARRAY_END, timeout=30, what="array past the end",
                  params={"path": bpf_obj("integrity")})
    for label in ("get", "set"):
        is_key, is_map, name, msg = v[label]
        assert is_key and is_map and name == "arr", (label, v[label])
        assert "'arr'" in msg and "64" in msg and "max_entries" in msg, (label, msg)


def _cli(*argv: str, cwd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pybpf", *argv], capture_output=True,
                          text=True, timeout=60, cwd=cwd)


CLI_CASES = [
    (["map", "dump", "-1"], "-1"), (["map", "dump", "nosuch-map-name"], "nosuch-map-name"),
    (["map", "dump", "18446744073709551616"], "18446744073709551616"),
    (["prog", "show", "-5"], "-5"), (["prog", "show", "x"], "x"),
    (["map", "show", "MISSING"], "MISSING"), (["map", "show", "TMP"], "TMP"),
    (["prog", "show", "4294967296"], "4294967296"),
    (["run", "MISSING"], "MISSING"), (["run", "TMP"], "TMP"),
    (["inspect", "MISSING"], "MISSING"), (["inspect", "/dev/null"], "/dev/null"),
    (["gen", "MISSING"], "MISSING"), (["build", "MISSING"], "MISSING"),
    (["firewall", "show", "nosuchif0"], "nosuchif0"),
    (["firewall", "attach", "nosuchif0"], "nosuchif0"),
    (["firewall", "add", "nosuchif0", "10.0.0.0/33"], "nosuchif0"),
    (["run", "/dev/null"], "/dev/null"), (["gen", "TMP"], "TMP"),
    (["agent", "--check", "MISSING"], "MISSING"),
    (["run", "PROBE", "--set", "nosuch=1", "--duration", "0.1"], "nosuch"),
    (["audit", "--output", "TMP", "--", "true"], "TMP"),
]


@pytest.mark.parametrize("argv, named", CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_cli_bad_arguments_one_line_no_traceback(tmp_path, argv, named):
    missing = str(tmp_path / "missing.bpf.o")
    subst = {"MISSING": missing, "TMP": str(tmp_path), "PROBE": pybpf.probe_path("execsnoop")}
    argv = [subst.get(a, a) for a in argv]
    r = _cli(*argv, cwd=str(tmp_path))
    assert r.returncode > 0, (argv, r.returncode, r.stdout[-300:])
    assert "Traceback" not in r.stderr, r.stderr
    assert subst.get(named, named) in r.stderr, r.stderr
