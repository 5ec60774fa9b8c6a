"""struct_ops maps as BPF links (kernel 6.4+): register a kernel ops table (a TCP
congestion control...) made of BPF programs, swap it atomically, unregister on close.

A map declared in ``SEC(".struct_ops.link")`` (or given ``BPF_F_LINK`` before load)
is registered by a link: ``BPF_LINK_CREATE`` on the map fd with attach type
``BPF_STRUCT_OPS``, updated by ``BPF_LINK_UPDATE`` with another such map of the same
kind, unregistered when the link's fd closes. A plain ``SEC(".struct_ops")`` map is
registered by writing its value (``bpf_map__attach_struct_ops``) and unregistered
by deleting it. libbpf writes the value (it alone knows the program fds' places
in it): libbpf 1.1 only writes it, and pybpf makes the link; a libbpf that knows
BPF_F_LINK maps (1.2+) writes it and makes the link in one call, and pybpf takes
that link over (told apart by what libbpf returns, not by version).
"""

from __future__ import annotations

import errno as _errno
import os
from typing import Any

from .._ffi import capture, error_for, ffi, lib
from ..errors import AttachError
from ..link import Link
from ._common import BPF_F_LINK, attach_error, libbpf_link, link_create

__all__ = ["StructOpsLink", "attach_struct_ops"]

_BPF_STRUCT_OPS = 44


def _write_value(map_ptr: Any, name: str, *, keep_link: bool = False) -> int | None:
    """Have libbpf write the ops table (program fds in their slots) into the map. A
    libbpf that knows BPF_F_LINK maps also registers it by a link: with ``keep_link``
    that link's fd is returned (a dup: pybpf owns it), else the link is closed
    (unregistered) and only the value stays; EEXIST from that link (the name is taken)
    still leaves the value written. None: libbpf 1.1, the value only."""
    flags = int(lib.bpf_map__map_flags(map_ptr))
    with capture() as log:
        lptr = lib.bpf_map__attach_struct_ops(map_ptr)
        err = ffi.errno
    if lptr == ffi.NULL:
        if flags & BPF_F_LINK and err == _errno.EEXIST:
            return None  # written, then the link refused: pybpf's own attempt will say so
        raise attach_error(f"struct_ops {name}", err, f"struct_ops map {name}", log)
    link_fd = int(lib.bpf_link__fd(lptr))
    if link_fd == int(lib.bpf_map__fd(map_ptr)):  # value only (libbpf 1.1)
        lib.bpf_link__disconnect(lptr)  # the value stays; the link object goes
        lib.bpf_link__destroy(lptr)
        return None
    own = os.dup(link_fd) if keep_link else None
    lib.bpf_link__destroy(lptr)  # libbpf's link closes; a kept dup holds the registration
    return own


class StructOpsLink(Link):
    """A registered struct_ops map; :meth:`update_map` swaps in another one atomically."""

    def update_map(self, new_map: Any) -> None:
        """Replace the registered ops by ``new_map``'s (a loaded BPF_F_LINK struct_ops map of
        the same type): ``BPF_LINK_UPDATE``, so no connection ever sees no ops. Two syscalls."""
        obj = new_map.object
        opts = ffi.new("struct bpf_link_update_opts *")
        opts.sz = ffi.sizeof("struct bpf_link_update_opts")
        with obj.owner:
            _write_value(obj.libbpf_map(new_map.name), new_map.name)
            with new_map.owner as mfd, self.owner as lfd:
                rc = lib.bpf_link_update(lfd, mfd, opts)
                err = ffi.errno
        if rc < 0:
            raise error_for(err, f"cannot update struct_ops link {self.target} to map "
                            f"{new_map.name!r}", kind=AttachError, program=self.program,
                            target=self.target)
        self.program = f"struct_ops {new_map.name}"


def attach_struct_ops(map_ptr: Any, map_fd: int, name: str) -> Link:
    """Register a loaded struct_ops map: a link for BPF_F_LINK maps, else libbpf's write."""
    flags = int(lib.bpf_map__map_flags(map_ptr))
    program = f"struct_ops {name}"
    if not flags & BPF_F_LINK:
        with capture() as log:
            lptr = lib.bpf_map__attach_struct_ops(map_ptr)
        return libbpf_link(lptr, program, f"struct_ops map {name}", log,
                           no_fd="a struct_ops map without BPF_F_LINK is registered by its "
                                 "value, not by a link")
    target = f"struct_ops map {name}"
    made = _write_value(map_ptr, name, keep_link=True)
    fd = made if made is not None else link_create(map_fd, 0, _BPF_STRUCT_OPS)
    if fd == -_errno.EEXIST:
        raise AttachError(_errno.EEXIST, f"cannot register {target}: an ops table of the same "
                          "name is already registered (EEXIST)", program=program,
                          target=target)
    if fd < 0:
        raise attach_error(program, -fd, target)
    return StructOpsLink(program=program, target=target, fd=fd)
