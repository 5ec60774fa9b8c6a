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
import errno as _errno
import functools
import os
import socket
import threading
import weakref
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Callable

from . import _fs
from ._args import c_int, name_arg
from ._fd import FD, Handle, bpf_fd_kind
from ._ffi import capture, error_for, ffi, lib, walk_ids
from .errors import AttachError, BPFError, BPFTypeError

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


def _hook_then_close(on_detach: Callable[[], None], fd: int) -> None:
    try:
        on_detach()
    finally:
        os.close(fd)


class Link(Handle):
    """A program attached to a hook. Context manager; ``detach()`` is idempotent.

    The link's fd (or libbpf link, or non-fd hook) has one owner: ``detach()`` from
    any thread refuses new calls at once (ClosedError) and detaches when the calls in
    flight have ended."""

    def __init__(self, ptr: Any = None, *, program: str = "", target: str = "",
                 on_detach: Callable[[], None] | None = None, fd: int | None = None,
                 no_fd: str | None = None) -> None:
        self._ptr = ptr
        # Why a libbpf link has no kernel fd of its own (USDT: one uprobe per site).
        self._no_fd = no_fd
        self.program = program
        """Name of the attached program."""
        self.target = target
        """The hook, e.g. ``tracepoint syscalls:sys_enter_execve``."""
        self.via = ""
        """Which API made the link when the hook has two routes: ``"libbpf SYMBOL"``
        (the runtime libbpf has that newer API) or pybpf's own fallback, as
        :func:`pybpf.libbpf_capabilities` names it; empty for other hooks."""
        self.uprobe: Any = None
        """For a uprobe attached by function name: the resolved
        :class:`pybpf.symbolize.UprobeTarget` (file path and offset the kernel probes)."""
        self._holder: Any = None  # the Object whose program made it (held_by)
        self._finalizer: Any = None
        self._has_fd = ptr is not None or fd is not None
        self._pin: str | None = None  # where pin() pinned this link
        what = f"link {program!r} -> {target}"
        # The owner frees the link exactly once: at detach(), at garbage collection,
        # or at interpreter exit, whichever comes first -- and never during a call.
        if ptr is not None:
            self._owner = FD(-1, what, closer=functools.partial(lib.bpf_link__destroy, ptr))
        elif fd is not None:
            self._owner = FD(fd, what, closer=None if on_detach is None else
                             functools.partial(_hook_then_close, on_detach))
        else:
            self._owner = FD(-1, what, closer=on_detach)
        if on_detach is not None and getattr(on_detach, "__self__", None) is self:
            # bound to this link (LinkGroup): its parts have their own finalizers
            with _exit_lock:
                _exit_links.add(self)
        elif ptr is not None or fd is not None or on_detach is not None:
            # a libbpf link, an fd, a netlink tc filter, a socket filter...: undone at GC
            # or exit too
            self._finalizer = weakref.finalize(self, self._owner.close)

    def __repr__(self) -> str:
        state = "detached" if self.detached else (f"pinned at {self.pin_path}" if self.pin_path
                                                  else "attached")
        return f"<Link {self.program!r} -> {self.target} ({state})>"

    # --- state ----------------------------------------------------------------
    @property
    def detached(self) -> bool:
        return bool(self._owner.closed)

    @property
    def owner(self) -> FD:
        """The one owner of this link: ``with link.owner:`` keeps it attached (and its
        fd open) for a call of your own; ClosedError once detached."""
        return self._owner

    def _link_fd(self, borrowed: int) -> int:
        """The kernel link fd, while ``self._owner`` is borrowed."""
        if self._ptr is not None:
            if self._no_fd:
                raise BPFError(95, f"{self.target}: {self._no_fd}")
            return int(lib.bpf_link__fd(self._ptr))
        if not self._has_fd:
            raise BPFError(95, f"{self.target} is not a BPF link and has no fd")
        return borrowed

    @property
    def fd(self) -> int:
        """The kernel link fd (``BPFError`` for hooks that have none, e.g. netlink tc);
        ClosedError once detached. For a call that may race a detach, borrow
        :attr:`owner` instead."""
        with self._owner as fd:
            return self._link_fd(fd)

    @property
    def pin_path(self) -> str | None:
        """Where :meth:`pin` pinned this link (None if not pinned, or detached)."""
        return None if self._owner.closed else self._pin

    def info(self) -> LinkInfo:
        """Kernel view of the link (id, type, program id): one syscall."""
        with self._owner as fd:
            return _link_info_by_fd(self._link_fd(fd))

    # --- verbs ----------------------------------------------------------------
    def pin(self, path: str | os.PathLike[str]) -> None:
        """Pin in bpffs: the link then outlives this process until :meth:`unpin`. Any
        BPF link can be pinned: one libbpf made or one pybpf made with
        ``BPF_LINK_CREATE`` (tcx, netkit, uprobe_multi...): ``bpf_obj_pin`` of its fd
        either way, so that :meth:`unpin` removes it by one safe route. One syscall."""
        if self._ptr is None and not self._has_fd:
            raise BPFError(95, f"{self.target}: only BPF links can be pinned")
        if self._no_fd:
            raise BPFError(95, f"{self.target}: cannot be pinned: {self._no_fd}")
        p = _fs.check_pin_path(path, f"link {self.program!r}")
        with self._owner as fd, capture() as log:
            if self._pin is not None:
                raise BPFError(_errno.EBUSY, f"link {self.program!r} is already pinned "
                                             f"at {self._pin}")
            lfd = self._link_fd(fd)
            if bpf_fd_kind(lfd) != "link":  # a perf event, a socket filter...
                raise BPFError(95, f"{self.target}: only BPF links can be pinned")
            rc = lib.bpf_obj_pin(lfd, p.encode())
            err = ffi.errno
        if rc < 0:
            raise error_for(err, f"cannot pin link {self.program!r} at {p}", log=log)
        self._pin = p

    def unpin(self) -> None:
        """Remove the pin; the link stays attached while this object holds it. Refused
        (BPFError) if what is pinned there now is not this link: the pin is renamed
        aside, checked, then removed (or put back), so a pin swapped in at that path
        meanwhile is never removed (``_fs.remove_pin``)."""
        p = self.pin_path
        if p is None:
            return
        with self._owner as fd:
            mine = _link_info_by_fd(self._link_fd(fd)).id

            def check(q: str) -> None:
                theirs = _pinned_link_id(q)
                if theirs is not None and theirs != mine:
                    raise BPFError(_errno.EPERM, f"link {self.program!r} (id {mine}): "
                                   f"refusing to unpin {p}: what is pinned there is not "
                                   "this link")

            try:
                _fs.remove_pin(p, check)
            except FileNotFoundError:
                pass
            finally:  # removed, gone, or replaced by another pin: this link is not there
                self._pin = None

    def update_program(self, program: Any) -> None:
        """Atomically replace the attached program (``BPF_LINK_UPDATE``, one syscall): no
        event between the old program's last run and the new one's first is missed."""
        if not hasattr(program, "object") or not hasattr(program, "fd"):
            raise BPFTypeError(_errno.EINVAL, f"link {self.program!r} -> {self.target}: "
                                              "update_program takes a loaded Program, got "
                                              f"{type(program).__name__}")
        with program.object.owner:  # the program fd stays open for the call
            self.update_prog_fd(program.fd, program.name)

    def update_prog_fd(self, prog_fd: int, name: str) -> None:
        """:meth:`update_program` to a program given by fd (one that is no loaded
        Object's: a pinned deployment's, opened by id); ``name`` becomes
        :attr:`program`. The caller keeps ``prog_fd`` open for the call. One syscall."""
        who = f"link {self.program!r} -> {self.target}: update_prog_fd"
        prog_fd = c_int(prog_fd, f"{who}: prog_fd", "fd")
        name = name_arg(name, f"{who}: name", allow_empty=True)
        with self._owner as lfd:
            rc = lib.bpf_link_update(self._link_fd(lfd), prog_fd, ffi.NULL)
            err = ffi.errno
        if rc < 0:
            what = f"cannot update link {self.program!r} -> {self.target} to program {name!r}"
            if err in (_errno.EINVAL, _errno.EOPNOTSUPP):  # perf_event, netfilter... links
                try:
                    what += f" (the kernel cannot update a {self.info().type} link)"
                except BPFError:
                    pass
            raise error_for(err, what, kind=AttachError, program=name, target=self.target)
        self.program = name

    def held_by(self, holder: Any) -> None:
        """Record the :class:`~pybpf.Object` whose program made this link: it detaches
        the link when it closes, and :meth:`detach` tells it (``holder.link_detached``).
        Called by the object; not for users."""
        self._holder = holder

    def detach(self) -> None:
        """Detach from the hook (a pinned link stays attached until unpinned). From any
        thread; a call in flight on this link finishes first."""
        fin, self._finalizer = self._finalizer, None
        if fin is not None:
            fin()  # owner.close(): at most once, a no-op when it already ran (at exit)
        else:
            self._owner.close()
        holder, self._holder = self._holder, None
        if holder is not None:
            holder.link_detached(self)

    close = detach

    def __enter__(self) -> Link:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.detach()

    # --- pinned links -----------------------------------------------------------
    @classmethod
    def open_pinned(cls, path: str | os.PathLike[str]) -> Link:
        """Open a link pinned in bpffs; ``unpin()`` then ``detach()`` removes it. A pinned
        map or program is refused with BPFError."""
        p = _fs.check_pinned(path, "link", "Link.open_pinned")
        with capture() as log:
            ptr = lib.bpf_link__open(p.encode())
        if ptr == ffi.NULL:
            raise error_for(ffi.errno, f"cannot open pinned link {p}", log=log)
        kind = bpf_fd_kind(int(lib.bpf_link__fd(ptr)))
        if kind != "link":
            lib.bpf_link__destroy(ptr)  # an opened link: only closes the fd
            hint = " (pybpf.Map.open_pinned)" if kind == "map" else ""
            raise BPFError(_errno.EINVAL, f"{p} is a pinned {kind}{hint}, not a link")
        link = cls(ptr, target=f"pinned {p}")
        link._pin = p  # what unpin() removes (after checking it is still this link)
        try:
            link.program = f"prog id {link.info().prog_id}"
        except BPFError:
            pass
        return link


def _pinned_link_id(path: str) -> int | None:
    """The id of the link pinned at ``path`` (-1: something else is), None if nothing."""
    fd = lib.bpf_obj_get(path.encode())
    if fd < 0:
        return None
    try:
        if bpf_fd_kind(fd) != "link":
            return -1
        return _link_info_by_fd(fd).id
    except BPFError:
        return -1
    finally:
        os.close(fd)


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
        with self._owner as lfd:
            fd = lib.bpf_iter_create(self._link_fd(lfd))
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
    return walk_ids(lib.bpf_link_get_next_id, lib.bpf_link_get_fd_by_id, _link_info_by_fd,
                    what="links")

