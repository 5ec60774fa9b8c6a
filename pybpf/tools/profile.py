"""profile: cpu-clock sampling of user and kernel stacks, symbolized, folded for flame graphs.

    with Profile(pid=1234, frequency=499) as prof:
        time.sleep(5)
        for line in prof.folded():
            print(line)            # "comm;main;work;sys_read_[k] 17"

A ``perf_event`` program runs on a software cpu-clock event on every online
CPU and counts (pid, comm, user stack id, kernel stack id) in a hash map; the
stacks are in a ``BPF_MAP_TYPE_STACK_TRACE`` map. Kernel addresses are
symbolized with /proc/kallsyms, user addresses with the ELF symbol tables
(pyelftools) of the files mapped in /proc/PID/maps, read while the process is
alive. CLI: ``pybpf profile [--pid N] [--frequency HZ] [--duration S]
[--user-only|--kernel-only] [--folded] [--json] [--pprof OUT.pb.gz]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..symbolize import KernelSymbols, ProcessSymbols, kernel_symbols
from ._common import ProbeSession, decode, pid_arg, pid_filter, raw_items, read_percpu_u64, seconds

__all__ = ["Sample", "Profile", "main"]


@dataclass
class Sample:
    """Stacks seen ``count`` times; frames innermost first, as symbol names."""

    pid: int
    comm: str
    count: int
    user_stack: list[str] = field(default_factory=list)
    kernel_stack: list[str] = field(default_factory=list)
    user_addrs: list[int] = field(default_factory=list)
    kernel_addrs: list[int] = field(default_factory=list)

    def folded(self) -> str:
        """``comm;outer;...;inner count``; kernel frames end in ``_[k]``."""
        frames = [self.comm.replace(";", "_") or "?"]
        frames += [f.replace(";", "_") for f in reversed(self.user_stack)]
        frames += [f"{f.replace(';', '_')}_[k]" for f in reversed(self.kernel_stack)]
        return f"{';'.join(frames)} {self.count}"


class Profile(ProbeSession):
    """Sample stacks on every CPU at ``frequency`` Hz; read :meth:`samples` or :meth:`folded`."""

    probe = "profile"
    event_struct = ""

    def __init__(self, *, pid: int | None = None, frequency: int = 99,
                 user_only: bool = False, kernel_only: bool = False,
                 include_idle: bool = False) -> None:
        if user_only and kernel_only:
            raise ValueError("user_only and kernel_only exclude each other")
        if not 0 < frequency <= 100_000:
            raise ValueError(f"frequency must be 1-100000 Hz, got {frequency}")
        self.frequency = frequency
        rodata: dict[str, int | bytes] = {"user_only": int(user_only),
                                          "kernel_only": int(kernel_only),
                                          "include_idle": int(include_idle)}
        if pid is not None:
            rodata["targ_pid"] = pid_filter(pid)
        self._ksyms: KernelSymbols | None = None
        self._psyms: dict[int, ProcessSymbols] = {}
        super().__init__(rodata=rodata)

    def attach(self) -> None:
        self.obj.programs["profile_sample"].attach_perf_event(frequency=self.frequency)

    def stop(self) -> None:
        """Stop sampling (detach from the perf events); the counts stay readable."""
        for link in self.obj.links:
            link.detach()

    @property
    def missed(self) -> int:
        """Samples whose stack could not be stored (stack map full or hash collision)."""
        return read_percpu_u64(self.obj.maps["missed"])

    def _stack(self, stack_id: int) -> list[int]:
        if stack_id < 0:
            return []
        raw = self.obj.maps["stacks"].lookup(stack_id.to_bytes(4, "little"))
        if raw is None:
            return []
        out = []
        for i in range(0, len(raw), 8):
            a = int.from_bytes(raw[i:i + 8], "little")
            if not a:
                break
            out.append(a)
        return out

    def _symbolize_kernel(self, addrs: Iterable[int]) -> list[str]:
        if self._ksyms is None:
            self._ksyms = kernel_symbols()
        return [self._ksyms.lookup(a) or f"{a:#x}" for a in addrs]

    def _symbolize_user(self, pid: int, addrs: Iterable[int]) -> list[str]:
        ps = self._psyms.get(pid)
        if ps is None:
            ps = self._psyms[pid] = ProcessSymbols(pid)
        return [ps.lookup(a) or "[unknown]" for a in addrs]

    def samples(self) -> list[Sample]:
        """Every (process, stack pair) sampled so far, symbolized, most frequent first."""
        btf = self.obj.btf
        key_t = btf.find("key_t")
        if key_t is None:
            raise LookupError("profile.bpf.o has no struct key_t in its BTF")
        out = []
        for k, v in raw_items(self.obj.maps["counts"]):
            key = decode(btf, key_t.id, k)
            ua, ka = self._stack(key["user_stack_id"]), self._stack(key["kern_stack_id"])
            out.append(Sample(pid=key["pid"], comm=key["comm"],
                              count=int.from_bytes(v[:8], "little"),
                              user_stack=self._symbolize_user(key["pid"], ua),
                              kernel_stack=self._symbolize_kernel(ka),
                              user_addrs=ua, kernel_addrs=ka))
        out.sort(key=lambda s: -s.count)
        return out

    def folded(self) -> list[str]:
        """Folded stacks (flame-graph input), one line per distinct stack."""
        merged: dict[str, int] = {}
        for s in self.samples():
            stack, _, n = s.folded().rpartition(" ")
            merged[stack] = merged.get(stack, 0) + int(n)
        return [f"{k} {v}" for k, v in sorted(merged.items(), key=lambda kv: -kv[1])]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="pybpf profile", description="Sample stack traces on every CPU (cpu-clock).",
        epilog="examples:\n  pybpf profile --duration 10 --folded > out.folded\n"
               "  pybpf profile --pid 1234 --frequency 999 --json\n"
               "  pybpf profile --duration 30 --pprof cpu.pb.gz   # go tool pprof, Pyroscope",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pid", type=pid_arg, help="only this process id")
    ap.add_argument("--frequency", "-F", type=int, default=99, help="samples per second per CPU")
    ap.add_argument("--duration", type=seconds, default=5.0, help="seconds to sample")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--user-only", action="store_true", help="user stacks only")
    g.add_argument("--kernel-only", action="store_true", help="kernel stacks only")
    ap.add_argument("--folded", action="store_true", help="folded output (flame-graph input)")
    ap.add_argument("--json", action="store_true", help="samples as JSON lines")
    ap.add_argument("--pprof", metavar="OUT.pb.gz",
                    help="also write a gzipped pprof profile (go tool pprof, Pyroscope, Parca)")
    args = ap.parse_args(argv)
    try:
        prof = Profile(pid=args.pid, frequency=args.frequency, user_only=args.user_only,
                       kernel_only=args.kernel_only)
    except ValueError as exc:
        print(f"pybpf profile: {exc}", file=sys.stderr)
        return 2
    with prof:
        print(f"Sampling at {args.frequency} Hz for {args.duration:g} s...",
              file=sys.stderr, flush=True)
        started, t0 = time.time_ns(), time.monotonic_ns()
        try:
            time.sleep(args.duration)
        except KeyboardInterrupt:
            pass
        prof.stop()
        if args.pprof:
            from ..export.pprof import write_pprof

            write_pprof(args.pprof, prof.samples(), frequency=args.frequency,
                        duration_ns=time.monotonic_ns() - t0, time_ns=started)
        if args.folded:
            for line in prof.folded():
                print(line)
        elif args.json:
            for s in prof.samples():
                d: dict[str, Any] = {k: v for k, v in s.__dict__.items()
                                     if not k.endswith("_addrs")}
                print(json.dumps(d))
        else:
            for s in prof.samples():
                for frame in s.kernel_stack:
                    print(f"    {frame}")
                if s.kernel_stack and s.user_stack:
                    print("    --")
                for frame in s.user_stack:
                    print(f"    {frame}")
                print(f"    -                {s.comm} ({s.pid})\n        {s.count}\n")
        if prof.missed:
            print(f"pybpf profile: {prof.missed} samples without a stored stack",
                  file=sys.stderr)
    return 0
