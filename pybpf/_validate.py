"""Checks on an object's bytes before libbpf parses them.

The system libbpf (1.1.x) trusts the ELF and BTF structures it reads and can
crash the process on corrupted input. Everything libbpf would dereference from
the file is checked here first; a failure is an :class:`~pybpf.ObjectError`
naming the file and the bad structure.
"""

from __future__ import annotations

import errno
import struct

from .errors import ObjectError

__all__ = ["check_object"]

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")


def _fail(name: str, what: str) -> ObjectError:
    return ObjectError(errno.EINVAL, f"{name}: malformed BPF object: {what}", path=name)


def check_object(data: bytes, name: str) -> None:
    """Raise ObjectError if ``data`` has ELF structures libbpf would misread."""
    if len(data) < _EHDR.size:
        raise _fail(name, "truncated ELF header")
    (_ident, _type, _machine, _version, _entry, _phoff, shoff, _flags, ehsize, _phentsize,
     _phnum, shentsize, shnum, shstrndx) = _EHDR.unpack_from(data)
    if shentsize != _SHDR.size:
        raise _fail(name, f"section header size {shentsize}, expected {_SHDR.size}")
    if shnum == 0 or shoff == 0:
        raise _fail(name, "no section headers")
    if shoff + shnum * shentsize > len(data):
        raise _fail(name, f"section header table ({shnum} entries at {shoff}) runs past the "
                          f"end of the file ({len(data)} bytes)")
    if shstrndx >= shnum:
        raise _fail(name, f"section name table index {shstrndx} >= {shnum} sections")
    for i in range(shnum):
        (_nm, sh_type, _fl, _addr, off, size, link, _info, _align,
         _entsize) = _SHDR.unpack_from(data, shoff + i * shentsize)
        if sh_type != 8 and off + size > len(data):  # 8 = SHT_NOBITS
            raise _fail(name, f"section {i} ({size} bytes at {off}) runs past the end of "
                              "the file")
        if link >= shnum:
            raise _fail(name, f"section {i} links to section {link} >= {shnum}")
