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
import os
import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _fs
from ._ffi import CAP_NET_ADMIN, CAP_PERFMON, capture, cstr, error_for, ffi, lib, walk_ids
from ._netns import NetnsRef
from ._usdt import check_attached as check_usdt
from .errors import AttachError, BPFError, ClosedError, LoadError, NotSupportedError
from .link import IterLink, Link, LinkGroup, socket_filter_link

if TYPE_CHECKING:
    from .maps import Map
    from .object import Object

__all__ = ["Program", "ProgramInfo", "TestRun", "prog_type_name", "attach_type_name",
           "list_programs"]

# Attach types newer than the uapi header libbpf-dev ships (linux 6.1).
BPF_TCX_INGRESS = 46
BPF_TCX_EGRESS = 47
BPF_SK_MSG_VERDICT = 7
BPF_SK_SKB_STREAM_PARSER = 4
BPF_SK_SKB_STREAM_VERDICT = 5
BPF_SK_SKB_VERDICT = 38
BPF_XDP = 37
XDP_FLAGS = {"auto": 0, "skb": 1 << 1, "generic": 1 << 1, "native": 1 << 2, "drv": 1 << 2,
             "hw": 1 << 3}


def prog_type_name(t: int) -> str:
    s = lib.libbpf_bpf_prog_type_str(t)
    return ffi.string(s).decode() if s != ffi.NULL else f"prog_type_{t}"


def attach_type_name(t: int) -> str:
    s = lib.libbpf_bpf_attach_type_str(t)
    return ffi.string(s).decode() if s != ffi.NULL else f"attach_type_{t}"


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


def _ifindex(iface: str | int) -> tuple[int, str]:
    if isinstance(iface, int):
        try:
            return iface, socket.if_indextoname(iface)
        except OSError:
            raise AttachError(_errno.ENODEV, f"network interface index {iface} does not exist",
                              target=str(iface)) from None
    try:
        return socket.if_nametoindex(iface), iface
    except OSError:
        raise AttachError(_errno.ENODEV, f"network interface {iface!r} does not exist",
                          target=iface) from None


def _cgroup2_mount() -> str | None:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified on
    hybrid systems), from /proc/mounts."""
    try:
        with open("/proc/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[2] == "cgroup2":
                    return fields[1]
    except OSError:
        pass
    return None


def _online_cpus() -> list[int]:
    with open("/sys/devices/system/cpu/online") as f:
        text = f.read().strip()
    cpus: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            cpus.extend(range(int(a), int(b) + 1))
        elif part:
            cpus.append(int(part))
    return cpus


class Program:
    """One program of an object. ``autoload`` is settable before load."""

    def __init__(self, obj: Object, ptr: Any) -> None:
        self._obj = obj
        self._ptr = ptr
        self.name: str = ffi.string(lib.bpf_program__name(ptr)).decode()
        self.section: str = ffi.string(lib.bpf_program__section_name(ptr)).decode()
        """The ELF section, e.g. ``tracepoint/syscalls/sys_enter_execve``."""

    def __repr__(self) -> str:
        return f"<Program {self.name!r} type={self.type} section={self.section!r}>"

    def _raw(self) -> Any:
        if self._obj._ptr is None:
            raise ClosedError(f"program {self.name!r} (its object was closed)")
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
        ptr = self._raw()
        if self._obj.loaded:
            raise LoadError(_errno.EBUSY, f"program {self.name!r}: autoload can only be set "
                                          "before load", program=self.name)
        lib.bpf_program__set_autoload(ptr, bool(value))

    @property
    def instruction_count(self) -> int:
        """BPF instructions (before load: as in the file; after: as libbpf submitted)."""
        return int(lib.bpf_program__insn_cnt(self._raw()))

    def _before_load(self, what: str) -> Any:
        ptr = self._raw()
        if self._obj.loaded:
            raise LoadError(_errno.EBUSY, f"program {self.name!r}: {what} can only be set "
                                          "before load", program=self.name)
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
        if not isinstance(value, int) or value < 0 or value & ~0xF:
            raise ValueError(f"program {self.name!r}: log_level must be 0 or a combination "
                             f"of 1, 2, 4 and 8, got {value!r}")
        lib.bpf_program__set_log_level(ptr, value)
        self._set_log_buf(ptr, self.log_size if value else 0)

    @property
    def log_size(self) -> int:
        """Bytes of verifier log kept for :attr:`verifier_log` (settable before load;
        default 1 MiB). The kernel fails a load whose log does not fit (ENOSPC)."""
        return self.__dict__.get("_log_size", 1 << 20)  # type: ignore[no-any-return]

    @log_size.setter
    def log_size(self, value: int) -> None:
        ptr = self._before_load("log_size")
        if not isinstance(value, int) or not 128 <= value <= 0x3FFFFFFF:
            raise ValueError(f"program {self.name!r}: log_size must be an int from 128 to "
                             f"{0x3FFFFFFF} (the kernel's limits), got {value!r}")
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
        return self._log_text()

    def _log_text(self) -> str | None:
        """What the kernel wrote into this program's own log buffer (None: none set)."""
        buf = self.__dict__.get("_log_buf")
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
        if not isinstance(function, str) or not function:
            raise TypeError(f"program {self.name!r}: the attach target must be a function or "
                            f"tracepoint name, got {function!r}")
        tfd = 0
        where = "kernel BTF"
        if target_prog is not None:
            tfd = target_prog.fd if isinstance(target_prog, Program) else int(target_prog)
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

    def _load_hint(self, err: int) -> str | None:
        """Why a load of this program failed with ``err``, when pybpf knows better than
        the errno (used by Object.load)."""
        if err == _errno.ENOSPC and self.__dict__.get("_log_buf") is not None:
            return (f"its verifier log (log_level={self.log_level}) did not fit in "
                    f"log_size={self.log_size} bytes and the kernel fails such a load; "
                    "set a larger log_size")
        if (err == _errno.EINVAL and self.type in ("tracing", "lsm", "ext")
                and "/" not in self.section and not self.__dict__.get("_target_set")):
            return (f"section {self.section!r} names no attach target; call "
                    "set_attach_target() before load")
        return None

    @property
    def fd(self) -> int:
        """The loaded program's fd."""
        fd = int(lib.bpf_program__fd(self._raw()))
        if fd < 0:
            raise LoadError(_errno.EBADF, f"program {self.name!r} is not loaded"
                            + (" (autoload is off)" if not self.autoload else ""),
                            program=self.name)
        return fd

    def info(self) -> ProgramInfo:
        """Kernel view: id, tag, jited/xlated sizes, run count/time (one syscall)."""
        return _prog_info_by_fd(self.fd)

    def pin(self, path: str | os.PathLike[str]) -> None:
        """Pin the loaded program in bpffs."""
        p = _fs.check_pin_path(os.fspath(path))
        if lib.bpf_obj_pin(self.fd, p.encode()) < 0:
            raise error_for(ffi.errno, f"cannot pin program {self.name!r} at {p}")

    def unpin(self, path: str | os.PathLike[str]) -> None:
        os.unlink(os.fspath(path))

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
        if ptr == ffi.NULL:
            err = ffi.errno or _errno.EINVAL
            raise self._attach_error(err, target, log, needed)
        link = cls(ptr, program=self.name, target=target, no_fd=no_fd)
        return self._obj._adopt_link(link)

    def _attach_error(self, err: int, target: str, log: list[str],
                      needed: tuple[int, ...] = (CAP_PERFMON,)) -> BPFError:
        if err not in (_errno.EPERM, _errno.EACCES):
            # kprobe/ksyscall, trampolines, lsm: when the probe says the kernel
            # lacks the hook, that is the reason, whatever errno libbpf saw.
            from . import features

            feat = features.for_program(self)
            if feat is not None and not feat:
                return NotSupportedError(
                    f"cannot attach program {self.name!r} to {target}: {feat.reason}",
                    reason=feat.reason, err=err, libbpf_log=log)
        return error_for(err, f"cannot attach program {self.name!r} to {target}",
                         kind=AttachError, program=self.name, target=target, log=log,
                         needed=needed)

    def _retprobe(self, retprobe: bool | None) -> bool:
        if retprobe is not None:
            return retprobe
        return self.section.startswith(("kretprobe", "uretprobe", "kretsyscall"))

    def attach(self, **kw: Any) -> Link:
        """Attach to the hook the program's type and section call for.

        With no arguments, libbpf's auto-attach (sections that name their
        target: ``tracepoint/cat/name``, ``uprobe/path:func``, ``fentry/func``...).
        Otherwise the keywords go to the hook's method, chosen by program type:
        e.g. ``attach(ifname="eth0")`` for XDP, ``attach(cgroup="/sys/fs/cgroup")``.
        """
        t = self.type
        sec = self.section
        if not kw:
            if t == "perf_event":
                return self.attach_perf_event()
            return self.attach_auto()
        if t == "tracepoint":
            return self.attach_tracepoint(**kw)
        if t == "raw_tracepoint" or t == "raw_tracepoint_writable":
            return self.attach_raw_tracepoint(**kw)
        if t == "kprobe":
            if sec.startswith(("usdt",)):
                return self.attach_usdt(**kw)
            if sec.startswith(("uprobe", "uretprobe")):
                return self.attach_uprobe(**kw)
            if sec.startswith(("ksyscall", "kretsyscall")):
                return self.attach_ksyscall(**kw)
            return self.attach_kprobe(**kw)
        if t == "xdp":
            return self.attach_xdp(**kw)
        if t == "sched_cls":
            return self.attach_tc(**kw)
        if t.startswith("cgroup") or t == "sock_ops":
            return self.attach_cgroup(**kw)
        if t == "socket_filter":
            return self.attach_socket(**kw)
        if t == "perf_event":
            return self.attach_perf_event(**kw)
        if t == "tracing" and sec.startswith("iter"):
            return self.attach_iter(**kw)
        if t in ("tracing", "lsm"):
            return self.attach_trace(**kw)
        if t in ("sk_msg", "sk_skb"):
            return self.attach_sockmap(**kw)
        if t in ("flow_dissector", "sk_lookup"):
            return self.attach_netns(**kw)
        raise AttachError(_errno.EINVAL, f"program {self.name!r} ({t}, section {sec!r}): no "
                          f"attach method takes {sorted(kw)}", program=self.name)

    def attach_auto(self) -> Link:
        """libbpf's auto-attach from the section name (``bpf_program__attach``)."""
        sec = self.section
        if sec.startswith(("tp/", "tracepoint/", "kprobe", "kretprobe", "ksyscall",
                           "kretsyscall")):
            _fs.ensure_tracefs()
        with capture() as log:
            ptr = lib.bpf_program__attach(self._raw())
        if ptr == ffi.NULL and ffi.errno == _errno.EOPNOTSUPP and not log:
            raise AttachError(_errno.EOPNOTSUPP, f"program {self.name!r}: section {sec!r} "
                              "does not name a target to auto-attach; use the attach_* method "
                              "for its hook", program=self.name, target=sec)
        cls = IterLink if sec.startswith(("iter/", "iter.s/")) else Link
        return self._link(ptr, f"{self.type} {sec}", log, cls=cls)

    def attach_tracepoint(self, category: str, name: str, *, cookie: int = 0) -> Link:
        """``tracepoint``: e.g. ``("syscalls", "sys_enter_execve")``."""
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

        ``binary`` is a path, or a library name such as ``"libc.so.6"`` that
        libbpf resolves. ``pid=-1`` probes every process.
        """
        path = os.fspath(binary)
        if "/" in path and not os.path.exists(path):
            raise AttachError(_errno.ENOENT, f"cannot attach program {self.name!r}: binary "
                              f"{path} does not exist", program=self.name, target=path)
        ret = self._retprobe(retprobe)
        opts = ffi.new("struct bpf_uprobe_opts *")
        opts.sz = ffi.sizeof("struct bpf_uprobe_opts")
        opts.bpf_cookie = cookie
        opts.retprobe = ret
        opts.ref_ctr_offset = ref_ctr_offset
        fname = cstr(function)
        opts.func_name = fname
        what = function if function else hex(offset)
        if function and offset:
            what += f"+{offset:#x}"
        target = f"{'uretprobe' if ret else 'uprobe'} {path}:{what}" + (
            f" pid {pid}" if pid >= 0 else "")
        with capture() as log:
            ptr = lib.bpf_program__attach_uprobe_opts(self._raw(), pid, path.encode(), offset,
                                                      opts)
        if ptr == ffi.NULL:
            err = ffi.errno
            self._user_binary_error(err, path, target, log)
            if err == _errno.ENOENT and function:
                raise AttachError(_errno.ENOENT, f"cannot attach program {self.name!r}: "
                                  f"symbol {function!r} not found in {path}",
                                  program=self.name, target=target, libbpf_log=log)
        return self._link(ptr, target, log)

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
        path = os.fspath(binary)
        if "/" in path and not os.path.exists(path):
            raise AttachError(_errno.ENOENT, f"cannot attach program {self.name!r}: binary "
                              f"{path} does not exist", program=self.name, target=path)
        opts = ffi.new("struct bpf_usdt_opts *")
        opts.sz = ffi.sizeof("struct bpf_usdt_opts")
        opts.usdt_cookie = cookie
        target = f"usdt {path}:{provider}:{name}"
        with capture() as log:
            ptr = lib.bpf_program__attach_usdt(self._raw(), pid, path.encode(), provider.encode(),
                                               name.encode(), opts)
        if ptr == ffi.NULL:
            err = ffi.errno
            self._user_binary_error(err, path, target, log)
            if err == _errno.ENOENT:
                raise AttachError(_errno.ENOENT, f"cannot attach program {self.name!r}: USDT "
                                  f"probe {provider}:{name} not found in {path}",
                                  program=self.name, target=target, libbpf_log=log)
        return check_usdt(self._obj, self._link(ptr, target, log, no_fd="a USDT attachment is "
                          "one uprobe link per probe site and has no single fd"), target, self.name)

    def attach_xdp(self, ifname: str | int | None = None, *, ifindex: int | None = None,
                   mode: str = "auto") -> Link:
        """XDP on an interface; ``mode`` is "auto", "skb" (generic), "native" or "hw"."""
        if mode not in XDP_FLAGS:
            raise ValueError(f"XDP mode must be one of {sorted(XDP_FLAGS)}, not {mode!r}")
        idx, name = _ifindex(ifindex if ifindex is not None else _required(ifname, "ifname"))
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
                  tcx: bool | None = None) -> Link:
        """tc classifier on ``ifname`` ingress or egress.

        With ``tcx`` unset, a tcx link (kernel 6.6+, dies with the process) is used
        when the kernel has it and no ``priority``/``handle`` is asked for;
        otherwise a netlink filter on a clsact qdisc (created if missing, removed
        on detach if pybpf created it). A netlink filter is not a BPF link: it is
        removed on detach, close, garbage collection and interpreter exit, but a
        process killed by SIGKILL leaves it (and the qdisc) in place.
        """
        if direction not in ("ingress", "egress"):
            raise ValueError(f"tc direction must be 'ingress' or 'egress', not {direction!r}")
        idx, name = _ifindex(ifindex if ifindex is not None else _required(ifname, "ifname"))
        if tcx is None:
            from . import features

            tcx = not priority and not handle and bool(features.tcx())
        if tcx:
            target = f"tcx {name} {direction}"
            fd = lib.bpf_link_create(self.fd, idx, BPF_TCX_INGRESS if direction == "ingress"
                                     else BPF_TCX_EGRESS, ffi.NULL)
            if fd < 0:
                raise self._attach_error(-fd, target, [], (CAP_NET_ADMIN,))
            return self._obj._adopt_link(Link(program=self.name, target=target, fd=fd))
        return self._obj._adopt_link(_tc_netlink_attach(self, idx, name, direction, priority,
                                                        handle))

    def attach_cgroup(self, cgroup: str | os.PathLike[str] | int | None = None) -> Link:
        """cgroup hooks (cgroup_skb, cgroup/sock, sockops...) on a cgroup v2 directory or fd.

        Without ``cgroup``: the root of the cgroup v2 hierarchy (from /proc/mounts).
        """
        if cgroup is None:
            cgroup = _cgroup2_mount()
            if cgroup is None:
                raise AttachError(_errno.ENOENT, f"cannot attach program {self.name!r}: no "
                                  "cgroup v2 hierarchy is mounted", program=self.name,
                                  target="cgroup")
        if isinstance(cgroup, int):
            fd, path, own = cgroup, f"fd {cgroup}", False
        else:
            path = os.fspath(cgroup)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            except OSError as exc:
                raise AttachError(exc.errno or _errno.ENOENT, f"cannot attach program "
                                  f"{self.name!r}: cgroup {path}: {exc.strerror}",
                                  program=self.name, target=path) from None
            own = True
        try:
            with capture() as log:
                ptr = lib.bpf_program__attach_cgroup(self._raw(), fd)
            if ptr == ffi.NULL and ffi.errno == _errno.EBADF:
                mnt = _cgroup2_mount()
                where = f"cgroup2 is mounted at {mnt}" if mnt else "no cgroup2 is mounted"
                raise AttachError(_errno.EBADF, f"cannot attach program {self.name!r}: "
                                  f"{path} is not a cgroup v2 directory ({where})",
                                  program=self.name, target=f"cgroup {path}", libbpf_log=log)
            return self._link(ptr, f"cgroup {path}", log, needed=(CAP_NET_ADMIN,))
        finally:
            if own:
                os.close(fd)

    def attach_netns(self, netns: str | os.PathLike[str] | int = "/proc/self/ns/net") -> Link:
        """flow_dissector / sk_lookup on a network namespace (path or fd)."""
        if isinstance(netns, int):
            fd, path, own = netns, f"fd {netns}", False
        else:
            path = os.fspath(netns)
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError as exc:
                raise AttachError(exc.errno or _errno.ENOENT, f"cannot attach program "
                                  f"{self.name!r}: netns {path}: {exc.strerror}",
                                  program=self.name, target=path) from None
            own = True
            # every namespace file lives on nsfs: same device as our own netns file
            if os.fstat(fd).st_dev != os.stat("/proc/self/ns/net").st_dev:
                os.close(fd)
                raise AttachError(_errno.EINVAL, f"cannot attach program {self.name!r}: "
                                  f"{path} is not a network namespace (e.g. /proc/PID/ns/net "
                                  "or /run/netns/NAME)", program=self.name,
                                  target=f"netns {path}")
        try:
            with capture() as log:
                ptr = lib.bpf_program__attach_netns(self._raw(), fd)
            return self._link(ptr, f"netns {path}", log, needed=(CAP_NET_ADMIN,))
        finally:
            if own:
                os.close(fd)

    def attach_socket(self, sock: socket.socket | int) -> Link:
        """Socket filter on ``sock`` (SO_ATTACH_BPF); detached on link close."""
        return self._obj._adopt_link(socket_filter_link(sock, self.fd, self.name))

    def attach_sockmap(self, map: Map, *, attach_type: str | None = None) -> Link:
        """sk_msg / sk_skb verdict (or parser) program on a sockmap/sockhash."""
        types = {"sk_msg_verdict": BPF_SK_MSG_VERDICT, "sk_skb_verdict": BPF_SK_SKB_VERDICT,
                 "sk_skb_stream_verdict": BPF_SK_SKB_STREAM_VERDICT,
                 "sk_skb_stream_parser": BPF_SK_SKB_STREAM_PARSER}
        name = attach_type or self.expected_attach_type
        if name not in types:
            raise ValueError(f"program {self.name!r}: sockmap attach type must be one of "
                             f"{sorted(types)}, not {name!r}")
        at = types[name]
        target = f"{name} map {map.name}"
        if map.type not in ("sockmap", "sockhash"):
            raise AttachError(_errno.EINVAL, f"cannot attach program {self.name!r} to {target}: "
                              f"map {map.name!r} is a {map.type} map, not a sockmap or "
                              "sockhash", program=self.name, target=target)
        prog_fd, map_fd = self.fd, map.fd
        fd = lib.bpf_link_create(prog_fd, map_fd, at, ffi.NULL)
        if fd >= 0:
            return self._obj._adopt_link(Link(program=self.name, target=target, fd=fd))
        # Kernels before 6.10 have no sockmap links: fall back to BPF_PROG_ATTACH.
        if lib.bpf_prog_attach(prog_fd, map_fd, at, 0) < 0:
            raise self._attach_error(ffi.errno, target, [])

        def detach() -> None:
            lib.bpf_prog_detach2(prog_fd, map_fd, at)

        return self._obj._adopt_link(Link(program=self.name, target=target, on_detach=detach))

    def attach_perf_event(self, perf_fd: int | None = None, *, frequency: int | None = None,
                          period: int | None = None, cpus: list[int] | None = None,
                          pid: int = -1, cookie: int = 0) -> Link:
        """perf_event program on ``perf_fd``, or by default cpu-clock sampling on every CPU.

        ``frequency`` (Hz, default 99) or ``period`` (ns of cpu-clock) set the
        sampling; ``pid`` restricts sampling to one process.
        """
        opts = ffi.new("struct bpf_perf_event_opts *")
        opts.sz = ffi.sizeof("struct bpf_perf_event_opts")
        opts.bpf_cookie = cookie
        if perf_fd is not None:
            own = os.dup(perf_fd)  # the link owns (and closes) its own copy
            with capture() as log:
                ptr = lib.bpf_program__attach_perf_event_opts(self._raw(), own, opts)
            if ptr == ffi.NULL:
                err = ffi.errno
                os.close(own)  # libbpf does not close it on failure
                raise self._attach_error(err or _errno.EINVAL, f"perf_event fd {perf_fd}", log)
            return self._link(ptr, f"perf_event fd {perf_fd}", log)
        freq = 1 if period is None else 0
        sample = frequency or 99 if period is None else period
        links: list[Link] = []
        cpu_list = cpus if cpus is not None else ([-1] if pid >= 0 else _online_cpus())
        try:
            for cpu in cpu_list:
                pfd = lib.pybpf_perf_event_open(1, 0, sample, freq, pid, cpu, -1, 0, 0)
                where = f"cpu-clock cpu {cpu}" + (f" pid {pid}" if pid >= 0 else "")
                if pfd < 0:
                    raise self._attach_error(-pfd, f"perf_event {where}", [])
                with capture() as log:
                    ptr = lib.bpf_program__attach_perf_event_opts(self._raw(), pfd, opts)
                if ptr == ffi.NULL:
                    err = ffi.errno
                    os.close(pfd)
                    raise self._attach_error(err, f"perf_event {where}", log)
                links.append(Link(ptr, program=self.name, target=f"perf_event {where}"))
        except BaseException:
            for lk in links:
                lk.detach()
            raise
        group = LinkGroup(links, program=self.name,
                          target=f"perf_event cpu-clock on {len(links)} cpu(s)")
        return self._obj._adopt_link(group)

    def attach_iter(self, *, map: Map | None = None) -> IterLink:
        """BPF iterator (``iter/task``, ``iter/bpf_map_elem`` with ``map``...)."""
        opts = ffi.new("struct bpf_iter_attach_opts *")
        opts.sz = ffi.sizeof("struct bpf_iter_attach_opts")
        keep = None
        if map is not None:
            keep = ffi.new("union bpf_iter_link_info *")
            keep.map.map_fd = map.fd
            opts.link_info = keep
            opts.link_info_len = ffi.sizeof("union bpf_iter_link_info")
        with capture() as log:
            ptr = lib.bpf_program__attach_iter(self._raw(), opts)
        link = self._link(ptr, f"iter {self.section.split('/', 1)[-1]}", log, cls=IterLink)
        assert isinstance(link, IterLink)
        return link

    def attach_freplace(self, target: Program | int, function: str) -> Link:
        """freplace ``function`` of a loaded program (a Program or a program fd)."""
        tfd = target.fd if isinstance(target, Program) else target
        with capture() as log:
            ptr = lib.bpf_program__attach_freplace(self._raw(), tfd, function.encode())
        return self._link(ptr, f"freplace {function}", log)


def _required(value: Any, what: str) -> Any:
    if value is None:
        raise TypeError(f"missing required argument {what!r}")
    return value


# clsact qdiscs pybpf created, by (netns inode, ifindex) -> [filters attached
# through pybpf, created by pybpf]: the qdisc is removed with the last of them,
# not with the first (removing it would take the other filters along).
_clsact_users: dict[tuple[int, int], list[int]] = {}
_clsact_lock = threading.RLock()  # reentrant: a GC finalizer may detach mid-attach


def _tc_netlink_attach(prog: Program, idx: int, name: str, direction: str, priority: int,
                       handle: int) -> Link:
    hook = ffi.new("struct bpf_tc_hook *")
    hook.sz = ffi.sizeof("struct bpf_tc_hook")
    hook.ifindex = idx
    hook.attach_point = lib.BPF_TC_INGRESS if direction == "ingress" else lib.BPF_TC_EGRESS
    target = f"tc {name} {direction}"
    prog_fd = prog.fd
    # The filter is named by an ifindex of this thread's netns: detach it there,
    # whichever netns the detaching thread is in by then.
    netns = NetnsRef()
    key = (netns.ino, idx)
    with _clsact_lock:
        with capture() as log:
            rc = lib.bpf_tc_hook_create(hook)
        if rc not in (0, -_errno.EEXIST):
            netns.close()
            raise prog._attach_error(-rc, f"{target} (clsact qdisc)", log, (CAP_NET_ADMIN,))
        users = _clsact_users.setdefault(key, [0, 0])
        if rc == 0:
            users[1] = 1  # ours: remove it when the last pybpf filter on it goes
        opts = ffi.new("struct bpf_tc_opts *")
        opts.sz = ffi.sizeof("struct bpf_tc_opts")
        opts.prog_fd = prog_fd
        opts.priority = priority
        opts.handle = handle
        with capture() as log:
            rc = lib.bpf_tc_attach(hook, opts)
        if rc:
            _release_clsact(key, idx, attached=False)
            netns.close()
            raise prog._attach_error(-rc, target, log, (CAP_NET_ADMIN,))
        users[0] += 1
    prio, hnd = opts.priority, opts.handle

    def detach() -> None:
        h = ffi.new("struct bpf_tc_hook *")
        h.sz = ffi.sizeof("struct bpf_tc_hook")
        h.ifindex = idx
        h.attach_point = hook.attach_point
        o = ffi.new("struct bpf_tc_opts *")
        o.sz = ffi.sizeof("struct bpf_tc_opts")
        o.priority = prio
        o.handle = hnd
        try:
            with netns.entered(), _clsact_lock:
                lib.bpf_tc_detach(h, o)
                _release_clsact(key, idx, attached=True)
        finally:
            netns.close()

    return Link(program=prog.name, target=f"{target} prio {prio} handle {hnd:#x}",
                on_detach=detach)


def _release_clsact(key: tuple[int, int], idx: int, *, attached: bool) -> None:
    """One pybpf filter is gone from ``key``'s clsact: remove the qdisc if it was
    pybpf's and no pybpf filter is left on it (call with _clsact_lock held, in
    the device's netns)."""
    users = _clsact_users.get(key)
    if users is None:
        return
    if attached:
        users[0] -= 1
    if users[0] <= 0:
        del _clsact_users[key]
        if users[1]:
            _destroy_clsact(idx)


def _destroy_clsact(idx: int) -> None:
    """Remove the clsact qdisc that pybpf created (and any filter left on it)."""
    h = ffi.new("struct bpf_tc_hook *")
    h.sz = ffi.sizeof("struct bpf_tc_hook")
    h.ifindex = idx
    h.attach_point = lib.BPF_TC_INGRESS | lib.BPF_TC_EGRESS
    lib.bpf_tc_hook_destroy(h)


def list_programs() -> list[ProgramInfo]:
    """Every program loaded in the kernel (like ``bpftool prog list``)."""
    return walk_ids(lib.bpf_prog_get_next_id, lib.bpf_prog_get_fd_by_id, _prog_info_by_fd)
