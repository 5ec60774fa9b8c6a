"""Addresses to symbols (kernel via /proc/kallsyms, user space via ELF symbols), and
symbols to uprobe targets (a library name and a function to a path and a file offset).

The one symbolizer of pybpf, used by :meth:`pybpf.mapkinds.StackTraceMap.frames` /
``symbolize`` and the ``profile`` tool, and the one symbol resolver of uprobes
(:func:`resolve_uprobe`, used by ``Program.attach_uprobe`` and uprobe_multi).
Tables are read once per file version and cached; a lookup is a binary search.
User addresses go to a file and an offset through ``/proc/PID/maps``, then to the
ELF function symbol (``.symtab`` and ``.dynsym``, read with pyelftools) containing
them, and, when asked and the file has DWARF line info, to ``file:line``.

Aliases: several names at one address (``select``/``__select``, versioned
``clock_nanosleep@GLIBC_2.2.5``/``@@GLIBC_2.17``) are one function. Its name is the
one a C programmer calls (libbpf-tools' and BCC's pick): fewest leading
underscores, then a global over a weak binding, then the default symbol version,
then the last in byte order. C++ and Rust (legacy) names are demangled with the
system's C++ runtime (``__cxa_demangle`` of libstdc++, loaded with ctypes when
present; Rust v0 ``_R`` names and systems without libstdc++ keep the mangled name).

Frame text (``str(frame)``, what ``symbolize()`` returns)::

    do_nanosleep+0x4d                 kernel function, offset into it
    bpf_prog_6f2a_handler+0x124 [bpf] kernel module (or BPF program) frame
    main+0x1c [app]                   user frame: function, offset, file's base name
    main+0x1c [app] (app.c:42)        ... with file:line where DWARF line info exists
    0x4e20 [libfoo.so]                address in a file that has no symbol there
    0x4e20                            address outside any known symbol or mapping
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import ctypes.util
import errno as _errno
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ._args import c_int, name_arg, path_arg
from .errors import AttachError

__all__ = ["Frame", "KernelSymbols", "ElfSymbols", "ProcessSymbols", "UprobeTarget",
           "kernel_symbols", "kernel_symbol", "user_symbol", "kernel_frame", "load_elf",
           "resolve_library", "resolve_uprobe", "opened_binary", "demangle"]


# --- names ------------------------------------------------------------------------
def _underscores(name: str) -> int:
    return len(name) - len(name.lstrip("_"))


def _preference(name: str, weak: bool = False, hidden: bool = False) -> tuple[int, ...]:
    """Sort key of one alias: the smallest is the name to show (see the module doc)."""
    return (_underscores(name), int(weak), int(hidden)) + tuple(-b for b in name.encode())


class _Demangler:
    """``__cxa_demangle`` of the system's libstdc++ through ctypes (None: not there)."""

    def __init__(self) -> None:
        self.fn = None
        self.free = None
        path = ctypes.util.find_library("stdc++")
        for cand in ([path] if path else []) + ["libstdc++.so.6"]:
            try:
                lib = ctypes.CDLL(cand)
            except OSError:
                continue
            fn = getattr(lib, "__cxa_demangle")
            fn.restype = ctypes.c_void_p
            fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p,
                           ctypes.POINTER(ctypes.c_int)]
            libc = ctypes.CDLL(None)
            libc.free.argtypes = [ctypes.c_void_p]
            self.fn, self.free = fn, libc.free
            break

    def __call__(self, name: str) -> str:
        if self.fn is None:
            return name
        status = ctypes.c_int(0)
        ptr = self.fn(name.encode(), None, None, ctypes.byref(status))
        if not ptr or status.value != 0:
            return name
        try:
            text = ctypes.string_at(ptr).decode(errors="replace")
        finally:
            self.free(ptr)  # type: ignore[misc]
        return text


_demangler: _Demangler | None = None
_RUST_HASH = re.compile(r"::h[0-9a-f]{16}$")


def demangle(name: str) -> str:
    """The source-level name of a C++ or Rust (legacy mangling) symbol; other names,
    Rust v0 (``_R...``) names, and every name on a system without libstdc++, are
    returned unchanged. ``demangle("_ZN3foo3barEv") == "foo::bar()"``. One call into
    the C++ runtime (cached by the symbol tables that use it)."""
    global _demangler
    if not name.startswith("_Z"):
        return name
    if _demangler is None:
        _demangler = _Demangler()
    text = _demangler(name)
    if text is not name and name.startswith("_ZN") and name.endswith("E"):
        text = _RUST_HASH.sub("", text)  # Rust legacy: drop the crate hash
    return text


# --- frames -----------------------------------------------------------------------
@dataclass(frozen=True)
class Frame:
    """One symbolized stack frame.

    ``name`` is None when no symbol covers the address; ``offset`` is into the
    function (or, unresolved, the address's offset in ``module``'s file);
    ``module`` is the kernel module (``"bpf"`` for BPF programs, None for vmlinux) or
    the user file's path; ``file``/``line`` come from DWARF line info when asked
    for and present. ``str(frame)`` is the documented text form (module doc)."""

    address: int
    name: str | None
    offset: int = 0
    module: str | None = None
    file: str | None = None
    line: int | None = None
    kernel: bool = True

    def __str__(self) -> str:
        where = f" [{os.path.basename(self.module)}]" if self.module else ""
        if self.name is None:
            return f"{self.address:#x}{where}"
        text = f"{self.name}+{self.offset:#x}{where}"
        if self.file:
            text += f" ({os.path.basename(self.file)}:{self.line})"
        return text


_TEXT_ENDS = frozenset({"_etext", "_einittext", "__entry_text_end", "__irqentry_text_end",
                        "__softirqentry_text_end", "__indirect_thunk_end"})
_MAX_TAIL = 1 << 17  # bytes a module's (or vmlinux's) last function may cover


class KernelSymbols:
    """``/proc/kallsyms`` sorted by address (needs root to see real addresses)."""

    def __init__(self, path: str = "/proc/kallsyms") -> None:
        entries: dict[int, tuple[tuple[int, ...], str, str | None]] = {}
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3 or parts[1] not in "tTwW":
                    continue
                addr = int(parts[0], 16)
                if addr == 0:
                    continue
                name = parts[2]
                module = parts[3].strip("[]") if len(parts) > 3 else None
                key = _preference(name, weak=parts[1] in "wW")
                old = entries.get(addr)
                if old is None or key < old[0]:
                    entries[addr] = (key, name, module)
        self.addrs = sorted(entries)
        self.names = [entries[a][1] for a in self.addrs]
        self.modules = [entries[a][2] for a in self.addrs]
        # Where each symbol's cover ends (kallsyms has no sizes): at the next symbol of
        # the same module; after the last one of a module (or of vmlinux's text), at
        # most _MAX_TAIL bytes on; the text end markers cover nothing. An address past
        # that (a gap between modules, a program loaded after this table was read, a
        # bogus value) is unresolved instead of "the last symbol + a huge offset".
        n = len(self.addrs)
        self.ends = [
            self.addrs[i] if self.names[i] in _TEXT_ENDS else
            self.addrs[i + 1] if i + 1 < n and self.modules[i + 1] == self.modules[i]
            else self.addrs[i] + _MAX_TAIL
            for i in range(n)]

    def __len__(self) -> int:
        return len(self.addrs)

    def _index(self, addr: int) -> int:
        """The symbol covering ``addr`` (the nearest below, within its end), or -1."""
        i = bisect.bisect_right(self.addrs, addr) - 1
        return i if i >= 0 and addr < self.ends[i] else -1

    def find(self, addr: int) -> tuple[str, int] | None:
        """(function, offset into it) for ``addr``: the nearest symbol below it, or None
        where no symbol covers it (see ``ends``)."""
        i = self._index(addr)
        if i < 0:
            return None
        return self.names[i], addr - self.addrs[i]

    def frame(self, addr: int) -> Frame:
        """The :class:`Frame` of ``addr`` (module set for module and BPF frames)."""
        i = self._index(addr)
        if i < 0:
            return Frame(addr, None)
        return Frame(addr, self.names[i], addr - self.addrs[i], self.modules[i])

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


def kernel_frame(addr: int) -> Frame:
    """The :class:`Frame` of a kernel address."""
    return kernel_symbols().frame(addr)


def kernel_symbol(addr: int) -> str:
    """``"func+0x1c"`` (``"func+0x1c [module]"``, ``"0x..."`` if none) for a kernel
    address: ``str(kernel_frame(addr))``."""
    return str(kernel_frame(addr))


@dataclass(frozen=True)
class _Sym:
    addr: int
    size: int
    weak: bool
    hidden: bool
    name: str
    ifunc: bool = False


@dataclass
class ElfSymbols:
    """Function symbols of one ELF file, by virtual address (``names``: the preferred
    alias, demangled) and by name (every alias and version: :meth:`candidates`)."""

    addrs: list[int]
    ends: list[int]
    names: list[str]
    loads: list[tuple[int, int, int]]  # (p_offset, p_vaddr, p_filesz) of PT_LOAD segments
    path: str = ""
    by_name: dict[str, list[_Sym]] = field(default_factory=dict)
    _lines: list[tuple[int, str, int]] | None = None

    def vaddr_of(self, file_off: int) -> int | None:
        for off, va, size in self.loads:
            if off <= file_off < off + max(size, 1):
                return file_off - off + va
        return None

    def file_offset(self, vaddr: int) -> int | None:
        """The file offset of virtual address ``vaddr`` (what a uprobe takes)."""
        for off, va, size in self.loads:
            if va <= vaddr < va + max(size, 1):
                return vaddr - va + off
        return None

    def find_vaddr(self, vaddr: int) -> tuple[str, int] | None:
        i = bisect.bisect_right(self.addrs, vaddr) - 1
        if i < 0 or vaddr >= self.ends[i]:
            return None
        return self.names[i], vaddr - self.addrs[i]

    def find_offset(self, file_off: int) -> tuple[str, int] | None:
        """(function, offset into it) for a file offset, or None."""
        vaddr = self.vaddr_of(file_off)
        return None if vaddr is None else self.find_vaddr(vaddr)

    def lookup_offset(self, file_off: int) -> str | None:
        found = self.find_offset(file_off)
        return found[0] if found else None

    def candidates(self, name: str) -> list[_Sym]:
        """Every definition of ``name`` (and of its versions ``name@V``/``name@@V``)."""
        return self.by_name.get(name.partition("@")[0], [])

    def line_of(self, vaddr: int) -> tuple[str, int] | None:
        """(source file, line) of ``vaddr`` from DWARF line info, or None. The first
        call reads the file's line tables (one pass over ``.debug_line``)."""
        if self._lines is None:
            self._lines = _read_lines(self.path)
        i = bisect.bisect_right(self._lines, (vaddr, "\U0010ffff", 1 << 62)) - 1
        if i < 0:
            return None
        addr, fname, line = self._lines[i]
        found = self.find_vaddr(vaddr)
        if found is None or addr < vaddr - found[1]:
            return None  # the nearest row belongs to another function
        return fname, line


def _read_lines(path: str) -> list[tuple[int, str, int]]:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    rows: list[tuple[int, str, int]] = []
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            if not elf.has_dwarf_info():
                return rows
            dwarf = elf.get_dwarf_info()
            for cu in dwarf.iter_CUs():
                prog = dwarf.line_program_for_CU(cu)
                if prog is None:
                    continue
                files = prog["file_entry"]
                base = 0 if prog.header["version"] >= 5 else 1
                for entry in prog.get_entries():
                    st = entry.state
                    if st is None or st.end_sequence:
                        continue
                    idx = st.file - base
                    name = files[idx].name.decode(errors="replace") if 0 <= idx < len(
                        files) else "?"
                    rows.append((st.address, name, st.line))
    except (OSError, ELFError, ValueError, KeyError, IndexError):
        return []
    rows.sort()
    return rows


_elf_cache: dict[tuple[str, int, int, int], ElfSymbols | None] = {}

_STT_FUNC, _STT_GNU_IFUNC, _STB_WEAK = 2, 10, 2


def _function_symbols(elf: Any) -> Iterator[_Sym]:
    """Every defined function symbol of ``.symtab`` and ``.dynsym``, with its binding and
    whether its version is hidden (``name@V``, not the default ``name@@V``). The tables
    are read as raw arrays (pyelftools finds the sections): one pass, no per-symbol
    parsing, so libc's take milliseconds."""
    endian = "<" if elf.little_endian else ">"
    wide = elf.elfclass == 64
    fmt = struct.Struct(endian + ("IBBHQQ" if wide else "IIIBBH"))
    for secname in (".symtab", ".dynsym"):
        sec = elf.get_section_by_name(secname)
        if sec is None or sec["sh_type"] not in ("SHT_SYMTAB", "SHT_DYNSYM"):
            continue
        strtab = elf.get_section(sec["sh_link"]).data()
        data = sec.data()
        versions = b""
        if secname == ".dynsym":
            vs = elf.get_section_by_name(".gnu.version")
            versions = vs.data() if vs is not None else b""
        for i in range(len(data) // fmt.size):
            if wide:
                st_name, info, _other, shndx, value, size = fmt.unpack_from(data, i * fmt.size)
            else:
                st_name, value, size, info, _other, shndx = fmt.unpack_from(data, i * fmt.size)
            if info & 0xF not in (_STT_FUNC, _STT_GNU_IFUNC) or not value or shndx == 0:
                continue
            end = strtab.find(b"\0", st_name)
            raw = strtab[st_name:end if end >= 0 else None].decode(errors="replace")
            if not raw:
                continue
            name, _, ver = raw.partition("@")
            hidden = bool(ver) and not ver.startswith("@")
            if len(versions) >= 2 * i + 2:
                ndx = struct.unpack_from(endian + "H", versions, 2 * i)[0]
                hidden = bool(ndx & 0x8000)
            yield _Sym(value, size, info >> 4 == _STB_WEAK, hidden, name,
                       info & 0xF == _STT_GNU_IFUNC)


def load_elf(path: str, *, read_from: str | None = None) -> ElfSymbols | None:
    """The function symbols of the ELF file at ``path`` (cached per file version),
    None if unreadable. ``read_from``: read them through this name of the same file
    (:func:`opened_binary`); ``path`` stays the name kept for later reads (lines)."""
    src = read_from or path
    try:
        st = os.stat(src)
    except OSError:
        return None
    key = (path, st.st_dev, st.st_ino, st.st_mtime_ns)
    if key in _elf_cache:
        return _elf_cache[key]
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    result: ElfSymbols | None = None
    try:
        with open(src, "rb") as f:
            elf = ELFFile(f)
            loads = [(seg["p_offset"], seg["p_vaddr"], seg["p_filesz"])
                     for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD"]
            by_name: dict[str, list[_Sym]] = {}
            best: dict[int, tuple[tuple[int, ...], int, str]] = {}
            for s in _function_symbols(elf):
                lst = by_name.setdefault(s.name, [])
                if s not in lst:
                    lst.append(s)
                pref = (int(not s.size),) + _preference(s.name, s.weak, s.hidden)
                old = best.get(s.addr)
                if old is None or pref < old[0]:
                    best[s.addr] = (pref, max(s.size, old[1] if old else 0), s.name)
                elif s.size > old[1]:
                    best[s.addr] = (old[0], s.size, old[2])
            addrs = sorted(best)
            result = ElfSymbols(addrs=addrs, ends=[a + max(best[a][1], 1) for a in addrs],
                                names=[demangle(best[a][2]) for a in addrs], loads=loads,
                                path=path, by_name=by_name)
    except (OSError, ELFError, ValueError):
        result = None
    _elf_cache[key] = result
    return result


# --- uprobe targets -----------------------------------------------------------------
@dataclass(frozen=True)
class UprobeTarget:
    """Where a uprobe on ``function`` of ``binary`` goes: the file ``path``, the
    ``offset`` in it (what the kernel takes), the function's virtual ``address`` and
    every alias ``names`` at that address (versions and duplicates)."""

    path: str
    offset: int
    function: str
    address: int
    names: tuple[str, ...]


def _ld_so_dirs() -> list[str]:
    dirs: list[str] = []

    def read(conf: str, depth: int = 0) -> None:
        import glob

        try:
            with open(conf) as f:
                lines = f.read().splitlines()
        except OSError:
            return
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("include ") and depth < 4:
                pat = line.split(None, 1)[1]
                if not pat.startswith("/"):
                    pat = os.path.join(os.path.dirname(conf), pat)
                for inc in sorted(glob.glob(pat)):
                    read(inc, depth + 1)
            elif line.startswith("/"):
                dirs.append(line)

    read("/etc/ld.so.conf")
    return dirs


def _mapped(pid: int | str, match: object) -> str | None:
    """The first file mapped in process ``pid`` whose base name ``match`` accepts."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                path = line.split(maxsplit=5)[-1].strip()
                if path.startswith("/") and match(os.path.basename(path)):  # type: ignore
                    return path
    except OSError:
        pass
    return None


def resolve_library(name: str, pid: int | None = None) -> str:
    """The path of ``name``: itself when it has a slash; a library (``libc.so.6``) as
    the dynamic loader finds it (``LD_LIBRARY_PATH``, the libraries process ``pid``
    (default: this one) has mapped, ``/etc/ld.so.conf``, the standard directories);
    a program through ``PATH``; a short name as BCC and libbpf-tools take it (``"c"``:
    the ``libc.so.*`` mapped or installed). For a ``pid``, the path is the one that
    process sees (through ``/proc/PID/root``). FileNotFoundError when nowhere. Reads a
    few directories, no syscall to BPF."""
    if "/" in name:
        return name
    is_lib = name.endswith(".so") or ".so." in name
    root = f"/proc/{pid}/root" if pid is not None and pid > 0 else ""
    where: int | str = pid if pid is not None and pid > 0 else "self"
    machine = os.uname().machine
    multi = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}.get(machine, machine)
    lib_dirs = ([d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
                + _ld_so_dirs() + [f"/lib/{multi}", f"/usr/lib/{multi}", "/lib64", "/usr/lib64",
                                   "/lib", "/usr/lib"])
    if is_lib:
        found = _mapped(where, lambda base: base == name)
        if found:
            return root + found
        dirs = lib_dirs
    else:
        dirs = [d for d in os.environ.get("PATH", os.defpath).split(":") if d]
    for d in dirs:
        cand = os.path.join(d, name)
        if os.path.isfile(root + cand):
            return root + cand
    if not is_lib:  # "c" -> libc.so.6, as BCC and libbpf-tools read a short name
        prefix = f"lib{name}.so"
        found = _mapped(where, lambda base: base == prefix or base.startswith(prefix + "."))
        if found:
            return root + found
        for d in lib_dirs:
            try:
                hits = sorted(f for f in os.listdir(root + d)
                              if f == prefix or f.startswith(prefix + "."))
            except OSError:
                continue
            if hits:
                return root + os.path.join(d, hits[0])
    raise FileNotFoundError(_errno.ENOENT, f"{'library' if is_lib else 'program'} {name!r} "
                            "not found", name)


@contextlib.contextmanager
def opened_binary(path: str, who: str) -> Iterator[str]:
    """``path`` opened once, for as long as the block runs, as the name
    ``/proc/self/fd/N``: reading its symbols and attaching through that name (the
    kernel follows the link to the open file) see one file, even if ``path`` is
    renamed over, a symlink in it flips, or a package upgrade replaces it meanwhile;
    else a probe could land at one file's offset in another. AttachError naming
    ``who`` and ``path`` when it cannot be opened. One open and one close."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise AttachError(e.errno or _errno.ENOENT, f"{who}: cannot open binary {path}: "
                          f"{e.strerror}", target=path) from None
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def resolve_uprobe(binary: str, function: str, pid: int | None = None, *,
                   read_from: str | None = None) -> UprobeTarget:
    """Resolve ``function`` of ``binary`` (a path, a library name such as
    ``"libc.so.6"`` or ``"c"``, or a program on PATH: :func:`resolve_library`, in
    process ``pid``'s view when given) to the path and file offset a uprobe takes,
    as perf and BCC do: versioned aliases and duplicates at one address
    (``clock_nanosleep@GLIBC_2.2.5`` and ``@@GLIBC_2.17``) are one function; where
    definitions differ, the default version, then a global over a weak symbol, wins.
    AttachError (ENOENT) when no definition exists, (ENOEXEC) when the file is not a
    readable ELF, naming them; (EINVAL) when definitions at different addresses stay
    ambiguous, listing them (pass ``offset=`` instead). Reads the file's symbol
    tables once per file version. ``read_from``: read the symbols through this name
    of the same file instead (:func:`opened_binary`); the result names ``binary``."""
    binary = path_arg(binary, "resolve_uprobe: binary")
    name_arg(function, f"resolve_uprobe: function in {binary}")
    if pid is not None:
        pid = c_int(pid, f"resolve_uprobe: pid for {binary}", "pid")
    try:
        path = resolve_library(binary, pid)
    except FileNotFoundError as e:
        raise AttachError(_errno.ENOENT, f"cannot resolve {binary}:{function}: {e.strerror} "
                          "(searched LD_LIBRARY_PATH, the loaded libraries, ld.so.conf and "
                          "the standard directories, or PATH for a program)",
                          target=f"{binary}:{function}") from None
    syms = load_elf(path, read_from=read_from)
    if syms is None:
        raise AttachError(_errno.ENOEXEC, f"cannot resolve {binary}:{function}: {path} is not "
                          "an ELF binary (or not readable)", target=f"{path}:{function}")
    cands = syms.candidates(function)
    if not cands:
        raise AttachError(_errno.ENOENT, f"cannot resolve {binary}:{function}: symbol "
                          f"{function!r} not found in {path}", target=f"{path}:{function}")
    addrs = {s.addr for s in cands}
    if len(addrs) > 1:
        ranked = sorted(cands, key=lambda s: (s.hidden, s.weak))
        top = [s for s in ranked if (s.hidden, s.weak) == (ranked[0].hidden, ranked[0].weak)]
        if len({s.addr for s in top}) > 1:
            listing = ", ".join(f"{s.addr:#x}" for s in sorted(top, key=lambda s: s.addr))
            raise AttachError(_errno.EINVAL, f"cannot resolve {binary}:{function}: "
                              f"{len({s.addr for s in top})} different definitions in {path} "
                              f"(at {listing}); give the offset instead",
                              target=f"{path}:{function}")
        addrs = {top[0].addr}
    addr = addrs.pop()
    if all(s.ifunc for s in cands if s.addr == addr):
        raise AttachError(_errno.EINVAL, f"cannot resolve {binary}:{function}: it is a GNU "
                          f"indirect function in {path}: its address is the resolver's, the "
                          "implementation is chosen at run time; probe the implementation's "
                          "symbol (e.g. __memcpy_avx_unaligned) instead",
                          target=f"{path}:{function}")
    off = syms.file_offset(addr)
    if off is None:
        raise AttachError(_errno.ENOEXEC, f"cannot resolve {binary}:{function}: its address "
                          f"{addr:#x} is in no loadable segment of {path}",
                          target=f"{path}:{function}")
    names = tuple(sorted({n for n, lst in syms.by_name.items() for d in lst if d.addr == addr},
                         key=lambda n: _preference(n)))
    return UprobeTarget(path=path, offset=off, function=function, address=addr, names=names)


# --- processes ----------------------------------------------------------------------
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

    def frame(self, addr: int, *, lines: bool = False) -> Frame:
        """The :class:`Frame` of ``addr`` (``lines``: also DWARF file:line)."""
        for start, end, pgoff, path in self._maps:
            if start <= addr < end:
                syms = load_elf(f"/proc/{self.pid}/root{path}") or load_elf(path)
                file_off = addr - start + pgoff
                vaddr = syms.vaddr_of(file_off) if syms else None
                found = syms.find_vaddr(vaddr) if syms and vaddr is not None else None
                if found is None:
                    return Frame(addr, None, file_off, path, kernel=False)
                src = syms.line_of(vaddr) if lines and syms and vaddr is not None else None
                return Frame(addr, found[0], found[1], path, src[0] if src else None,
                             src[1] if src else None, kernel=False)
        return Frame(addr, None, kernel=False)

    def find(self, addr: int) -> tuple[str | None, int, str] | None:
        """(function or None, offset into it, mapped file) for ``addr``, or None."""
        fr = self.frame(addr)
        if fr.module is None:
            return None
        return fr.name, fr.offset if fr.name else 0, fr.module

    def lookup(self, addr: int) -> str | None:
        """``symbol`` for ``addr``, ``[file]`` when the file has no symbol there, or None."""
        found = self.find(addr)
        if found is None:
            return None
        name, _off, path = found
        return name or f"[{os.path.basename(path)}]"


def user_symbol(pid: int, addr: int) -> str:
    """``"func+0x10 [binary]"`` for an address in process ``pid``: the text of its
    :class:`Frame` (module doc)."""
    return str(ProcessSymbols(pid).frame(addr))
