"""Addresses to symbol names: kernel via /proc/kallsyms, user space via ELF symbols.

Used by :meth:`pybpf.mapkinds.StackTraceMap.symbolize`. Tables are read once and
cached; a lookup is a binary search. User addresses are mapped to a file and an
offset through ``/proc/PID/maps``, then to the ELF symbol (``.symtab`` and
``.dynsym``, read with pyelftools) containing it.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass

__all__ = ["kernel_symbol", "user_symbol", "KernelSymbols", "ElfSymbols"]


class KernelSymbols:
    """``/proc/kallsyms`` sorted by address (needs root to see real addresses)."""

    def __init__(self, path: str = "/proc/kallsyms") -> None:
        addrs: list[int] = []
        names: list[str] = []
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3 or parts[1] not in "tTwW":
                    continue
                a = int(parts[0], 16)
                if a == 0:
                    continue
                addrs.append(a)
                names.append(parts[2] + (f" [{parts[3].strip('[]')}]" if len(parts) > 3 else ""))
        order = sorted(range(len(addrs)), key=addrs.__getitem__)
        self.addrs = [addrs[i] for i in order]
        self.names = [names[i] for i in order]

    def lookup(self, addr: int) -> str:
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0:
            return f"{addr:#x}"
        return f"{self.names[i]}+{addr - self.addrs[i]:#x}"


_kernel: KernelSymbols | None = None


def kernel_symbol(addr: int) -> str:
    """``"func+0x1c"`` for a kernel address (``"0x..."`` if none)."""
    global _kernel
    if _kernel is None:
        _kernel = KernelSymbols()
    return _kernel.lookup(addr)


@dataclass
class _Sym:
    start: int
    size: int
    name: str


class ElfSymbols:
    """Function symbols of one ELF file (by file virtual address)."""

    def __init__(self, path: str) -> None:
        from elftools.elf.elffile import ELFFile

        syms: dict[int, _Sym] = {}
        self.load_segments: list[tuple[int, int, int]] = []  # (offset, vaddr, filesz)
        with open(path, "rb") as f:
            elf = ELFFile(f)
            self.pie = elf["e_type"] == "ET_DYN"
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_LOAD":
                    self.load_segments.append((seg["p_offset"], seg["p_vaddr"], seg["p_filesz"]))
            for secname in (".symtab", ".dynsym"):
                sec = elf.get_section_by_name(secname)
                if sec is None or not hasattr(sec, "iter_symbols"):
                    continue
                for s in sec.iter_symbols():
                    if s["st_info"]["type"] not in ("STT_FUNC", "STT_GNU_IFUNC") or not s.name:
                        continue
                    v = s["st_value"]
                    if v and v not in syms:
                        syms[v] = _Sym(v, s["st_size"], s.name)
        self.syms = sorted(syms.values(), key=lambda s: s.start)
        self.starts = [s.start for s in self.syms]

    def vaddr_of_offset(self, off: int) -> int:
        for p_off, p_vaddr, p_filesz in self.load_segments:
            if p_off <= off < p_off + p_filesz:
                return off - p_off + p_vaddr
        return off

    def lookup(self, vaddr: int) -> str | None:
        i = bisect.bisect_right(self.starts, vaddr) - 1
        if i < 0:
            return None
        s = self.syms[i]
        if s.size and vaddr >= s.start + s.size:
            return None
        return f"{s.name}+{vaddr - s.start:#x}"


_elf_cache: dict[tuple[str, int], ElfSymbols] = {}


def _maps_of(pid: int) -> list[tuple[int, int, int, str]]:
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) < 6 or not parts[5].strip().startswith("/"):
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append((lo, hi, int(parts[2], 16), parts[5].strip()))
    return out


def user_symbol(pid: int, addr: int) -> str:
    """``"func+0x10 (/path/binary)"`` for an address in process ``pid``."""
    try:
        maps = _maps_of(pid)
    except OSError:
        return f"{addr:#x}"
    for lo, hi, off, path in maps:
        if lo <= addr < hi:
            file_off = addr - lo + off
            try:
                st = os.stat(path)
                key = (path, int(st.st_mtime_ns))
                es = _elf_cache.get(key)
                if es is None:
                    es = _elf_cache[key] = ElfSymbols(path)
            except Exception:  # noqa: BLE001 - not an ELF we can read: plain address
                return f"{addr:#x} ({path})"
            name = es.lookup(es.vaddr_of_offset(file_off))
            return f"{name} ({path})" if name else f"{addr:#x} ({path})"
    return f"{addr:#x}"
