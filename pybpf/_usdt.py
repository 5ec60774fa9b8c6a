"""USDT argument specs across libbpf versions: never zeros in silence.

libbpf's user-space half (``bpf_program__attach_usdt``, in the runtime libbpf.so.1)
parses each probe site's argument locations and writes one ``struct __bpf_usdt_spec``
per site into the object's ``__bpf_usdt_specs`` map; the BPF half (``usdt.bpf.h``,
compiled into the object with the headers of whatever libbpf built it) reads them in
``bpf_usdt_arg()``. When a newer runtime writes an argument kind the object's
``usdt.bpf.h`` does not know -- libbpf 1.7 added ``BPF_USDT_ARG_SIB`` (scale-index-base
addressing, ``-96(%rbp,%rax,8)``) -- ``bpf_usdt_arg()`` returns -EINVAL and leaves the
argument 0, and a probe that ignores the error reads zeros.

:func:`check_attached` runs after each USDT attach: it reads back the specs the runtime
wrote and compares them with the object's own BTF of the spec layout (the argument
kinds its enum lists, the struct sizes). A spec the object cannot read detaches the
link and raises :class:`AttachError` saying how to rebuild the object. Cost: one map
lookup per spec slot (256 at most), on attach only.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from .btf import BTF, BTFKind
from .errors import AttachError

if TYPE_CHECKING:
    from .link import Link

__all__ = ["check_attached", "SpecLayout", "RUNTIME_ARG_KINDS"]

SPECS_MAP = "__bpf_usdt_specs"
#: The argument kinds each libbpf's user-space half writes (enum usdt_arg_type), by the
#: version that introduced them.
RUNTIME_ARG_KINDS = {0: ("CONST", (0, 8)), 1: ("REG", (0, 8)), 2: ("REG_DEREF", (0, 8)),
                     3: ("SIB", (1, 7))}
#: sizeof(struct usdt_spec) as every libbpf so far writes it (12 args of 16 bytes, cookie,
#: count); a runtime or an object with another layout cannot exchange specs.
RUNTIME_SPEC_SIZE = 208


class SpecLayout:
    """Where an object's ``usdt.bpf.h`` reads a spec's fields, from the object's BTF."""

    def __init__(self, btf: BTF) -> None:
        spec = btf.find("__bpf_usdt_spec", BTFKind.STRUCT)
        arg = btf.find("__bpf_usdt_arg_spec", BTFKind.STRUCT)
        kinds = btf.find("__bpf_usdt_arg_type", BTFKind.ENUM)
        if spec is None or arg is None or kinds is None:
            raise LookupError("the object's BTF has no struct __bpf_usdt_spec")
        self.spec_size = spec.size
        self.arg_size = arg.size
        members = {m.name: m for m in spec.members}
        arg_members = {m.name: m for m in arg.members}
        self.args_off = members["args"].offset // 8
        self.max_args = btf.resolve(members["args"].type).nelems
        self.cnt_off = members["arg_cnt"].offset // 8
        kind = arg_members["arg_type"]
        self.kind_bit = kind.offset
        self.kind_bits = kind.bitfield_size or 8 * btf.size_of(kind.type)
        #: argument kind value -> name, as the object's BPF code knows them
        self.kinds = {m.value: m.name.removeprefix("BPF_USDT_ARG_") for m in kinds.members}

    def arg_kinds(self, value: bytes) -> list[int]:
        """The argument kinds of one spec map value (little-endian, as libbpf writes it)."""
        cnt = int.from_bytes(value[self.cnt_off:self.cnt_off + 2], "little", signed=True)
        out = []
        for i in range(max(0, min(cnt, self.max_args))):
            word = int.from_bytes(value[self.args_off + i * self.arg_size:
                                        self.args_off + (i + 1) * self.arg_size], "little")
            out.append((word >> self.kind_bit) & ((1 << self.kind_bits) - 1))
        return out


def _runtime() -> tuple[int, int]:
    from ._ffi import lib

    return int(lib.libbpf_major_version()), int(lib.libbpf_minor_version())


def _rebuild_hint(runtime: tuple[int, int]) -> str:
    v = f"{runtime[0]}.{runtime[1]}"
    return (f"rebuild the object against the usdt.bpf.h of libbpf {v} (the libbpf-dev "
            f"that matches the runtime libbpf.so.1 {v}; `pybpf build SRC.bpf.c` compiles "
            "with the system's headers), or run it with the libbpf it was built against")


def check_specs(obj: Any, specs: Any, target: str, program: str) -> None:
    """Raise :class:`AttachError` if a spec in the map ``specs`` of ``obj`` holds what the
    object's ``usdt.bpf.h`` cannot read."""
    runtime = _runtime()
    try:
        layout = SpecLayout(obj.btf)
    except (LookupError, KeyError, AttributeError) as exc:
        raise AttachError(errno.EPROTO, f"cannot attach program {program!r} to {target}: the "
                          f"object's USDT spec layout is unreadable ({exc}); "
                          + _rebuild_hint(runtime), program=program, target=target) from None
    if layout.spec_size != RUNTIME_SPEC_SIZE or specs.value_size != RUNTIME_SPEC_SIZE:
        raise AttachError(errno.EPROTO, f"cannot attach program {program!r} to {target}: the "
                          f"object's struct __bpf_usdt_spec is {layout.spec_size} bytes, libbpf "
                          f"{runtime[0]}.{runtime[1]} writes {RUNTIME_SPEC_SIZE}; "
                          + _rebuild_hint(runtime), program=program, target=target)
    for spec_id in range(specs.max_entries):
        value = specs.lookup(spec_id.to_bytes(4, "little"))
        if not value:
            continue
        for i, kind in enumerate(layout.arg_kinds(value)):
            if kind in layout.kinds:
                continue
            name, since = RUNTIME_ARG_KINDS.get(kind, (f"#{kind}", runtime))
            raise AttachError(
                errno.EPROTO,
                f"cannot attach program {program!r} to {target}: argument {i + 1} of a probe "
                f"site is a {name} location (kind {kind}, written by libbpf "
                f"{since[0]}.{since[1]}+), which the object's usdt.bpf.h does not know "
                f"(it reads {', '.join(layout.kinds.values())}): bpf_usdt_arg() would return "
                f"0 for it; " + _rebuild_hint(runtime), program=program, target=target)


def check_attached(obj: Any, link: Link, target: str, program: str) -> Link:
    """After a USDT attach: return ``link`` if the object reads every spec the runtime
    libbpf wrote, else close it and raise :class:`AttachError` (see the module doc)."""
    specs = obj.maps.get(SPECS_MAP)
    if specs is None:
        return link
    try:
        check_specs(obj, specs, target, program)
    except AttachError:
        link.close()
        raise
    return link
