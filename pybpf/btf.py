"""BTF, read from its raw bytes (an object's ``.BTF``, kernel or module BTF, a file).

:class:`BTF` is the type graph: ``btf.types[id]`` is a :class:`BTFType`,
``btf.find(name)`` looks types up, ``btf.resolve(id)`` skips typedef and
modifiers, ``btf.size_of(id)`` follows the C layout. Opening checks every
kind, length, offset and id in C (pybpf/_native/btf.c), so malformed BTF is a
:class:`BTFFormatError`, never a crash; types are then built lazily, only
those a caller reaches, so a kernel's BTF opens in milliseconds.
"""

from __future__ import annotations

import enum
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from errno import ENOENT
from typing import Any, Callable, overload

from ._ffi import ffi, lib
from .errors import BPFKeyError, ObjectError

__all__ = ["BTF", "BTFType", "BTFMember", "BTFKind", "BTFFormatError", "set_codec_builder"]

# How a BTF type becomes a value codec lives above this module (pybpf.types builds
# codecs from BTF): types.py hands its builder over when it is imported, so this
# module never imports it (no btf <-> types cycle). pybpf's __init__ imports types.
_codec_builder: Callable[[BTF, int], Any] | None = None


def set_codec_builder(builder: Callable[[BTF, int], Any]) -> None:
    """Install the function behind :attr:`BTFType.codec` (done by :mod:`pybpf.types`)."""
    global _codec_builder
    _codec_builder = builder

BTF_MAGIC = 0xEB9F


class BTFFormatError(ObjectError):
    """The BTF bytes are malformed (bad header, offset, type id or string)."""

    def __init__(self, message: str) -> None:
        super().__init__(22, f"malformed BTF: {message}")


class BTFKind(enum.IntEnum):
    """BTF_KIND_* (include/uapi/linux/btf.h)."""

    VOID = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


MODIFIERS = frozenset({BTFKind.TYPEDEF, BTFKind.VOLATILE, BTFKind.CONST, BTFKind.RESTRICT,
                       BTFKind.TYPE_TAG})

# BTF_INT_* encoding bits
INT_SIGNED = 1
INT_CHAR = 2
INT_BOOL = 4


@dataclass
class BTFMember:
    """A struct/union member, enum value, function parameter or datasec variable."""

    name: str
    type: int = 0
    offset: int = 0  # bits for members, bytes for datasec entries
    bitfield_size: int = 0
    value: int = 0  # enums
    size: int = 0  # datasec entries


@dataclass
class BTFType:
    """One BTF type. ``size`` for sized kinds, ``type`` for reference kinds."""

    id: int
    kind: BTFKind
    name: str
    size: int = 0
    type: int = 0
    kind_flag: bool = False
    members: list[BTFMember] = field(default_factory=list)
    # INT
    encoding: int = 0
    bits: int = 0
    bit_offset: int = 0
    # ARRAY
    index_type: int = 0
    nelems: int = 0
    # VAR linkage / DECL_TAG component index
    linkage: int = 0
    _btf: BTF | None = field(default=None, repr=False, compare=False)

    @property
    def signed(self) -> bool:
        if self.kind in (BTFKind.ENUM, BTFKind.ENUM64):
            return self.kind_flag
        return bool(self.encoding & INT_SIGNED)

    def __repr__(self) -> str:
        return f"<BTFType #{self.id} {self.kind.name} {self.name!r}>"

    @property
    def btf(self) -> BTF | None:
        """The BTF this type belongs to (its ids resolve there); None if detached."""
        return self._btf

    # --- values (pybpf.types) ---------------------------------------------------------
    @property
    def codec(self) -> Any:
        """The :class:`pybpf.types.Codec` that decodes/encodes values of this type."""
        if self._btf is None:
            raise ValueError(f"{self!r} is not attached to a BTF")
        if _codec_builder is None:
            raise RuntimeError("pybpf.types is not imported (import pybpf)")
        return _codec_builder(self._btf, self.id)

    @property
    def pytype(self) -> Any:
        """The Python class of decoded values (a generated Struct class, IntEnum, int...)."""
        c = self.codec
        return getattr(c, "cls", None) or getattr(c, "enum", None) or c.pytype

    def decode(self, raw: bytes | bytearray | memoryview, offset: int = 0) -> Any:
        """Decode a value of this type from ``raw`` at ``offset``."""
        c = self.codec
        if len(raw) - offset < c.size:
            raise ValueError(f"{self.name or self.kind.name}: need {c.size} bytes, "
                             f"got {len(raw) - offset}")
        return c.decode(raw, offset)

    def encode(self, value: Any) -> bytes:
        """Encode ``value`` (an instance, dict, tuple or scalar) into this type's bytes."""
        return bytes(self.codec.encode(value, self.name or "value"))


_HDR = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_MEMBER = struct.Struct("<III")
_PARAM = struct.Struct("<II")
_ENUM_U = struct.Struct("<II")
_ENUM_S = struct.Struct("<Ii")
_SIZED = frozenset({BTFKind.INT, BTFKind.ENUM, BTFKind.ENUM64, BTFKind.STRUCT, BTFKind.UNION,
                    BTFKind.FLOAT, BTFKind.DATASEC})
# find(name) without a kind: the first of these kinds, in this order, else the lowest id
_PREFERRED = (BTFKind.STRUCT, BTFKind.UNION, BTFKind.ENUM, BTFKind.ENUM64, BTFKind.TYPEDEF,
              BTFKind.INT)
_KINDS = tuple(BTFKind)
_new_type = object.__new__


# BTF.shared(): blobs by size (each list in arrival order), bounded in count and bytes
_shared: dict[int, list[BTF]] = {}
_shared_bytes = 0
_shared_lock = threading.Lock()
_SHARED_MAX = 32
_SHARED_BYTES = 16 << 20


class _Types(Sequence[BTFType]):
    """``btf.types``: every type by id, each built from the raw bytes when first read."""

    __slots__ = ("_btf",)

    def __init__(self, btf: BTF) -> None:
        self._btf = btf

    def __len__(self) -> int:
        return self._btf._count

    @overload
    def __getitem__(self, i: int) -> BTFType: ...
    @overload
    def __getitem__(self, i: slice) -> list[BTFType]: ...

    def __getitem__(self, i: int | slice) -> BTFType | list[BTFType]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self._btf.type_by_id(i)

    def __iter__(self) -> Iterator[BTFType]:
        get = self._btf.type_by_id
        return (get(i) for i in range(len(self)))


class BTF:
    """A BTF blob. ``types[0]`` is void; ids index ``types``.

    Opening one checks and indexes the whole type section in C (pybpf/_native/btf.c:
    every kind, length, string offset and type id; ~2 ms for a kernel's BTF), and
    builds no type: a :class:`BTFType` is made from the raw bytes when first asked for
    (by id, by :meth:`find`, or by iterating) and kept. :meth:`find` scans the section
    in C once per name.
    """

    _count: int  # ids 0 .. _count - 1 (the base's included)
    _first: int  # id of this blob's first type (1, or the base's count)
    _n: int  # types in this blob
    _nstr: int  # string bytes, the base's included
    _str_base: int
    _t0: int  # offset of the type section in raw
    _offs: Any  # __u32[]: offset of each of this blob's types in the type section

    def __init__(self, raw: bytes, *, base: BTF | None = None) -> None:
        self.raw = bytes(raw)
        self.base = base
        self._built: dict[int, BTFType] = {}
        self._found: dict[str, list[int]] = {}
        self._parse()
        self.types: Sequence[BTFType] = _Types(self)

    @classmethod
    def from_bytes(cls, raw: bytes, *, base: BTF | None = None) -> BTF:
        return cls(raw, base=base)

    @classmethod
    def from_file(cls, path: str, *, base: BTF | None = None) -> BTF:
        """Raw BTF file (e.g. /sys/kernel/btf/vmlinux)."""
        with open(path, "rb") as f:
            return cls(f.read(), base=base)

    @classmethod
    def shared(cls, raw: bytes | Any) -> BTF:
        """The BTF of ``raw`` (bytes, or any buffer: a cffi buffer of libbpf's copy is
        compared in place, copied only when new), shared with every earlier caller that
        passed equal bytes (an object opened again gets the types, and codecs, already
        built): one comparison of the bytes when known (memcmp), else a parse. Kept for
        the last 32 distinct blobs up to 16 MiB in all."""
        for known in _shared.get(len(raw), ()):
            if known.raw == raw:
                return known
        btf = cls(bytes(raw))
        with _shared_lock:
            global _shared_bytes
            while _shared and (_shared_bytes + len(btf.raw) > _SHARED_BYTES
                               or sum(map(len, _shared.values())) >= _SHARED_MAX):
                for old in _shared.pop(next(iter(_shared))):
                    _shared_bytes -= len(old.raw)
            _shared.setdefault(len(btf.raw), []).append(btf)
            _shared_bytes += len(btf.raw)
        return btf

    _vmlinux: BTF | None = None

    @classmethod
    def vmlinux(cls) -> BTF:
        """The running kernel's BTF (cached; a few ms the first time)."""
        if cls._vmlinux is None:
            cls._vmlinux = cls.from_file("/sys/kernel/btf/vmlinux")
        return cls._vmlinux

    # --- parsing ------------------------------------------------------------------
    def _parse(self) -> None:
        raw = self.raw
        if len(raw) < _HDR.size:
            raise BTFFormatError(f"{len(raw)} bytes is shorter than the BTF header")
        magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = _HDR.unpack_from(
            raw)
        if magic != BTF_MAGIC:
            if magic == 0x9FEB:
                raise BTFFormatError("big-endian BTF is not supported")
            raise BTFFormatError(f"bad magic {magic:#x}")
        if version != 1:
            raise BTFFormatError(f"unsupported version {version}")
        if hdr_len < _HDR.size or hdr_len > len(raw):
            raise BTFFormatError(f"bad header length {hdr_len}")
        t0 = hdr_len + type_off
        s0 = hdr_len + str_off
        if t0 + type_len > len(raw) or s0 + str_len > len(raw) or type_off % 4:
            raise BTFFormatError("type or string section out of bounds")
        self._strings = raw[s0:s0 + str_len]
        if str_len and self._strings[-1] != 0:
            raise BTFFormatError("string section is not NUL-terminated")
        base = self.base
        self._str_base = base._nstr if base else 0
        self._nstr = self._str_base + str_len
        self._first = len(base) if base else 1  # id of this blob's first type
        self._t0 = t0
        cap = type_len // 12 + 1
        offs = ffi.new("__u32[]", cap)
        self._types_c = ffi.from_buffer(raw)[t0:t0 + type_len]
        bad = ffi.new("__u32[3]")
        n = lib.pybpf_btf_index(self._types_c, type_len, self._first, self._nstr, offs, cap, bad)
        if n < 0:
            raise BTFFormatError(self._ref_error(offs, bad) if n == -4 else
                                 self._index_error(n, bad))
        self._offs = offs
        self._n = n
        self._count = self._first + n
        self._strs_c = ffi.from_buffer(self._strings)

    def _index_error(self, code: int, bad: Any) -> str:
        tid, extra = int(bad[0]), int(bad[1])
        if code == -1:
            return f"truncated type #{tid}"
        if code == -2:
            return f"type #{tid} has unknown kind {extra}"
        if code == -3:
            return f"truncated type #{tid} ({_KINDS[extra].name})"
        if code == -5:
            return f"type #{tid}: string offset {extra} out of bounds"
        return "more types than the type section can hold"

    def _ref_error(self, offs: Any, bad: Any) -> str:
        tid, ref, last = int(bad[0]), int(bad[1]), int(bad[2])
        name_off, info, _ = _TYPE.unpack_from(self.raw, self._t0 + offs[tid - self._first])
        return (f"type #{tid} ({_KINDS[(info >> 24) & 0x1F].name} "
                f"{self.string_at(name_off)!r}) refers to type #{ref}, past the last type "
                f"#{last}")

    def string_at(self, off: int) -> str:
        """The string at ``off`` in the string section."""
        if self.base is not None and off < self._str_base:
            return self.base.string_at(off)
        off -= self._str_base
        if off < 0 or off >= max(len(self._strings), 1):
            if off == 0:
                return ""
            raise BTFFormatError(f"string offset {off} out of bounds")
        endp = self._strings.find(b"\0", off)
        return self._strings[off:endp].decode("utf-8", "replace")

    # --- types, built when first read -------------------------------------------------
    def type_by_id(self, type_id: int) -> BTFType:
        """Type ``type_id`` (IndexError past the last); built from the raw bytes once."""
        t = self._built.get(type_id)
        if t is not None:
            return t
        if type_id < 0:
            type_id += self._count
        if not 0 <= type_id < self._count:
            raise IndexError(f"BTF type id {type_id} out of range (0..{self._count - 1})")
        if type_id < self._first:
            if self.base is not None:
                return self.base.type_by_id(type_id)
            t = BTFType(0, BTFKind.VOID, "", _btf=self)
        else:
            t = self._make(type_id)
        return self._built.setdefault(type_id, t)

    def name_of(self, type_id: int) -> str:
        """The name of type ``type_id`` ("" if anonymous), without building the type."""
        t = self._built.get(type_id)
        if t is not None:
            return t.name
        if type_id < self._first:
            if self.base is not None:
                return self.base.name_of(type_id)
            return ""
        if type_id >= self._count:
            raise IndexError(f"BTF type id {type_id} out of range (0..{self._count - 1})")
        (name_off,) = _U32.unpack_from(self.raw, self._t0 + self._offs[type_id - self._first])
        return self.string_at(name_off) if name_off else ""

    def kind_of(self, type_id: int) -> BTFKind:
        """The kind of type ``type_id``, without building the type."""
        if type_id < self._first:
            return self.base.kind_of(type_id) if self.base is not None else BTFKind.VOID
        if type_id >= self._count:
            raise IndexError(f"BTF type id {type_id} out of range (0..{self._count - 1})")
        (info,) = _U32.unpack_from(self.raw, self._t0 + self._offs[type_id - self._first] + 4)
        kind: BTFKind = _KINDS[(info >> 24) & 0x1F]
        return kind

    def ref_of(self, type_id: int) -> int:
        """The type id that type ``type_id`` refers to (its ``type`` field: typedef,
        modifiers, pointer, var, func), without building the type."""
        t = self._built.get(type_id)
        if t is not None:
            return t.type
        if not self._first <= type_id < self._count:
            return self.type_by_id(type_id).type  # the base's, or IndexError
        (v,) = _U32.unpack_from(self.raw, self._t0 + self._offs[type_id - self._first] + 8)
        return int(v)

    def _make(self, tid: int) -> BTFType:
        raw = self.raw
        pos = self._t0 + self._offs[tid - self._first]
        name_off, info, size_type = _TYPE.unpack_from(raw, pos)
        pos += 12
        kind = _KINDS[(info >> 24) & 0x1F]
        vlen = info & 0xFFFF
        # (the dataclass __init__ with its 14 fields costs more than the rest of this:
        # set what differs from the class-level defaults)
        t = _new_type(BTFType)
        t.id, t.kind, t.name, t.members, t._btf = (
            tid, kind, self.string_at(name_off) if name_off else "", [], self)
        if info >> 31:
            t.kind_flag = True
        if kind in _SIZED:
            t.size = size_type
        else:
            t.type = size_type
        s = self.string_at
        if kind == BTFKind.INT:
            (v,) = _U32.unpack_from(raw, pos)
            t.encoding, t.bit_offset, t.bits = (v >> 24) & 0xF, (v >> 16) & 0xFF, v & 0xFF
        elif kind == BTFKind.ARRAY:
            t.type, t.index_type, t.nelems = _MEMBER.unpack_from(raw, pos)
        elif kind in (BTFKind.STRUCT, BTFKind.UNION):
            ms = t.members
            for mname, mtype, moff in _MEMBER.iter_unpack(raw[pos:pos + 12 * vlen]):
                if t.kind_flag:
                    ms.append(BTFMember(s(mname), mtype, moff & 0xFFFFFF, moff >> 24))
                else:
                    ms.append(BTFMember(s(mname), mtype, moff))
        elif kind == BTFKind.ENUM:
            fmt = _ENUM_S if t.kind_flag else _ENUM_U
            for mname, val in fmt.iter_unpack(raw[pos:pos + 8 * vlen]):
                t.members.append(BTFMember(s(mname), value=val))
        elif kind == BTFKind.ENUM64:
            for mname, lo, hi in _MEMBER.iter_unpack(raw[pos:pos + 12 * vlen]):
                val = (hi << 32) | lo
                if t.kind_flag and val >= 1 << 63:
                    val -= 1 << 64
                t.members.append(BTFMember(s(mname), value=val))
        elif kind == BTFKind.FUNC_PROTO:
            for mname, mtype in _PARAM.iter_unpack(raw[pos:pos + 8 * vlen]):
                t.members.append(BTFMember(s(mname), mtype))
        elif kind == BTFKind.VAR:
            (t.linkage,) = _U32.unpack_from(raw, pos)
        elif kind == BTFKind.DATASEC:
            for vtype, voff, vsize in _MEMBER.iter_unpack(raw[pos:pos + 12 * vlen]):
                t.members.append(BTFMember(self.name_of(vtype), vtype, voff, size=vsize))
        elif kind == BTFKind.DECL_TAG:
            (t.linkage,) = _I32.unpack_from(raw, pos)
        return t

    # --- queries ------------------------------------------------------------------
    def memo(self, what: str) -> dict[int, Any]:
        """The dict, made on first use, in which the modules above keep facts derived
        from this BTF by type id (``"codecs"``, ``"sections"``): built once per BTF,
        shared by every object opened from the same bytes. One dict lookup."""
        memos: dict[str, dict[int, Any]] = self.__dict__.setdefault("_memos", {})
        found = memos.get(what)
        if found is None:
            found = memos[what] = {}
        return found

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[BTFType]:
        """Every type but void, in id order (builds each one: a kernel's BTF is ~130 000)."""
        get = self.type_by_id
        return (get(i) for i in range(1, self._count))

    def __getitem__(self, key: int | str) -> BTFType:
        if isinstance(key, int):
            return self.type_by_id(key)
        t = self.find(key)
        if t is None:
            raise BPFKeyError(ENOENT, f"no BTF type named {key!r:.80}")
        return t

    def _ids_named(self, name: str) -> list[int]:
        """For each kind, the lowest id of a type called ``name`` (0: none)."""
        ids = self._found.get(name)
        if ids is not None:
            return ids
        out = ffi.new("__u32[20]")
        key = name.encode()
        base = self.base
        base_strs = base._all_strings_c() if base is not None else ffi.NULL
        lib.pybpf_btf_find(self._types_c, self._offs, self._n, self._first, base_strs,
                           self._str_base, self._strs_c, len(self._strings), key, len(key), out)
        ids = list(out)
        if base is not None:  # the base's ids are lower: they come first
            ids = [b or o for b, o in zip(base._ids_named(name), ids)]
        if len(self._found) < 4096:
            self._found[name] = ids
        return ids

    def _all_strings_c(self) -> Any:
        """Every string this blob can name (its base's first), as one C buffer."""
        c = self.__dict__.get("_all_c")
        if c is None:
            if self.base is None:
                c = self._strs_c
            else:  # a split BTF used as a base (rare): its strings follow its base's
                c = ffi.new("char[]", bytes(ffi.buffer(self.base._all_strings_c(),
                                                       self._str_base)) + self._strings)
            self._all_c = c
        return c

    def find(self, name: str, kind: BTFKind | None = None) -> BTFType | None:
        """The first type called ``name`` (of ``kind``); struct/union/enum/typedef first.
        One scan of the type section in C per name (then remembered)."""
        if not name:
            return None
        ids = self._ids_named(name)
        if kind is not None:
            tid = ids[kind]
            return self.type_by_id(tid) if tid else None
        for k in _PREFERRED:
            if ids[k]:
                return self.type_by_id(ids[k])
        rest = [i for i in ids if i]
        return self.type_by_id(min(rest)) if rest else None

    def resolve(self, type_id: int) -> BTFType:
        """Follow typedef/const/volatile/restrict/type_tag to the underlying type."""
        seen = 0
        t = self.type_by_id(type_id)
        while t.kind in MODIFIERS:
            t = self.type_by_id(t.type)
            seen += 1
            if seen > 64:
                raise BTFFormatError(f"type #{type_id}: modifier chain loops")
        return t

    def size_of(self, type_id: int) -> int:
        """sizeof() of a type, as the C compiler laid it out."""
        depth = 0
        t = self.resolve(type_id)
        mult = 1
        while t.kind == BTFKind.ARRAY:
            mult *= t.nelems
            t = self.resolve(t.type)
            depth += 1
            if depth > 64:
                raise BTFFormatError(f"type #{type_id}: array chain loops")
        if t.kind == BTFKind.PTR:
            return 8 * mult
        if t.kind == BTFKind.VAR:
            return self.size_of(t.type) * mult
        return t.size * mult

    def datasec(self, name: str) -> BTFType | None:
        """The DATASEC for an ELF section such as ``.rodata`` or ``.bss``."""
        return self.find(name, BTFKind.DATASEC)
