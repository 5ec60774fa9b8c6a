"""Addresses to symbol names: kernel via /proc/kallsyms, user space via ELF symbols.

The one symbolizer of pybpf, used by :meth:`pybpf.mapkinds.StackTraceMap.symbolize`
and the ``profile`` tool. Tables are read once and cached; a lookup is a binary
search. User addresses go to a file and an offset through ``/proc/PID/maps``,
then to the ELF function symbol (``.symtab`` and ``.dynsym``, read with
pyelftools) containing them.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass

__all__ = ["KernelSymbols", "ElfSymbols", "ProcessSymbols", "kernel_symbols",
           "kernel_symbol", "user_symbol"]


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
                addr = int(parts[0], 16)
                if addr == 0:
                    continue
                addrs.append(addr)
                names.append(parts[2] + (f" {parts[3]}" if len(parts) > 3 else ""))
        order = sorted(range(len(addrs)), key=addrs.__getitem__)
        self.addrs = [addrs[i] for i in order]
        self.names = [names[i] for i in order]

    def __len__(self) -> int:
        return len(self.addrs)

    def find(self, addr: int) -> tuple[str, int] | None:
        """(function, offset into it) for ``addr``: the nearest symbol below it."""
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0:
            return None
        return self.names[i], addr - self.addrs[i]

    def lookup(self, addr: int) -> str | None:
        """The name of the function containing ``addr``, or None."""
        found = self.find(addr)
        return found[0] if found else None


_kernel: KernelSymbols | None = None


def kernel_symbols() -> KernelSymbols:
    """The process-wide kallsyms table (read on first use; modules loaded later
    show as plain addresses)."""
    global _kernel
    if _kernel is None:
        _kernel = KernelSymbols()
    return _kernel


def kernel_symbol(addr: int) -> str:
    """``"func+0x1c"`` for a kernel address (``"0x..."`` if none)."""
    found = kernel_symbols().find(addr)
    return f"{found[0]}+{found[1]:#x}" if found else f"{addr:#x}"


@dataclass
class ElfSymbols:
    """Function symbols of one ELF file, by virtual address."""

    addrs: list[int]
    ends: list[int]
    names: list[str]
    loads: list[tuple[int, int, int]]  # (p_offset, p_vaddr, p_filesz) of PT_LOAD segments

    def find_offset(self, file_off: int) -> tuple[str, int] | None:
        """(function, offset into it) for a file offset, or None."""
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
        return self.names[i], vaddr - self.addrs[i]

    def lookup_offset(self, file_off: int) -> str | None:
        found = self.find_offset(file_off)
        return found[0] if found else None


_elf_cache: dict[tuple[str, int, int, int], ElfSymbols | None] = {}


def load_elf(path: str) -> ElfSymbols | None:
    """The function symbols of the ELF file at ``path`` (cached), None if unreadable."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (path, st.st_dev, st.st_ino, st.st_mtime_ns)
    if key in _elf_cache:
        return _elf_cache[key]
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    result: ElfSymbols | None = None
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
            result = ElfSymbols(addrs=addrs, ends=[a + max(syms[a][0], 1) for a in addrs],
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

    def find(self, addr: int) -> tuple[str | None, int, str] | None:
        """(function or None, offset into it, mapped file) for ``addr``, or None."""
        for start, end, pgoff, path in self._maps:
            if start <= addr < end:
                syms = load_elf(f"/proc/{self.pid}/root{path}") or load_elf(path)
                found = syms.find_offset(addr - start + pgoff) if syms else None
                return (found[0], found[1], path) if found else (None, 0, path)
        return None

    def lookup(self, addr: int) -> str | None:
        """``symbol`` for ``addr``, ``[file]`` when the file has no symbol there, or None."""
        found = self.find(addr)
        if found is None:
            return None
        name, _off, path = found
        return name or f"[{os.path.basename(path)}]"


def user_symbol(pid: int, addr: int) -> str:
    """``"func+0x10 (/path/binary)"`` for an address in process ``pid``."""
    found = ProcessSymbols(pid).find(addr)
    if found is None:
        return f"{addr:#x}"
    name, off, path = found
    return f"{name}+{off:#x} ({path})" if name else f"{addr:#x} ({path})"
