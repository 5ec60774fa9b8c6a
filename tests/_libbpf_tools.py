"""pybpf front ends for objects of Debian's libbpf-tools (tests/test_conformance.py).

Each front end does what the C tool's main() does with the same .bpf.o (carved from
the installed binary at test time: :func:`carve`): the same .rodata filters, program
choice and map sizes, the same output format. Run as a script:

    python3 tests/_libbpf_tools.py TOOL OBJECT [ARGS...]

It prints ``READY`` on stderr once attached and its report on stdout at SIGINT (or,
for stream tools, one line per event), as the C tool does.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
import time
from typing import Any

ELF_BPF = 247


def carve(binary: str) -> bytes | None:
    """The BPF object embedded in a libbpf-tools binary (its skeleton keeps the .bpf.o
    in .rodata): the first ELF header for EM_BPF, ET_REL, up to its section headers."""
    try:
        with open(binary, "rb") as f:
            data = f.read()
    except OSError:
        return None
    i = 0
    while True:
        i = data.find(b"\x7fELF\x02\x01", i + 1)
        if i < 0 or len(data) < i + 64:
            return None
        e_type, e_machine = struct.unpack_from("<HH", data, i + 16)
        if e_machine != ELF_BPF or e_type != 1:
            continue
        shoff, = struct.unpack_from("<Q", data, i + 0x28)
        shentsize, shnum = struct.unpack_from("<HH", data, i + 0x3A)
        return data[i:i + shoff + shentsize * shnum]


def _wait_sigint() -> None:
    stop = []
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    print("READY", file=sys.stderr, flush=True)
    while not stop:
        time.sleep(0.05)


def runqlat(path: str, pid: int) -> None:
    import pybpf
    from pybpf.histogram import format_log2

    obj = pybpf.Object.open(path)
    obj.rodata.targ_tgid = pid
    obj.choose_alternatives()          # C: tp_btf if probe_tp_btf(), else raw_tp
    obj.load()
    obj.attach()
    _wait_sigint()
    print()
    for _key, hist in obj.maps["hists"].items():
        print(format_log2(list(hist.slots), "usecs"))
    obj.close()


def funclatency(path: str, pid: int, spec: str) -> None:
    import pybpf
    from pybpf.histogram import format_log2

    lib, _, func = spec.partition(":")
    obj = pybpf.Object.open(path)
    obj.rodata.targ_tgid = pid
    obj.rodata.units = 0               # nsec
    obj.load()
    progs = obj.programs
    # C: "c:func" with -p resolves libc in that process; so does pybpf's resolver
    progs["dummy_kprobe"].attach_uprobe(lib, func, pid=pid, retprobe=False)
    progs["dummy_kretprobe"].attach_uprobe(lib, func, pid=pid, retprobe=True)
    print(f"Tracing {spec}.  Hit Ctrl-C to exit")
    _wait_sigint()
    print()
    print(format_log2(list(obj.bss.hist), "nsec"))
    obj.close()


def syscount(path: str, pid: int) -> None:
    import pybpf
    from pybpf.names import syscall_name

    obj = pybpf.Object.open(path)
    obj.rodata.filter_pid = pid
    obj.load()
    obj.attach()
    _wait_sigint()
    rows = sorted(((v.count, k) for k, v in obj.maps["data"].items()), reverse=True)[:10]
    print(f"{'SYSCALL':<22} {'COUNT':>8}")
    for count, nr in rows:
        print(f"{syscall_name(nr):<22} {count:>8}")
    obj.close()


def execsnoop(path: str, uid: int) -> None:
    import pybpf

    obj = pybpf.Object.open(path)
    obj.rodata.targ_uid = uid          # -1 ((uid_t)-1): every user
    obj.load()
    btf = obj.btf
    from pybpf.types import codec_for, plain

    codec = codec_for(btf, btf.find("event").id)
    args_off = btf.find("event").members[-1].offset // 8  # char args[]: bit offset

    def show(data: bytes) -> None:
        raw = bytes(data) + bytes(max(0, codec.size - len(data)))
        ev = plain(codec.decode(raw, 0))
        args = raw[args_off:args_off + ev["args_size"]].rstrip(b"\0").split(b"\0")
        print(f"{ev['comm']:<16} {ev['pid']:<6} {ev['ppid']:<6} {ev['retval']:>3} "
              f"{' '.join(a.decode(errors='replace') for a in args)}", flush=True)

    pb = pybpf.PerfBuffer(obj.maps["events"], callback=show)
    obj.attach()
    print(f"{'PCOMM':<16} {'PID':<6} {'PPID':<6} {'RET':>3} ARGS", flush=True)
    stop: list[int] = []
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    print("READY", file=sys.stderr, flush=True)
    while not stop:
        pb.poll(0.05)
    pb.consume()
    obj.close()


MOUNT_EVENT = struct.Struct("<QQIIIi16s8s4096s4096s512sI")


def mountsnoop(path: str) -> None:
    import pybpf

    obj = pybpf.Object.open(path)
    obj.load()
    obj.attach()

    def show(data: bytes) -> None:
        (_delta, flags, pid, tid, mnt_ns, ret, comm, fs, src, dest, _data,
         op) = MOUNT_EVENT.unpack_from(bytes(data).ljust(MOUNT_EVENT.size, b"\0"))

        def s(b: bytes) -> str:
            return b.split(b"\0", 1)[0].decode(errors="replace")

        call = (f'mount("{s(src)}", "{s(dest)}", "{s(fs)}", {flags:#x}, "") = {ret}' if op == 0
                else f'umount("{s(dest)}", {flags:#x}) = {ret}')
        print(f"{s(comm):<16} {pid:<7} {tid:<7} {mnt_ns:<11} {call}", flush=True)

    rb = pybpf.RingBuffer(obj.maps["events"], callback=show)
    print(f"{'COMM':<16} {'PID':<7} {'TID':<7} {'MNT_NS':<11} CALL", flush=True)
    stop: list[int] = []
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    print("READY", file=sys.stderr, flush=True)
    while not stop:
        rb.poll(0.05)
    rb.consume()
    obj.close()


def offcputime(path: str, pid: int) -> None:
    import pybpf

    obj = pybpf.Object.open(path)
    obj.rodata.targ_tgid = pid
    obj.maps["stackmap"].value_size = 127 * 8   # C: perf_max_stack_depth * sizeof(u64)
    obj.maps["stackmap"].max_entries = 1024     # C: stack_storage_size
    obj.load()
    obj.attach()
    _wait_sigint()
    stacks = obj.maps["stackmap"]
    for key, val in obj.maps["info"].items():
        if key.kern_stack_id >= 0:
            for name in stacks.symbolize(key.kern_stack_id, names_only=True):
                print(f"    {name}")
        print(f"    {'-':<16} {val.comm.str if hasattr(val.comm, 'str') else val.comm} "
              f"({key.pid})")
        print(f"        {val.delta}\n")
    obj.close()


def _perf_stream(obj: Any, header: str, show: Any) -> None:
    """Read the object's ``events`` perf buffer until SIGINT (after attaching)."""
    import pybpf

    pb = pybpf.PerfBuffer(obj.maps["events"], callback=show)
    obj.attach()
    print(header, flush=True)
    stop: list[int] = []
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    print("READY", file=sys.stderr, flush=True)
    while not stop:
        pb.poll(0.05)
    pb.consume()
    obj.close()


def _str(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode(errors="replace")


# opensnoop.h: the event struct is not in the object's BTF (only the header has it)
OPEN_EVENT = struct.Struct("<QIIii16x16s255s")  # (callers[2] unused)


def opensnoop(path: str, pid: int) -> None:
    import pybpf

    obj = pybpf.Object.open(path)
    obj.rodata.targ_tgid = pid
    obj.load()

    def show(data: bytes) -> None:
        _ts, epid, _uid, ret, _flags, comm, fname = OPEN_EVENT.unpack_from(
            bytes(data).ljust(OPEN_EVENT.size, b"\0"))
        fd, err = (ret, 0) if ret >= 0 else (-1, -ret)
        print(f"{epid:<6} {_str(comm):<16} {fd:>3} {err:>3} {_str(fname)}", flush=True)

    _perf_stream(obj, f"{'PID':<6} {'COMM':<16} {'FD':>3} {'ERR':>3} PATH", show)


SIG_EVENT = struct.Struct("<IIii16s")


def sigsnoop(path: str, pid: int, sig: int) -> None:
    import pybpf
    from pybpf.names import signal_name

    obj = pybpf.Object.open(path)
    obj.select_programs(["sig_trace"])     # C: without -k, only signal_generate
    obj.rodata.filtered_pid = pid
    obj.rodata.target_signal = sig
    obj.load()

    def show(data: bytes) -> None:
        epid, tpid, esig, ret, comm = SIG_EVENT.unpack_from(bytes(data).ljust(SIG_EVENT.size,
                                                                               b"\0"))
        print(f"{'00:00:00':<8} {epid:<7} {_str(comm):<16} {signal_name(esig):<9} {tpid:<7} "
              f"{ret}", flush=True)

    _perf_stream(obj, f"{'TIME':<8} {'PID':<7} {'COMM':<16} {'SIG':<9} {'TPID':<7} RESULT",
                 show)


READLINE_EVENT = struct.Struct("<I80s")


def bashreadline(path: str) -> None:
    import pybpf

    obj = pybpf.Object.open(path)
    obj.load()
    # SEC("uretprobe/readline") names no binary: C attaches it to bash's readline
    obj.programs["printret"].attach_uprobe("/bin/bash", "readline", retprobe=True)

    def show(data: bytes) -> None:
        pid, line = READLINE_EVENT.unpack_from(bytes(data).ljust(READLINE_EVENT.size, b"\0"))
        print(f"{'00:00:00':<9} {pid:<7} {_str(line)}", flush=True)

    obj.programs["printret"].autoattach = False   # attached above
    _perf_stream(obj, f"{'TIME':<9} {'PID':<7} {'COMMAND'}", show)


TOOLS: dict[str, Any] = {"opensnoop": opensnoop, "sigsnoop": sigsnoop,
                         "bashreadline": bashreadline, "runqlat": runqlat,
                         "funclatency": funclatency, "syscount": syscount,
                         "execsnoop": execsnoop, "mountsnoop": mountsnoop,
                         "offcputime": offcputime}


def main(argv: list[str]) -> None:
    tool, path, *rest = argv
    args: list[Any] = [int(a) if a.lstrip("-").isdigit() else a for a in rest]
    TOOLS[tool](path, *args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main(sys.argv[1:])
