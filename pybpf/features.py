"""What the running kernel supports, decided by probing it (never by its version).

* :func:`program_types`, :func:`map_types`, :func:`helpers`: libbpf's probes
  (``libbpf_probe_bpf_*``), which load a tiny program or create a tiny map.
* Hook probes that need more than a load: :func:`kprobes`, :func:`trampolines`
  (fentry/fexit/fmod_ret), :func:`lsm`, :func:`tcx`, :func:`uprobe_multi`,
  :func:`bpf_cookie`... Each returns a :class:`Feature`, true or false with the
  reason (the errno and what it means), cached for the process.

Tests use them to skip: ``if not (f := features.kprobes()): pytest.skip(f.reason)``.
"""

from __future__ import annotations

import errno
import functools
import os
import struct
from dataclasses import dataclass
from typing import Any, Protocol

from . import _sections
from ._ffi import ffi, has_symbol, lib, libbpf_capabilities
from .btf import BTF, BTFKind
from .errors import describe_errno


class _Program(Protocol):
    """What :func:`for_program` reads of a :class:`~pybpf.Program` (this module is
    below program.py: it never imports it)."""

    @property
    def section(self) -> str: ...

    @property
    def type(self) -> str: ...

__all__ = ["Feature", "program_types", "map_types", "helpers", "kprobes", "trampolines",
           "fmod_ret", "lsm", "tp_btf", "tcx", "netkit", "netfilter", "uprobe_multi",
           "uprobe_session", "kprobe_multi", "kprobe_session", "struct_ops_link", "token",
           "bpf_link_xdp", "ringbuf", "hooks", "summary", "for_program", "libbpf_has"]


@dataclass(frozen=True)
class Feature:
    """A probed feature: truthy when supported; ``reason`` says why (not)."""

    name: str
    supported: bool
    reason: str

    def __bool__(self) -> bool:
        return self.supported


def libbpf_has(symbol: str) -> bool:
    """Whether the system libbpf exports ``symbol`` (for APIs newer than 1.1)."""
    return has_symbol(symbol)


def _enum_names(to_str: Any) -> dict[int, str]:
    names = {}
    for i in range(1, 256):
        s = to_str(i)
        if s == ffi.NULL:
            break
        names[i] = ffi.string(s).decode()
    return names


@functools.cache
def _prog_type_ids() -> dict[str, int]:
    """libbpf's program type name -> enum bpf_prog_type value."""
    return {v: k for k, v in _enum_names(lib.libbpf_bpf_prog_type_str).items()}


def _prog_type_id(name: str) -> int:
    return _prog_type_ids()[name]


@functools.cache
def program_types() -> dict[str, bool]:
    """Program type name -> supported (``libbpf_probe_bpf_prog_type``).

    Types whose load needs an attach target, which libbpf 1.1's probe does not give
    (tracing, lsm), are answered by the hook probes :func:`tp_btf` and :func:`lsm`;
    types newer than libbpf's name table (netfilter) by :func:`netfilter`.
    """
    out = {name: lib.libbpf_probe_bpf_prog_type(i, ffi.NULL) == 1
           for i, name in _enum_names(lib.libbpf_bpf_prog_type_str).items()}
    out["tracing"] = out.get("tracing", False) or bool(tp_btf())
    out["lsm"] = out.get("lsm", False) or bool(lsm())
    out.setdefault("netfilter", _load_raw(_PROG_NETFILTER, attach_type=_BPF_NETFILTER,
                                          retval=1)[1] == 0 or bool(netfilter()))
    return out


@functools.cache
def map_types() -> dict[str, bool]:
    """Map type name -> supported (``libbpf_probe_bpf_map_type``)."""
    return {name: lib.libbpf_probe_bpf_map_type(i, ffi.NULL) == 1
            for i, name in _enum_names(lib.libbpf_bpf_map_type_str).items()}


@functools.cache
def helpers(prog_type: str = "kprobe") -> dict[int, bool]:
    """Helper id -> callable from ``prog_type``; ids the kernel does not know are absent.

    Each helper is probed by loading ``call helper; exit`` as ``prog_type`` and
    reading the verifier's answer ("unknown func", "invalid func", or, on newer
    kernels, "program of this type cannot use helper", which libbpf 1.1's own
    probe does not recognize). A load that fails for another reason (argument
    checks) means the helper is allowed. About 1 ms per helper.
    """
    ids = _prog_type_ids()
    if prog_type not in ids:
        raise ValueError(f"unknown program type {prog_type!r}")
    out = {}
    log = ffi.new("char[]", 4096)
    insns = ffi.new("struct bpf_insn[2]")
    raw = ffi.cast("unsigned char *", insns)
    for helper in range(1, 256):
        data = bytes([0x85, 0, 0, 0]) + helper.to_bytes(4, "little") + bytes([0x95]) + bytes(7)
        for i, b in enumerate(data):
            raw[i] = b
        opts = ffi.new("struct bpf_prog_load_opts *")
        opts.sz = ffi.sizeof("struct bpf_prog_load_opts")
        opts.log_buf = log
        opts.log_size = 4096
        opts.log_level = 1
        log[0] = b"\0"
        fd = lib.bpf_prog_load(ids[prog_type], b"pybpf_probe", b"GPL", insns, 2, opts)
        if fd >= 0:
            os.close(fd)
            out[helper] = True
            continue
        text = ffi.string(log).decode(errors="replace")
        if "invalid func unknown" in text:
            continue  # the kernel has no helper with this id
        out[helper] = not ("unknown func" in text or "invalid func" in text
                           or "cannot use helper" in text)
    return out


# --- raw programs for hook probes -------------------------------------------------

def _insns_return(value: int = 0) -> Any:
    # r0 = value; exit
    insns = ffi.new("struct bpf_insn[2]")
    ffi.memmove(insns, bytes([0xB7, 0, 0, 0]) + value.to_bytes(4, "little") +
                bytes([0x95, 0, 0, 0, 0, 0, 0, 0]), 16)
    return insns


def _load_raw(prog_type: int, *, attach_type: int = 0, attach_btf_id: int = 0,
              license: bytes = b"GPL", retval: int = 0) -> tuple[int, int]:
    """Load ``return retval`` as ``prog_type``; (fd, 0) or (-1, errno)."""
    opts = ffi.new("struct bpf_prog_load_opts *")
    opts.sz = ffi.sizeof("struct bpf_prog_load_opts")
    opts.expected_attach_type = attach_type
    opts.attach_btf_id = attach_btf_id
    insns = _insns_return(retval)
    fd = lib.bpf_prog_load(prog_type, b"pybpf_probe", license, insns, 2, opts)
    if fd < 0:
        return -1, ffi.errno or -fd
    return int(fd), 0


def _vmlinux_func_id(name: str, kind: int = 12) -> int:
    """Type id of ``name`` of BTF ``kind`` (12: FUNC, 8: TYPEDEF, 4: STRUCT) in vmlinux."""
    return _vmlinux_type(name, kind)[0]


def _vmlinux_type(name: str, kind: int) -> tuple[int, int]:
    """(type id, size) of ``name`` of BTF ``kind`` in vmlinux ((0, 0): absent)."""
    # libbpf's C parser: ~50x faster than parsing all of vmlinux BTF in Python.
    b = lib.btf__load_vmlinux_btf()
    if b == ffi.NULL:
        t = BTF.vmlinux().find(name, BTFKind(kind))
        return (t.id, 0) if t is not None else (0, 0)
    try:
        tid = lib.btf__find_by_name_kind(b, name.encode(), kind)
        if tid <= 0:
            return 0, 0
        return int(tid), max(int(lib.btf__resolve_size(b, tid)), 0)
    finally:
        lib.btf__free(b)


_BPF_TRACE_FENTRY = 24
_BPF_LSM_MAC = 27
_BPF_TRACE_KPROBE_MULTI = 42
_BPF_TRACE_UPROBE_MULTI = 48
_BPF_TCX_INGRESS = 46
_BPF_XDP = 37
_BPF_LINK_CREATE = 28  # bpf(2) command


@functools.cache
def kprobes() -> Feature:
    """kprobe attach: needs CONFIG_KPROBES (the kprobe PMU in /sys/bus/event_source)."""
    pmu = "/sys/bus/event_source/devices/kprobe/type"
    if not os.path.exists(pmu):
        return Feature("kprobes", False, "the kernel has no kprobe PMU "
                       f"({pmu} is missing: built without CONFIG_KPROBES)")
    try:
        with open(pmu) as f:
            pmu_type = int(f.read())
    except (OSError, ValueError) as exc:
        return Feature("kprobes", False, f"cannot read {pmu}: {exc}")
    name = ffi.new("char[]", b"do_sys_openat2")
    fd = lib.pybpf_perf_event_open(pmu_type, 0, 1, 0, -1, 0, -1,
                                   int(ffi.cast("uintptr_t", name)), 0)
    if fd < 0:
        return Feature("kprobes", False, f"perf_event_open(kprobe do_sys_openat2) failed: "
                                         f"{describe_errno(-fd)}")
    os.close(fd)
    return Feature("kprobes", True, "kprobe PMU works (probed do_sys_openat2)")


def _trampoline(kind: str, attach_type: int, prog_type_name: str, target: str) -> Feature:
    btf_id = _vmlinux_func_id(target)
    if not btf_id:
        return Feature(kind, False, f"{target} is not in the kernel's BTF")
    fd, err = _load_raw(_prog_type_id(prog_type_name), attach_type=attach_type,
                        attach_btf_id=btf_id)
    if fd < 0:
        return Feature(kind, False, f"the kernel refused to load a {kind} program on "
                                    f"{target}: {describe_errno(err)}")
    try:
        lfd = lib.bpf_link_create(fd, 0, attach_type, ffi.NULL)
        if lfd < 0:
            lfd = lib.bpf_raw_tracepoint_open(ffi.NULL, fd)
        if lfd < 0:
            return Feature(kind, False, f"{kind} program loaded but attaching failed: "
                                        f"{describe_errno(ffi.errno)}")
        os.close(lfd)
    finally:
        os.close(fd)
    return Feature(kind, True, f"{kind} loads and attaches (probed on {target})")


@functools.cache
def trampolines() -> Feature:
    """fentry/fexit/fmod_ret: BPF trampolines (load and attach an fentry program)."""
    return _trampoline("fentry", _BPF_TRACE_FENTRY, "tracing", "do_unlinkat")


_BPF_MODIFY_RETURN = 26


@functools.cache
def fmod_ret() -> Feature:
    """fmod_ret on LSM hooks (``security_*``); probed on security_task_getpgid.

    Other targets (syscalls...) also need CONFIG_FUNCTION_ERROR_INJECTION.
    """
    return _trampoline("fmod_ret", _BPF_MODIFY_RETURN, "tracing", "security_task_getpgid")


@functools.cache
def lsm() -> Feature:
    """BPF LSM: needs CONFIG_BPF_LSM and "bpf" in the lsm= boot list."""
    try:
        with open("/sys/kernel/security/lsm") as f:
            active = f.read().strip()
    except OSError:
        active = ""
    if active and "bpf" not in active.split(","):
        return Feature("lsm", False, f"the BPF LSM is not active (active LSMs: {active})")
    return _trampoline("lsm", _BPF_LSM_MAC, "lsm", "bpf_lsm_file_open")


def _probe_link(name: str, prog_type: str, target: int, attach_type: int, *,
                flags: int = 0, retval: int = 0, proof_errno: int, proof: str,
                attached: str) -> Feature:
    """Load ``return retval`` as ``prog_type`` and ask for a link of ``attach_type`` on
    ``target``: a link, or the refusal ``proof_errno``, means the kernel has it."""
    fd, err = _load_raw(_prog_type_id(prog_type), retval=retval)
    if fd < 0:
        return Feature(name, False, f"cannot load a {prog_type} program: {describe_errno(err)}")
    try:
        opts = ffi.new("struct bpf_link_create_opts *")
        opts.sz = ffi.sizeof("struct bpf_link_create_opts")
        opts.flags = flags
        lfd = lib.bpf_link_create(fd, target, attach_type, opts)
        if lfd >= 0:
            os.close(lfd)
            return Feature(name, True, attached)
        err = ffi.errno
        if err == proof_errno:
            return Feature(name, True, proof)
        return Feature(name, False, f"{name} link create refused: {describe_errno(err)}")
    finally:
        os.close(fd)


@functools.cache
def tcx() -> Feature:
    """tcx links (kernel 6.6+): tc programs as BPF links."""
    # Aim at an ifindex no device has, so nothing is ever attached: a kernel
    # with tcx looks the device up and says ENODEV; one without tcx rejects
    # the attach type for sched_cls with EINVAL before any device lookup.
    return _probe_link("tcx", "sched_cls", 0x7FFFFFFF, _BPF_TCX_INGRESS,
                       proof_errno=errno.ENODEV,
                       proof="tcx link create reached the device lookup (ENODEV)",
                       attached="tcx link attached")


@functools.cache
def uprobe_multi() -> Feature:
    """uprobe_multi links (kernel 6.6+)."""
    return _uprobe_link("uprobe_multi", _BPF_TRACE_UPROBE_MULTI)


def _uprobe_link(name: str, attach_type: int) -> Feature:
    fd, err = _load_raw(_prog_type_id("kprobe"), attach_type=attach_type)
    if fd < 0:
        return Feature(name, False, f"the kernel refused a {name} program: "
                                    f"{describe_errno(err)}")
    # Older kernels load the program (they ignore its expected attach type) and
    # only the link tells: ask for a link on "/", which a kernel with the link
    # type refuses with EBADF (not a regular file) and one without refuses
    # earlier with EINVAL. libbpf 1.1 does not pass these link fields, so the
    # attr is built here (union bpf_attr, link_create.uprobe_multi).
    path = ffi.new("char[]", b"/")
    offsets = ffi.new("__u64[1]", [0])
    try:
        lfd = _raw_link(fd, 0, attach_type, struct.pack(
            "=QQQQI", int(ffi.cast("uintptr_t", path)), int(ffi.cast("uintptr_t", offsets)),
            0, 0, 1))
    finally:
        os.close(fd)
    if lfd >= 0:
        os.close(lfd)
        return Feature(name, True, f"{name} link created")
    if -lfd == errno.EBADF:
        return Feature(name, True, f"{name} links exist (the probe link on / was refused "
                                   "with EBADF: not a regular file)")
    return Feature(name, False, f"the kernel has no {name} links: the probe link was "
                                f"refused with {describe_errno(-lfd)}")


_PROG_NETFILTER = 32
_BPF_NETFILTER = 45
_BPF_TRACE_RAW_TP = 23
_BPF_NETKIT_PRIMARY = 54
_BPF_TRACE_KPROBE_SESSION = 56
_BPF_TRACE_UPROBE_SESSION = 57
_BPF_TOKEN_CREATE = 36  # bpf(2) command


@functools.cache
def tp_btf() -> Feature:
    """tp_btf (BTF-typed raw tracepoints, "tracing" programs): load one on
    sched_process_exec's ``btf_trace_`` type and attach it."""
    btf_id = _vmlinux_func_id("btf_trace_sched_process_exec", 8)  # BTF_KIND_TYPEDEF
    if not btf_id:
        return Feature("tp_btf", False, "btf_trace_sched_process_exec is not in the kernel's "
                                        "BTF (no BTF-typed tracepoints)")
    fd, err = _load_raw(_prog_type_id("tracing"), attach_type=_BPF_TRACE_RAW_TP,
                        attach_btf_id=btf_id)
    if fd < 0:
        return Feature("tp_btf", False, "the kernel refused a tp_btf program on "
                                        f"sched_process_exec: {describe_errno(err)}")
    try:
        lfd = lib.bpf_raw_tracepoint_open(ffi.NULL, fd)
        if lfd < 0:
            return Feature("tp_btf", False, "tp_btf program loaded but attaching failed: "
                                            f"{describe_errno(ffi.errno)}")
        os.close(lfd)
    finally:
        os.close(fd)
    return Feature("tp_btf", True, "tp_btf loads and attaches (probed on sched_process_exec)")


def _raw_link(prog_fd: int, target: int, attach_type: int, tail: bytes = b"") -> int:
    attr = ffi.new("char[64]")
    buf = ffi.buffer(attr)
    struct.pack_into("=IIII", buf, 0, prog_fd, target, attach_type, 0)
    buf[16:16 + len(tail)] = tail
    return int(lib.pybpf_sys_bpf(_BPF_LINK_CREATE, attr, 64))


@functools.cache
def netkit() -> Feature:
    """netkit links (kernel 6.7+ with CONFIG_NETKIT)."""
    # As for tcx: an ifindex no device has. A kernel with netkit looks the device
    # up (ENODEV); one without refuses the attach type first (EINVAL).
    fd, err = _load_raw(_prog_type_id("sched_cls"))
    if fd < 0:
        return Feature("netkit", False, f"cannot load a sched_cls program: {describe_errno(err)}")
    try:
        lfd = _raw_link(fd, 0x7FFFFFFF, _BPF_NETKIT_PRIMARY)
    finally:
        os.close(fd)
    if lfd >= 0:
        os.close(lfd)
    if -lfd == errno.ENODEV:
        return Feature("netkit", True, "netkit link create reached the device lookup (ENODEV)")
    return Feature("netkit", False, "the kernel has no netkit links (built without "
                   f"CONFIG_NETKIT, or older than 6.7): the probe link was refused with "
                   f"{describe_errno(-lfd)}")


@functools.cache
def netfilter() -> Feature:
    """netfilter links (kernel 6.4+, CONFIG_NETFILTER_BPF_LINK): a program that accepts
    every packet is hooked at ipv4 local_in for a moment."""
    fd, err = _load_raw(_PROG_NETFILTER, attach_type=_BPF_NETFILTER, retval=1)  # NF_ACCEPT
    if fd < 0:
        return Feature("netfilter", False, "the kernel refused a netfilter program: "
                                           f"{describe_errno(err)}")
    try:
        lfd = _raw_link(fd, 0, _BPF_NETFILTER, struct.pack("=IIiI", 2, 1, 0x7FFF0000, 0))
    finally:
        os.close(fd)
    if lfd < 0:
        return Feature("netfilter", False, "the kernel has no netfilter links (needs "
                       "CONFIG_NETFILTER_BPF_LINK): the probe link was refused with "
                       f"{describe_errno(-lfd)}")
    os.close(lfd)
    return Feature("netfilter", True, "netfilter link attached (ipv4 local_in)")


def _kprobe_multi(name: str, attach_type: int) -> Feature:
    fd, err = _load_raw(_prog_type_id("kprobe"), attach_type=attach_type)
    if fd < 0:
        return Feature(name, False, f"the kernel refused a {name} program: "
                                    f"{describe_errno(err)}")
    sym = ffi.new("char[]", b"do_sys_openat2")
    syms = ffi.new("char *[1]", [sym])
    try:
        lfd = _raw_link(fd, 0, attach_type,
                        struct.pack("=IIQQQ", 0, 1, int(ffi.cast("uintptr_t", syms)), 0, 0))
    finally:
        os.close(fd)
    if lfd >= 0:
        os.close(lfd)
        return Feature(name, True, f"{name} link attached (do_sys_openat2)")
    err = -lfd
    why = {errno.EOPNOTSUPP: "the kernel has no fprobe (built without CONFIG_FPROBE)",
           errno.EINVAL: "the kernel does not know this link type"}.get(err, "")
    return Feature(name, False, f"{name} link refused with {describe_errno(err)}"
                   + (f": {why}" if why else ""))


@functools.cache
def kprobe_multi() -> Feature:
    """kprobe_multi links (kernel 5.18+ with CONFIG_FPROBE)."""
    return _kprobe_multi("kprobe_multi", _BPF_TRACE_KPROBE_MULTI)


@functools.cache
def kprobe_session() -> Feature:
    """kprobe sessions (kernel 6.10+ with CONFIG_FPROBE)."""
    return _kprobe_multi("kprobe_session", _BPF_TRACE_KPROBE_SESSION)


@functools.cache
def uprobe_session() -> Feature:
    """uprobe sessions (kernel 6.13+)."""
    return _uprobe_link("uprobe_session", _BPF_TRACE_UPROBE_SESSION)


@functools.cache
def struct_ops_link() -> Feature:
    """struct_ops maps registered by BPF links (kernel 6.4+): a BPF_F_LINK struct_ops map of
    tcp_congestion_ops is created (not registered)."""
    tid, size = _vmlinux_type("bpf_struct_ops_tcp_congestion_ops", 4)  # BTF_KIND_STRUCT
    if not tid:
        return Feature("struct_ops_link", False, "bpf_struct_ops_tcp_congestion_ops is not in "
                                                 "the kernel's BTF (no TCP struct_ops)")
    btf_fd = _tiny_btf()
    if btf_fd < 0:
        return Feature("struct_ops_link", False, "the kernel refused a minimal BTF: "
                                                 f"{describe_errno(-btf_fd)}")
    opts = ffi.new("struct bpf_map_create_opts *")
    opts.sz = ffi.sizeof("struct bpf_map_create_opts")
    opts.btf_fd = btf_fd  # the kernel wants the object's BTF even for a vmlinux value
    opts.btf_vmlinux_value_type_id = tid
    opts.map_flags = 1 << 13  # BPF_F_LINK
    fd = lib.bpf_map_create(26, b"pybpf_probe", 4, size, 1, opts)  # BPF_MAP_TYPE_STRUCT_OPS
    err = ffi.errno
    os.close(btf_fd)
    if fd < 0:
        return Feature("struct_ops_link", False, "the kernel refused a struct_ops map with "
                       f"BPF_F_LINK (needs 6.4+): {describe_errno(err)}")
    os.close(fd)
    return Feature("struct_ops_link", True, "struct_ops map with BPF_F_LINK created")


def _tiny_btf() -> int:
    """Load a BTF blob holding one ``int`` (BPF_BTF_LOAD); its fd or -errno."""
    types = struct.pack("<IIII", 1, 1 << 24, 4, 32)  # INT "int", size 4, 32 bits
    strings = b"\0int\0"
    raw = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types),
                      len(strings)) + types + strings
    blob = ffi.new("char[]", raw)
    attr = ffi.new("char[32]")
    struct.pack_into("=QQII", ffi.buffer(attr), 0, int(ffi.cast("uintptr_t", blob)), 0,
                     len(raw), 0)
    return int(lib.pybpf_sys_bpf(18, attr, 32))  # BPF_BTF_LOAD


@functools.cache
def token() -> Feature:
    """BPF token (kernel 6.9+ with a delegated bpffs; libbpf 1.4+ to use it from an object)."""
    attr = ffi.new("char[16]")
    struct.pack_into("=II", ffi.buffer(attr), 0, 0, 0xFFFFFFFF)  # flags, bpffs_fd = -1
    rc = lib.pybpf_sys_bpf(_BPF_TOKEN_CREATE, attr, 16)
    if rc >= 0:
        os.close(rc)
    kernel = -rc == errno.EBADF
    kernel_why = ("the kernel has BPF tokens (BPF_TOKEN_CREATE on a bad fd: EBADF)" if kernel
                  else "the kernel has no BPF tokens (BPF_TOKEN_CREATE refused with "
                       f"{describe_errno(-rc)}; needs 6.9+)")
    version = ffi.string(lib.libbpf_version_string()).decode()
    lib_ok = has_symbol("bpf_token_create")
    lib_why = (f"libbpf {version} has bpf_token_create" if lib_ok else
               f"the runtime libbpf {version} is too old for BPF tokens (needs 1.4+: no "
               "bpf_token_create)")
    return Feature("token", kernel and lib_ok, f"{lib_why}; {kernel_why}")



@functools.cache
def bpf_link_xdp() -> Feature:
    """XDP through BPF links (kernel 5.9+): links die with their process."""
    # The kernel answers EINVAL both for "no such device" and "no XDP links",
    # so this needs a real device: loopback, in generic mode, for a moment, with
    # a program that returns XDP_PASS. EBUSY (another XDP program is on lo)
    # also proves the link path exists.
    return _probe_link("xdp_link", "xdp", 1, _BPF_XDP, flags=1 << 1,  # XDP_FLAGS_SKB_MODE
                       retval=2, proof_errno=errno.EBUSY,
                       proof="XDP link refused only because lo has XDP (EBUSY)",
                       attached="XDP link attached to lo (generic mode)")


@functools.cache
def ringbuf() -> Feature:
    ok = map_types().get("ringbuf", False)
    return Feature("ringbuf", ok, "ringbuf map type" + ("" if ok else " not") + " supported")


def for_program(prog: _Program) -> Feature | None:
    """The hook feature a program needs (the probe its section's row names in
    :mod:`pybpf._sections`), when it is one the kernel may lack."""
    row = _sections.lookup(prog.section)
    if row is None or row.probe is None or row.prog_type != prog.type:
        return None
    probe: Feature = globals()[row.probe]()
    return probe


def hooks() -> list[Feature]:
    """Every hook probe (each cached): what ``pybpf features`` lists under hooks."""
    return [kprobes(), kprobe_multi(), kprobe_session(), trampolines(), fmod_ret(), lsm(),
            tp_btf(), tcx(), netkit(), netfilter(), uprobe_multi(), uprobe_session(),
            struct_ops_link(), bpf_link_xdp(), ringbuf(), token()]


def summary() -> dict[str, Any]:
    """Everything probed, as plain data (what ``pybpf features`` prints)."""
    hooks_ = {f.name: {"supported": f.supported, "reason": f.reason} for f in hooks()}
    return {
        "kernel": os.uname().release,
        "libbpf": ffi.string(lib.libbpf_version_string()).decode(),
        "libbpf_api": libbpf_capabilities(),
        "program_types": program_types(),
        "map_types": map_types(),
        "hooks": hooks_,
    }
