"""The one owner of a kernel fd: :class:`FD` (implemented in ``pybpf/_native/fd.c``).

Every map, program, link, BTF and event reader holds its fd through one ``FD``.
Uses that may drop the GIL (a cffi call into libbpf, a wait, a walk's syscall, an
mmap access) borrow it for their length::

    with owner as fd:          # ClosedError (naming the owner) once closed
        lib.bpf_map_lookup_elem(fd, key, value)

``owner.close()`` refuses new borrows at once, from any thread, and closes the fd
when the last borrow ends: a stale handle can never reach an fd number that another
object has been given since. C code that holds the GIL from its check to the end of
its syscall (the map fast path) calls ``pybpf_fd_get()`` instead of borrowing.

An owner of a resource that is not an fd (a libbpf ``bpf_object``, an mmap) is
``FD(-1, what, closer=...)``: the closer runs once, when the last borrow ends.
"""

from __future__ import annotations

import os
from typing import Any

from ._fastpath import FD

__all__ = ["FD", "Handle", "Stage", "bpf_fd_kind"]

# What /proc/self/fd/N links to for each kind of BPF fd (the kernel's anon inode names).
_ANON_KINDS = {"anon_inode:bpf-map": "map", "anon_inode:bpf-prog": "program",
               "anon_inode:bpf-link": "link", "anon_inode:bpf_link": "link",
               "anon_inode:btf": "BTF"}


def bpf_fd_kind(fd: int) -> str:
    """What kind of BPF object ``fd`` refers to: ``"map"``, ``"program"``, ``"link"``,
    ``"BTF"``, or what the fd is otherwise (one readlink, no BPF syscall)."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "unknown"
    return _ANON_KINDS.get(target, target)


class Stage:
    """The lifecycle of one BPF object, shared by the object and its parts (maps
    before load, global-variable sections): the owner of its libbpf ``bpf_object``
    (borrow it around every use of a libbpf pointer), its name for messages, and
    whether it is loaded. Only :class:`~pybpf.Object` changes it."""

    __slots__ = ("owner", "name", "loaded")

    def __init__(self, owner: FD, name: str) -> None:
        self.owner = owner
        self.name = name
        self.loaded = False

    @property
    def closed(self) -> bool:
        return bool(self.owner.closed)


class Handle:
    """Base of the Python objects that own kernel state through an :class:`FD` (Object,
    Map, Link...): they cannot be copied or pickled, since a copy would be a second
    owner of one fd. Share the handle instead, or open another (``Map.from_id(m.id)``,
    ``open_pinned``)."""

    __slots__ = ()

    def _refuse(self, how: str) -> TypeError:
        name = getattr(self, "name", None)
        what = f"{type(self).__name__} {name!r}" if name is not None else type(self).__name__
        return TypeError(f"{what} cannot be {how}: it owns a kernel object's fd; share it, "
                         "or open the kernel object again (from_id(), open_pinned())")

    def __copy__(self) -> Any:
        raise self._refuse("copied")

    def __deepcopy__(self, memo: Any) -> Any:
        raise self._refuse("copied")

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise self._refuse("pickled")
