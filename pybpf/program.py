"""Programs: one BPF program of an :class:`~pybpf.Object`, and every way to attach it.

``Program.attach(**kw)`` picks the hook from the program's type and section;
each hook also has its own method (``attach_tracepoint``, ``attach_uprobe``,
``attach_xdp`` ...). Every method returns a :class:`~pybpf.Link` owned by the
object (detached when the object closes) and raises :class:`~pybpf.AttachError`
naming the program and the target when the kernel refuses.
"""

from __future__ import annotations

import builtins
import errno as _errno
import functools
import os
import socket
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from . import _fs, _sections, features
from ._args import BARE, c_int, choice, fd_or_path, name_arg, named, path_arg
from ._fd import FD, Handle, bpf_fd_kind
from ._ffi import CAP_NET_ADMIN, CAP_PERFMON, capture, error_for, ffi, lib, walk_ids
from ._usdt import check_attached as check_usdt
from .attach import cgroup as _cgroup
from .attach import kprobe_multi as _kprobe_multi
from .attach import netfilter as _netfilter
from .attach import perf as _perf
from .attach import sockets as _sockets
from .attach import tc as _tc
from .attach import uprobe_multi as _uprobe_multi
from .attach._common import attach_error, libbpf_link
from .errors import (
    AttachError,
    BPFError,
    BPFTypeError,
    BPFValueError,
    ClosedError,
    NotSupportedError,
    StateError,
)
from .link import IterLink, Link, socket_filter_link
from .symbolize import opened_binary, resolve_library, resolve_uprobe

if TYPE_CHECKING:
    from .maps import Map


class _Object(Protocol):
    """What a Program needs of its :class:`~pybpf.Object` (object.py imports this
    module, not the other way round)."""

    @property
    def owner(self) -> FD: ...

    @property
    def loaded(self) -> bool: ...

    @property
    def closed(self) -> bool: ...

    def _adopt_link(self, link: Link) -> Link: ...

__all__ = ["Program", "ProgramInfo", "TestRun", "prog_type_name", "attach_type_name",
           "list_programs"]

BPF_XDP = 37
XDP_FLAGS = {"auto": 0, "skb": 1 << 1, "generic": 1 << 1, "native": 1 << 2, "drv": 1 << 2,
             "hw": 1 << 3}


# Section names newer than the linked libbpf: registered before any object opens.
_sections.register_handlers()


# Names newer than libbpf 1.1's tables (kernel uapi enums).
_NEW_PROG_TYPES = {_sections.PROG_NETFILTER: "netfilter"}
# libbpf's own names (attach_type_name[] of newer releases), so that a program reports
# the same attach type whichever libbpf is linked
_LIBBPF_NAMES = {"kprobe_multi": "trace_kprobe_multi", "uprobe_multi": "trace_uprobe_multi",
                 "kprobe_session": "trace_kprobe_session",
                 "uprobe_session": "trace_uprobe_session"}
_NEW_ATTACH_TYPES = {v: _LIBBPF_NAMES.get(k, k) for k, v in _sections.AT.items()}


def prog_type_name(t: int) -> str:
    s = lib.libbpf_bpf_prog_type_str(t)
    return ffi.string(s).decode() if s != ffi.NULL else _NEW_PROG_TYPES.get(t, f"prog_type_{t}")


def _by_name(value: str | int, namer: Any, what: str) -> int:
    """The number of a libbpf type name (or a number, checked to be a u32)."""
    if not isinstance(value, str):
        return c_int(value, what, "u32")
    for t in range(64):
        if namer(t) == value:
            return t
    raise BPFValueError(_errno.EINVAL, f"{what}: unknown name {value!r:.60} (libbpf's names, "
                                       "e.g. 'tracepoint')")


def _prog_type_value(value: str | int, who: str = "") -> int:
    return _by_name(value, prog_type_name, f"{who}program type")


def _attach_type_value(value: str | int, who: str = "") -> int:
    return _by_name(value, attach_type_name, f"{who}attach type")


def attach_type_name(t: int) -> str:
    s = lib.libbpf_bpf_attach_type_str(t)
    if s != ffi.NULL:
        return str(ffi.string(s).decode())
    return _NEW_ATTACH_TYPES.get(t, f"attach_type_{t}")


@dataclass(frozen=True)
class ProgramInfo:
    """What the kernel says about a loaded program (``bpf_prog_info``).

    ``run_count``/``run_time_ns`` count only while BPF stats are enabled
    (``pybpf.enable_stats()`` or sysctl kernel.bpf_stats_enabled=1).
    """

    id: int
    name: str
    type: str
    tag: str
    jited_size: int
    xlated_size: int
    run_count: int
    run_time_ns: int
    verified_insns: int
    map_ids: tuple[int, ...]
    btf_id: int
    attach_btf_id: int
    """The type the program attaches to (tp_btf/fentry/fexit/lsm/freplace...), by id in the
    BTF ``attach_btf_obj_id`` names (vmlinux, a module or the target program); 0: none."""
    attach_btf_obj_id: int


def _prog_info_by_fd(fd: int) -> ProgramInfo:
    info = ffi.new("struct bpf_prog_info *")
    size = ffi.new("__u32 *", ffi.sizeof("struct bpf_prog_info"))
    if lib.bpf_obj_get_info_by_fd(fd, info, size) < 0:
        raise error_for(ffi.errno, f"cannot read program info of fd {fd}")
    n = info.nr_map_ids
    map_ids: tuple[int, ...] = ()
    if n:
        ids = ffi.new("__u32[]", n)
        info2 = ffi.new("struct bpf_prog_info *")
        info2.nr_map_ids = n
        info2.map_ids = int(ffi.cast("uintptr_t", ids))
        size[0] = ffi.sizeof("struct bpf_prog_info")
        if lib.bpf_obj_get_info_by_fd(fd, info2, size) == 0:
            map_ids = tuple(ids[i] for i in range(min(n, info2.nr_map_ids)))
    return ProgramInfo(
        id=info.id, name=ffi.string(info.name).decode(errors="replace"),
        type=prog_type_name(info.type), tag=bytes(ffi.buffer(info.tag)).hex(),
        jited_size=info.jited_prog_len, xlated_size=info.xlated_prog_len,
        run_count=info.run_cnt, run_time_ns=info.run_time_ns,
        verified_insns=info.verified_insns, map_ids=map_ids, btf_id=info.btf_id,
        attach_btf_id=info.attach_btf_id, attach_btf_obj_id=info.attach_btf_obj_id)


@dataclass(frozen=True)
class TestRun:
    """Result of ``BPF_PROG_TEST_RUN``: return value, output data, mean duration."""

    retval: int
    data: bytes
    duration_ns: int


class Program(Handle):
    """One program of an object. ``autoload`` is settable before load."""

    def __init__(self, obj: _Object, ptr: Any) -> None:
        self._obj = obj
        self._ptr = ptr
        self.name: str = ffi.string(lib.bpf_program__name(ptr)).decode()
        self.section: str = ffi.string(lib.bpf_program__section_name(ptr)).decode()
        """The ELF section, e.g. ``tracepoint/syscalls/sys_enter_execve``."""
        self._log_size = 1 << 20
        self._log_buf: Any = None  # the verifier log buffer libbpf writes into
        self._target_set = False

    def __repr__(self) -> str:
        try:
            kind = f"type={self.type}"
        except ClosedError:
            kind = "(closed)"
        return f"<Program {self.name!r} {kind} section={self.section!r}>"

    @property
    def object(self) -> _Object:
        """The :class:`~pybpf.Object` this program belongs to."""
        return self._obj

    def _raw(self) -> Any:
        """libbpf's pointer: only for a call made while the object's owner is borrowed
        (the public methods below do: see _holding_object)."""
        if self._obj.closed and not _held_here(self._obj.owner):
            raise ClosedError(f"the object of program {self.name!r}")
        return self._ptr

    @property
    def type(self) -> str:
        """libbpf's program type name, e.g. ``"tracepoint"``, ``"xdp"``, ``"tracing"``."""
        return prog_type_name(lib.bpf_program__type(self._raw()))

    @property
    def expected_attach_type(self) -> str:
        return attach_type_name(lib.bpf_program__expected_attach_type(self._raw()))

    @property
    def autoload(self) -> bool:
        """Whether ``load()`` loads this program (settable before load)."""
        return bool(lib.bpf_program__autoload(self._raw()))

    @autoload.setter
    def autoload(self, value: bool) -> None:
        ptr = self._before_load("autoload")
        lib.bpf_program__set_autoload(ptr, bool(value))

    def set_autoload(self, value: bool) -> None:
        """``bpf_program__set_autoload``: whether ``load()`` loads this program (before
        load; no syscall). Same as ``prog.autoload = value``."""
        self.autoload = value

    @property
    def autoattach(self) -> bool:
        """Whether :meth:`Object.attach` auto-attaches this program (settable any time
        before ``attach()``; libbpf's ``bpf_program__set_autoattach``)."""
        return bool(lib.bpf_program__autoattach(self._raw()))

    @autoattach.setter
    def autoattach(self, value: bool) -> None:
        lib.bpf_program__set_autoattach(self._raw(), bool(value))

    def set_type(self, prog_type: str | int) -> None:
        """Change the program type before load (``bpf_program__set_type``), by libbpf's
        name (``"raw_tracepoint"``) or number; no syscall."""
        ptr = self._before_load("the program type")
        value = _prog_type_value(prog_type, f"program {self.name!r}: ")
        err = lib.bpf_program__set_type(ptr, value)
        if err:
            raise error_for(-err, f"program {self.name!r}: cannot set type {prog_type!r}",
                            kind=BPFError)

    def set_expected_attach_type(self, attach_type: str | int) -> None:
        """Change the expected attach type before load
        (``bpf_program__set_expected_attach_type``), by libbpf's name or number."""
        ptr = self._before_load("the expected attach type")
        value = _attach_type_value(attach_type, f"program {self.name!r}: expected ")
        err = lib.bpf_program__set_expected_attach_type(ptr, value)
        if err:
            raise error_for(-err, f"program {self.name!r}: cannot set expected attach type "
                            f"{attach_type!r}", kind=BPFError)

    @property
    def instruction_count(self) -> int:
        """BPF instructions (before load: as in the file; after: as libbpf submitted)."""
        return int(lib.bpf_program__insn_cnt(self._raw()))

    def _required(self, value: Any, what: str) -> Any:
        if value is None:
            raise BPFTypeError(_errno.EINVAL, f"{self._arg(what)}: missing required argument")
        return value

    def _arg(self, what: str) -> str:
        """How an error names argument ``what`` of a call on this program."""
        return f"program {self.name!r}: {what}"

    def _before_load(self, what: str) -> Any:
        """libbpf's pointer for a setter of the spec: the one place every program setter
        checks the state (StateError once the object is loaded)."""
        ptr = self._raw()
        if self._obj.loaded:
            raise StateError(f"program {self.name!r}: {what} can only be set before load "
                             "(the object is loaded; open it again to change it)")
        return ptr

    @property
    def log_level(self) -> int:
        """Verifier log level for the load (settable before load): 0 = a log only if the
        load fails (the default); 1 = the verifier's summary (``processed N insns ...``);
        2 = every instruction's state; 4 = statistics (time, stack depth). Levels
        combine (``1 | 4``). With a level set, the log of a successful load is
        :attr:`verifier_log`."""
        return int(lib.bpf_program__log_level(self._raw()))

    @log_level.setter
    def log_level(self, value: int) -> None:
        ptr = self._before_load("log_level")
        value = c_int(value, f"program {self.name!r}: log_level", hi=0xF,
                      want="0 or a combination of 1, 2, 4 and 8")
        lib.bpf_program__set_log_level(ptr, value)
        self._set_log_buf(ptr, self.log_size if value else 0)

    @property
    def log_size(self) -> int:
        """Bytes of verifier log kept for :attr:`verifier_log` (settable before load;
        default 1 MiB). The kernel fails a load whose log does not fit (ENOSPC)."""
        return self._log_size

    @log_size.setter
    def log_size(self, value: int) -> None:
        ptr = self._before_load("log_size")
        value = c_int(value, f"program {self.name!r}: log_size", lo=128, hi=0x3FFFFFFF,
                      want=f"an int from 128 to {0x3FFFFFFF} (the kernel's limits)")
        self._log_size = value
        if lib.bpf_program__log_level(ptr):
            self._set_log_buf(ptr, value)

    def _set_log_buf(self, ptr: Any, size: int) -> None:
        buf = ffi.new("char[]", size) if size else None
        # libbpf keeps the pointer: the buffer lives as long as this Program
        lib.bpf_program__set_log_buf(ptr, buf if buf is not None else ffi.NULL, size)
        self._log_buf = buf

    @property
    def verifier_log(self) -> str | None:
        """The verifier's log of this program's successful load (text as the kernel
        wrote it), when :attr:`log_level` was set before load; else None. A failed
        load's log is in the :class:`~pybpf.VerifierError` instead."""
        if lib.bpf_program__fd(self._raw()) < 0:
            return None
        return self.log_buffer_text

    @property
    def log_buffer_text(self) -> str | None:
        """What the kernel wrote into this program's own log buffer (set by
        :attr:`log_level`), loaded or not: after a failed load, the partial log; None
        when no buffer was set. Costs one copy of the text."""
        buf = self._log_buf
        if buf is None:
            return None
        return str(ffi.string(buf).decode(errors="replace"))

    def set_attach_target(self, function: str, target_prog: Program | int | None = None
                          ) -> None:
        """Set the BTF attach target before load (``bpf_program__set_attach_target``),
        replacing the one in the section name (``SEC("fentry")`` may name none): the
        kernel function of fentry/fexit/fmod_ret/lsm, the tracepoint of tp_btf (e.g.
        ``"sched_process_exec"``), or, with ``target_prog`` (a loaded Program or a
        program fd), the function of that BPF program to trace or replace (freplace).
        Resolved in BTF now: a name that does not exist raises AttachError here."""
        ptr = self._before_load("the attach target")
        if self.type not in ("tracing", "lsm", "ext"):
            raise AttachError(_errno.EINVAL, f"program {self.name!r} ({self.type}) has no BTF "
                              "attach target (only tracing, lsm and freplace programs do)",
                              program=self.name, target=function)
        if not isinstance(function, str) or not function or "\0" in function:
            raise BPFTypeError(_errno.EINVAL, f"program {self.name!r}: the attach target must "
                               f"be a function or tracepoint name, got {function!r:.60}")
        tfd = 0
        where = "kernel BTF"
        if target_prog is not None:
            tfd = target_prog.fd if isinstance(target_prog, Program) else c_int(
                target_prog, f"program {self.name!r}: the target program's fd", "fd")
            where = (f"program {target_prog.name!r}" if isinstance(target_prog, Program)
                     else f"program fd {tfd}")
        with capture() as log:
            err = lib.bpf_program__set_attach_target(ptr, tfd, function.encode())
        if err:
            what = {_errno.ESRCH: f"no {function!r} in {where}",
                    _errno.ENOENT: f"no {function!r} in {where}"}.get(-err, where)
            raise error_for(-err, f"cannot set attach target of program {self.name!r} to "
                            f"{function!r} ({what})", kind=AttachError, program=self.name,
                            target=function, log=log)
        self._target_set = True

    def load_hint(self, err: int) -> str | None:
        """Why a load of this program failed with errno ``err``, when pybpf knows better
        than the errno (used by Object.load's error); else None. No syscall."""
        if err == _errno.ENOSPC and self._log_buf is not None:
            return (f"its verifier log (log_level={self.log_level}) did not fit in "
                    f"log_size={self.log_size} bytes and the kernel fails such a load; "
                    "set a larger log_size")
        if (err == _errno.EINVAL and self.type in ("tracing", "lsm", "ext")
                and "/" not in self.section and not self._target_set):
            return (f"section {self.section!r} names no attach target; call "
                    "set_attach_target() before load")
        return None

    @property
    def fd(self) -> int:
        """The loaded program's fd."""
        fd = int(lib.bpf_program__fd(self._raw()))
        if fd < 0:
            if not self._obj.loaded:
                raise StateError(f"program {self.name!r} is not loaded: load the object "
                                 "first (obj.load())", err=_errno.EBADF)
            raise StateError(f"program {self.name!r} is not loaded (autoload is off)",
                             err=_errno.EBADF)
        return fd

    def info(self) -> ProgramInfo:
        """Kernel view: id, tag, jited/xlated sizes, run count/time (one syscall)."""
        return _prog_info_by_fd(self.fd)

    def pin(self, path: str | os.PathLike[str]) -> None:
        """Pin the loaded program in bpffs."""
        p = _fs.check_pin_path(path, f"program {self.name!r}")
        if lib.bpf_obj_pin(self.fd, p.encode()) < 0:
            raise error_for(ffi.errno, f"cannot pin program {self.name!r} at {p}")

    def unpin(self, path: str | os.PathLike[str]) -> None:
        """Remove the pin at ``path`` (a few syscalls). Refused (BPFError) unless what is
        pinned there is this very program: another object's pin, or a file outside bpffs,
        is never removed."""
        p = _fs.check_pinned(path, "program", f"program {self.name!r}: unpin")
        mine = _prog_info_by_fd(self.fd).id

        def check(q: str) -> None:
            """``q``: where the pin is while it is checked (see _fs.remove_pin)."""
            fd = int(lib.bpf_obj_get(q.encode()))
            if fd < 0:
                raise error_for(ffi.errno, f"program {self.name!r}: cannot unpin {p}")
            try:
                kind = bpf_fd_kind(fd)
                theirs = _prog_info_by_fd(fd).id if kind == "program" else None
            finally:
                os.close(fd)
            if theirs != mine:
                what = f"another program (id {theirs})" if kind == "program" else f"a {kind}"
                raise BPFError(_errno.EPERM, f"program {self.name!r} (id {mine}): refusing to "
                               f"unpin {p}: what is pinned there is {what}")

        _fs.remove_pin(p, check)

    def test_run(self, data: bytes = b"", *, ctx: bytes | None = None, repeat: int = 1,
                 data_out_size: int | None = None) -> TestRun:
        """Run the program once in the kernel on ``data`` (``BPF_PROG_TEST_RUN``)."""
        opts = ffi.new("struct bpf_test_run_opts *")
        opts.sz = ffi.sizeof("struct bpf_test_run_opts")
        din = ffi.from_buffer(data) if data else ffi.NULL
        out_size = data_out_size if data_out_size is not None else max(len(data), 0) + 256
        dout = ffi.new("char[]", out_size) if data else ffi.NULL
        opts.data_in = din
        opts.data_size_in = len(data)
        opts.data_out = dout
        opts.data_size_out = out_size if data else 0
        cbuf = ffi.from_buffer(ctx) if ctx else ffi.NULL
        opts.ctx_in = cbuf
        opts.ctx_size_in = len(ctx) if ctx else 0
        opts.repeat = repeat
        if lib.bpf_prog_test_run_opts(self.fd, opts) < 0:
            raise error_for(ffi.errno, f"test run of program {self.name!r} failed")
        out = bytes(ffi.buffer(dout, opts.data_size_out)) if data else b""
        return TestRun(retval=opts.retval, data=out, duration_ns=opts.duration)

    # --- attaching --------------------------------------------------------------
    def _link(self, ptr: Any, target: str, log: list[str], *, cls: builtins.type[Link] = Link,
              needed: tuple[int, ...] = (CAP_PERFMON,), no_fd: str | None = None) -> Link:
        link = libbpf_link(ptr, self.name, target, log, cls=cls, needed=needed, no_fd=no_fd,
                           feature=self._feature() if ptr == ffi.NULL else None)
        return self._obj._adopt_link(link)

    def _adopt(self, link: Link) -> Link:
        return self._obj._adopt_link(link)

    def _feature(self) -> Any:
        return features.for_program(self)

    def _attach_error(self, err: int, target: str, log: list[str],
                      needed: tuple[int, ...] = (CAP_PERFMON,)) -> BPFError:
        # kprobe/ksyscall, trampolines, lsm...: when the probe says the kernel lacks
        # the hook, that is the reason, whatever errno libbpf saw.
        return attach_error(self.name, err, target, log, needed,
                            self._feature() if err not in (_errno.EPERM, _errno.EACCES)
                            else None)

    def _need(self, probe: str) -> Any:
        """The probe's Feature; NotSupportedError with its reason when the kernel lacks it."""
        feat = getattr(features, probe)()
        if not feat:
            raise NotSupportedError(f"cannot attach program {self.name!r}: {feat.reason}",
                                    reason=feat.reason, program=self.name)
        return feat

    def _retprobe(self, retprobe: bool | None) -> bool:
        if retprobe is not None:
            return retprobe
        row = _sections.lookup(self.section)
        return bool(row is not None and row.retprobe)

    def _section_target(self) -> str:
        """What the section names after its prefix (``uprobe.multi/PATH:PATTERN`` ->
        ``PATH:PATTERN``), "" when nothing."""
        return self.section.split("/", 1)[1] if "/" in self.section else ""

    def attach(self, **kw: Any) -> Link:
        """Attach to the hook the program's section and type call for (a lookup in the
        section table, :mod:`pybpf._sections`).

        With no arguments: auto-attach (sections that name their target:
        ``tracepoint/cat/name``, ``uprobe.multi/path:pattern``, ``kprobe.multi/pat``...;
        ``perf_event``: cpu-clock sampling). Otherwise the keywords go to the hook's
        method, e.g. ``attach(ifname="eth0")`` for XDP or tcx.
        """
        method = _sections.method_for(self.section, self.type)
        if not kw:
            if method in ("attach_perf_event", "attach_struct_ops"):
                result_: Link = getattr(self, method)()
                return result_
            return self.attach_auto()
        if method is None:
            raise AttachError(_errno.EINVAL, f"program {self.name!r} ({self.type}, section "
                              f"{self.section!r}): no attach method takes {sorted(kw)}",
                              program=self.name)
        result: Link = getattr(self, method)(**kw)
        return result

    def attach_auto(self) -> Link:
        """Auto-attach from the section name: libbpf's ``bpf_program__attach`` for names
        it knows, pybpf's own attach for the names it registered and for uprobe_multi and
        kprobe_multi (the same link, route and pattern matching whatever libbpf runs)
        (one syscall or a few)."""
        sec = self.section
        row = _sections.lookup(sec)
        if row is not None and not self.auto_attachable:
            raise AttachError(_errno.EOPNOTSUPP, f"program {self.name!r}: section {sec!r} "
                              f"names no target to auto-attach to; use {row.method}(...)",
                              program=self.name, target=sec)
        if row is not None and (row.prefix in _sections.registered()
                                or row.method in ("attach_uprobe_multi", "attach_kprobe_multi")):
            target = self._section_target()
            if not _sections.auto_attachable(sec):
                raise AttachError(_errno.EOPNOTSUPP, f"program {self.name!r}: section {sec!r} "
                                  "names no target to auto-attach to; use "
                                  f"{row.method}(...)", program=self.name, target=sec)
            if row.method == "attach_uprobe_multi":
                binary, _, pattern = target.rpartition(":")
                return self.attach_uprobe_multi(binary, pattern)
            if row.method == "attach_kprobe_multi":
                return self.attach_kprobe_multi(target)
        if row is not None and row.method == "attach_uprobe" and _sections.auto_attachable(sec):
            # uprobe/BINARY:FUNC[+OFF]: through pybpf's resolver, as attach_uprobe()
            binary, _, spec = self._section_target().rpartition(":")
            func, _, off = spec.partition("+")
            return self.attach_uprobe(binary, func or None, offset=int(off, 0) if off else 0)
        if row is not None and row.tracefs:
            _fs.ensure_tracefs()
        with capture() as log:
            ptr = lib.bpf_program__attach(self._raw())
        if ptr == ffi.NULL and ffi.errno == _errno.EOPNOTSUPP and not log:
            raise AttachError(_errno.EOPNOTSUPP, f"program {self.name!r}: section {sec!r} "
                              "names no target to auto-attach to; use the attach_* method "
                              "for its hook", program=self.name, target=sec)
        cls = IterLink if sec.startswith(("iter/", "iter.s/")) else Link
        return self._link(ptr, f"{self.type} {sec}", log, cls=cls)

    @property
    def auto_attachable(self) -> bool:
        """Whether :meth:`attach_auto` can attach this program with no argument: its
        section names its target (``tracepoint/cat/name``, ``uprobe//bin:f``...), or
        it is a tp_btf/fentry/fexit/lsm or freplace (``ext``) program, whose target is
        fixed at load (``set_attach_target``). No syscall."""
        sec = self.section
        return _sections.auto_attachable(sec) or self.type == "ext" or \
            _sections.method_for(sec, self.type) == "attach_trace"

    def attach_tracepoint(self, category: str, name: str, *, cookie: int = 0) -> Link:
        """``tracepoint``: e.g. ``("syscalls", "sys_enter_execve")``."""
        name_arg(category, self._arg("tracepoint category"))
        name_arg(name, self._arg("tracepoint name"))
        cookie = c_int(cookie, self._arg("cookie"), "u64")
        _fs.ensure_tracefs()
        opts = ffi.new("struct bpf_tracepoint_opts *")
        opts.sz = ffi.sizeof("struct bpf_tracepoint_opts")
        opts.bpf_cookie = cookie
        target = f"tracepoint {category}:{name}"
        with capture() as log:
            ptr = lib.bpf_program__attach_tracepoint_opts(self._raw(), category.encode(),
                                                          name.encode(), opts)
        if ptr == ffi.NULL and ffi.errno == _errno.ENOENT:
            raise AttachError(_errno.ENOENT, f"cannot attach program {self.name!r}: {target} "
                              "does not exist", program=self.name, target=target,
                              libbpf_log=log)
        return self._link(ptr, target, log)

    def attach_raw_tracepoint(self, name: str) -> Link:
        """``raw_tp``: e.g. ``"sched_process_exec"``."""
        name_arg(name, self._arg("raw tracepoint name"))
        target = f"raw_tracepoint {name}"
        with capture() as log:
            ptr = lib.bpf_program__attach_raw_tracepoint(self._raw(), name.encode())
        if ptr == ffi.NULL and ffi.errno == _errno.ENOENT:
            raise AttachError(_errno.ENOENT, f"cannot attach program {self.name!r}: {target} "
                              "does not exist", program=self.name, target=target,
                              libbpf_log=log)
        return self._link(ptr, target, log)

    def attach_trace(self, *, cookie: int = 0) -> Link:
        """``tp_btf``/``fentry``/``fexit``/``fmod_ret``/``lsm``: the target is fixed at load."""
        cookie = c_int(cookie, self._arg("cookie"), "u64")
        target = f"{self.expected_attach_type} {self.section.split('/', 1)[-1]}"
        with capture() as log:
            if self.type == "lsm":
                ptr = lib.bpf_program__attach_lsm(self._raw())
            else:
                opts = ffi.new("struct bpf_trace_opts *")
                opts.sz = ffi.sizeof("struct bpf_trace_opts")
                opts.cookie = cookie
                ptr = lib.bpf_program__attach_trace_opts(self._raw(), opts)
        return self._link(ptr, target, log)

    attach_lsm = attach_trace

    def attach_kprobe(self, function: str, *, offset: int = 0, retprobe: bool | None = None,
                      cookie: int = 0) -> Link:
        """``kprobe``/``kretprobe`` on a kernel function (needs CONFIG_KPROBES)."""
        name_arg(function, self._arg("kernel function"))
        offset = c_int(offset, self._arg("offset"), "u64")
        cookie = c_int(cookie, self._arg("cookie"), "u64")
        _fs.ensure_tracefs()
        ret = self._retprobe(retprobe)
        opts = ffi.new("struct bpf_kprobe_opts *")
        opts.sz = ffi.sizeof("struct bpf_kprobe_opts")
        opts.bpf_cookie = cookie
        opts.offset = offset
        opts.retprobe = ret
        target = f"{'kretprobe' if ret else 'kprobe'} {function}" + (f"+{offset}" if offset else "")
        with capture() as log:
            ptr = lib.bpf_program__attach_kprobe_opts(self._raw(), function.encode(), opts)
        return self._link(ptr, target, log)

    def attach_ksyscall(self, syscall: str, *, retprobe: bool | None = None,
                        cookie: int = 0) -> Link:
        """``ksyscall``: a kprobe on the arch-specific entry of ``syscall`` (e.g. "openat")."""
        name_arg(syscall, self._arg("system call"))
        cookie = c_int(cookie, self._arg("cookie"), "u64")
        _fs.ensure_tracefs()
        ret = self._retprobe(retprobe)
        opts = ffi.new("struct bpf_ksyscall_opts *")
        opts.sz = ffi.sizeof("struct bpf_ksyscall_opts")
        opts.bpf_cookie = cookie
        opts.retprobe = ret
        target = f"{'kretsyscall' if ret else 'ksyscall'} {syscall}"
        with capture() as log:
            ptr = lib.bpf_program__attach_ksyscall(self._raw(), syscall.encode(), opts)
        return self._link(ptr, target, log)

    def attach_uprobe(self, binary: str | os.PathLike[str], function: str | None = None, *,
                      offset: int = 0, pid: int = -1, retprobe: bool | None = None,
                      cookie: int = 0, ref_ctr_offset: int = 0) -> Link:
        """``uprobe``/``uretprobe`` on ``function`` (a symbol) or ``offset`` in ``binary``.

        ``binary`` is a path, or a library name such as ``"libc.so.6"``; ``function``
        is resolved by :func:`pybpf.symbolize.resolve_uprobe` (versioned aliases and
        duplicates at one address are one function, as perf and BCC treat them); the
        link's ``uprobe`` is that resolved path and offset. ``pid=-1`` probes every
        process.
        """
        path = path_arg(binary, self._arg("binary"))
        if function is not None:
            name_arg(function, self._arg("function"))
        offset = c_int(offset, self._arg("offset"), "u64")
        pid = c_int(pid, self._arg("pid (-1: every process)"), "s32", lo=-1)
        cookie = c_int(cookie, self._arg("cookie"), "u64")
        ref_ctr_offset = c_int(ref_ctr_offset, self._arg("ref_ctr_offset"), "u64")
        if "/" in path and not os.path.exists(path):
            raise AttachError(_errno.ENOENT, f"cannot attach program {self.name!r}: binary "
                              f"{path} does not exist", program=self.name, target=path)
        ret = self._retprobe(retprobe)
        opts = ffi.new("struct bpf_uprobe_opts *")
        opts.sz = ffi.sizeof("struct bpf_uprobe_opts")
        opts.bpf_cookie = cookie
        opts.retprobe = ret
        opts.ref_ctr_offset = ref_ctr_offset
        what = function if function else hex(offset)
        if function and offset:
            what += f"+{offset:#x}"
        target = f"{'uretprobe' if ret else 'uprobe'} {path}:{what}" + (
            f" pid {pid}" if pid >= 0 else "")
        if "/" not in path:  # a library or program name: the file it names now
            path = self._library_path(path, pid, target)
        # one open file for the symbols and the attach (opened_binary)
        with opened_binary(path, f"cannot attach program {self.name!r}") as fd_path:
            if function:
                # pybpf resolves the symbol itself (libbpf 1.1 refuses versioned aliases
                # such as libc's clock_nanosleep as "ambiguous"): the file offset
                try:
                    resolved = resolve_uprobe(path, function, read_from=fd_path)
                except AttachError as e:
                    raise AttachError(e.errno or _errno.EINVAL, f"cannot attach program "
                                      f"{self.name!r}: {e.message}", program=self.name,
                                      target=target) from None
                offset += resolved.offset
            with capture() as log:
                ptr = lib.bpf_program__attach_uprobe_opts(self._raw(), pid, fd_path.encode(),
                                                          offset, opts)
            if ptr == ffi.NULL:
                err = ffi.errno
                self._user_binary_error(err, path, target, log)
                if err == _errno.ENOENT and function:
                    raise AttachError(_errno.ENOENT, f"cannot attach program {self.name!r}: "
                                      f"symbol {function!r} not found in {path}",
                                      program=self.name, target=target, libbpf_log=log)
            link = self._link(ptr, target, log)
        if function:
            link.uprobe = resolved
        return link

    def _library_path(self, name: str, pid: int, target: str) -> str:
        """The file a library or program ``name`` is (:func:`resolve_library`, in
        process ``pid``'s view when > 0); AttachError (ENOENT) naming it if none."""
        try:
            return resolve_library(name, pid if pid > 0 else None)
        except FileNotFoundError:
            raise AttachError(_errno.ENOENT, f"cannot attach program {self.name!r}: "
                              f"{'library' if '.so' in name else 'program'} {name!r} not found "
                              "(searched LD_LIBRARY_PATH, the loaded libraries, ld.so.conf and "
                              "the standard directories, or PATH for a program)",
                              program=self.name, target=target) from None

    def _user_binary_error(self, err: int, path: str, target: str, log: list[str]) -> None:
        """Raise a clear AttachError when ``path`` is not a usable binary or library."""
        if any("failed to resolve full path" in line for line in log):
            raise AttachError(err or _errno.ENOENT, f"cannot attach program {self.name!r}: "
                              f"library {path!r} not found (searched LD_LIBRARY_PATH and the "
                              "standard library directories)", program=self.name,
                              target=target, libbpf_log=log)
        if err == 4001 or any("failed to get ehdr" in line or "unrecognized ELF kind" in line
                              for line in log):  # 4001: LIBBPF_ERRNO__FORMAT
            raise AttachError(_errno.ENOEXEC, f"cannot attach program {self.name!r}: {path} "
                              "is not an ELF binary", program=self.name, target=target,
                              libbpf_log=log)

    def attach_usdt(self, binary: str | os.PathLike[str], provider: str, name: str, *,
                    pid: int = -1, cookie: int = 0) -> Link:
        """USDT probe ``provider:name`` in ``binary`` (the program uses usdt.bpf.h)."""
        path = path_arg(binary, self._arg("binary"))
        name_arg(provider, self._arg("USDT provider"))
        name_arg(name, self._arg("USDT probe name"))
        pid = c_int(pid, self._arg("pid (-1: every process)"), "s32", lo=-1)
        cookie = c_int(cookie, self._arg("cookie"), "u64")
        if "/" in path and not os.path.exists(path):
            raise AttachError(_errno.ENOENT, f"cannot attach program {self.name!r}: binary "
                              f"{path} does not exist", program=self.name, target=path)
        opts = ffi.new("struct bpf_usdt_opts *")
        opts.sz = ffi.sizeof("struct bpf_usdt_opts")
        opts.usdt_cookie = cookie
        target = f"usdt {path}:{provider}:{name}"
        if "/" not in path:  # a library or program name: the file it names now
            path = self._library_path(path, pid, target)
        # libbpf reads the notes and attaches through one open file (opened_binary)
        with opened_binary(path, f"cannot attach program {self.name!r}") as fd_path:
            with capture() as log:
                ptr = lib.bpf_program__attach_usdt(self._raw(), pid, fd_path.encode(),
                                                   provider.encode(), name.encode(), opts)
            if ptr == ffi.NULL:
                err = ffi.errno
                self._user_binary_error(err, path, target, log)
                if err == _errno.ENOENT:
                    raise AttachError(_errno.ENOENT, f"cannot attach program {self.name!r}: "
                                      f"USDT probe {provider}:{name} not found in {path}",
                                      program=self.name, target=target, libbpf_log=log)
            link = self._link(ptr, target, log, no_fd="a USDT attachment is one uprobe "
                              "link per probe site and has no single fd")
        return check_usdt(self._obj, link, target, self.name)

    def attach_xdp(self, ifname: str | int | None = None, *, ifindex: int | None = None,
                   mode: str = "auto") -> Link:
        """XDP on an interface; ``mode`` is "auto", "skb" (generic), "native" or "hw"."""
        choice(mode, XDP_FLAGS, self._arg("XDP mode"))
        idx, name = _tc.ifindex(ifindex if ifindex is not None else
                                self._required(ifname, "ifname"), self.name)
        target = f"xdp {name}" + (f" ({mode})" if mode != "auto" else "")
        if mode == "auto":
            with capture() as log:
                ptr = lib.bpf_program__attach_xdp(self._raw(), idx)
            if ptr != ffi.NULL:
                return self._link(ptr, target, log, needed=(CAP_NET_ADMIN,))
            err = ffi.errno or _errno.EINVAL
        else:
            opts = ffi.new("struct bpf_link_create_opts *")
            opts.sz = ffi.sizeof("struct bpf_link_create_opts")
            opts.flags = XDP_FLAGS[mode]
            fd = lib.bpf_link_create(self.fd, idx, BPF_XDP, opts)
            if fd >= 0:
                return self._obj._adopt_link(Link(program=self.name, target=target, fd=fd))
            err, log = -fd, []
        if err in (_errno.EBUSY, _errno.EEXIST):
            raise AttachError(err, f"cannot attach program {self.name!r} to {target}: another "
                              f"XDP program is already attached to {name} "
                              f"({_errno.errorcode[err]})", program=self.name, target=target,
                              libbpf_log=log)
        raise self._attach_error(err, target, log, (CAP_NET_ADMIN,))

    def attach_tc(self, ifname: str | int | None = None, direction: str = "ingress", *,
                  ifindex: int | None = None, priority: int = 0, handle: int = 0,
                  tcx: bool | None = None, before: Any = None, after: Any = None,
                  expected_revision: int = 0) -> Link:
        """tc classifier on ``ifname`` ingress or egress.

        With ``tcx`` unset, a tcx link (kernel 6.6+, dies with the process) is used
        when the kernel has it and no ``priority``/``handle`` is asked for;
        otherwise a netlink filter on a clsact qdisc (created if missing, removed
        on detach if pybpf created it). A netlink filter is not a BPF link: it is
        removed on detach, close, garbage collection and interpreter exit, but a
        process killed by SIGKILL leaves it (and the qdisc) in place.
        ``before``/``after``/``expected_revision``: see :meth:`attach_tcx`.
        """
        choice(direction, ("ingress", "egress"), self._arg("tc direction"))
        priority = c_int(priority, self._arg("tc priority"), "u16")
        handle = c_int(handle, self._arg("tc handle"), "u32")
        iface = ifindex if ifindex is not None else self._required(ifname, "ifname")
        if tcx is None:
            tcx = not priority and not handle and bool(features.tcx())
        if tcx:
            return self.attach_tcx(iface, direction, before=before, after=after,
                                   expected_revision=expected_revision)
        idx, name = _tc.ifindex(iface, self.name)
        return self._adopt(_tc.netlink_attach(self.fd, self.name, idx, name, direction,
                                              priority, handle))

    def attach_tcx(self, ifname: str | int, direction: str | None = None, *,
                   before: Any = None, after: Any = None, expected_revision: int = 0) -> Link:
        """tcx link (kernel 6.6+) on ``ifname`` ``direction`` ("ingress"/"egress"; default:
        the section's, ``tcx/ingress``), placed ``before`` or ``after`` a Program or Link
        already on that hook (default: last). ``expected_revision`` (from
        :meth:`tcx_chain`) makes the attach fail with ESTALE if the chain changed. One
        syscall: libbpf's ``bpf_program__attach_tcx`` where the runtime has it, else raw
        BPF_LINK_CREATE (libbpf 1.1 has no tcx API); ``link.via`` says which."""
        direction = direction or ("egress" if self.section.endswith("egress") else "ingress")
        choice(direction, _tc.TCX, self._arg("tcx direction"))
        return self._adopt(_tc.mprog_attach(
            self.fd, self.name, ifname, _tc.TCX[direction], "tcx", direction, before=before,
            after=after, expected_revision=expected_revision, feature=self._need("tcx"),
            prog_ptr=self._raw()))

    @staticmethod
    def tcx_chain(ifname: str | int, direction: str = "ingress") -> _tc.Chain:
        """The programs on a tcx hook in run order, with the chain's revision (two syscalls)."""
        return _tc.query(ifname, _tc.TCX[direction])

    def attach_netkit(self, ifname: str | int, role: str | None = None, *,
                      before: Any = None, after: Any = None,
                      expected_revision: int = 0) -> Link:
        """netkit link (kernel 6.7+) on a netkit device, ``role`` "primary" or "peer"
        (default: the section's), ordered like :meth:`attach_tcx`. One syscall (libbpf's
        ``bpf_program__attach_netkit`` where the runtime has it; ``link.via``)."""
        role = role or ("peer" if self.section.endswith("peer") else "primary")
        choice(role, _tc.NETKIT, self._arg("netkit role"))
        return self._adopt(_tc.mprog_attach(
            self.fd, self.name, ifname, _tc.NETKIT[role], "netkit", role, before=before,
            after=after, expected_revision=expected_revision, feature=self._need("netkit"),
            prog_ptr=self._raw()))

    def attach_netfilter(self, family: str | int = "ipv4", hook: str | int = "local_in",
                         priority: int = 0, *, defrag: bool = False) -> Link:
        """netfilter hook (kernel 6.4+): ``family`` "ipv4"/"ipv6", ``hook`` "prerouting",
        "local_in", "forward", "local_out" or "postrouting", ``priority`` among the
        hook's functions, ``defrag`` to see reassembled IP packets. One syscall (libbpf's
        ``bpf_program__attach_netfilter`` where the runtime has it; ``link.via``)."""
        return self._adopt(_netfilter.attach_netfilter(
            self.fd, self.name, family, hook, priority, defrag=defrag,
            feature=self._need("netfilter"), prog_ptr=self._raw()))

    def attach_uprobe_multi(self, binary: str | os.PathLike[str],
                            functions: str | Sequence[str] | None = None, *,
                            offsets: Sequence[int] | None = None,
                            cookies: Sequence[int] | Mapping[str, int] | None = None,
                            pid: int = -1, retprobe: bool | None = None) -> Link:
        """uprobe_multi (kernel 6.6+; ``uprobe.session``: 6.13+): one link on every function
        of ``binary`` that a glob pattern (``"lib_*"``) or a list of names gives, or on
        file ``offsets``; ``cookies`` per target (``bpf_get_attach_cookie``); ``pid`` > 0:
        one process only. Reads the binary's symbols once, then one syscall (libbpf's
        ``bpf_program__attach_uprobe_multi`` where the runtime has it, sessions excepted;
        ``link.via``)."""
        row = _sections.lookup(self.section)
        session = row is not None and row.attach_type == _sections.AT["uprobe_session"]
        feat = self._need("uprobe_session" if session else "uprobe_multi")
        at = _sections.AT["uprobe_session"] if session else _sections.AT["uprobe_multi"]
        ret = self._retprobe(retprobe)
        kind = "uprobe_session" if session else ("uretprobe_multi" if ret else "uprobe_multi")
        return self._adopt(_uprobe_multi.attach_uprobe_multi(
            self.fd, self.name, binary, functions, offsets=offsets, cookies=cookies, pid=pid,
            retprobe=ret, attach_type=at, kind=kind, feature=feat, prog_ptr=self._raw(),
            session=session))

    def attach_kprobe_multi(self, functions: str | Sequence[str], *,
                            cookies: Sequence[int] | Mapping[str, int] | None = None,
                            retprobe: bool | None = None) -> Link:
        """kprobe_multi (kernel 5.18+, needs fprobe; ``kprobe.session``: 6.10+): one link on
        the kernel functions a glob pattern or a list of names gives, ``cookies`` per
        function. Reads available_filter_functions for a pattern, then one syscall
        (libbpf's ``bpf_program__attach_kprobe_multi_opts``, sessions excepted; ``link.via``)."""
        row = _sections.lookup(self.section)
        session = row is not None and row.attach_type == _sections.AT["kprobe_session"]
        feat = self._need("kprobe_session" if session else "kprobe_multi")
        at = _sections.AT["kprobe_session"] if session else _sections.AT["kprobe_multi"]
        ret = self._retprobe(retprobe)
        kind = "kprobe_session" if session else ("kretprobe_multi" if ret else "kprobe_multi")
        return self._adopt(_kprobe_multi.attach_kprobe_multi(
            self.fd, self.name, functions, cookies=cookies, retprobe=ret, attach_type=at,
            kind=kind, feature=feat, prog_ptr=self._raw(), session=session))

    def attach_struct_ops(self, **kw: Any) -> Link:
        """struct_ops programs are registered through their map: use
        ``obj.maps[NAME].attach_struct_ops()``."""
        raise AttachError(_errno.EINVAL, f"program {self.name!r} is a struct_ops program: "
                          "register its map with obj.maps[NAME].attach_struct_ops()",
                          program=self.name)

    def attach_cgroup(self, cgroup: str | os.PathLike[str] | int | None = None) -> Link:
        """cgroup hooks (cgroup_skb, cgroup/sock, sockops...) on a cgroup v2 directory or fd.

        Without ``cgroup``: the root of the cgroup v2 hierarchy (from /proc/mounts).
        """
        return self._adopt(_cgroup.attach_cgroup(self._raw(), self.name, cgroup))

    def attach_netns(self, netns: str | os.PathLike[str] | int = "/proc/self/ns/net") -> Link:
        """flow_dissector / sk_lookup on a network namespace (path or fd)."""
        return self._adopt(_sockets.attach_netns(self._raw(), self.name, netns))

    def attach_socket(self, sock: socket.socket | int) -> Link:
        """Socket filter on ``sock`` (SO_ATTACH_BPF); detached on link close."""
        return self._adopt(socket_filter_link(sock, self.fd, self.name))

    def attach_sockmap(self, map: Map, *, attach_type: str | None = None) -> Link:
        """sk_msg / sk_skb verdict (or parser) program on a sockmap/sockhash."""
        if not hasattr(map, "fd") or not hasattr(map, "type"):
            raise BPFTypeError(_errno.EINVAL, f"{self._arg('sockmap')}: expected a Map, got "
                                              f"{type(map).__name__}")
        name = attach_type or self.expected_attach_type
        choice(name, _sockets.SOCKMAP_TYPES, self._arg("sockmap attach type"))
        return self._adopt(_sockets.attach_sockmap(self.fd, self.name, map.fd, map.name,
                                                   map.type, name))

    def attach_perf_event(self, perf_fd: int | None = None, *, frequency: int | None = None,
                          period: int | None = None, cpus: list[int] | None = None,
                          pid: int = -1, cookie: int = 0) -> Link:
        """perf_event program on ``perf_fd``, or by default cpu-clock sampling on every CPU.

        ``frequency`` (Hz, default 99) or ``period`` (ns of cpu-clock) set the
        sampling; ``pid`` restricts sampling to one process; ``cookie`` is what
        ``bpf_get_attach_cookie()`` returns in the program.
        """
        return self._adopt(_perf.attach_perf_event(
            self._raw(), self.name, perf_fd, frequency=frequency, period=period, cpus=cpus,
            pid=pid, cookie=cookie))

    def attach_iter(self, *, map: Map | None = None, cgroup: str | int | None = None,
                    order: str = "self", tid: int = 0, pid: int = 0,
                    pid_fd: int = 0) -> IterLink:
        """BPF iterator (``iter/task``, ``iter/bpf_map_elem`` with ``map``...), with its
        parameters: ``map``; ``cgroup`` (path or fd) and ``order`` ("self",
        "descendants_pre", "descendants_post", "ancestors_up") for ``iter/cgroup``;
        ``tid``/``pid``/``pid_fd`` to walk one task or process for the task iterators."""
        opts = ffi.new("struct bpf_iter_attach_opts *")
        opts.sz = ffi.sizeof("struct bpf_iter_attach_opts")
        info = ffi.new("char[16]")  # union bpf_iter_link_info (kernel uapi layout)
        own_fd = -1
        used = True
        tid = c_int(tid, self._arg("tid"), "u32")
        pid = c_int(pid, self._arg("pid"), "u32")
        pid_fd = c_int(pid_fd, self._arg("pid_fd"), "u32")
        if map is not None:
            if not hasattr(map, "fd") or not hasattr(map, "type"):
                raise BPFTypeError(_errno.EINVAL, f"{self._arg('map')}: expected a Map, got "
                                                  f"{type(map).__name__}")
            struct.pack_into("=I", ffi.buffer(info), 0, map.fd)
        elif cgroup is not None:
            orders = {"self": 1, "descendants_pre": 2, "descendants_post": 3,
                      "ancestors_up": 4}
            choice(order, orders, self._arg("cgroup iterator order"))
            given, path = fd_or_path(cgroup, self._arg("cgroup"))
            if given is not None:
                cfd = given
            else:
                try:
                    own_fd = cfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
                except OSError as e:
                    raise error_for(e.errno or _errno.EINVAL, f"cannot attach program "
                                    f"{self.name!r}: cgroup {path}", kind=AttachError,
                                    program=self.name, target=path) from None
            struct.pack_into("=II", ffi.buffer(info), 0, orders[order], cfd)
        elif tid or pid or pid_fd:
            struct.pack_into("=III", ffi.buffer(info), 0, tid, pid, pid_fd)
        else:
            used = False
        if used:
            opts.link_info = ffi.cast("union bpf_iter_link_info *", info)
            opts.link_info_len = 16
        try:
            with capture() as log:
                ptr = lib.bpf_program__attach_iter(self._raw(), opts)
        finally:
            if own_fd >= 0:
                os.close(own_fd)
        link = self._link(ptr, f"iter {self.section.split('/', 1)[-1]}", log, cls=IterLink)
        assert isinstance(link, IterLink)
        return link

    def attach_freplace(self, target: Program | int, function: str) -> Link:
        """freplace ``function`` of a loaded program (a Program or a program fd)."""
        tfd = target.fd if isinstance(target, Program) else c_int(
            target, self._arg("target (a Program or a program fd)"), "fd")
        name_arg(function, self._arg("function"))
        with capture() as log:
            ptr = lib.bpf_program__attach_freplace(self._raw(), tfd, function.encode())
        return self._link(ptr, f"freplace {function}", log)




def list_programs() -> list[ProgramInfo]:
    """Every program loaded in the kernel (like ``bpftool prog list``)."""
    return walk_ids(lib.bpf_prog_get_next_id, lib.bpf_prog_get_fd_by_id, _prog_info_by_fd,
                    what="programs")


# The object owners this thread borrows for a call in flight (innermost last).
_tls = threading.local()


def _held_here(owner: FD) -> bool:
    return any(o is owner for o in getattr(_tls, "held", ()))


def _holding_object(fn: Any) -> Any:
    """Run ``fn`` with the program's object borrowed (``with obj.owner:``): libbpf's
    program pointer and the program fd stay valid for the whole call even if another
    thread closes the object meanwhile (it is freed when the call ends); ClosedError
    if it was closed before. Calls nested in it (``attach`` -> ``attach_auto`` ->
    ``self.type``) run under the same borrow: a close landing in the middle never
    strands what the outer call already made (a kernel link without its Link)."""

    name = fn.__name__

    @functools.wraps(fn)
    def held(self: Program, *args: Any, **kw: Any) -> Any:
        owner = self._obj.owner
        try:
            if _held_here(owner):
                return fn(self, *args, **kw)
            if owner.closed:
                raise ClosedError(f"the object of program {self.name!r}")
            stack: list[FD] = _tls.__dict__.setdefault("held", [])
            with owner:
                try:
                    stack.append(owner)
                    return fn(self, *args, **kw)
                finally:
                    if stack and stack[-1] is owner:
                        stack.pop()
        except BARE as e:  # an argument no check caught: still a pybpf error naming us
            err = named(e, f"program {self.name!r}: {name}")
            if err is e:
                raise
            raise err from e

    return held


# Every public method that uses libbpf's program pointer or the program fd.
for _name, _fn in list(vars(Program).items()):
    if callable(_fn) and (_name.startswith("attach") or _name in (
            "set_attach_target", "set_type", "set_expected_attach_type", "info", "pin", "unpin",
            "test_run")):
        setattr(Program, _name, _holding_object(_fn))
for _name in ("type", "expected_attach_type", "autoload", "autoattach", "auto_attachable",
              "instruction_count", "log_level", "log_size", "verifier_log", "fd"):
    _p = vars(Program)[_name]
    setattr(Program, _name, property(_holding_object(_p.fget),
                                     _holding_object(_p.fset) if _p.fset else None,
                                     doc=_p.__doc__))
del _name, _fn, _p
