"""Links: a program attached to a hook.

A :class:`Link` lives until :meth:`Link.detach` (or ``close``), the end of a
``with`` block, the close of the object whose program it attached, or the end
of the process -- unless it was pinned in bpffs, which keeps it attached after
the process exits until :meth:`Link.unpin`.

Most hooks give a kernel BPF link (an fd); a few older hooks are not fd-based
(tc filters through netlink, socket filters, ``bpf_prog_attach``), and pybpf
wraps them in the same interface, detaching them on close and at interpreter
exit.
"""

from __future__ import annotations

import atexit
import os
import socket
import threading
import weakref
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Callable

from . import _fs
from ._ffi import capture, error_for, ffi, lib, walk_ids
from .errors import AttachError, BPFError, ClosedError

__all__ = ["Link", "LinkInfo", "IterLink", "LinkGroup", "list_links"]


@dataclass(frozen=True)
class LinkInfo:
    """What the kernel says about a link (``bpf_link_info``)."""

    id: int
    type: str
    prog_id: int


# Link types newer than libbpf 1.1's name table (kernel uapi enum bpf_link_type).
_NEW_LINK_TYPES = {10: "netfilter", 11: "tcx", 12: "uprobe_multi", 13: "netkit", 14: "sockmap"}


def _link_type_name(t: int) -> str:
    s = lib.libbpf_bpf_link_type_str(t)
    if s != ffi.NULL:
        return str(ffi.string(s).decode())
    return _NEW_LINK_TYPES.get(t, f"link_type_{t}")


def _link_info_by_fd(fd: int) -> LinkInfo:
    info = ffi.new("struct bpf_link_info *")
    size = ffi.new("__u32 *", ffi.sizeof("struct bpf_link_info"))
    if lib.bpf_obj_get_info_by_fd(fd, info, size) < 0:
        raise error_for(ffi.errno, "cannot read link info")
    return LinkInfo(id=info.id, type=_link_type_name(info.type), prog_id=info.prog_id)


# Links that are not fd-based must be undone at exit even if the user forgot.
_exit_links: weakref.WeakSet[Link] = weakref.WeakSet()
_exit_lock = threading.Lock()


@atexit.register
def _detach_at_exit() -> None:
    with _exit_lock:
        links = list(_exit_links)
    for link in links:
        try:
            link.detach()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


class Link:
    """A program attached to a hook. Context manager; ``detach()`` is idempotent."""

    def __init__(self, ptr: Any = None, *, program: str = "", target: str = "",
                 on_detach: Callable[[], None] | None = None, fd: int | None = None,
                 no_fd: str | None = None) -> None:
        self._ptr = ptr
        # Why a libbpf link has no kernel fd of its own (USDT: one uprobe per site).
        self._no_fd = no_fd
        self._on_detach = on_detach
        self._fd = fd
        self.program = program
        """Name of the attached program."""
        self.target = target
        """The hook, e.g. ``tracepoint syscalls:sys_enter_execve``."""
        self._owner: Any = None
        self._finalizer: Any = None
        # The finalizer frees the link exactly once: at detach(), at garbage
        # collection, or at interpreter exit, whichever comes first.
        if ptr is not None:
            self._finalizer = weakref.finalize(self, lib.bpf_link__destroy, ptr)
        elif fd is not None and on_detach is None:
            self._finalizer = weakref.finalize(self, os.close, fd)
        elif on_detach is not None:
            if getattr(on_detach, "__self__", None) is self:
                # bound to this link (LinkGroup): its parts have their own finalizers
                with _exit_lock:
                    _exit_links.add(self)
            else:  # a netlink tc filter, a socket filter...: undone at GC or exit too
                self._finalizer = weakref.finalize(self, on_detach)

    def __repr__(self) -> str:
        state = "detached" if self.detached else (f"pinned at {self.pin_path}" if self.pin_path
                                                  else "attached")
        return f"<Link {self.program!r} -> {self.target} ({state})>"

    # --- state ----------------------------------------------------------------
    @property
    def detached(self) -> bool:
        return self._ptr is None and self._on_detach is None and self._fd is None

    @property
    def fd(self) -> int:
        """The kernel link fd (``BPFError`` for hooks that have none, e.g. netlink tc)."""
        if self._ptr is not None and self._no_fd:
            raise BPFError(95, f"{self.target}: {self._no_fd}")
        if self._ptr is not None:
            return int(lib.bpf_link__fd(self._ptr))
        if self._fd is not None:
            return self._fd
        if self.detached:
            raise ClosedError(f"link {self.program!r} -> {self.target}")
        raise BPFError(95, f"{self.target} is not a BPF link and has no fd")

    @property
    def pin_path(self) -> str | None:
        if self._ptr is None:
            return None
        p = lib.bpf_link__pin_path(self._ptr)
        return ffi.string(p).decode() if p != ffi.NULL else None

    def info(self) -> LinkInfo:
        """Kernel view of the link (id, type, program id): one syscall."""
        return _link_info_by_fd(self.fd)

    # --- verbs ----------------------------------------------------------------
    def pin(self, path: str | os.PathLike[str]) -> None:
        """Pin in bpffs: the link then outlives this process until :meth:`unpin`."""
        if self._ptr is None:
            raise BPFError(95, f"{self.target}: only BPF links can be pinned")
        if self._no_fd:
            raise BPFError(95, f"{self.target}: cannot be pinned: {self._no_fd}")
        p = _fs.check_pin_path(os.fspath(path))
        with capture() as log:
            err = lib.bpf_link__pin(self._ptr, p.encode())
        if err:
            raise error_for(-err, f"cannot pin link {self.program!r} at {p}", log=log)

    def unpin(self) -> None:
        """Remove the pin; the link stays attached while this object holds it."""
        if self._ptr is None or self.pin_path is None:
            return
        err = lib.bpf_link__unpin(self._ptr)
        if err:
            raise error_for(-err, f"cannot unpin link {self.program!r}")

    def update_program(self, program: Any) -> None:
        """Atomically replace the attached program (``BPF_LINK_UPDATE``, one syscall): no
        event between the old program's last run and the new one's first is missed."""
        if self._ptr is not None:
            err = lib.bpf_link__update_program(self._ptr, program._raw())
        elif self._fd is not None and self._on_detach is None:  # a raw link (tcx, netfilter...)
            rc = lib.bpf_link_update(self.fd, program.fd, ffi.NULL)
            err = -ffi.errno if rc < 0 else 0
        else:
            raise BPFError(95, f"{self.target}: only BPF links can be updated")
        if err:
            what = f"cannot update link {self.target} to program {program.name!r}"
            if -err in (22, 95):  # EINVAL/EOPNOTSUPP: perf_event, netfilter... links
                try:
                    what += f" (the kernel cannot update a {self.info().type} link)"
                except BPFError:
                    pass
            raise error_for(-err, what, kind=AttachError, program=program.name,
                            target=self.target)
        self.program = program.name

    def detach(self) -> None:
        """Detach from the hook (a pinned link stays attached until unpinned)."""
        self._ptr = None
        self._fd = None
        on_detach, self._on_detach = self._on_detach, None
        fin, self._finalizer = self._finalizer, None
        if fin is not None:
            fin()  # frees it at most once: a no-op when it already ran (e.g. at exit)
        elif on_detach is not None:
            on_detach()
        owner, self._owner = self._owner, None
        if owner is not None:
            owner._forget_link(self)

    close = detach

    def __enter__(self) -> Link:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.detach()

    # --- pinned links -----------------------------------------------------------
    @classmethod
    def open_pinned(cls, path: str | os.PathLike[str]) -> Link:
        """Open a link pinned in bpffs; ``unpin()`` then ``detach()`` removes it."""
        p = os.fspath(path)
        if not os.path.exists(p):
            raise FileNotFoundError(2, f"no pinned link at {p}", p)
        with capture() as log:
            ptr = lib.bpf_link__open(p.encode())
        if ptr == ffi.NULL:
            raise error_for(ffi.errno, f"cannot open pinned link {p}", log=log)
        link = cls(ptr, target=f"pinned {p}")
        try:
            link.program = f"prog id {link.info().prog_id}"
        except BPFError:
            pass
        return link


class LinkGroup(Link):
    """Several links made by one attach call (e.g. a perf event on every CPU)."""

    def __init__(self, links: list[Link], *, program: str, target: str) -> None:
        super().__init__(program=program, target=target, on_detach=self._detach_all)
        self.links = links

    def _detach_all(self) -> None:
        for link in self.links:
            link.detach()

    @property
    def fd(self) -> int:
        raise BPFError(95, f"{self.target}: a group of {len(self.links)} links has no single fd")


class IterLink(Link):
    """A BPF iterator link; each :meth:`read` runs the iterator once."""

    def open(self) -> Any:
        """A new binary file object reading one pass of the iterator."""
        fd = lib.bpf_iter_create(self.fd)
        if fd < 0:
            raise error_for(-fd, f"cannot create iterator for {self.program!r}")
        return os.fdopen(fd, "rb", buffering=0)

    def read(self) -> bytes:
        """Run the iterator to the end and return what it printed."""
        with self.open() as f:
            chunks = []
            while True:
                chunk = f.read(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks)


def socket_filter_link(sock: socket.socket | int, prog_fd: int, program: str) -> Link:
    """Attach a socket filter program (SO_ATTACH_BPF) to ``sock``.

    A socket object is held weakly (closing it ends the filter with it); for a
    bare fd the link keeps a duplicate of it until detach, so that detach
    reaches the same socket even if the caller's fd number is reused.
    """
    SO_ATTACH_BPF = 50
    SO_DETACH_BPF = 27
    if isinstance(sock, socket.socket):
        s, shown = sock, sock.fileno()
    else:
        shown = sock
        dup = -1
        try:
            dup = os.dup(sock)
            s = socket.socket(fileno=dup)
        except OSError as exc:
            if dup >= 0:
                os.close(dup)
            raise error_for(exc.errno or 9, f"cannot attach socket filter {program!r}: fd "
                            f"{sock} is not an open socket", kind=AttachError,
                            program=program, target=f"socket fd {sock}") from None
    target = f"socket fd {shown}"
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, prog_fd)
    except OSError as exc:
        if s is not sock:
            s.close()
        raise error_for(exc.errno or 22, f"cannot attach socket filter {program!r} to {target}",
                        kind=AttachError, program=program, target=target) from None

    if s is sock:
        ref = weakref.ref(s)

        def detach() -> None:
            live = ref()
            if live is not None and live.fileno() >= 0:
                try:
                    live.setsockopt(socket.SOL_SOCKET, SO_DETACH_BPF, 0)
                except OSError:
                    pass
    else:
        def detach() -> None:
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_DETACH_BPF, 0)
            except OSError:
                pass
            finally:
                s.close()

    return Link(program=program, target=target, on_detach=detach)


def list_links() -> list[LinkInfo]:
    """Every BPF link in the kernel (like ``bpftool link list``)."""
    return walk_ids(lib.bpf_link_get_next_id, lib.bpf_link_get_fd_by_id, _link_info_by_fd)

