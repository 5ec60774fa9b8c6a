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
"""

from __future__ import annotations

from ._fastpath import FD

__all__ = ["FD"]
