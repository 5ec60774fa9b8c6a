"""BTF, read in pure Python from its raw bytes (an object's ``.BTF`` or kernel BTF).

:class:`BTF` is the type graph: ``btf.types[id]`` is a :class:`BTFType`,
``btf.find(name)`` looks types up, ``btf.resolve(id)`` skips typedef and
modifiers, ``btf.size_of(id)`` follows the C layout. Parsing validates every
offset and id, so malformed BTF is a :class:`BTFFormatError`, never a crash.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ObjectError

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


class BTF:
    """A parsed BTF blob. ``types[0]`` is void; ids index ``types``."""

    def __init__(self, raw: bytes, *, base: BTF | None = None) -> None:
        self.raw = bytes(raw)
        self.base = base
        self.types: list[BTFType] = list(base.types) if base else [
            BTFType(0, BTFKind.VOID, "")]
        self._by_name: dict[str, list[int]] | None = None
        self._parse()

    @classmethod
    def from_bytes(cls, raw: bytes, *, base: BTF | None = None) -> BTF:
        return cls(raw, base=base)

    @classmethod
    def from_file(cls, path: str, *, base: BTF | None = None) -> BTF:
        """Raw BTF file (e.g. /sys/kernel/btf/vmlinux)."""
        with open(path, "rb") as f:
            return cls(f.read(), base=base)

    _vmlinux: BTF | None = None

    @classmethod
    def vmlinux(cls) -> BTF:
        """The running kernel's BTF (cached)."""
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
        self._str_base = len(self.base._strings) if self.base else 0
        pos = t0
        end = t0 + type_len
        next_id = len(self.types)
        while pos < end:
            if pos + _TYPE.size > end:
                raise BTFFormatError(f"truncated type #{next_id}")
            name_off, info, size_type = _TYPE.unpack_from(raw, pos)
            pos += _TYPE.size
            kind_val = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            try:
                kind = BTFKind(kind_val)
            except ValueError:
                raise BTFFormatError(f"type #{next_id} has unknown kind {kind_val}") from None
            t = BTFType(next_id, kind, self.string_at(name_off), kind_flag=bool(info >> 31),
                        _btf=self)
            if kind in (BTFKind.INT, BTFKind.ENUM, BTFKind.ENUM64, BTFKind.STRUCT,
                        BTFKind.UNION, BTFKind.FLOAT, BTFKind.DATASEC):
                t.size = size_type
            else:
                t.type = size_type
            need = {BTFKind.INT: 4, BTFKind.ARRAY: 12, BTFKind.STRUCT: 12 * vlen,
                    BTFKind.UNION: 12 * vlen, BTFKind.ENUM: 8 * vlen,
                    BTFKind.FUNC_PROTO: 8 * vlen, BTFKind.VAR: 4, BTFKind.DATASEC: 12 * vlen,
                    BTFKind.DECL_TAG: 4, BTFKind.ENUM64: 12 * vlen}.get(kind, 0)
            if pos + need > end:
                raise BTFFormatError(f"truncated type #{next_id} ({kind.name})")
            if kind == BTFKind.INT:
                (v,) = struct.unpack_from("<I", raw, pos)
                t.encoding, t.bit_offset, t.bits = (v >> 24) & 0xF, (v >> 16) & 0xFF, v & 0xFF
            elif kind == BTFKind.ARRAY:
                t.type, t.index_type, t.nelems = struct.unpack_from("<III", raw, pos)
            elif kind in (BTFKind.STRUCT, BTFKind.UNION):
                for i in range(vlen):
                    mname, mtype, moff = struct.unpack_from("<III", raw, pos + 12 * i)
                    if t.kind_flag:
                        t.members.append(BTFMember(self.string_at(mname), mtype, moff & 0xFFFFFF,
                                                   moff >> 24))
                    else:
                        t.members.append(BTFMember(self.string_at(mname), mtype, moff))
            elif kind == BTFKind.ENUM:
                for i in range(vlen):
                    mname, val = struct.unpack_from("<Ii" if t.kind_flag else "<II", raw,
                                                    pos + 8 * i)
                    t.members.append(BTFMember(self.string_at(mname), value=val))
            elif kind == BTFKind.ENUM64:
                for i in range(vlen):
                    mname, lo, hi = struct.unpack_from("<III", raw, pos + 12 * i)
                    val = (hi << 32) | lo
                    if t.kind_flag and val >= 1 << 63:
                        val -= 1 << 64
                    t.members.append(BTFMember(self.string_at(mname), value=val))
            elif kind == BTFKind.FUNC_PROTO:
                for i in range(vlen):
                    mname, mtype = struct.unpack_from("<II", raw, pos + 8 * i)
                    t.members.append(BTFMember(self.string_at(mname), mtype))
            elif kind == BTFKind.VAR:
                (t.linkage,) = struct.unpack_from("<I", raw, pos)
            elif kind == BTFKind.DATASEC:
                for i in range(vlen):
                    vtype, voff, vsize = struct.unpack_from("<III", raw, pos + 12 * i)
                    t.members.append(BTFMember("", vtype, voff, size=vsize))
            elif kind == BTFKind.DECL_TAG:
                (t.linkage,) = struct.unpack_from("<i", raw, pos)
            pos += need
            self.types.append(t)
            next_id += 1
        self._check_refs()

    def _check_refs(self) -> None:
        n = len(self.types)
        for t in self.types:
            refs = [t.type]
            if t.kind == BTFKind.ARRAY:
                refs.append(t.index_type)
            refs.extend(m.type for m in t.members)
            for r in refs:
                if r >= n:
                    raise BTFFormatError(f"type #{t.id} ({t.kind.name} {t.name!r}) refers to "
                                         f"type #{r}, past the last type #{n - 1}")
        for t in self.types:
            if t.kind == BTFKind.DATASEC:
                for m in t.members:
                    m.name = self.types[m.type].name

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

    # --- queries ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.types)

    def __iter__(self) -> Iterator[BTFType]:
        return iter(self.types[1:])

    def __getitem__(self, key: int | str) -> BTFType:
        if isinstance(key, int):
            return self.types[key]
        t = self.find(key)
        if t is None:
            raise KeyError(f"no BTF type named {key!r}")
        return t

    def find(self, name: str, kind: BTFKind | None = None) -> BTFType | None:
        """The first type called ``name`` (of ``kind``); struct/union/enum/typedef first."""
        if self._by_name is None:
            idx: dict[str, list[int]] = {}
            for t in self.types:
                if t.name:
                    idx.setdefault(t.name, []).append(t.id)
            self._by_name = idx
        ids = self._by_name.get(name, [])
        cands = [self.types[i] for i in ids if kind is None or self.types[i].kind == kind]
        if not cands:
            return None
        pref = (BTFKind.STRUCT, BTFKind.UNION, BTFKind.ENUM, BTFKind.ENUM64, BTFKind.TYPEDEF,
                BTFKind.INT)
        cands.sort(key=lambda t: pref.index(t.kind) if t.kind in pref else len(pref))
        return cands[0]

    def resolve(self, type_id: int) -> BTFType:
        """Follow typedef/const/volatile/restrict/type_tag to the underlying type."""
        seen = 0
        t = self.types[type_id]
        while t.kind in MODIFIERS:
            t = self.types[t.type]
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
