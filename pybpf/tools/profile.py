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
[--user-only|--kernel-only] [--folded] [--json]``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ._common import ProbeSession, decode, raw_items, read_percpu_u64

__all__ = ["Sample", "Profile", "KernelSymbols", "ProcessSymbols", "main"]


class KernelSymbols:
    """Kernel address -> symbol, from /proc/kallsyms (needs root for real addresses)."""

    def __init__(self, path: str = "/proc/kallsyms") -> None:
        addrs: list[int] = []
        names: list[str] = []
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3 or parts[1] not in "tTwW":
                    continue
                addr = int(parts[0], 16)
                if addr == 0:
                    continue
                name = parts[2] + (f" {parts[3]}" if len(parts) > 3 else "")
                addrs.append(addr)
                names.append(name)
        order = sorted(range(len(addrs)), key=addrs.__getitem__)
        self._addrs = [addrs[i] for i in order]
        self._names = [names[i] for i in order]

    def __len__(self) -> int:
        return len(self._addrs)

    def lookup(self, addr: int) -> str | None:
        """The function containing ``addr`` (nearest symbol below it), or None."""
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0:
            return None
        return self._names[i]


_kernel_symbols: KernelSymbols | None = None


@dataclass
class _ElfSyms:
    addrs: list[int]
    ends: list[int]
    names: list[str]
    loads: list[tuple[int, int, int]]  # (p_offset, p_vaddr, p_filesz) of PT_LOAD segments

    def lookup_offset(self, file_off: int) -> str | None:
        vaddr = None
        for off, va, size in self.loads:
            if off <= file_off < off + max(size, 1):
                vaddr = file_off - off + va
                break
        if vaddr is None:
            return None
        i = bisect.bisect_right(self.addrs, vaddr) - 1
        if i < 0 or vaddr >= self.ends[i]:
            return None
        return self.names[i]


_elf_cache: dict[tuple[str, int, int], _ElfSyms | None] = {}


def _load_elf(path: str) -> _ElfSyms | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (path, st.st_dev, st.st_ino)
    if key in _elf_cache:
        return _elf_cache[key]
    result: _ElfSyms | None = None
    try:
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile
    except ImportError:  # pragma: no cover - pyelftools is a dependency
        return None
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            loads = [(seg["p_offset"], seg["p_vaddr"], seg["p_filesz"])
                     for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD"]
            syms: dict[int, tuple[int, str]] = {}
            for secname in (".symtab", ".dynsym"):
                sec = elf.get_section_by_name(secname)
                if sec is None or not hasattr(sec, "iter_symbols"):
                    continue
                for sym in sec.iter_symbols():
                    if sym["st_info"]["type"] not in ("STT_FUNC", "STT_GNU_IFUNC"):
                        continue
                    value, size = sym["st_value"], sym["st_size"]
                    if not value or not sym.name:
                        continue
                    if value not in syms or size > syms[value][0]:
                        syms[value] = (size, sym.name)
            addrs = sorted(syms)
            result = _ElfSyms(addrs=addrs, ends=[a + max(syms[a][0], 1) for a in addrs],
                              names=[syms[a][1] for a in addrs], loads=loads)
    except (OSError, ELFError, ValueError):
        result = None
    _elf_cache[key] = result
    return result


class ProcessSymbols:
    """User address -> symbol for one process (its /proc/PID/maps, read now)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._maps: list[tuple[int, int, int, str]] = []
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    parts = line.split(maxsplit=5)
                    if len(parts) < 6 or "x" not in parts[1]:
                        continue
                    path = parts[5].strip()
                    if not path.startswith("/"):
                        continue
                    start, end = (int(x, 16) for x in parts[0].split("-"))
                    self._maps.append((start, end, int(parts[2], 16), path))
        except OSError:
            pass

    @property
    def alive(self) -> bool:
        return bool(self._maps)

    def lookup(self, addr: int) -> str | None:
        """``symbol`` for ``addr``, ``[file]`` when the file has no symbol there, or None."""
        for start, end, pgoff, path in self._maps:
            if start <= addr < end:
                syms = _load_elf(f"/proc/{self.pid}/root{path}") or _load_elf(path)
                name = syms.lookup_offset(addr - start + pgoff) if syms else None
                return name or f"[{os.path.basename(path)}]"
        return None


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
            rodata["targ_pid"] = pid
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
        global _kernel_symbols
        if self._ksyms is None:
            # /proc/kallsyms is read once per process (kernel modules loaded later
            # show as addresses).
            if _kernel_symbols is None:
                _kernel_symbols = KernelSymbols()
            self._ksyms = _kernel_symbols
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
               "  pybpf profile --pid 1234 --frequency 999 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pid", type=int, help="only this process id")
    ap.add_argument("--frequency", "-F", type=int, default=99, help="samples per second per CPU")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds to sample")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--user-only", action="store_true", help="user stacks only")
    g.add_argument("--kernel-only", action="store_true", help="kernel stacks only")
    ap.add_argument("--folded", action="store_true", help="folded output (flame-graph input)")
    ap.add_argument("--json", action="store_true", help="samples as JSON lines")
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
        try:
            time.sleep(args.duration)
        except KeyboardInterrupt:
            pass
        prof.stop()
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
