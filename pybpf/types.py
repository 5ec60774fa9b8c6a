"""Python values for BTF types: decode and encode keys, values, globals and events.

:func:`codec_for` turns a BTF type into a :class:`Codec` with ``decode(buf,
off=0)`` and ``encode(value) -> bytes``; every layout (offsets, padding, sizes)
comes from BTF, i.e. from what clang laid out. Python values:

* integers, pointers (as addresses) -> ``int``; ``bool`` -> ``bool``;
  ``float``/``double`` -> ``float``; enums -> a generated :class:`enum.IntEnum`
  (a value with no enumerator decodes as a plain ``int``);
* ``char[N]`` -> :class:`CStr` (``bytes`` without the trailing NULs, ``.str``
  is the text up to the first NUL); other byte arrays (``__u8[N]``) -> ``bytes``
  of length N; other arrays -> ``list``;
* structs and unions -> generated :class:`Struct` / :class:`Union` classes with
  attribute access, ``repr``, ``==``, ``_asdict()``, ``_astuple()`` and
  ``bytes(obj)``; bitfields read and write like ints.

Encoding accepts an instance of the class, a dict, a tuple/list (fields in
order), and for scalars a plain value; a missing field is zero. A wrong field
name, a wrong type or a value out of range is a ``TypeError``/``ValueError``
whose message names the field path (``value.inner.count``).

This module is the one home of value layouts: BTF type -> codec (validating, in
Python: it explains what is wrong) -> the layout C converts itself
(:func:`c_layout`, used by :mod:`pybpf._fastpath` for maps, events and batches) and
the numpy dtype (:func:`numpy_dtype`); the codecs of map kinds (LPM trie keys, stack
traces) live here too.

Cost: generated classes are built and compared in C (``pybpf._fastpath.StructBase``:
``Cls(...)`` is one C call); structs of scalars decode and encode in C, other
structs without bitfields or unions with one precompiled :class:`struct.Struct`
call plus generated attribute code; the others go member by member.
"""

from __future__ import annotations

import enum
import errno as _errno
import ipaddress
import keyword
import re
import struct
from collections.abc import Callable
from typing import Any, ClassVar

from . import _fastpath, typespec
from .btf import (
    BTF,
    INT_BOOL,
    INT_CHAR,
    INT_SIGNED,
    BTFFormatError,
    BTFKind,
    BTFType,
    set_codec_builder,
)
from .errors import BPFKeyError, BPFValueError, TypeSpecError

__all__ = ["Codec", "CStr", "Struct", "Union", "codec_for", "scalar_codec", "as_codec", "plain",
           "numpy_dtype", "LPMKeyCodec", "StackTraceCodec"]


class CStr(bytes):
    """A ``char[N]`` value: the bytes without trailing NULs; ``.str`` is the C string."""

    __slots__ = ()

    @property
    def str(self) -> str:
        """The text up to the first NUL (UTF-8, undecodable bytes replaced)."""
        i = self.find(b"\0")
        return (self if i < 0 else self[:i]).decode("utf-8", "replace")


_new = object.__new__


def _tname(v: object) -> str:
    return type(v).__name__


class Struct(_fastpath.StructBase):
    """Base of the classes generated for BTF structs.

    ``Cls(a, b)`` / ``Cls(a=1)`` build a value (missing fields are zero);
    ``Cls._from_bytes(raw)`` decodes; ``bytes(obj)`` encodes. Construction, attribute
    access and ``==`` between two values of one class run in C
    (``pybpf._fastpath.StructBase``, one C call; no Python code per field).
    """

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _codec: ClassVar[StructCodec]
    _size: ClassVar[int] = 0

    @classmethod
    def _from_bytes(cls, raw: bytes | bytearray | memoryview, offset: int = 0) -> Any:
        """Decode an instance from ``raw`` (at ``offset``)."""
        if len(raw) - offset < cls._size:
            raise ValueError(f"{cls.__name__}: need {cls._size} bytes, got {len(raw) - offset}")
        return cls._codec.decode(raw, offset)

    def __bytes__(self) -> bytes:
        return self._codec.encode(self, type(self).__name__)

    def _astuple(self) -> tuple[Any, ...]:
        """Field values in order (nested structs as tuples)."""
        return tuple(_plain(getattr(self, n), True) for n in self._fields)

    def _asdict(self) -> dict[str, Any]:
        """Field values by name (nested structs as dicts)."""
        return {n: _plain(getattr(self, n), False) for n in self._fields}

    def __getitem__(self, name: str) -> Any:
        """A member by its C name, for names that cannot be attributes as they are
        (``v["in"]``, ``v["__init__"]``: their attributes are ``in_``, ``__init___``), or
        by its attribute name; a C name first (C ``in_`` is ``v["in_"]``, though the
        attribute of C ``in`` is ``in_``). KeyError names the struct and the member."""
        codec = self._codec
        attr = codec.cname_index.get(name)
        if attr is not None or name in codec.field_index:
            return getattr(self, attr or name)
        raise BPFKeyError(_errno.ENOENT, f"{type(self).__name__} has no member {name!r:.60}")

    def _eq_other(self, other: object) -> Any:
        """``==`` with a value of another class (C compares two of one class): equal
        when it is the same C type from another BTF and every field is equal."""
        if not _compatible(type(self), other):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._fields)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{type(self).__name__}({inner})"


def _compatible(cls: type[Struct], value: object) -> bool:
    """An instance of the same C type built from another BTF (another object, a module
    generated by ``pybpf gen``): same name, fields and size."""
    if not isinstance(value, Struct):
        return False
    t = type(value)
    return t.__name__ == cls.__name__ and t._fields == cls._fields and t._size == cls._size


def plain(value: Any, *, enum_names: bool = False) -> Any:
    """A decoded value as plain JSON-able data: structs and unions as dicts by C member
    name (an anonymous struct/union member's fields merged into its parent), ``char``
    arrays as ``str`` up to the first NUL, enums as ``int`` (their name with
    ``enum_names``), arrays as lists; ints, floats, bools and byte arrays as they are."""
    if isinstance(value, Struct):
        out: dict[str, Any] = {}
        for m in value._codec.members:
            v = plain(getattr(value, m.name), enum_names=enum_names)
            if not m.cname and isinstance(v, dict):
                out.update(v)
            else:
                out[m.cname or m.name] = v
        return out
    if isinstance(value, CStr):
        return value.str
    if isinstance(value, enum.Enum):
        return value.name if enum_names else value.value
    if isinstance(value, list):
        return [plain(v, enum_names=enum_names) for v in value]
    return value


def _plain(v: Any, as_tuple: bool) -> Any:
    if isinstance(v, Struct):
        return v._astuple() if as_tuple else v._asdict()
    if isinstance(v, list):
        return [_plain(x, as_tuple) for x in v]
    return v


class Union(Struct):
    """Base of the classes generated for BTF unions.

    Decoding fills every member from the same bytes. Encoding writes the member
    assigned last (or the only key of a dict); a decoded, unmodified union
    encodes back to its original bytes.
    """

    __slots__ = ("_which", "_raw")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) + len(kwargs) > 1:
            raise TypeError(f"union {type(self).__name__}: give one member, got "
                            f"{len(args) + len(kwargs)}")
        object.__setattr__(self, "_raw", None)
        object.__setattr__(self, "_which", None)
        super().__init__(*args, **kwargs)
        if args:
            object.__setattr__(self, "_which", self._fields[0])
        elif kwargs:
            object.__setattr__(self, "_which", next(iter(kwargs)))

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name in self._codec.field_index:
            object.__setattr__(self, "_which", name)
            object.__setattr__(self, "_raw", None)


# Attribute names a member cannot take: everything a generated class has already
# (Struct's and Union's methods and slots, and object's); a member would replace it.
_RESERVED = frozenset(dir(Union)) | {"_which", "_raw"}
#: the slots generated classes inherit (copy's __slotnames__ lists them first)
_BASE_SLOTS: dict[type, tuple[str, ...]] = {Struct: (), Union: Union.__slots__}

# --- codecs ------------------------------------------------------------------------


class Codec:
    """Decode/encode one BTF type. ``size`` bytes; ``pytype`` is its Python annotation."""

    size: int = 0
    #: struct format of this type's flat items ('<' standard sizes, no alignment), or None
    fmt: str | None = None
    nflat: int = 0
    pytype: str = "Any"
    name: str = ""
    #: an unchecked encoder (raises anything on bad input; ``encode`` then explains), or None
    fast_encode: Callable[[Any], bytes] | None = None

    def decode(self, buf: Any, off: int = 0) -> Any:
        raise NotImplementedError

    def pack_into(self, buf: bytearray, off: int, value: Any, path: str) -> None:
        """Validate ``value`` and write it at ``off`` (errors name ``path``)."""
        raise NotImplementedError

    def encode(self, value: Any, path: str = "value") -> bytes:
        """``value`` as exactly ``size`` bytes."""
        buf = bytearray(self.size)
        self.pack_into(buf, 0, value, path)
        return bytes(buf)

    def default(self) -> Any:
        return 0

    # Inline code generation for flat structs: expressions over a flat tuple ``t``.
    def dec_src(self, ns: dict[str, Any], base: str) -> str:
        raise NotImplementedError

    def enc_src(self, ns: dict[str, Any], v: str) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name or self.pytype} size={self.size}>"


def _reg(ns: dict[str, Any], obj: Any) -> str:
    name = f"_h{len(ns)}"
    ns[name] = obj
    return name


class IntCodec(Codec):
    """Signed or unsigned integer of 1, 2, 4, 8 or 16 bytes (also pointers)."""

    _FMT: ClassVar[dict[tuple[int, bool], str]] = {
        (1, False): "B", (1, True): "b", (2, False): "H", (2, True): "h",
        (4, False): "I", (4, True): "i", (8, False): "Q", (8, True): "q"}

    def __init__(self, size: int, signed: bool, name: str = "") -> None:
        self.size = size
        self.signed = signed
        self.name = name or f"{'s' if signed else 'u'}{size * 8}"
        self.pytype = "int"
        f = self._FMT.get((size, signed))
        self.fmt = f
        self.nflat = 1 if f else 0
        self._S = struct.Struct("<" + f) if f else None
        if signed:
            self.lo, self.hi = -(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1
        else:
            self.lo, self.hi = 0, (1 << 8 * size) - 1
        if self._S is not None:
            self._unpack = self._S.unpack_from
            self._pack = self._S.pack
            self.fast_encode = self._pack

    def decode(self, buf: Any, off: int = 0) -> Any:
        if self._S is not None:
            return self._unpack(buf, off)[0]
        return int.from_bytes(bytes(buf[off:off + self.size]), "little", signed=self.signed)

    def check(self, value: Any, path: str) -> int:
        if not isinstance(value, int):
            raise TypeError(f"{path}: expected int for {self.name}, got {_tname(value)} "
                            f"{value!r}")
        if not self.lo <= value <= self.hi:
            raise ValueError(f"{path}: {value} is out of range for {self.name} "
                             f"[{self.lo}, {self.hi}]")
        return int(value)

    def pack_into(self, buf: bytearray, off: int, value: Any, path: str) -> None:
        v = self.check(value, path)
        buf[off:off + self.size] = v.to_bytes(self.size, "little", signed=self.signed)

    def encode(self, value: Any, path: str = "value") -> bytes:
        if self._S is not None:
            try:
                return self._pack(value)  # type: ignore[no-any-return,unused-ignore]
            except (struct.error, TypeError):
                pass
        return self.check(value, path).to_bytes(self.size, "little", signed=self.signed)

    def dec_src(self, ns: dict[str, Any], base: str) -> str:
        return f"t[{base}]"

    def enc_src(self, ns: dict[str, Any], v: str) -> str:
        return v


class BoolCodec(IntCodec):
    def __init__(self, size: int = 1) -> None:
        super().__init__(size, False, "bool")
        self.pytype = "bool"
        self.fast_encode = None  # struct's '?' takes any object: always validate
        if size == 1:
            self.fmt = "?"
            self._S = struct.Struct("<?")
            self._unpack = self._S.unpack_from
            self._pack = self._S.pack

    def default(self) -> Any:
        return False

    def decode(self, buf: Any, off: int = 0) -> Any:
        return bool(IntCodec.decode(self, buf, off))

    def check(self, value: Any, path: str) -> int:
        if not isinstance(value, int):
            raise TypeError(f"{path}: expected bool, got {_tname(value)} {value!r}")
        return 1 if value else 0

    def encode(self, value: Any, path: str = "value") -> bytes:
        return self.check(value, path).to_bytes(self.size, "little")

    def dec_src(self, ns: dict[str, Any], base: str) -> str:
        return f"t[{base}]" if self.fmt == "?" else f"bool(t[{base}])"

    def enc_src(self, ns: dict[str, Any], v: str) -> str:
        return f"{_reg(ns, _bool_enc)}({v})"


def _bool_enc(v: Any) -> bool:
    if not isinstance(v, int):
        raise TypeError("not a bool")
    return bool(v)


class EnumCodec(IntCodec):
    """A C enum as a generated :class:`enum.IntEnum`; unknown values stay ``int``."""

    def __init__(self, t: BTFType, name: str) -> None:
        self.type_id = t.id
        signed = t.signed or any(m.value < 0 for m in t.members)
        super().__init__(t.size, signed, name)
        members = [(m.name, m.value) for m in t.members]
        try:
            self.enum: Any = enum.IntEnum(name, members) if members else None
        except (ValueError, TypeError):
            self.enum = None
        self.pytype = f"{name} | int" if self.enum is not None else "int"
        self._map: dict[int, Any] = dict(self.enum._value2member_map_) if self.enum else {}

    def decode(self, buf: Any, off: int = 0) -> Any:
        v = IntCodec.decode(self, buf, off)
        return self._map.get(v, v)

    def check(self, value: Any, path: str) -> int:
        if isinstance(value, str) and self.enum is not None:
            try:
                return int(self.enum[value])
            except KeyError:
                raise ValueError(f"{path}: {value!r} is not an enumerator of {self.name} "
                                 f"({', '.join(self.enum.__members__)})") from None
        return super().check(value, path)

    def encode(self, value: Any, path: str = "value") -> bytes:
        return self.check(value, path).to_bytes(self.size, "little", signed=self.signed)

    def dec_src(self, ns: dict[str, Any], base: str) -> str:
        g = _reg(ns, self._map.get)
        return f"{g}(t[{base}], t[{base}])"

    def enc_src(self, ns: dict[str, Any], v: str) -> str:
        if self.enum is None:
            return v
        return f"{_reg(ns, self._enc_fast)}({v})"

    def _enc_fast(self, v: Any) -> int:
        if isinstance(v, str):
            raise TypeError("enum by name")  # validating path converts names
        return v  # type: ignore[no-any-return]


class FloatCodec(Codec):
    def __init__(self, size: int, name: str = "") -> None:
        self.size = size
        self.name = name or ("float" if size == 4 else "double" if size == 8 else "long double")
        f = {4: "f", 8: "d"}.get(size)
        self.fmt = f
        self.nflat = 1 if f else 0
        self.pytype = "float" if f else "bytes"
        self._S = struct.Struct("<" + f) if f else None

    def default(self) -> Any:
        return 0.0 if self._S else bytes(self.size)

    def decode(self, buf: Any, off: int = 0) -> Any:
        if self._S is None:
            return bytes(buf[off:off + self.size])
        return self._S.unpack_from(buf, off)[0]

    def pack_into(self, buf: bytearray, off: int, value: Any, path: str) -> None:
        if self._S is None:
            _RawCodec(self.size).pack_into(buf, off, value, path)
            return
        if not isinstance(value, (int, float)):
            raise TypeError(f"{path}: expected float for {self.name}, got {_tname(value)}")
        try:
            self._S.pack_into(buf, off, value)
        except (OverflowError, struct.error) as e:
            raise ValueError(f"{path}: {value} does not fit a {self.name}: {e}") from None

    def dec_src(self, ns: dict[str, Any], base: str) -> str:
        return f"t[{base}]"

    def enc_src(self, ns: dict[str, Any], v: str) -> str:
        return v


def _bytes_of(v: Any, n: int, text: bool) -> bytes:
    """bytes for a byte/char array field (fast path: raises on anything odd)."""
    if type(v) is str and text:
        v = v.encode()
    elif not isinstance(v, (bytes, bytearray)):
        raise TypeError("not bytes")
    if len(v) > n:
        raise ValueError("too long")
    return v  # type: ignore[no-any-return]


class _RawCodec(Codec):
    """Bytes of a fixed size (types with no better Python form, maps without BTF)."""

    text = False

    def __init__(self, size: int, name: str = "") -> None:
        self.size = size
        self.name = name or f"bytes[{size}]"
        self.fmt = f"{size}s"
        self.nflat = 1
        self.pytype = "bytes"

    def default(self) -> Any:
        return bytes(self.size)

    def decode(self, buf: Any, off: int = 0) -> Any:
        return bytes(buf[off:off + self.size])

    def to_bytes(self, value: Any, path: str) -> bytes:
        if isinstance(value, str) and self.text:
            value = value.encode()
        elif isinstance(value, (list, tuple)) and not self.text:
            try:
                value = bytes(value)
            except (ValueError, TypeError):
                raise ValueError(f"{path}: a list for {self.name} must hold ints in "
                                 "[0, 255]") from None
        elif not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"{path}: expected bytes{' or str' if self.text else ''} for "
                            f"{self.name}, got {_tname(value)}")
        if len(value) > self.size:
            raise ValueError(f"{path}: {len(value)} bytes do not fit {self.name}")
        return bytes(value)

    def pack_into(self, buf: bytearray, off: int, value: Any, path: str) -> None:
        b = self.to_bytes(value, path)
        buf[off:off + self.size] = b.ljust(self.size, b"\0")

    def encode(self, value: Any, path: str = "value") -> bytes:
        if type(value) is bytes and len(value) == self.size:
            return value
        return self.to_bytes(value, path).ljust(self.size, b"\0")

    def dec_src(self, ns: dict[str, Any], base: str) -> str:
        return f"t[{base}]"

    def enc_src(self, ns: dict[str, Any], v: str) -> str:
        return f"{_reg(ns, _bytes_of)}({v}, {self.size}, {self.text})"


class ByteArrayCodec(_RawCodec):
    """``__u8[N]`` and other 1-byte arrays: ``bytes`` of length N."""

    signed = False  # of its elements (``__s8[N]``): numpy gives them as i1


class CharArrayCodec(_RawCodec):
    """``char[N]``: :class:`CStr` without trailing NULs; accepts bytes or str."""

    text = True

    def __init__(self, size: int) -> None:
        super().__init__(size, f"char[{size}]")
        self.pytype = "CStr"

    def default(self) -> Any:
        return CStr()

    def decode(self, buf: Any, off: int = 0) -> Any:
        return CStr(bytes(buf[off:off + self.size]).rstrip(b"\0"))

    def dec_src(self, ns: dict[str, Any], base: str) -> str:
        return f"{_reg(ns, _cstr)}(t[{base}])"


def _cstr(b: bytes) -> CStr:
    return CStr(b.rstrip(b"\0"))


class ArrayCodec(Codec):
    """``T[N]`` for non-byte T: a ``list`` of N decoded elements."""

    def __init__(self, elem: Codec, n: int) -> None:
        self.elem = elem
        self.n = n
        self.size = elem.size * n
        self.name = f"{elem.name}[{n}]"
        self.pytype = f"list[{elem.pytype}]"
        # flat (one struct item per scalar) up to 65536 items: a format string is not
        # built for a 2**31-element array ("<" leaves no padding between elements)
        if elem.fmt is not None and elem.nflat * n <= 1 << 16 and \
                elem.size == struct.calcsize("<" + elem.fmt):
            self.fmt = elem.fmt * n
            self.nflat = elem.nflat * n

    def default(self) -> Any:
        return [self.elem.default() for _ in range(self.n)]

    def decode(self, buf: Any, off: int = 0) -> Any:
        es = self.elem.size
        d = self.elem.decode
        return [d(buf, off + k * es) for k in range(self.n)]

    def pack_into(self, buf: bytearray, off: int, value: Any, path: str) -> None:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{path}: expected a list for {self.name}, got {_tname(value)}")
        if len(value) > self.n:
            raise ValueError(f"{path}: {len(value)} elements do not fit {self.name}")
        es = self.elem.size
        for k, v in enumerate(value):
            self.elem.pack_into(buf, off + k * es, v, f"{path}[{k}]")
        zero = bytes(es * (self.n - len(value)))
        buf[off + len(value) * es:off + self.size] = zero

    def _pad(self, v: Any) -> Any:
        if type(v) is not list and type(v) is not tuple:
            raise TypeError("not a list")
        n = len(v)
        if n == self.n:
            return v
        if n > self.n:
            raise ValueError("too long")
        return list(v) + [self.elem.default() for _ in range(self.n - n)]

    def dec_src(self, ns: dict[str, Any], base: str) -> str:
        e = self.elem
        m = e.nflat
        if m == 1:
            sl = f"t[{base}:{base}+{self.n}]"
            inner = e.dec_src(ns, "j")
            if inner == "t[j]":
                return f"list({sl})"
            return f"[{inner} for j in range({base}, {base}+{self.n})]"
        inner = e.dec_src(ns, "j")
        if m == 0:  # empty structs (lock_class_key[3]): no items, N values all the same
            return f"[{inner} for j in ({base},) * {self.n}]"
        return f"[{inner} for j in range({base}, {base}+{self.n * m}, {m})]"

    def enc_src(self, ns: dict[str, Any], v: str) -> str:
        pad = _reg(ns, self._pad)
        e = self.elem
        inner = e.enc_src(ns, "x")
        if e.nflat == 1 and not inner.startswith("*"):  # (a one-field struct unpacks: *...)
            if inner == "x":
                return f"*{pad}({v})"
            return f"*[{inner} for x in {pad}({v})]"
        # composite elements: their encoders return flat tuples
        chain = _reg(ns, _chain)
        fn = _reg(ns, _compile_enc(e))
        return f"*{chain}({fn}(x) for x in {pad}({v}))"


def _chain(parts: Any) -> tuple[Any, ...]:
    out: list[Any] = []
    for p in parts:
        out.extend(p)
    return tuple(out)


def _compile_enc(c: Codec) -> Callable[[Any], tuple[Any, ...]]:
    ns: dict[str, Any] = {}
    body = c.enc_src(ns, "v")
    src = f"def _enc(v):\n    return ({body},)\n"
    exec(src, ns)  # noqa: S102 - generated from BTF layouts
    return ns["_enc"]  # type: ignore[no-any-return]


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")  # \Z: "$" also matches before a final \n


def _pyname(name: str, taken: set[str]) -> str:
    """The attribute name of the C member ``name``: itself, or with a trailing ``_`` when
    it is a Python keyword, a dunder, an attribute the class already has (``_asdict``,
    ``_fields``...) or not an identifier; more ``_`` while it clashes with an earlier one.
    ``plain()`` and dict values use the C name, which encoding accepts too."""
    if not _IDENT.match(name) or keyword.iskeyword(name) or name in _RESERVED or (
            name.startswith("__") and name.endswith("__")):
        if not _IDENT.match(name):  # ASCII letters, digits and _, not led by a digit
            name = re.sub(r"[^A-Za-z0-9_]", "_", name)
            name = name if _IDENT.match(name) else "_" + name
        name += "_"
    while name in taken or name in _RESERVED:
        name += "_"
    taken.add(name)
    return name


class _Member:
    __slots__ = ("name", "cname", "byte_off", "bit_off", "bits", "codec")

    def __init__(self, name: str, cname: str, bit_off: int, bits: int, codec: Codec) -> None:
        self.name = name
        self.cname = cname
        self.byte_off = bit_off // 8
        self.bit_off = bit_off
        self.bits = bits
        self.codec = codec


def _default_of(c: Codec) -> tuple[Any, Any]:
    """(default, None) for a member whose default value is immutable (shared by every
    instance), (None, factory) for one that must be made per instance (lists, structs).
    An array's default is always a new list: not built here (u32[2**28] is 2**28 items)."""
    if isinstance(c, ArrayCodec):
        return None, c.default
    d = c.default()
    if d is None or isinstance(d, (int, float, bytes, str, enum.Enum)):
        return d, None
    return None, c.default


class StructCodec(Codec):
    """A C struct or union as a generated :class:`Struct`/:class:`Union` subclass."""

    def __init__(self, t: BTFType, name: str) -> None:
        self.type_id = t.id
        self.size = t.size
        self.name = name
        self.is_union = t.kind == BTFKind.UNION
        self.members: list[_Member] = []
        self.field_index: dict[str, int] = {}
        self.cname_index: dict[str, str] = {}
        self.field_codecs: list[Codec] = []
        self.cls: type[Struct] = type(name, (Union if self.is_union else Struct,),
                                      {"__slots__": (), "_codec": self, "_size": t.size})
        self.pytype = name
        self._decode: Callable[[Any, int], Any] = self._decode_generic
        self._encode: Callable[[Any], bytes] | None = None
        self.building = True  # until codec_for finished its members

    def _finish(self) -> None:
        cls = self.cls
        names = tuple(m.name for m in self.members)
        self.field_codecs = [m.codec for m in self.members]
        self.field_index = {n: i for i, n in enumerate(names)}
        # C member name -> attribute name, for dicts written with C names (plain()'s).
        self.cname_index = {m.cname: m.name for m in self.members if m.cname}
        # Recreate with the slots now that the members are known.
        base = Union if self.is_union else Struct
        doc = f"C {'union' if self.is_union else 'struct'} {self.name} ({self.size} bytes): " + \
            ", ".join(f"{m.name}: {m.codec.name}" for m in self.members)
        # Made under the name "_" so that Python mangles no slot name: a C member such as
        # rb_node's __rb_parent_color stays the attribute __rb_parent_color (under the
        # struct's name it would become _rb_node__rb_parent_color); copy's list of slots
        # is given for the same reason.
        new = type("_", (base,), {"__slots__": names, "_codec": self, "_fields": names,
                                  "_size": self.size, "__doc__": doc,
                                  "__module__": "pybpf.types.btf",
                                  "__slotnames__": [*_BASE_SLOTS[base], *names]})
        new.__name__ = new.__qualname__ = cls.__name__
        new._shape = _fastpath.Shape(new, tuple(  # type: ignore[attr-defined]
            (new.__dict__[m.name], *_default_of(m.codec)) for m in self.members))
        self.cls = new
        self._compile_flat()

    def default(self) -> Any:
        return self.cls()

    # -- generic member-by-member path (unions, bitfields, odd sizes) --
    def _decode_generic(self, buf: Any, off: int = 0) -> Any:
        o = _new(self.cls)
        sa = object.__setattr__
        for m in self.members:
            if m.bits:
                sa(o, m.name, _bf_get(buf, off, m, self.size))
            else:
                sa(o, m.name, m.codec.decode(buf, off + m.byte_off))
        if self.is_union:
            sa(o, "_raw", bytes(buf[off:off + self.size]))
            sa(o, "_which", None)
        return o

    def decode(self, buf: Any, off: int = 0) -> Any:
        return self._decode(buf, off)

    def coerce(self, value: Any, path: str) -> Any:
        """An instance of the class from an instance, dict or tuple (validating names)."""
        cls = self.cls
        if isinstance(value, cls):  # the class, or a user's subclass of it
            return value
        if isinstance(value, dict):
            value = self._by_attr(value, path)
            if self.is_union and len(value) > 1:
                raise TypeError(f"{path}: union {self.name}: give one member, got "
                                f"{', '.join(map(str, value))}")
            return cls(**value)
        if _compatible(cls, value):
            if self.is_union:
                o = _new(cls)
                for n in ("_raw", "_which", *cls._fields):
                    object.__setattr__(o, n, getattr(value, n))
                return o
            return cls(*[getattr(value, n) for n in cls._fields])
        if isinstance(value, (tuple, list)):
            if len(value) > len(cls._fields) or (self.is_union and len(value) > 1):
                raise TypeError(f"{path}: {len(value)} values for {self.name}, which has "
                                f"{1 if self.is_union else len(cls._fields)} field(s)")
            return cls(*value)
        raise TypeError(f"{path}: expected {self.name} (instance, dict or tuple), got "
                        f"{_tname(value)}")

    def _accepts(self, key: str) -> bool:
        """Whether ``key`` names a member (by attribute or C name) or a field of an
        anonymous member (which plain() merges into its parent)."""
        if key in self.field_index or key in self.cname_index:
            return True
        return any(isinstance(m.codec, StructCodec) and m.codec._accepts(key)
                   for m in self.members if not m.cname)

    def _by_attr(self, value: dict[Any, Any], path: str) -> dict[str, Any]:
        """A dict by attribute name from one by attribute name (as ``_asdict()`` writes
        it) or by C name (as :func:`plain` writes it: anonymous members' fields merged)."""
        fi = self.field_index
        if all(k in fi for k in value):
            return value  # by attribute name (as _asdict() writes it)
        # Some key is not an attribute name: read the keys as C names first (an attribute
        # name can be another member's C name: `in` is in_, and a C `in_` is in__).
        out: dict[str, Any] = {}
        anon: dict[str, dict[str, Any]] = {}
        for k, v in value.items():
            if k in self.cname_index:
                out[self.cname_index[k]] = v
            elif k in fi:
                out[k] = v
            else:
                m = next((m for m in self.members if not m.cname
                          and isinstance(m.codec, StructCodec) and m.codec._accepts(k)), None)
                if m is None:
                    raise TypeError(f"{path}: {'union' if self.is_union else 'struct'} "
                                    f"{self.name} has no field {k!r} (fields: "
                                    f"{', '.join(self.cls._fields)})")
                anon.setdefault(m.name, {})[k] = v
        for name, part in anon.items():
            if name not in out:
                out[name] = part
        return out

    def pack_into(self, buf: bytearray, off: int, value: Any, path: str) -> None:
        v = self.coerce(value, path)
        if self.is_union:
            which = getattr(v, "_which", None)
            raw = getattr(v, "_raw", None)
            buf[off:off + self.size] = bytes(self.size)
            if which is None:
                if raw is not None:
                    buf[off:off + self.size] = raw
                return
            m = self.members[self.field_index[which]]
            self._pack_member(buf, off, m, getattr(v, which), path)
            return
        buf[off:off + self.size] = bytes(self.size)
        for m in self.members:
            try:
                mv = getattr(v, m.name)
            except AttributeError:
                mv = m.codec.default()
            self._pack_member(buf, off, m, mv, path)

    def _pack_member(self, buf: bytearray, off: int, m: _Member, mv: Any, path: str) -> None:
        p = f"{path}.{m.name}"
        if m.bits:
            _bf_set(buf, off, m, mv, p)
        else:
            m.codec.pack_into(buf, off + m.byte_off, mv, p)

    def encode(self, value: Any, path: str = "value") -> bytes:
        enc = self._encode
        if enc is not None:
            try:
                return enc(value)
            except Exception:  # noqa: BLE001 - the validating path explains what was wrong
                pass
        buf = bytearray(self.size)
        self.pack_into(buf, 0, value, path)
        return bytes(buf)

    # -- flat fast path: one struct.Struct for the whole layout --
    def _compile_flat(self) -> None:
        if self.is_union or any(m.bits or m.codec.fmt is None for m in self.members):
            return
        parts = []
        pos = 0
        for m in sorted(self.members, key=lambda m: m.byte_off):
            if m.byte_off < pos:
                return  # overlapping: not flat
            if m.byte_off > pos:
                parts.append(f"{m.byte_off - pos}x")
            parts.append(m.codec.fmt or "")
            pos = m.byte_off + m.codec.size
        if pos < self.size:
            parts.append(f"{self.size - pos}x")
        fmt = "".join(parts)
        if struct.calcsize("<" + fmt) != self.size:
            return
        order = sorted(self.members, key=lambda m: m.byte_off)
        self.fmt = fmt
        self.nflat = sum(m.codec.nflat for m in order)
        S = struct.Struct("<" + fmt)
        ns: dict[str, Any] = {"_new": _new, "_C": self.cls, "_unpack": S.unpack_from,
                              "_pack": S.pack, "_coerce": self.coerce, "_sa": object.__setattr__}
        # decode from a flat tuple at base index i / at 0
        lines_i, lines_0 = [], []
        idx = 0
        for m in order:
            lines_i.append(f"    o.{m.name} = {m.codec.dec_src(ns, f'i+{idx}')}")
            lines_0.append(f"    o.{m.name} = {m.codec.dec_src(ns, str(idx))}")
            idx += m.codec.nflat
        simple = [m for m in order if m.codec.nflat == 1 and m.codec.dec_src(ns, "0") == "t[0]"]
        if len(simple) == len(order) and order:
            # every field is one plain struct item: unpack straight into the slots
            targets = ", ".join(f"o.{m.name}" for m in order) + ("," if len(order) == 1 else "")
            dec0 = f"    {targets} = _unpack(buf, off)\n"
        else:
            dec0 = "    t = _unpack(buf, off)\n" + "\n".join(lines_0) + "\n"
        src = ("def _from(t, i):\n    o = _new(_C)\n" + "\n".join(lines_i) + "\n    return o\n"
               "def _dec(buf, off=0):\n    o = _new(_C)\n" + dec0 + "    return o\n")
        if not order:
            src = ("def _from(t, i):\n    return _new(_C)\n"
                   "def _dec(buf, off=0):\n    return _new(_C)\n")
        enc_items = [m.codec.enc_src(ns, f"v.{m.name}") for m in order]
        body = ", ".join(enc_items) + ("," if len(enc_items) == 1 else "")
        src += ("def _to(v):\n    if type(v) is not _C:\n        v = _coerce(v, 'value')\n"
                f"    return ({body})\n"
                "def _enc(v):\n    if type(v) is not _C:\n        v = _coerce(v, 'value')\n"
                f"    return _pack({body})\n")
        exec(src, ns)  # noqa: S102 - generated from BTF layouts
        self._from = ns["_from"]
        self._to = ns["_to"]
        self._decode = ns["_dec"]
        self._encode = ns["_enc"]
        self.decode = ns["_dec"]  # type: ignore[method-assign]  # no extra call layer
        self.fast_encode = ns["_enc"]
        self.struct = S
        cls, fields = c_layout(self)
        if fields:  # every field a scalar C converts: decode in C
            self.cdecoder = _fastpath.Decoder(self.name, self.size, cls, fields)
            self._decode = self.decode = self.cdecoder.decode  # type: ignore[method-assign]

    def dec_src(self, ns: dict[str, Any], base: str) -> str:
        return f"{_reg(ns, self._from)}(t, {base})"

    def enc_src(self, ns: dict[str, Any], v: str) -> str:
        return f"*{_reg(ns, self._to)}({v})"


# --- layouts C converts itself (pybpf._fastpath) ---------------------------------------

_C_SCALARS = (IntCodec, EnumCodec, BoolCodec, FloatCodec)
CField = tuple[str, int, Any, Any]


def c_field(c: Codec, off: int, slot: Any) -> CField | None:
    """A scalar for :mod:`pybpf._fastpath`: (struct code, byte offset, slot descriptor,
    enum members), or None when C would not decode it exactly like ``c.decode``."""
    if type(c) not in _C_SCALARS or c.fmt is None or len(c.fmt) != 1:
        return None
    if type(c) is BoolCodec and c.fmt != "?":
        return None
    members = c._map or None if isinstance(c, EnumCodec) else None
    return (c.fmt, off, slot, members)


def c_layout(c: Codec) -> tuple[type | None, tuple[CField, ...]]:
    """(struct class or None, fields) of a value :mod:`pybpf._fastpath` converts itself:
    a scalar, or a plain struct of scalars; no fields when it cannot."""
    if isinstance(c, StructCodec):
        if c.is_union or not c.members or any(m.bits for m in c.members):
            return None, ()
        fields = [c_field(m.codec, m.byte_off, c.cls.__dict__.get(m.name)) for m in c.members]
        if not all(fields):
            return None, ()
        return c.cls, tuple(f for f in fields if f is not None)
    one = c_field(c, 0, None)
    return None, (one,) if one is not None else ()


# --- codecs of map kinds: LPM trie keys, stack traces ---------------------------------

class LPMKeyCodec(Codec):
    """``{__u32 prefixlen; __u8 data[4|16]}`` keys as :mod:`ipaddress` networks.

    Encoding accepts a network, an address (a /32 or /128 host), or a string such as
    ``"10.0.0.0/8"``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.nbytes = size - 4
        self.version = 4 if self.nbytes == 4 else 6
        self.name = f"lpm_key_ipv{self.version}"
        self.pytype = "ipaddress.IPv4Network" if self.version == 4 else "ipaddress.IPv6Network"

    def default(self) -> Any:
        return ipaddress.ip_network("0.0.0.0/0" if self.version == 4 else "::/0")

    def decode(self, buf: Any, off: int = 0) -> Any:
        (plen,) = struct.unpack_from("<I", buf, off)
        addr = bytes(buf[off + 4:off + 4 + self.nbytes])
        if self.version == 4:
            return ipaddress.IPv4Network((addr, plen), strict=False)
        return ipaddress.IPv6Network((addr, plen), strict=False)

    def _net(self, value: Any, path: str) -> Any:
        try:
            if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                value = ipaddress.ip_network(value)
            elif isinstance(value, str):
                value = ipaddress.ip_network(value, strict=False)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        if not isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            raise TypeError(f"{path}: expected an IP network, address or str, got "
                            f"{type(value).__name__}")
        if value.version != self.version:
            raise ValueError(f"{path}: {value} is IPv{value.version}, the map's keys are "
                             f"IPv{self.version}")
        return value

    def encode(self, value: Any, path: str = "key") -> bytes:
        net = self._net(value, path)
        return bytes(struct.pack("<I", net.prefixlen) + net.network_address.packed)

    def pack_into(self, buf: bytearray, off: int, value: Any, path: str) -> None:
        buf[off:off + self.size] = self.encode(value, path)




def _is_lpm_layout(c: Codec) -> bool:
    if not isinstance(c, StructCodec) or len(c.members) != 2:
        return False
    a, b = c.members
    return (isinstance(a.codec, IntCodec) and a.codec.size == 4 and a.byte_off == 0
            and b.byte_off == 4)


def lpm_key_codec(c: Codec | None, size: int) -> Codec:
    """An LPM trie's key codec: networks for the usual layout (or no BTF), else ``c``."""
    if size in (8, 20) and (c is None or _is_lpm_layout(c)):
        return LPMKeyCodec(size)
    return c if c is not None else _RawCodec(size)


class StackTraceCodec(Codec):
    """A stack trace map's value: the list of return addresses, without the trailing
    zeros (decoding only: the kernel writes stacks)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.name = f"stack[{size // 8}]"
        self.pytype = "list[int]"
        self._unpack = struct.Struct(f"<{size // 8}Q").unpack_from

    def decode(self, buf: Any, off: int = 0) -> Any:
        addrs = list(self._unpack(buf, off))
        while addrs and addrs[-1] == 0:
            addrs.pop()
        return addrs

    def default(self) -> Any:
        return []

    def pack_into(self, buf: bytearray, off: int, value: Any, path: str) -> None:
        if not isinstance(value, (list, tuple)) or not all(isinstance(a, int) for a in value):
            raise TypeError(f"{path}: expected a list of addresses, got {_tname(value)}")
        n = self.size // 8
        if len(value) > n:
            raise ValueError(f"{path}: {len(value)} addresses do not fit {self.name}")
        buf[off:off + self.size] = struct.pack(f"<{n}Q", *value, *([0] * (n - len(value))))


# --- numpy dtypes, from the same layouts --------------------------------------------------


def numpy_dtype(c: Codec) -> Any:
    """The numpy dtype of the values of codec ``c``: the same offsets and sizes (from
    BTF); ``char`` arrays as ``S<n>``, other byte arrays as arrays of u1/i1, bools as
    ``?``, enums and pointers as integers. Bitfields and types without a value raise
    TypeError."""
    try:
        import numpy as np
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("numpy is not installed: pip install 'pybpf[numpy]'") from exc
    if isinstance(c, BoolCodec):
        return np.dtype("?")
    if isinstance(c, IntCodec) and c.fmt is not None:  # not __int128: numpy has no i16
        # plain char (clang marks it signed, not BTF_INT_CHAR: its name decides); not
        # unsigned char/__u8, which are numbers
        if c.size == 1 and c.name == "char":
            return np.dtype("S1")
        return np.dtype(f"<{'i' if c.signed else 'u'}{c.size}")
    if isinstance(c, FloatCodec):
        return np.dtype(f"<f{c.size}")
    if isinstance(c, CharArrayCodec):
        return np.dtype(f"S{c.size}")
    if isinstance(c, ByteArrayCodec):
        return np.dtype((f"<{'i' if c.signed else 'u'}1", (c.size,)))
    if isinstance(c, ArrayCodec):
        return np.dtype((numpy_dtype(c.elem), (c.n,)))
    if isinstance(c, StructCodec):
        names: list[str] = []
        formats: list[Any] = []
        offsets: list[int] = []
        for i, m in enumerate(c.members):
            if m.bits or m.bit_off % 8:
                raise TypeError(f"struct {c.name!r}: bitfield member {m.cname or m.name!r} "
                                "has no numpy equivalent")
            names.append(m.cname or f"_anon{i}")
            formats.append(numpy_dtype(m.codec))
            offsets.append(m.byte_off)
        return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                         "itemsize": c.size})
    raise TypeError(f"{c.name or type(c).__name__} has no numpy equivalent")


def _bf_get(buf: Any, off: int, m: _Member, size: int) -> Any:
    start = off + m.bit_off // 8
    nbytes = (m.bit_off % 8 + m.bits + 7) // 8
    raw = int.from_bytes(bytes(buf[start:start + nbytes]), "little")
    v = (raw >> (m.bit_off % 8)) & ((1 << m.bits) - 1)
    c = m.codec
    if getattr(c, "signed", False) and v >> (m.bits - 1):
        v -= 1 << m.bits
    if isinstance(c, BoolCodec):
        return bool(v)
    if isinstance(c, EnumCodec):
        return c._map.get(v, v)
    return v


def _bf_set(buf: bytearray, off: int, m: _Member, value: Any, path: str) -> None:
    c = m.codec
    if isinstance(c, EnumCodec) and isinstance(value, str):
        value = c.check(value, path)
    if not isinstance(value, int):
        raise TypeError(f"{path}: expected int for a {m.bits}-bit field, got {_tname(value)}")
    signed = bool(getattr(c, "signed", False))
    lo, hi = (-(1 << (m.bits - 1)), (1 << (m.bits - 1)) - 1) if signed else (0, (1 << m.bits) - 1)
    if not lo <= value <= hi:
        raise ValueError(f"{path}: {value} is out of range for a {m.bits}-bit "
                         f"{'signed' if signed else 'unsigned'} bitfield [{lo}, {hi}]")
    # ORed in: StructCodec.pack_into zeroes the struct (or union) before its members
    start = off + m.bit_off // 8
    nbytes = (m.bit_off % 8 + m.bits + 7) // 8
    raw = int.from_bytes(bytes(buf[start:start + nbytes]), "little")
    raw |= (value & ((1 << m.bits) - 1)) << (m.bit_off % 8)
    buf[start:start + nbytes] = raw.to_bytes(nbytes, "little")


# --- building codecs from BTF ----------------------------------------------------------


def _type_name(btf: BTF, t: BTFType, prefix: str) -> str:
    if t.name and _IDENT.match(t.name):
        return t.name
    return f"{prefix}{t.id}"


def codec_for(btf: BTF, type_id: int) -> Codec:
    """The codec of BTF type ``type_id`` (cached per BTF object)."""
    cache: dict[int, Codec] = btf.memo("codecs")
    c = cache.get(type_id)
    if c is None:
        built = len(cache)
        try:
            c = _build(btf, type_id, cache, 0)
        except BaseException:
            # nothing half-built stays cached: the next use fails the same way
            for k in list(cache)[built:]:
                del cache[k]
            raise
    return c


# Kinds whose values are those of the type they refer to.
_SAME_VALUE = frozenset({BTFKind.TYPEDEF, BTFKind.VOLATILE, BTFKind.CONST, BTFKind.RESTRICT,
                         BTFKind.TYPE_TAG, BTFKind.VAR})


def _build(btf: BTF, type_id: int, cache: dict[int, Codec], depth: int) -> Codec:
    if type_id in cache:
        done = cache[type_id]
        if isinstance(done, StructCodec) and done.building:
            # only a value member re-enters a struct being built (pointers do not recurse)
            raise BTFFormatError(f"type #{type_id} ({done.name}) contains itself")
        return done
    if depth > 64:
        raise BTFFormatError(f"type #{type_id}: nesting deeper than 64 levels")
    c: Codec
    if btf.kind_of(type_id) in _SAME_VALUE:  # the referred type's codec: build no BTFType
        c = _build(btf, btf.ref_of(type_id), cache, depth + 1)
        cache[type_id] = c
        return c
    t = btf.types[type_id]
    k = t.kind
    if k == BTFKind.INT:
        if t.encoding & INT_BOOL:
            c = BoolCodec(t.size)
        else:
            c = IntCodec(t.size, bool(t.encoding & INT_SIGNED), _int_name(t))
    elif k == BTFKind.PTR:
        c = IntCodec(8, False, "pointer")
    elif k in (BTFKind.ENUM, BTFKind.ENUM64):
        c = EnumCodec(t, _type_name(btf, t, "enum_"))
    elif k == BTFKind.FLOAT:
        c = FloatCodec(t.size, t.name)
    elif k == BTFKind.ARRAY:
        et = btf.resolve(t.type)
        if et.kind == BTFKind.INT and et.size == 1 and not et.encoding & INT_BOOL:
            if et.encoding & INT_CHAR or et.name == "char":
                c = CharArrayCodec(t.nelems)
            else:
                c = ByteArrayCodec(t.nelems, f"{_int_name(et)}[{t.nelems}]")
                c.signed = bool(et.encoding & INT_SIGNED)
        else:
            c = ArrayCodec(_build(btf, t.type, cache, depth + 1), t.nelems)
    elif k in (BTFKind.STRUCT, BTFKind.UNION):
        sc = StructCodec(t, _type_name(btf, t, "anon_union_" if k == BTFKind.UNION
                                       else "anon_struct_"))
        cache[type_id] = sc  # before members: a pointer cycle never recurses, but be safe
        taken: set[str] = set()
        for i, m in enumerate(t.members):
            mc = _build(btf, m.type, cache, depth + 1)
            end = (m.offset + m.bitfield_size + 7) // 8 if m.bitfield_size else \
                m.offset // 8 + mc.size
            if end > t.size:
                raise BTFFormatError(f"type #{type_id} ({sc.name}): member {m.name!r} ends "
                                     f"at byte {end}, past the {t.size} bytes of the "
                                     f"{'union' if sc.is_union else 'struct'}")
            name = _pyname(m.name or f"_anon{i}", taken)
            sc.members.append(_Member(name, m.name, m.offset, m.bitfield_size, mc))
        sc._finish()
        sc.building = False
        c = sc
    elif k == BTFKind.DATASEC:
        c = _RawCodec(t.size, t.name)
    else:  # VOID, FWD, FUNC, FUNC_PROTO, DECL_TAG: no value representation
        c = _RawCodec(btf.size_of(type_id) if k != BTFKind.VOID else 0, t.name or k.name)
    cache[type_id] = c
    return c


def _int_name(t: BTFType) -> str:
    return t.name or f"{'s' if t.encoding & INT_SIGNED else 'u'}{t.size * 8}"


def _int_factory(size: int, signed: bool) -> Callable[[], Codec]:
    return lambda: IntCodec(size, signed)


_SCALARS: dict[str, Callable[[], Codec]] = {
    **{f"u{b}": _int_factory(b // 8, False) for b in (8, 16, 32, 64)},
    **{f"s{b}": _int_factory(b // 8, True) for b in (8, 16, 32, 64)},
    "bool": lambda: BoolCodec(1), "f32": lambda: FloatCodec(4), "f64": lambda: FloatCodec(8),
}


def scalar_codec(name: str) -> Codec:
    """A codec for ``u8``..``u64``, ``s8``..``s64``, ``bool``, ``f32``, ``f64``."""
    try:
        return _SCALARS[name]()
    except KeyError:
        raise BPFValueError(_errno.EINVAL, f"unknown scalar type {name!r} (known: "
                                           f"{', '.join(_SCALARS)})") from None


def as_codec(spec: Any, size: int | None = None, what: str = "type", *,
             btf: BTF | None = None) -> Codec:
    """A codec from a user's type: a Codec, a generated class, a BTFType, a scalar name,
    ``bytes`` (raw, needs ``size``), a type name in ``btf``, or a type the object lacks
    (a C declaration, a ctypes type, a numpy dtype: :func:`pybpf.typespec.btf_type`)."""
    if isinstance(spec, Codec):
        c = spec
    elif isinstance(spec, type) and issubclass(spec, Struct):
        c = spec._codec
    elif isinstance(spec, BTFType) and spec.btf is not None:
        c = codec_for(spec.btf, spec.id)
    elif isinstance(spec, str) and (spec in _SCALARS or btf is None
                                    and not typespec.is_type_spec(spec)):
        c = scalar_codec(spec)
    elif spec is bytes and size is not None:
        c = _RawCodec(size)
    elif isinstance(spec, str) or typespec.is_type_spec(spec):
        t = typespec.btf_type(spec, btf=btf, what=what)
        c = codec_for(t.btf, t.id)  # type: ignore[arg-type]  # always attached
    else:
        raise TypeSpecError(f"{what}: cannot use {spec!r:.80} as a type (give a Codec, a "
                            "generated class, a BTF type, a scalar name such as 'u32', bytes, "
                            "a C declaration, a ctypes type or a numpy dtype)")
    if size is not None and c.size != size:
        raise BPFValueError(_errno.EINVAL, f"{what}: {c.name} is {c.size} bytes, the map's "
                                           f"size is {size}")
    return c


def raw_codec(size: int) -> Codec:
    """Plain bytes of ``size`` (what maps without BTF use)."""
    return _RawCodec(size)


def decode_array(codec: Codec, buf: Any, count: int) -> list[Any]:
    """``count`` values packed back to back (a batch of keys or values), decoded with one
    struct call (or in C) where the layout allows."""
    if count == 0:
        return []
    cdec = getattr(codec, "cdecoder", None)
    if cdec is not None:
        return cdec.decode_array(buf, count)  # type: ignore[no-any-return]
    if isinstance(codec, (IntCodec, FloatCodec)) and codec.fmt and \
            type(codec) in (IntCodec, FloatCodec):
        return list(struct.unpack_from(f"<{count}{codec.fmt}", buf, 0))
    frm = getattr(codec, "_from", None)
    if isinstance(codec, StructCodec) and frm is not None:
        it = struct.Struct("<" + (codec.fmt or "")).iter_unpack(
            memoryview(buf)[:count * codec.size])
        return [frm(t, 0) for t in it]
    d = codec.decode
    size = codec.size
    return [d(buf, i * size) for i in range(count)]


def decode_seq(codec: Codec, buf: Any, count: int, stride: int) -> list[Any]:
    """``count`` values at ``stride`` bytes apart (per-CPU values, batches)."""
    d = codec.decode
    return [d(buf, i * stride) for i in range(count)]




set_codec_builder(codec_for)
