"""Checks on an object's bytes before libbpf parses them.

Why this exists
---------------
The system libbpf (1.1.x) parses ``.bpf.o`` files with the assumption that the
compiler wrote them: it checks the overall layout (section table, BTF header,
BTF.ext record sizes) but then follows the indexes and offsets inside without
checking them -- a BTF type id past the last type, a string offset past the
string table, a typedef that refers to itself, a CO-RE relocation naming a
type that does not exist, a relocation at an instruction past the section's
end. Measured on this machine, 1 to 8 mutated bytes in a real CO-RE object
crash ``bpf_object__open_mem`` or ``bpf_object__load`` in about 1 try in 100
(SIGSEGV in libbpf's ELF, BTF and relocation code, or an endless loop).
A crash there kills the whole Python interpreter, so pybpf must never hand
libbpf bytes it could misread.

Design
------
Two options were weighed:

* Isolating the parse in a child process (fork, open in the child, report
  back) costs a fork per open -- 1-3 ms for a small interpreter, far more for
  a large one -- and still does not cover ``load``: the crashes in relocation
  happen there, and a trial load in a child would verify every program twice.
* Validating in Python every structure libbpf trusts, before libbpf sees the
  bytes. The structures are small and fixed (ELF section/symbol/relocation
  tables, the BTF type section, BTF.ext records), so a direct ``struct``
  parse costs about 1 ms for the shipped probes (see
  ``benchmarks/bench_validate.py``) and covers open and load in one pass.

pybpf does the second. The rule is to check what libbpf *dereferences*, and
to be strict where the compiler is always regular (alignment, entry sizes,
NUL-terminated UTF-8 string tables), so that the check stays simple and a
valid object produced by clang/LLVM or ``bpftool gen object`` always passes.
What the kernel itself validates afterwards (instruction semantics, BTF
integer encodings, func_info/line_info contents) is left to the kernel,
whose errors pybpf already turns into exceptions.

Checked, each failure an :class:`~pybpf.ObjectError` naming the file and the
structure:

* ELF: header fields, section table bounds, each section's data inside the
  file, section names (offset, NUL, UTF-8), ``sh_link``/``sh_info`` indexes,
  entry sizes of symbol and relocation tables, exactly one symbol table whose
  string table is a NUL-terminated string section.
* Symbols: name offsets, section indexes, functions inside and aligned to
  their code section, data symbols inside their section.
* Relocations: symbol index, target section, offset inside the target and
  aligned to an instruction; relocated instructions are calls or 16-byte
  ``ld_imm64`` that fit in the section.
* ``license`` NUL-terminated, ``version`` 4 bytes.
* BTF: header and section bounds, string section, every kind and its
  records, every name offset, every referenced type id, the kinds a reference
  must have (FUNC -> FUNC_PROTO, DATASEC -> VAR/FUNC), no reference cycle
  that does not go through a pointer (libbpf follows such chains forever),
  INT/ENUM/FLOAT sizes that are C sizes and struct members and array elements
  that have a size (libbpf divides by them in CO-RE bitfield relocation).
* BTF ``.maps`` DATASEC: every variable inside the ``.maps`` section.
* BTF.ext: header, the func_info/line_info/CO-RE relocation sections (record
  sizes, counts, bounds), section names naming code sections, instruction
  offsets inside and aligned to the section, type ids, string offsets, the
  CO-RE access string's syntax and relocation kind.

At load (:func:`check_map_memory`, called by ``Object.load``): maps whose
preallocation would take minutes of unkillable kernel time or more than half
of the available memory.
"""

from __future__ import annotations

import errno
import hashlib
import struct
import threading
from typing import Any

from ._maptypes import facts
from .errors import ObjectError

__all__ = ["check_object"]

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_REL = struct.Struct("<QQ")
_U32 = struct.Struct("<I")
_III = struct.Struct("<III")

SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA = 0, 1, 2, 3, 4
SHT_NOBITS, SHT_REL, SHT_DYNSYM = 8, 9, 11
SHF_EXECINSTR = 0x4
SHF_COMPRESSED = 0x800
SHN_UNDEF, SHN_LORESERVE, SHN_ABS, SHN_COMMON = 0, 0xFF00, 0xFFF1, 0xFFF2
STT_OBJECT, STT_FUNC = 1, 2

BPF_LD_IMM64 = 0x18
BPF_CALL = 0x85

# BTF kinds and the size of the data that follows each type header
_KIND_VOID, _INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF = range(9)
_VOLATILE, _CONST, _RESTRICT, _FUNC, _FUNC_PROTO, _VAR, _DATASEC, _FLOAT = range(9, 17)
_DECL_TAG, _TYPE_TAG, _ENUM64 = 17, 18, 19
_MAX_KIND = _ENUM64
_MAX_CORE_RELO_KIND = 12  # BPF_CORE_TYPE_MATCHES

MAX_OBJECT_SIZE = 1 << 31

# 32-bit words after each kind's 12-byte header: fixed + per_vlen * vlen (-1: unknown kind)
_NEED_FIXED = [-1] * 32
_NEED_PER_VLEN = [0] * 32
for _k, (_f, _v) in {_KIND_VOID: (-1, 0), _INT: (1, 0), _PTR: (0, 0), _ARRAY: (3, 0),
                     _STRUCT: (0, 3), _UNION: (0, 3), _ENUM: (0, 2), _FWD: (0, 0),
                     _TYPEDEF: (0, 0), _VOLATILE: (0, 0), _CONST: (0, 0), _RESTRICT: (0, 0),
                     _FUNC: (0, 0), _FUNC_PROTO: (0, 2), _VAR: (1, 0), _DATASEC: (0, 3),
                     _FLOAT: (0, 0), _DECL_TAG: (1, 0), _TYPE_TAG: (0, 0),
                     _ENUM64: (0, 3)}.items():
    _NEED_FIXED[_k], _NEED_PER_VLEN[_k] = _f, _v
_SIMPLE_REF = frozenset({_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG, _FUNC, _VAR,
                         _DECL_TAG})
_WITH_MEMBERS = frozenset({_STRUCT, _UNION, _DATASEC, _FUNC_PROTO})
_MODIFIERS = frozenset({_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG})
_UNSIZED = frozenset({_KIND_VOID, _FUNC, _FUNC_PROTO, _VAR, _DATASEC, _DECL_TAG, _FWD})


class _Bad(Exception):
    pass


def _fail(name: str, what: str) -> ObjectError:
    return ObjectError(errno.EINVAL, f"{name}: malformed BPF object: {what}", path=name)


# Objects that passed, so reopening one (a tool restarting its probe, a test cycling)
# costs a comparison of its bytes with the copy kept here (memcmp: ~1 us for 60 KB)
# instead of a check. Kept by size; the comparison is exact, so a file changed in
# place (same name, size, even mtime) is checked again. Objects larger than
# _KEEP_MAX are remembered by SHA-256 instead (a hash, no copy held).
_passed: dict[int, list[tuple[bytes, Passed]]] = {}
_passed_digests: dict[bytes, tuple[str, ...]] = {}
_PASSED_MAX = 64  # objects per table
_KEEP_MAX = 4 << 20  # bytes: larger objects are remembered by digest
_KEEP_TOTAL = 32 << 20  # bytes of copies held at most
_kept_bytes = 0
_keep_lock = threading.Lock()


class Passed(tuple[str, ...]):
    """The section names of an object kept as passed, and ``memo``: a dict for what
    other modules derive from these exact bytes (the object's BTF after libbpf's open,
    for one), reused by every open of bytes equal to them and dropped with them. Only
    bytes compared in full have one (not those remembered by digest)."""

    memo: dict[str, Any]


def forget_passed() -> None:
    """Forget every object that passed (the next open of each is checked again)."""
    global _kept_bytes
    with _keep_lock:
        _passed.clear()
        _passed_digests.clear()
        _kept_bytes = 0


def check_object(data: bytes, name: str) -> tuple[str, ...]:
    """Raise ObjectError if ``data`` has structures libbpf would misread; return the
    names of its ELF sections (a :class:`Passed`, with its ``memo``, when the bytes
    are kept for comparison: at most 4 MiB).

    ``name`` labels the file in the message. Cost: one pass over the section,
    symbol and relocation tables and the BTF type section, 0.3-3 ms for the
    shipped probes (benchmarks/bench_open.py); an object that already passed
    in this process costs one comparison of its bytes (one hash above 4 MiB).
    """
    size = len(data)
    if size <= _KEEP_MAX:
        for kept, names in _passed.get(size, ()):
            if kept is data or kept == data:
                return names
        digest = b""
    else:
        digest = hashlib.sha256(data).digest()
        known = _passed_digests.get(digest)
        if known is not None:
            return known
    checker = _Checker(data)
    try:
        checker.run()
    except _Bad as exc:
        raise _fail(name, str(exc)) from None
    found: tuple[str, ...] = tuple(checker.names)
    with _keep_lock:
        if not digest:
            found = _keep(data, found)
        else:
            if len(_passed_digests) >= _PASSED_MAX:
                _passed_digests.pop(next(iter(_passed_digests)))
            _passed_digests[digest] = found
    return found


def _keep(data: bytes, names: tuple[str, ...]) -> Passed:
    """Remember ``data`` (under _keep_lock)."""
    global _kept_bytes
    # oldest sizes go first, until both bounds hold with this object added
    while _passed and (_kept_bytes + len(data) > _KEEP_TOTAL
                       or sum(map(len, _passed.values())) >= _PASSED_MAX):
        for kept, _ in _passed.pop(next(iter(_passed))):
            _kept_bytes -= len(kept)
    # an immutable copy of our own (data may be a bytes subclass)
    kept = data if type(data) is bytes else bytes(data)
    passed = Passed(names)
    passed.memo = {}
    _passed.setdefault(len(data), []).append((kept, passed))
    _kept_bytes += len(kept)
    return passed


def _cstr(table: bytes, off: int, what: str) -> str:
    """The NUL-terminated string at ``off`` of a validated string table."""
    if off >= len(table):
        raise _Bad(f"{what}: string offset {off} is past the end of its string table "
                   f"({len(table)} bytes)")
    end = table.index(b"\0", off)  # the table ends with NUL: always found
    try:
        return table[off:end].decode("utf-8")
    except UnicodeDecodeError:  # an offset into the middle of a multi-byte character
        raise _Bad(f"{what}: the string at offset {off} is not UTF-8") from None


def _string_table(blob: bytes, what: str, *, first_nul: bool = True) -> None:
    if not blob:
        raise _Bad(f"{what} is empty")
    if blob[-1] != 0:
        raise _Bad(f"{what} is not NUL-terminated")
    if first_nul and blob[0] != 0:
        raise _Bad(f"{what} does not start with an empty string")
    try:
        blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Bad(f"{what} holds bytes that are not UTF-8 (at offset {exc.start})") from None


class _Section:
    __slots__ = ("idx", "name", "type", "flags", "offset", "size", "link", "info",
                 "entsize", "data")

    def __init__(self, idx: int, fields: tuple[int, ...]) -> None:
        (self.name, self.type, self.flags, _addr, self.offset, self.size, self.link,
         self.info, _align, self.entsize) = fields
        self.idx = idx
        self.data = b""

    @property
    def is_code(self) -> bool:
        return self.type == SHT_PROGBITS and bool(self.flags & SHF_EXECINSTR)


class _Checker:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.secs: list[_Section] = []
        self.names: list[str] = []
        self.by_name: dict[str, _Section] = {}
        self.syms: list[tuple[int, int, int, int, int, int]] = []

    def run(self) -> None:
        self.elf()
        self.symbols()
        self.relocations()
        self.special()
        btf = self.by_name.get(".BTF")
        if btf is not None:
            checker = _BTFChecker(btf.data)
            checker.run()
            self.btf_maps(checker)
            ext = self.by_name.get(".BTF.ext")
            if ext is not None:
                self.btf_ext(ext.data, checker)

    # --- ELF --------------------------------------------------------------------
    def elf(self) -> None:
        data = self.data
        if len(data) < _EHDR.size:
            raise _Bad("truncated ELF header")
        if len(data) > MAX_OBJECT_SIZE:
            raise _Bad(f"{len(data)} bytes is larger than any BPF object ({MAX_OBJECT_SIZE})")
        (ident, _type, _machine, version, _entry, phoff, shoff, _flags, ehsize, phentsize,
         phnum, shentsize, shnum, shstrndx) = _EHDR.unpack_from(data)
        if ident[4] != 2 or ident[5] != 1:
            raise _Bad("not a 64-bit little-endian ELF file")
        if ident[6] != 1 or version != 1:
            raise _Bad(f"ELF version {ident[6]}/{version}, expected 1")
        if ehsize != _EHDR.size:
            raise _Bad(f"ELF header size {ehsize}, expected {_EHDR.size}")
        if phnum and (phentsize != 56 or phoff + phnum * 56 > len(data)):
            raise _Bad(f"program header table ({phnum} entries at {phoff}) is malformed")
        if shentsize != _SHDR.size:
            raise _Bad(f"section header size {shentsize}, expected {_SHDR.size}")
        if shnum == 0 or shoff == 0:
            raise _Bad("no section headers")
        if shoff % 8:
            raise _Bad(f"section header table at {shoff} is not 8-byte aligned")
        if shoff + shnum * shentsize > len(data):
            raise _Bad(f"section header table ({shnum} entries at {shoff}) runs past the end "
                       f"of the file ({len(data)} bytes)")
        if shstrndx == 0 or shstrndx >= shnum:
            raise _Bad(f"section name table index {shstrndx} is not one of the {shnum} "
                       "sections")
        secs = self.secs
        for i in range(shnum):
            s = _Section(i, _SHDR.unpack_from(data, shoff + i * shentsize))
            if i == 0:
                if s.type != SHT_NULL or s.size or s.offset:
                    raise _Bad("section 0 is not the null section")
            elif s.type != SHT_NOBITS:
                if s.offset + s.size > len(data):
                    raise _Bad(f"section {i} ({s.size} bytes at {s.offset}) runs past the "
                               f"end of the file ({len(data)} bytes)")
                s.data = data[s.offset:s.offset + s.size]
            if s.link >= shnum:
                raise _Bad(f"section {i} links to section {s.link}, there are {shnum}")
            secs.append(s)
        shstr = secs[shstrndx]
        if shstr.type != SHT_STRTAB:
            raise _Bad(f"section name table (section {shstrndx}) is not a string table")
        _string_table(shstr.data, "section name table")
        symtabs = []
        for s in secs:
            nm = _cstr(shstr.data, s.name, f"name of section {s.idx}")
            self.names.append(nm)
            if nm and s.type != SHT_NULL:
                self.by_name.setdefault(nm, s)
            if s.flags & SHF_COMPRESSED and (s.is_code or nm.startswith((".BTF", ".maps",
                                                                          ".rel", ".data",
                                                                          ".rodata"))):
                raise _Bad(f"section {s.idx} ({nm}) is compressed")
            if s.type == SHT_SYMTAB:
                symtabs.append(s)
            elif s.type == SHT_DYNSYM:
                raise _Bad(f"section {s.idx} ({nm}) is a dynamic symbol table")
            elif s.type in (SHT_REL, SHT_RELA):
                ent = 16 if s.type == SHT_REL else 24
                if s.entsize != ent or s.size % ent:
                    raise _Bad(f"relocation section {s.idx} ({nm}): entry size {s.entsize}, "
                               f"size {s.size}; expected multiples of {ent}")
                if s.info >= shnum or s.info == 0:
                    raise _Bad(f"relocation section {s.idx} ({nm}) applies to section "
                               f"{s.info}, there are {shnum}")
            elif s.is_code and s.size % 8:
                raise _Bad(f"code section {s.idx} ({nm}) is {s.size} bytes, not a multiple "
                           "of the 8-byte instruction")
        if len(symtabs) > 1:
            raise _Bad(f"{len(symtabs)} symbol tables")
        if not symtabs:
            return  # libbpf reports the missing table itself
        st = symtabs[0]
        self.symtab = st
        if st.entsize != _SYM.size or st.size % _SYM.size:
            raise _Bad(f"symbol table: entry size {st.entsize}, size {st.size}; expected "
                       f"multiples of {_SYM.size}")
        if st.link == 0 or secs[st.link].type != SHT_STRTAB:
            raise _Bad(f"symbol table links to section {st.link}, not a string table")
        if st.info > st.size // _SYM.size:
            raise _Bad(f"symbol table: first global symbol {st.info} is past its "
                       f"{st.size // _SYM.size} symbols")
        _string_table(secs[st.link].data, "symbol name table")

    # --- symbols ----------------------------------------------------------------
    def symbols(self) -> None:
        st = getattr(self, "symtab", None)
        if st is None:
            return
        strtab = self.secs[st.link].data
        nsec = len(self.secs)
        self.syms = list(_SYM.iter_unpack(st.data))
        for i, (nm, info, _other, shndx, value, size) in enumerate(self.syms):
            what = f"symbol {i}"
            sname = _cstr(strtab, nm, f"name of {what}")
            if sname:
                what = f"symbol {i} ({sname})"
            if SHN_UNDEF < shndx < SHN_LORESERVE:
                if shndx >= nsec:
                    raise _Bad(f"{what} is in section {shndx}, there are {nsec}")
                sec = self.secs[shndx]
                kind = info & 0xF
                if kind == STT_FUNC and sec.is_code:
                    if value % 8 or size % 8 or value + size > sec.size:
                        raise _Bad(f"{what}: function at {value}, {size} bytes, is not "
                                   f"inside its {sec.size}-byte code section or not "
                                   "instruction-aligned")
                elif kind in (STT_OBJECT, STT_FUNC) and sec.type != SHT_NOBITS:
                    if value + size > sec.size:
                        raise _Bad(f"{what}: {size} bytes at {value} run past its "
                                   f"{sec.size}-byte section {self.names[shndx]}")
            elif shndx >= SHN_LORESERVE and shndx not in (SHN_ABS, SHN_COMMON):
                raise _Bad(f"{what} has reserved section index {shndx:#x}")

    # --- relocations ------------------------------------------------------------
    def relocations(self) -> None:
        st = getattr(self, "symtab", None)
        for s in self.secs:
            if s.type not in (SHT_REL, SHT_RELA):
                continue
            nm = self.names[s.idx]
            target = self.secs[s.info]
            tname = self.names[s.info]
            if st is None or s.link != st.idx:
                raise _Bad(f"relocation section {nm} does not use the symbol table")
            if not (target.is_code or tname == ".maps" or tname.startswith(".struct_ops")):
                continue  # libbpf skips relocations of other sections (.BTF, debug info)
            if s.type == SHT_RELA:
                raise _Bad(f"{nm}: RELA relocations for {tname} (BPF uses REL)")
            nsyms = len(self.syms)
            for k, (off, info) in enumerate(_REL.iter_unpack(s.data)):
                sym = info >> 32
                if sym == 0 or sym >= nsyms:
                    raise _Bad(f"{nm} #{k}: symbol index {sym}, there are {nsyms}")
                if target.is_code:
                    if off % 8 or off + 8 > target.size:
                        raise _Bad(f"{nm} #{k}: offset {off} is not an instruction of "
                                   f"{tname} ({target.size} bytes)")
                    code = target.data[off]
                    if code == BPF_LD_IMM64 and off + 16 > target.size:
                        raise _Bad(f"{nm} #{k}: 16-byte instruction at {off} runs past the "
                                   f"end of {tname}")
                elif off + 8 > target.size:
                    raise _Bad(f"{nm} #{k}: offset {off} is past the end of {tname} "
                               f"({target.size} bytes)")

    # --- license, version ---------------------------------------------------------
    def special(self) -> None:
        lic = self.by_name.get("license")
        if lic is not None and lic.type != SHT_NOBITS and b"\0" not in lic.data:
            raise _Bad("license section is not a NUL-terminated string")
        ver = self.by_name.get("version")
        if ver is not None and ver.size != 4:
            raise _Bad(f"version section is {ver.size} bytes, expected 4")

    # --- BTF maps -----------------------------------------------------------------
    def btf_maps(self, btf: _BTFChecker) -> None:
        maps = self.by_name.get(".maps")
        for tid in btf.datasecs:
            sname = btf.name(tid)
            sec = self.by_name.get(sname)
            for vtype, voff, vsize in btf.secinfo(tid):
                if sname == ".maps":
                    if maps is None or voff + vsize > maps.size:
                        raise _Bad(f"BTF: map variable #{vtype} ({vsize} bytes at {voff}) is "
                                   "not inside the .maps section")
                elif sec is not None and sec.type != SHT_NOBITS and voff + vsize > max(
                        sec.size, 0) and btf.kind[vtype] == _VAR:
                    raise _Bad(f"BTF: variable #{vtype} ({vsize} bytes at {voff}) runs past "
                               f"section {sname} ({sec.size} bytes)")

    # --- BTF.ext ------------------------------------------------------------------
    def btf_ext(self, ext: bytes, btf: _BTFChecker) -> None:
        if len(ext) < 24:
            raise _Bad(f".BTF.ext: {len(ext)} bytes is shorter than its header")
        magic, version, flags, hdr_len = struct.unpack_from("<HBBI", ext)
        if magic != 0xEB9F or version != 1 or flags:
            raise _Bad(f".BTF.ext: bad magic/version/flags {magic:#x}/{version}/{flags}")
        if hdr_len < 24 or hdr_len > len(ext) or hdr_len % 4:
            raise _Bad(f".BTF.ext: header length {hdr_len}")
        fi_off, fi_len, li_off, li_len = struct.unpack_from("<IIII", ext, 8)
        parts = [("func_info", fi_off, fi_len, 8), ("line_info", li_off, li_len, 16)]
        if hdr_len >= 32:
            cr_off, cr_len = struct.unpack_from("<II", ext, 24)
            parts.append(("core_relo", cr_off, cr_len, 16))
        for what, off, length, min_rec in parts:
            if not length:
                continue
            start = hdr_len + off
            if off % 4 or length % 4 or start + length > len(ext) or length < 4:
                raise _Bad(f".BTF.ext {what}: {length} bytes at {off} out of bounds")
            self.ext_records(what, ext[start:start + length], min_rec, btf)

    def ext_records(self, what: str, blob: bytes, min_rec: int, btf: _BTFChecker) -> None:
        rec_size, = _U32.unpack_from(blob)
        if rec_size < min_rec or rec_size % 4:
            raise _Bad(f".BTF.ext {what}: record size {rec_size}")
        words = memoryview(blob).cast("I")  # length is a multiple of 4 (checked)
        step = rec_size // 4
        nstr = len(btf.strings)
        pos = 1
        while pos < len(words):
            if pos + 2 > len(words):
                raise _Bad(f".BTF.ext {what}: truncated section header at {4 * pos}")
            name_off, n = words[pos], words[pos + 1]
            pos += 2
            sname = btf.string(name_off, f".BTF.ext {what} section name")
            sec = self.by_name.get(sname)
            end = pos + n * step
            if n == 0 or end > len(words):
                raise _Bad(f".BTF.ext {what} for {sname!r}: {n} records do not fit")
            if sec is None or not sec.is_code:
                raise _Bad(f".BTF.ext {what}: {sname!r} is not a code section")
            where = f".BTF.ext {what} for {sname}"
            insn_offs = words[pos:end:step]
            if max(insn_offs) >= sec.size or any(x & 7 for x in insn_offs):
                bad = next(x for x in insn_offs if x >= sec.size or x & 7)
                raise _Bad(f"{where}: instruction offset {bad} is not inside the "
                           f"{sec.size}-byte section")
            second = words[pos + 1:end:step]
            if what == "func_info":
                for tid in second:
                    btf.check_id(tid, where, _FUNC)
            elif what == "line_info":
                third = words[pos + 2:end:step]
                if max(second) >= nstr or max(third) >= nstr:
                    raise _Bad(f"{where}: file name or source line string offset past the "
                               f"{nstr}-byte string section")
            else:
                if max(second) >= len(btf.kind):
                    btf.check_id(max(second), where)
                for k in range(n):
                    r = pos + k * step
                    insn_off, access_off, kind = words[r], words[r + 2], words[r + 3]
                    rwhere = f"{where} #{k}"
                    if kind > _MAX_CORE_RELO_KIND:
                        raise _Bad(f"{rwhere}: unknown CO-RE relocation kind {kind}")
                    access = btf.string(access_off, rwhere)
                    if not access or any(not p.isdigit() or not p.isascii() or len(p) > 9
                                         for p in access.split(":")):
                        raise _Bad(f"{rwhere}: malformed CO-RE access string {access!r}")
                    if sec.data[insn_off] == BPF_LD_IMM64 and insn_off + 16 > sec.size:
                        raise _Bad(f"{rwhere}: 16-byte instruction at {insn_off} runs past "
                                   "the section")
            pos = end


class _BTFChecker:
    """Every type, name offset and type id of a .BTF section, checked once."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.kind: list[int] = [_KIND_VOID]
        self.name_off: list[int] = [0]
        self.info_pos: list[int] = [0]  # where each type's extra data starts
        self.vlen: list[int] = [0]
        self.datasecs: list[int] = []
        self.bitfields: dict[int, list[int]] = {}  # struct -> types of its bitfield members
        self.strings = b""

    def run(self) -> None:
        raw = self.raw
        if len(raw) < 24:
            raise _Bad(f".BTF: {len(raw)} bytes is shorter than its header")
        magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            "<HBBIIIII", raw)
        if magic != 0xEB9F or version != 1 or flags:
            raise _Bad(f".BTF: bad magic/version/flags {magic:#x}/{version}/{flags}")
        if hdr_len < 24 or hdr_len % 4:
            raise _Bad(f".BTF: header length {hdr_len}")
        if type_off % 4 or type_len % 4 or type_off + type_len > str_off or \
                hdr_len + str_off + str_len > len(raw):
            raise _Bad(f".BTF: type section ({type_len} bytes at {type_off}) or string "
                       f"section ({str_len} bytes at {str_off}) out of bounds")
        self.strings = raw[hdr_len + str_off:hdr_len + str_off + str_len]
        _string_table(self.strings, ".BTF string section")
        self.types(hdr_len + type_off, hdr_len + type_off + type_len)

    def string(self, off: int, what: str) -> str:
        return _cstr(self.strings, off, what)

    def name(self, tid: int) -> str:
        return _cstr(self.strings, self.name_off[tid], f"BTF type #{tid}")

    def check_id(self, tid: int, what: str, kind: int | None = None) -> None:
        if tid >= len(self.kind):
            raise _Bad(f"{what}: BTF type id {tid} is past the last type #{len(self.kind) - 1}")
        if kind is not None and self.kind[tid] != kind:
            raise _Bad(f"{what}: BTF type #{tid} has kind {self.kind[tid]}, expected {kind}")

    def secinfo(self, tid: int) -> list[tuple[int, int, int]]:
        p = self.info_pos[tid]
        return list(_III.iter_unpack(self.raw[p:p + 12 * self.vlen[tid]]))

    def types(self, pos: int, end: int) -> None:
        raw = self.raw
        nstr = len(self.strings)
        # The type section as 32-bit words (its offset and length are multiples of 4).
        words = memoryview(raw)[pos:end].cast("I")
        nwords = len(words)
        # Pass 1, the only loop over every type: where each type starts.
        starts: list[int] = []
        push = starts.append
        fixed, per = _NEED_FIXED, _NEED_PER_VLEN
        w = 0
        try:
            while w < nwords:
                push(w)
                info = words[w + 1]
                k = (info >> 24) & 0x1F
                if fixed[k] < 0:
                    raise _Bad(f".BTF: type #{len(starts)} has unknown kind {k}")
                w += 3 + fixed[k] + per[k] * (info & 0xFFFF)
        except IndexError:
            w = nwords + 1
        if w != nwords:
            raise _Bad(f".BTF: type #{len(starts)} is truncated")
        # Pass 2: every field checked with comprehensions and slices.
        infos = [words[s + 1] for s in starts]
        if any(i & 0x60FF0000 for i in infos):
            tid = 1 + next(n for n, i in enumerate(infos) if i & 0x60FF0000)
            raise _Bad(f".BTF: type #{tid} has unused info bits set ({infos[tid - 1]:#x})")
        kinds = self.kind
        kinds.extend((i >> 24) & 0x1F for i in infos)
        ntypes = len(kinds)
        self.name_off.extend(words[s] for s in starts)
        self.info_pos.extend(pos + 4 * s + 12 for s in starts)
        self.vlen.extend(i & 0xFFFF for i in infos)
        names_max = max(self.name_off)
        refs_max = 0
        adj: dict[int, list[int]] = {}  # by-value references (a pointer breaks a cycle)
        for tid, s in enumerate(starts, 1):
            k = kinds[tid]
            if k in _SIMPLE_REF:
                out = [words[s + 2]]
            elif k == _PTR:
                if words[s + 2] > refs_max:
                    refs_max = words[s + 2]
                continue
            elif k == _ARRAY:
                out = [words[s + 3], words[s + 4]]
            elif k in _WITH_MEMBERS:
                vlen = infos[tid - 1] & 0xFFFF
                if not vlen:
                    if k == _FUNC_PROTO:
                        adj[tid] = [words[s + 2]]
                        refs_max = max(refs_max, words[s + 2])
                    continue
                if k == _FUNC_PROTO:
                    e = s + 3 + 2 * vlen
                    out = list(words[s + 4:e:2])
                    out.append(words[s + 2])
                    names = max(words[s + 3:e:2])
                elif k == _DATASEC:
                    self.datasecs.append(tid)
                    out = list(words[s + 3:s + 3 + 3 * vlen:3])
                    names = 0
                else:  # struct, union
                    e = s + 3 + 3 * vlen
                    out = list(words[s + 4:e:3])
                    names = max(words[s + 3:e:3])
                    if infos[tid - 1] >> 31:  # kind_flag: offsets carry bitfield sizes
                        bits = [t for t, o in zip(out, words[s + 5:e:3]) if o >> 24]
                        if bits:
                            self.bitfields[tid] = bits
                if names > names_max:
                    names_max = names
            elif k in (_ENUM, _ENUM64):
                vlen = infos[tid - 1] & 0xFFFF
                if vlen:
                    step = 2 if k == _ENUM else 3
                    names = max(words[s + 3:s + 3 + step * vlen:step])
                    if names > names_max:
                        names_max = names
                continue
            else:
                continue
            m = max(out)
            if m > refs_max:
                refs_max = m
            adj[tid] = out
        self.sizes(starts, words)
        if names_max >= nstr:
            raise _Bad(f".BTF: type #{self._culprit_name(nstr)} names string offset "
                       f"{names_max}, past the end of the {nstr}-byte string section")
        if refs_max >= ntypes:
            src = next((t for t, o in adj.items() if max(o) >= ntypes), None)
            if src is None:
                src = next(t for t, s in enumerate(starts, 1)
                           if kinds[t] == _PTR and words[s + 2] >= ntypes)
            raise _Bad(f".BTF: type #{src} (kind {kinds[src]}) refers to type "
                       f"#{refs_max}, past the last type #{ntypes - 1}")
        self.graph(adj)

    def sizes(self, starts: list[int], words: memoryview) -> None:
        """Sizes libbpf divides by: INT, ENUM and FLOAT sizes must be real C sizes.

        libbpf 1.1 computes CO-RE field offsets as ``bit_off / 8 / byte_sz`` and
        aligns externs with ``roundup(off, align)``, where both come from these
        sizes: a 0-byte ``unsigned char`` is a SIGFPE in ``bpf_object__load``.
        """
        kinds = self.kind
        for tid, s in enumerate(starts, 1):
            k = kinds[tid]
            if k == _INT:
                size, enc = words[s + 2], words[s + 3]
                bits, off = enc & 0xFF, (enc >> 16) & 0xFF
                if size not in (1, 2, 4, 8, 16) or bits > 128 or off + bits > 8 * size:
                    raise _Bad(f".BTF: integer #{tid} has size {size}, {bits} bits at bit "
                               f"{off}: not a C integer")
            elif k in (_ENUM, _ENUM64):
                if words[s + 2] not in (1, 2, 4, 8):
                    raise _Bad(f".BTF: enum #{tid} has size {words[s + 2]}")
            elif k == _FLOAT:
                if words[s + 2] not in (2, 4, 8, 12, 16):
                    raise _Bad(f".BTF: float #{tid} has size {words[s + 2]}")

    def _culprit_name(self, nstr: int) -> int:
        """The first type with a name offset (own or member) past the string section."""
        raw = self.raw
        for tid in range(1, len(self.kind)):
            if self.name_off[tid] >= nstr:
                return tid
            k, p, v = self.kind[tid], self.info_pos[tid], self.vlen[tid]
            step = {_STRUCT: 12, _UNION: 12, _FUNC_PROTO: 8, _ENUM: 8, _ENUM64: 12}.get(k)
            if step and any(_U32.unpack_from(raw, p + step * i)[0] >= nstr for i in range(v)):
                return tid
        return 0

    def graph(self, adj: dict[int, list[int]]) -> None:
        kinds = self.kind
        for src, dsts in adj.items():
            k = kinds[src]
            if k == _FUNC:
                if kinds[dsts[0]] != _FUNC_PROTO:
                    raise _Bad(f".BTF: function #{src} has type #{dsts[0]} of kind "
                               f"{kinds[dsts[0]]}, not a function prototype")
            elif k == _DATASEC:
                for d in dsts:
                    if kinds[d] not in (_VAR, _FUNC):
                        raise _Bad(f".BTF: section #{src} lists type #{d} of kind {kinds[d]}, "
                                   "not a variable")
            elif k in (_VAR, _ARRAY) and not dsts[0]:
                raise _Bad(f".BTF: type #{src} (kind {k}) has a void element type")
        # A cycle not broken by a pointer makes libbpf loop (skip_mods_and_typedefs)
        # or recurse without end: iterative three-colour depth-first search over the
        # types that refer to others by value (void, ints, pointers... are leaves).
        color: dict[int, int] = {}
        for root in adj:
            if root in color:
                continue
            stack = [(root, iter(adj[root]))]
            color[root] = 1
            while stack:
                node, it = stack[-1]
                for nxt in it:
                    c = color.get(nxt)
                    if c == 1:
                        raise _Bad(f".BTF: type #{nxt} refers to itself (a reference cycle "
                                   "without a pointer)")
                    if c is None and nxt in adj:
                        color[nxt] = 1
                        stack.append((nxt, iter(adj[nxt])))
                        break
                else:
                    color[node] = 2
                    stack.pop()
        self.unsized(adj)

    def unsized(self, adj: dict[int, list[int]]) -> None:
        """Struct/union members and array elements must have a size; bitfields an int type.

        libbpf 1.1 divides by a bitfield member's type size (``bit_off / 8 /
        byte_sz``, the size field of the resolved type): a bitfield of type void
        or of an array is a SIGFPE in ``bpf_object__load``.
        Runs after the cycle check, so modifier chains end.
        """
        kinds = self.kind
        memo: dict[int, int] = {}

        def resolve(t: int) -> int:
            start = t
            if t in memo:
                return memo[t]
            while kinds[t] in _MODIFIERS:
                t = adj[t][0]
                if t in memo:
                    t = memo[t]
                    break
            memo[start] = t
            return t

        for tid, types in self.bitfields.items():
            for t in types:
                if kinds[resolve(t)] not in (_INT, _ENUM, _ENUM64):
                    raise _Bad(f".BTF: struct #{tid} has a bitfield of type #{t}, which is "
                               f"not an integer or enum (kind {kinds[resolve(t)]})")
        for tid, refs in adj.items():
            k = kinds[tid]
            if k in (_STRUCT, _UNION):
                targets = refs
            elif k == _ARRAY:  # (a VAR may be `extern const void sym __ksym`)
                targets = refs[:1]
            else:
                continue
            for t in targets:
                r = resolve(t)
                if kinds[r] in _UNSIZED:
                    raise _Bad(f".BTF: type #{tid} (kind {k}) holds type #{t}, which is "
                               f"{'void' if r == 0 else f'of kind {kinds[r]}'}: it has no size")


# --- maps: memory the kernel allocates when it creates them ---------------------------
#
# A map definition is data in the object: a hostile or corrupted one can ask for a
# per-CPU array of 600 million entries. The kernel (privileged caller) then spends
# minutes allocating and zeroing tens of GB -- the process looks hung and the whole
# machine runs short of memory -- before it fails or succeeds. pybpf estimates what
# each map preallocates at creation and refuses, before any map is created, a load
# whose maps would need more than half the memory available now.

BPF_F_NO_PREALLOC = 1
MAP_MEMORY_FRACTION = 0.5
"""Refuse to load maps preallocating more than this share of MemAvailable."""
MAX_PERCPU_PREALLOC = 1 << 22
"""Refuse per-CPU maps preallocating more elements: the kernel makes one per-CPU
allocation per element, about 1.5 us each here (14 million took 22 s)."""


def _r8(n: int) -> int:
    return (n + 7) & ~7


def map_prealloc_bytes(type_name: str, key_size: int, value_size: int, max_entries: int,
                       flags: int, ncpus: int) -> int:
    """Bytes the kernel allocates when it creates such a map (an estimate, from above)."""
    n = max_entries
    f = facts(type_name)
    how, percpu = f.prealloc, f.percpu
    if how == "array":
        return n * _r8(value_size) * (ncpus if percpu else 1)
    if how == "hash":
        buckets = (1 << max(n - 1, 0).bit_length()) * 16
        if flags & BPF_F_NO_PREALLOC and not type_name.startswith("lru"):
            return buckets
        per = 48 + _r8(key_size) + (8 if percpu else _r8(value_size))
        return buckets + n * per + (n * _r8(value_size) * ncpus if percpu else 0)
    if how == "ring":
        return n
    if how == "stack_trace":
        return n * (_r8(value_size) + 32)
    if how == "queue":
        return n * _r8(value_size)
    if how == "pointers":
        return n * 8
    if how == "bloom":
        return n * 2
    return 0  # allocated on demand (lpm_trie, local storages, struct_ops...)


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_map_memory(maps: list[tuple[str, str, int, int, int, int]], obj_name: str,
                     ncpus: int) -> None:
    """Raise LoadError(ENOMEM) if the maps would preallocate too much memory.

    ``maps``: (name, type name, key size, value size, max_entries, flags) of each
    map the load will create. Cost: one read of /proc/meminfo.
    """
    from .errors import LoadError

    for name, t, _k, v, n, fl in maps:
        f = facts(t)
        prealloc = f.prealloc == "array" or t.startswith("lru") or not fl & BPF_F_NO_PREALLOC
        if f.percpu and prealloc and n > MAX_PERCPU_PREALLOC:
            raise LoadError(errno.E2BIG,
                            f"cannot load BPF object {obj_name}: map {name!r} ({t}) would "
                            f"preallocate {n} per-CPU elements of {v} bytes; the kernel "
                            f"allocates them one by one (about 1.5 us each, 14 million took "
                            f"22 s here, during which the process cannot be killed). pybpf "
                            f"refuses more than {MAX_PERCPU_PREALLOC}: lower max_entries "
                            "before load() (or raise pybpf._validate.MAX_PERCPU_PREALLOC)",
                            map=name)
    sizes = [(map_prealloc_bytes(t, k, v, n, fl, ncpus), name, t, v, n)
             for name, t, k, v, n, fl in maps]
    total = sum(s[0] for s in sizes)
    avail = _mem_available()
    if avail is None or total <= avail * MAP_MEMORY_FRACTION:
        return
    big, name, t, v, n = max(sizes)
    raise LoadError(errno.ENOMEM,
                    f"cannot load BPF object {obj_name}: its maps would preallocate "
                    f"{total / 2**30:.1f} GiB, more than half of the {avail / 2**30:.1f} GiB "
                    f"available; the largest is map {name!r} ({t}, {n} entries of {v} "
                    f"bytes: {big / 2**30:.1f} GiB). Lower its max_entries before load() "
                    "(or raise pybpf._validate.MAP_MEMORY_FRACTION)", map=name)
