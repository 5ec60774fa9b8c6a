"""Value types the object's BTF lacks, given by the user: one conversion to BTF.

Many objects carry no BTF for the struct they stream (a ring buffer's event is
only ever written through a pointer, so clang emits no type for it). A type can
then be given in one of three forms, and :func:`btf_type` turns each into a
:class:`~pybpf.BTFType` (of a small BTF of its own), from which everything else
works as for the object's own types (codecs, generated classes, numpy dtypes)::

    btf_type("struct event { __u32 pid; char comm[16]; }")  # C, compiled by clang
    btf_type(Event)            # a ctypes.Structure / Union / Array / scalar type
    btf_type(np.dtype([("pid", "<u4"), ("comm", "S16")]))   # a numpy dtype

The same forms are accepted wherever pybpf takes a type: map key and value types
(``Map.set_types``, ``OpenMap.set_types``), ``decode=``/``encode=`` of ring, perf
and user ring buffers, ``RecordBatch.numpy()``, globals (``Section.set_type``),
``pybpf run --event-type`` and ``pybpf gen --map-type``.

C declarations: the text is compiled with clang (``-target bpf -g``) after a
prelude defining ``__u8``..``__u64``, ``__s8``..``__s64``, ``u8``..``u64``,
``s8``..``s64``, ``bool``, the ``__be``/``__le`` types, ``pid_t``, ``uid_t``,
``gid_t``, ``TASK_COMM_LEN``, ``NAME_MAX`` and ``PATH_MAX``; a declaration that
needs kernel types (``struct in6_addr``...) is compiled again with the running
kernel's ``vmlinux.h`` (bpftool) when that is at hand. The type is the last
declaration (``struct X {...}``, ``union X {...}``, ``enum X {...}`` or a
``typedef``), earlier ones may define what it uses. The BTF clang made is cached
by the text's SHA-256 in ``$PYBPF_TYPE_CACHE`` (``os.pathsep``-separated
directories, searched in order) and ``~/.cache/pybpf/types``, with a digest of the
text and the BTF: an entry that does not match (corrupted, another declaration's) is
refused, compiled again or, without clang, a TypeSpecError naming the file;
``pybpf build --type DECL [--type-cache DIR]`` fills a cache ahead of time, so a
machine without clang can use the same declaration. Cost: one clang run (~50 ms)
the first time a text is seen, a file read after, nothing within a process.

ctypes: integer, ``c_bool``, ``c_float``/``c_double`` and ``c_char`` fields,
arrays (``c_char * 16`` is a C string), nested structures and unions, bitfields.
Pointers, ``c_wchar``, ``c_longdouble`` and big-endian types raise
:class:`~pybpf.TypeSpecError` naming the type and field. numpy: integers,
booleans, ``float32``/``float64``, ``S<n>`` (a C string), ``V<n>`` (bytes),
sub-arrays and nested structured dtypes, in little-endian or native order.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .btf import BTF, INT_BOOL, INT_CHAR, INT_SIGNED, BTFFormatError, BTFKind, BTFType
from .errors import BPFKeyError, TypeSpecError

__all__ = ["btf_type", "is_type_spec", "from_c", "from_ctypes", "from_numpy", "compile_c",
           "cache_dirs", "TypeSpecError"]

_NAME = re.compile(r"^\s*(?:(struct|union|enum)\s+)?([A-Za-z_]\w*)\s*$")
_lock = threading.Lock()
_memo: dict[Any, BTFType] = {}  # spec (decl text, ctypes type, dtype) -> its BTF type


def is_type_spec(spec: Any) -> bool:
    """Is ``spec`` one of the forms :func:`btf_type` converts (a C declaration, a ctypes
    type, a numpy dtype, a BTF type)? A plain name (``"event"``) is not a declaration."""
    if isinstance(spec, BTFType):
        return True
    if isinstance(spec, str):
        return _NAME.match(spec) is None
    return _is_ctypes(spec) or is_numpy(spec)


def btf_type(spec: Any, *, btf: BTF | None = None, what: str = "type") -> BTFType:
    """The BTF type of ``spec``: a :class:`BTFType` as it is; a name (``"event"``,
    ``"struct event"``) looked up in ``btf`` (the object's); a C declaration; a ctypes
    type; a numpy dtype. :class:`TypeSpecError` (a ``TypeError``) names what cannot be
    converted; a name ``btf`` lacks is a :class:`BPFKeyError` (a ``LookupError``)."""
    if isinstance(spec, BTFType):
        return spec
    if isinstance(spec, str):
        m = _NAME.match(spec)
        if m is None:
            return from_c(spec)
        if btf is None:
            raise BPFKeyError(errno.ENOENT, f"{what}: no BTF to find {spec.strip()!r} in "
                                            "(give its C declaration, a ctypes type or a "
                                            "numpy dtype)")
        return _named(btf, m.group(1), m.group(2), what)
    if _is_ctypes(spec):
        return from_ctypes(spec)
    if is_numpy(spec):
        return from_numpy(spec)
    raise TypeSpecError(f"{what}: cannot use {spec!r} as a type (give a C declaration, a "
                        "ctypes type, a numpy dtype or the name of a type in the object's BTF)")


def _named(btf: BTF, tag: str | None, name: str, what: str) -> BTFType:
    kinds = {"struct": (BTFKind.STRUCT,), "union": (BTFKind.UNION,),
             "enum": (BTFKind.ENUM, BTFKind.ENUM64)}.get(tag or "")
    if kinds is None:
        t = btf.find(name)
    else:
        t = next((x for x in (btf.find(name, k) for k in kinds) if x is not None), None)
    if t is None:
        raise BPFKeyError(errno.ENOENT, f"{what}: no type "
                                        f"{(tag + ' ' if tag else '') + name!r} in the "
                                        "object's BTF (give its C declaration, a ctypes type "
                                        "or a numpy dtype instead)")
    return t


# --- a small BTF writer ------------------------------------------------------------------

class _Writer:
    """Builds one BTF blob, type by type (ids from 1), for ctypes and numpy types."""

    def __init__(self) -> None:
        self.types: list[bytes] = []
        self.strs = bytearray(b"\0")
        self._str_at: dict[str, int] = {"": 0}
        self._ints: dict[tuple[str, int, int], int] = {}

    def _s(self, name: str) -> int:
        off = self._str_at.get(name)
        if off is None:
            off = self._str_at[name] = len(self.strs)
            self.strs += name.encode() + b"\0"
        return off

    def _add(self, name: str, kind: BTFKind, vlen: int, size_type: int, data: bytes = b"",
             kind_flag: bool = False) -> int:
        info = (int(kind) << 24) | vlen | (1 << 31 if kind_flag else 0)
        self.types.append(struct.pack("<III", self._s(name), info, size_type) + data)
        return len(self.types)

    def int_(self, name: str, size: int, encoding: int) -> int:
        key = (name, size, encoding)
        tid = self._ints.get(key)
        if tid is None:
            tid = self._ints[key] = self._add(name, BTFKind.INT, 0, size, struct.pack(
                "<I", (encoding << 24) | size * 8))
        return tid

    def float_(self, name: str, size: int) -> int:
        return self._add(name, BTFKind.FLOAT, 0, size)

    def array(self, elem: int, n: int) -> int:
        if not 0 <= n < 1 << 32:
            raise TypeSpecError(f"an array of {n} elements: BTF counts at most 2**32 - 1")
        index = self.int_("__u32", 4, 0)
        return self._add("", BTFKind.ARRAY, 0, 0, struct.pack("<III", elem, index, n))

    def struct_(self, name: str, size: int, members: list[tuple[str, int, int, int]],
                union: bool = False) -> int:
        """members: (name, type id, bit offset, bitfield size or 0)."""
        what = f"{'union' if union else 'struct'} {name}"
        if len(members) > 0xFFFF or not 0 <= size < 1 << 32:
            raise TypeSpecError(f"{what}: {len(members)} members of {size} bytes; BTF holds "
                                "at most 65535 members and 2**32 - 1 bytes")
        flag = any(bits for *_, bits in members)
        for n, _t, off, bits in members:
            if not 0 <= off < (1 << 24 if flag else 1 << 32) or not 0 <= bits < 256:
                raise TypeSpecError(f"{what}.{n}: bit offset {off} does not fit BTF"
                                    + (" (with bitfields: below 2**24)" if flag else ""))
        data = b"".join(struct.pack("<III", self._s(n), t, (bits << 24 | off) if flag else off)
                        for n, t, off, bits in members)
        return self._add(name, BTFKind.UNION if union else BTFKind.STRUCT, len(members), size,
                         data, kind_flag=flag)

    def finish(self, root: int) -> BTFType:
        types = b"".join(self.types)
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types),
                          len(self.strs))
        return BTF(hdr + types + bytes(self.strs)).types[root]


# --- ctypes -------------------------------------------------------------------------------

def _is_ctypes(spec: Any) -> bool:
    return isinstance(spec, type) and issubclass(spec, (ctypes._SimpleCData, ctypes.Structure,
                                                        ctypes.Union, ctypes.Array,
                                                        ctypes._Pointer))


# ctypes type codes -> BTF encoding (the name is __u32-style, from the size; c_char is
# char, a C string in arrays)
_CT_INTS = {"b": INT_SIGNED, "B": 0, "h": INT_SIGNED, "H": 0, "i": INT_SIGNED, "I": 0,
            "l": INT_SIGNED, "L": 0, "q": INT_SIGNED, "Q": 0, "c": INT_CHAR, "?": INT_BOOL}
_CT_UNSUPPORTED = {"z": "a pointer (c_char_p)", "Z": "a pointer (c_wchar_p)",
                   "P": "a pointer (c_void_p)", "O": "a Python object (py_object)",
                   "u": "c_wchar (its size differs between C and BPF)",
                   "g": "c_longdouble (BPF has no long double)"}


def from_ctypes(ctype: type) -> BTFType:
    """The BTF type of a ctypes type (cached per type)."""
    with _lock:
        t = _memo.get(ctype)
    if t is None:
        w = _Writer()
        root = _ct(w, ctype, ctype.__name__, 0)
        t = w.finish(root)
        with _lock:
            _memo[ctype] = t
    return t


def _ct(w: _Writer, t: type, path: str, depth: int) -> int:
    if depth > 32:
        raise TypeSpecError(f"ctypes type {path}: nested more than 32 levels deep")
    if issubclass(t, ctypes._Pointer):
        raise TypeSpecError(f"ctypes type {path}: {t.__name__} is a pointer; BPF values "
                            "cannot hold user-space pointers (use an integer type such as "
                            "c_uint64 for an address)")
    if issubclass(t, (ctypes.Structure, ctypes.Union)):
        if _big_endian(t):
            raise TypeSpecError(f"ctypes type {path}: {t.__name__} is big-endian; BPF "
                                "values on this host are little-endian")
        fields = getattr(t, "_fields_", None)
        if fields is None:
            raise TypeSpecError(f"ctypes type {path}: {t.__name__} has no _fields_")
        members = []
        for f in fields:
            fname, ftype = f[0], f[1]
            desc = getattr(t, fname)
            fpath = f"{path}.{fname}"
            bit_off, bits = desc.offset * 8, 0
            if len(f) > 2:
                bits = int(f[2])
                if hasattr(desc, "bit_offset"):  # Python 3.13+
                    bit_off += int(desc.bit_offset)
                else:  # older: size holds (bits << 16) | bit offset in the storage unit
                    bit_off += desc.size & 0xFFFF
                if not issubclass(ftype, ctypes._SimpleCData) or ftype._type_ not in _CT_INTS:
                    raise TypeSpecError(f"ctypes type {fpath}: a bitfield must be an integer "
                                        "type")
            members.append((fname, _ct(w, ftype, fpath, depth + 1), bit_off, bits))
        return w.struct_(t.__name__, ctypes.sizeof(t), members,
                         union=issubclass(t, ctypes.Union))
    if issubclass(t, ctypes.Array):
        elem: Any = getattr(t, "_type_")  # noqa: B009 - untyped in typeshed
        return w.array(_ct(w, elem, f"{path}[]", depth + 1), int(getattr(t, "_length_")))  # noqa: B009
    if issubclass(t, ctypes._SimpleCData):
        code: str = getattr(t, "_type_")  # noqa: B009
        if code in _CT_UNSUPPORTED:
            raise TypeSpecError(f"ctypes type {path}: {t.__name__} is "
                                f"{_CT_UNSUPPORTED[code]}: not supported in BPF values")
        if getattr(t, "__ctype_le__", t) is not t and sys.byteorder == "little":
            raise TypeSpecError(f"ctypes type {path}: {t.__name__} is big-endian; BPF "
                                "values on this host are little-endian")
        if code in ("f", "d"):
            return w.float_("float" if code == "f" else "double", ctypes.sizeof(t))
        enc, size = _CT_INTS[code], ctypes.sizeof(t)
        return w.int_(_int_name(size, enc), size, enc)
    raise TypeSpecError(f"ctypes type {path}: {t.__name__} is not supported")


def _int_name(size: int, encoding: int) -> str:
    if encoding & INT_CHAR:
        return "char"
    if encoding & INT_BOOL:
        return "_Bool"
    return f"__{'s' if encoding & INT_SIGNED else 'u'}{size * 8}"


def _big_endian(t: type) -> bool:
    return sys.byteorder == "little" and any(
        c.__name__ == "BigEndianStructure" or c.__name__ == "BigEndianUnion"
        for c in t.__mro__)


# --- numpy ----------------------------------------------------------------------------------

def is_numpy(spec: Any) -> bool:
    """Whether ``spec`` is a numpy dtype or numpy type (no numpy import)."""
    mod = type(spec).__module__ if not isinstance(spec, type) else spec.__module__
    return mod.split(".")[0] == "numpy"


def from_numpy(dtype: Any, name: str = "record") -> BTFType:
    """The BTF type of a numpy dtype (a structured dtype becomes struct ``name``)."""
    import numpy as np

    dt = np.dtype(dtype)
    with _lock:
        t = _memo.get(("numpy", dt, name))
    if t is None:
        w = _Writer()
        root = _np(w, dt, name, name, 0)
        t = w.finish(root)
        with _lock:
            _memo[("numpy", dt, name)] = t
    return t


def _np(w: _Writer, dt: Any, name: str, path: str, depth: int) -> int:
    if depth > 32:
        raise TypeSpecError(f"numpy dtype {path}: nested more than 32 levels deep")
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        tid = _np(w, base, name, f"{path}[]", depth + 1)
        for n in reversed(shape):
            tid = w.array(tid, n)
        return tid
    if dt.fields is not None:
        members = []
        for fname in dt.names:
            fdt, off = dt.fields[fname][:2]
            members.append((fname, _np(w, fdt, f"{name}_{fname}", f"{path}.{fname}",
                                       depth + 1), off * 8, 0))
        return w.struct_(name, dt.itemsize, members)
    if dt.byteorder == ">" or dt.byteorder == "=" and sys.byteorder != "little":
        raise TypeSpecError(f"numpy dtype {path}: {dt} is big-endian; BPF values on this "
                            "host are little-endian")
    k, size = dt.kind, dt.itemsize
    if k in "iu" and size in (1, 2, 4, 8):
        enc = INT_SIGNED if k == "i" else 0
        return w.int_(_int_name(size, enc), size, enc)
    if k == "b":
        return w.int_("_Bool", 1, INT_BOOL)
    if k == "f" and size in (4, 8):
        return w.float_("float" if size == 4 else "double", size)
    if k == "S":
        return w.array(w.int_("char", 1, INT_CHAR), size)
    if k == "V":
        return w.array(w.int_("__u8", 1, 0), size)
    raise TypeSpecError(f"numpy dtype {path}: {dt} has no C equivalent in BPF values "
                        "(integers, bool, float32/64, S<n>, V<n>, sub-arrays, structs)")


# --- C declarations -------------------------------------------------------------------------

_PRELUDE = """\
typedef unsigned char __u8; typedef signed char __s8;
typedef unsigned short __u16; typedef signed short __s16;
typedef unsigned int __u32; typedef signed int __s32;
typedef unsigned long long __u64; typedef signed long long __s64;
typedef __u8 u8; typedef __s8 s8; typedef __u16 u16; typedef __s16 s16;
typedef __u32 u32; typedef __s32 s32; typedef __u64 u64; typedef __s64 s64;
typedef __u16 __be16; typedef __u32 __be32; typedef __u64 __be64;
typedef __u16 __le16; typedef __u32 __le32; typedef __u64 __le64;
typedef _Bool bool;
typedef int pid_t; typedef unsigned int uid_t; typedef unsigned int gid_t;
#ifndef TASK_COMM_LEN
#define TASK_COMM_LEN 16
#endif
#ifndef NAME_MAX
#define NAME_MAX 255
#endif
#ifndef PATH_MAX
#define PATH_MAX 4096
#endif
"""
_ANCHOR = "__pybpf_type"
_CACHE_VERSION = b"pybpf-type-2\0"
#: a cache file: this magic, the SHA-256 of (_CACHE_VERSION, the declaration, the BTF),
#: then the BTF clang made; a file whose digest does not match is not used
_CACHE_MAGIC = b"PYBPF-TYPE-BTF\0\0"


def cache_dirs() -> list[Path]:
    """Where compiled C declarations are looked for, in order: ``$PYBPF_TYPE_CACHE``'s
    directories, then ``~/.cache/pybpf/types`` (``$XDG_CACHE_HOME`` if set)."""
    env = os.environ.get("PYBPF_TYPE_CACHE", "")
    dirs = [Path(d) for d in env.split(os.pathsep) if d]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    dirs.append(Path(base) / "pybpf" / "types")
    return dirs


def _key(decl: str) -> str:
    return hashlib.sha256(_CACHE_VERSION + decl.strip().encode()).hexdigest()[:40]


def from_c(decl: str) -> BTFType:
    """The BTF type of a C declaration (see the module doc): from this process's memo,
    else a cache file, else clang (then cached)."""
    text = decl.strip()
    with _lock:
        t = _memo.get(text)
    if t is not None:
        return t
    key = _key(text)
    raw = None
    refused: list[str] = []
    for d in cache_dirs():
        p = d / f"{key}.btf"
        if p.is_file():
            raw = _cache_entry(p, text)
            if raw is not None:
                break
            refused.append(str(p))
    if raw is None:
        raw = _compile(text, refused)
        _store(text, raw, None)  # (replaces a refused entry)
    t = _anchored(BTF.from_bytes(raw), text)
    try:
        _ = t.codec  # now, so that BTF clang got wrong is refused naming the declaration
    except BTFFormatError as e:
        raise TypeSpecError(f"C declaration {_short(text)!r}: unusable BTF from clang "
                            f"({e})") from None
    with _lock:
        _memo[text] = t
    return t


def compile_c(decls: Iterable[str], directory: str | os.PathLike[str] | None = None
              ) -> list[Path]:
    """Compile C declarations with clang into the cache (``directory``, default the
    first of :func:`cache_dirs` that can be written); the files written, one per
    declaration. What ``pybpf build --type`` does."""
    out = []
    for decl in decls:
        text = decl.strip()
        raw = _compile(text)
        _anchored(BTF.from_bytes(raw), text)  # the type is there
        out.append(_store(text, raw, Path(directory) if directory else None))
    return out


def _digest(text: str, raw: bytes) -> bytes:
    return hashlib.sha256(_CACHE_VERSION + text.encode() + b"\0" + raw).digest()


def _cache_entry(path: Path, text: str) -> bytes | None:
    """The BTF in cache file PATH when it is the entry of TEXT (magic and digest match:
    not truncated, corrupted or another declaration's), else None."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    n = len(_CACHE_MAGIC)
    raw = data[n + 32:]
    if data[:n] != _CACHE_MAGIC or data[n:n + 32] != _digest(text, raw):
        return None
    return raw


def _store(text: str, raw: bytes, directory: Path | None) -> Path:
    key = _key(text)
    raw = _CACHE_MAGIC + _digest(text, raw) + raw
    dirs = [directory] if directory is not None else cache_dirs()
    last: OSError | None = None
    for d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
            os.replace(tmp, d / f"{key}.btf")
            return d / f"{key}.btf"
        except OSError as e:
            last = e
    if directory is not None and last is not None:
        raise TypeSpecError(f"cannot write the type cache in {directory}: {last}",
                            err=last.errno or errno.EIO)
    return Path()  # no writable cache: the type works for this process only


def _anchored(btf: BTF, text: str) -> BTFType:
    var = btf.find(_ANCHOR, BTFKind.VAR)
    if var is None:
        raise TypeSpecError(f"C declaration {_short(text)!r}: its compiled BTF has no "
                            "type (a stale or foreign cache file?)")
    return btf.types[var.type]


def _short(text: str) -> str:
    one = " ".join(text.split())
    return one if len(one) <= 60 else one[:57] + "..."


def _target(text: str) -> str:
    """The anchor declaration naming the last top-level declaration's type."""
    body = re.sub(r"/\*.*?\*/|//[^\n]*", " ", text, flags=re.S)
    body = "\n".join(ln for ln in body.splitlines() if not ln.lstrip().startswith("#"))
    stmts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in body:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == ";" and depth == 0:
            stmts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        stmts.append("".join(cur))
    stmts = [s.strip() for s in stmts if s.strip()]
    if not stmts or depth != 0:
        raise TypeSpecError(f"C declaration {_short(text)!r}: expected a struct, union, "
                            "enum or typedef declaration (with balanced braces)")
    last = stmts[-1]
    if last.startswith("typedef"):
        flat = re.sub(r"\{.*\}", " ", last, flags=re.S)
        flat = re.sub(r"\[[^\]]*\]|\([^)]*\)", " ", flat)
        names = re.findall(r"[A-Za-z_]\w*", flat)
        if len(names) < 2:
            raise TypeSpecError(f"C declaration {_short(text)!r}: cannot find the typedef's "
                                "name")
        return f"{names[-1]} {_ANCHOR};"
    m = re.match(r"(struct|union|enum)\s+([A-Za-z_]\w*)\s*(\{|$)", last)
    if m is None or m.group(3) != "{":
        raise TypeSpecError(f"C declaration {_short(text)!r}: the last declaration must "
                            "define a type: struct NAME {...}, union NAME {...}, enum NAME "
                            "{...} or typedef ... NAME")
    return f"{m.group(1)} {m.group(2)} {_ANCHOR};"


def _compile(text: str, refused: list[str] | None = None) -> bytes:
    from . import toolchain

    anchor = _target(text)
    try:
        clang = toolchain.find_clang()
    except FileNotFoundError:
        bad = (f"; refused the corrupted or foreign cache file {', '.join(refused)}"
               if refused else "")
        raise TypeSpecError(
            f"C declaration {_short(text)!r}: no clang to compile it and no cached BTF for "
            f"it (looked in {', '.join(map(str, cache_dirs()))}{bad}); install clang, or run "
            "`pybpf build --type '<the declaration>' --type-cache DIR` where clang is and "
            "set PYBPF_TYPE_CACHE=DIR here", err=errno.ENOENT) from None
    src = f"{_PRELUDE}#line 1 \"<declaration>\"\n{text}\n;\n{anchor}\n"
    first_error = ""
    with tempfile.TemporaryDirectory(prefix="pybpf-type-") as tmp:
        out = os.path.join(tmp, "t.o")
        for kernel_types in (False, True):
            cmd = [clang, "-target", "bpf", "-g", "-O2", "-c", "-x", "c", "-", "-o", out]
            body = src
            if kernel_types:  # again, with every type of the running kernel
                try:
                    cmd[1:1] = ["-I", toolchain.vmlinux_h()]
                except (OSError, ValueError):
                    break
                body = "#include <vmlinux.h>\n" + src
            r = subprocess.run(cmd, input=body, capture_output=True, text=True, timeout=300)
            if r.returncode == 0:
                return _elf_btf(Path(out).read_bytes(), text)
            errs = [ln for ln in r.stderr.splitlines() if "error:" in ln]
            first_error = first_error or (
                errs or r.stderr.strip().splitlines() or ["clang failed"])[0].strip()
    raise TypeSpecError(f"C declaration {_short(text)!r} does not compile: {first_error}")


def _elf_btf(data: bytes, text: str) -> bytes:
    import io

    from elftools.elf.elffile import ELFFile

    sec = ELFFile(io.BytesIO(data)).get_section_by_name(".BTF")
    if sec is None:
        raise TypeSpecError(f"C declaration {_short(text)!r}: clang emitted no BTF")
    raw: bytes = sec.data()
    return raw
