"""The one table of ELF section names: what each ``SEC("...")`` prefix means to pybpf.

One :class:`Section` row per prefix (libbpf's ``section_defs[]`` shape): the
program type and expected attach type, whether the section can name its own
target (auto-attach), whether attaching needs tracefs, whether it is a return
probe, the feature probe that says whether the running kernel has the hook,
and the ``Program.attach_*`` method that attaches it.

Rows whose name the linked libbpf does not know (libbpf 1.1 predates
``tcx/``, ``netkit/``, ``uprobe.multi``, ``kprobe.session``, ``netfilter``...)
are registered with ``libbpf_register_prog_handler`` (libbpf 0.8+) before any
object is opened, so such objects open and load; pybpf attaches them itself
(:mod:`pybpf.attach`). Whether the kernel has the hook is for the kernel to say
(the row's probe), not for the library version.

Prefix forms follow libbpf: ``"name"`` matches exactly, ``"name/"`` needs a
``/target``, ``"name+"`` matches both.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from ._ffi import ffi, lib

__all__ = ["Section", "SECTIONS", "lookup", "auto_attachable", "register_handlers",
           "registered", "BPF_F_SLEEPABLE"]

BPF_F_SLEEPABLE = 1 << 4

# enum bpf_prog_type values newer than the uapi header libbpf 1.1 ships with.
PROG_NETFILTER = 32
# enum bpf_attach_type values (kernel uapi), beyond libbpf 1.1's names.
AT = {"kprobe_multi": 42, "struct_ops": 44, "netfilter": 45, "tcx_ingress": 46,
      "tcx_egress": 47, "uprobe_multi": 48, "netkit_primary": 54, "netkit_peer": 55,
      "kprobe_session": 56, "uprobe_session": 57}
_PROG_TYPES = {"sched_cls": 3, "kprobe": 2, "netfilter": PROG_NETFILTER, "struct_ops": 27}


@dataclass(frozen=True)
class Section:
    """How pybpf treats one section prefix.

    ``auto``: "" (never auto-attaches: the hook needs an argument), "yes", "/"
    (when the section names a target after a slash), ":" (when that target has a
    ``binary:symbol`` colon). ``handler``: libbpf versions before ``since`` do not
    know the name; pybpf registers it (program type ``prog_type``, expected
    attach type ``attach_type``, program ``flags``). ``probe``: the name of the
    :mod:`pybpf.features` function for the hook, if it is one the kernel may lack.
    """

    prefix: str
    prog_type: str
    method: str
    auto: str = ""
    tracefs: bool = False
    retprobe: bool = False
    probe: str | None = None
    attach_type: int | None = None
    flags: int = 0
    since: str = ""
    """First libbpf that knows this section name ("" = every libbpf pybpf supports)."""
    min_kernel: str = ""
    route: str = "libbpf"
    """How pybpf attaches it on libbpf 1.1: "libbpf" (its API), "raw" (BPF_LINK_CREATE
    built by pybpf), "netlink", "setsockopt", "perf_event_open"."""

    def matches(self, section: str) -> bool:
        p = self.prefix
        if p.endswith("/"):
            return section.startswith(p)
        if p.endswith("+"):
            base = p[:-1]
            return section == base or section.startswith(base + "/")
        return section == p

    @property
    def sample(self) -> str:
        """A section name this row matches (to ask libbpf whether it knows it)."""
        p = self.prefix
        return p + "x" if p.endswith("/") else p.rstrip("+")


def _row(prefix: str, prog_type: str, method: str, **kw: object) -> Section:
    return Section(prefix, prog_type, method, **kw)  # type: ignore[arg-type]


_TP = dict(auto="/", tracefs=True)
_KP = dict(auto="/", tracefs=True, probe="kprobes")
_UP = dict(auto=":")
_KM = dict(auto="/", probe="kprobe_multi", route="libbpf", min_kernel="5.18")
_UM = dict(auto=":", probe="uprobe_multi", route="raw", min_kernel="6.6", since="1.3")

SECTIONS: tuple[Section, ...] = (
    # --- tracing ------------------------------------------------------------------
    _row("tracepoint+", "tracepoint", "attach_tracepoint", **_TP),
    _row("tp+", "tracepoint", "attach_tracepoint", **_TP),
    _row("raw_tracepoint+", "raw_tracepoint", "attach_raw_tracepoint", auto="/"),
    _row("raw_tp+", "raw_tracepoint", "attach_raw_tracepoint", auto="/"),
    _row("raw_tracepoint.w+", "raw_tracepoint_writable", "attach_raw_tracepoint", auto="/"),
    _row("raw_tp.w+", "raw_tracepoint_writable", "attach_raw_tracepoint", auto="/"),
    _row("tp_btf+", "tracing", "attach_trace", auto="/", probe="tp_btf"),
    _row("fentry+", "tracing", "attach_trace", auto="/", probe="trampolines"),
    _row("fexit+", "tracing", "attach_trace", auto="/", probe="trampolines"),
    _row("fentry.s+", "tracing", "attach_trace", auto="/", probe="trampolines"),
    _row("fexit.s+", "tracing", "attach_trace", auto="/", probe="trampolines"),
    _row("fmod_ret+", "tracing", "attach_trace", auto="/", probe="fmod_ret"),
    _row("fmod_ret.s+", "tracing", "attach_trace", auto="/", probe="fmod_ret"),
    _row("lsm+", "lsm", "attach_trace", auto="/", probe="lsm"),
    _row("lsm.s+", "lsm", "attach_trace", auto="/", probe="lsm"),
    _row("freplace+", "ext", "attach_freplace"),
    _row("iter+", "tracing", "attach_iter", auto="/"),
    _row("iter.s+", "tracing", "attach_iter", auto="/"),
    _row("kprobe+", "kprobe", "attach_kprobe", **_KP),
    _row("kretprobe+", "kprobe", "attach_kprobe", retprobe=True, **_KP),
    _row("ksyscall+", "kprobe", "attach_ksyscall", **_KP),
    _row("kretsyscall+", "kprobe", "attach_ksyscall", retprobe=True, **_KP),
    _row("kprobe.multi+", "kprobe", "attach_kprobe_multi", attach_type=AT["kprobe_multi"],
         **_KM),
    _row("kretprobe.multi+", "kprobe", "attach_kprobe_multi", retprobe=True,
         attach_type=AT["kprobe_multi"], **_KM),
    _row("kprobe.session+", "kprobe", "attach_kprobe_multi", auto="/", probe="kprobe_session",
         attach_type=AT["kprobe_session"], since="1.5", route="raw", min_kernel="6.10"),
    _row("uprobe+", "kprobe", "attach_uprobe", **_UP),
    _row("uretprobe+", "kprobe", "attach_uprobe", retprobe=True, **_UP),
    _row("uprobe.s+", "kprobe", "attach_uprobe", flags=BPF_F_SLEEPABLE, **_UP),
    _row("uretprobe.s+", "kprobe", "attach_uprobe", retprobe=True, flags=BPF_F_SLEEPABLE,
         **_UP),
    _row("uprobe.multi+", "kprobe", "attach_uprobe_multi", attach_type=AT["uprobe_multi"],
         **_UM),
    _row("uretprobe.multi+", "kprobe", "attach_uprobe_multi", retprobe=True,
         attach_type=AT["uprobe_multi"], **_UM),
    _row("uprobe.multi.s+", "kprobe", "attach_uprobe_multi", attach_type=AT["uprobe_multi"],
         flags=BPF_F_SLEEPABLE, **_UM),
    _row("uretprobe.multi.s+", "kprobe", "attach_uprobe_multi", retprobe=True,
         attach_type=AT["uprobe_multi"], flags=BPF_F_SLEEPABLE, **_UM),
    _row("uprobe.session+", "kprobe", "attach_uprobe_multi", auto=":", probe="uprobe_session",
         attach_type=AT["uprobe_session"], since="1.6", route="raw", min_kernel="6.13"),
    _row("uprobe.session.s+", "kprobe", "attach_uprobe_multi", auto=":",
         probe="uprobe_session", attach_type=AT["uprobe_session"], flags=BPF_F_SLEEPABLE,
         since="1.6", route="raw", min_kernel="6.13"),
    _row("usdt+", "kprobe", "attach_usdt", **_UP),
    _row("perf_event", "perf_event", "attach_perf_event",
         route="perf_event_open"),
    # --- networking -------------------------------------------------------------
    _row("xdp", "xdp", "attach_xdp", probe="bpf_link_xdp"),
    _row("xdp.frags", "xdp", "attach_xdp", probe="bpf_link_xdp"),
    _row("tc", "sched_cls", "attach_tc", route="netlink"),
    _row("classifier", "sched_cls", "attach_tc", route="netlink"),
    _row("tc/ingress", "sched_cls", "attach_tcx", attach_type=AT["tcx_ingress"], probe="tcx",
         since="1.3", route="raw", min_kernel="6.6"),
    _row("tc/egress", "sched_cls", "attach_tcx", attach_type=AT["tcx_egress"], probe="tcx",
         since="1.3", route="raw", min_kernel="6.6"),
    _row("tcx/ingress", "sched_cls", "attach_tcx", attach_type=AT["tcx_ingress"], probe="tcx",
         since="1.3", route="raw", min_kernel="6.6"),
    _row("tcx/egress", "sched_cls", "attach_tcx", attach_type=AT["tcx_egress"], probe="tcx",
         since="1.3", route="raw", min_kernel="6.6"),
    _row("netkit/primary", "sched_cls", "attach_netkit", attach_type=AT["netkit_primary"],
         probe="netkit", since="1.3", route="raw", min_kernel="6.7"),
    _row("netkit/peer", "sched_cls", "attach_netkit", attach_type=AT["netkit_peer"],
         probe="netkit", since="1.3", route="raw", min_kernel="6.7"),
    _row("netfilter", "netfilter", "attach_netfilter", attach_type=AT["netfilter"],
         probe="netfilter", since="1.3", route="raw", min_kernel="6.4"),
    _row("cgroup_skb/", "cgroup_skb", "attach_cgroup"),
    _row("cgroup/", "cgroup_sock", "attach_cgroup"),
    _row("sockops", "sock_ops", "attach_cgroup"),
    _row("socket", "socket_filter", "attach_socket", route="setsockopt"),
    _row("sk_msg", "sk_msg", "attach_sockmap"),
    _row("sk_skb/", "sk_skb", "attach_sockmap"),
    _row("sk_skb", "sk_skb", "attach_sockmap"),
    _row("flow_dissector", "flow_dissector", "attach_netns"),
    _row("sk_lookup", "sk_lookup", "attach_netns"),
    # --- struct_ops (the program is attached through its map) -------------------
    _row("struct_ops+", "struct_ops", "attach_struct_ops", probe="struct_ops_link",
         min_kernel="6.4"),
    _row("struct_ops.s+", "struct_ops", "attach_struct_ops", probe="struct_ops_link",
         attach_type=0, flags=BPF_F_SLEEPABLE, since="1.2", min_kernel="6.4"),
)

# Methods by program type, for sections the table does not name (custom names
# given a type with bpf_program__set_type, libbpf's rarer aliases).
_BY_TYPE = {"tracepoint": "attach_tracepoint", "raw_tracepoint": "attach_raw_tracepoint",
            "raw_tracepoint_writable": "attach_raw_tracepoint", "kprobe": "attach_kprobe",
            "xdp": "attach_xdp", "sched_cls": "attach_tc", "socket_filter": "attach_socket",
            "perf_event": "attach_perf_event", "tracing": "attach_trace",
            "lsm": "attach_trace", "sk_msg": "attach_sockmap", "sk_skb": "attach_sockmap",
            "flow_dissector": "attach_netns", "sk_lookup": "attach_netns",
            "netfilter": "attach_netfilter", "struct_ops": "attach_struct_ops",
            "ext": "attach_freplace", "sock_ops": "attach_cgroup"}


def lookup(section: str) -> Section | None:
    """The row for ``section``: the longest matching prefix, as libbpf picks."""
    best: Section | None = None
    for row in SECTIONS:
        if row.matches(section) and (best is None or len(row.prefix) > len(best.prefix)):
            best = row
    return best


def method_for(section: str, prog_type: str) -> str | None:
    """The ``Program.attach_*`` method for a program of this section and type."""
    row = lookup(section)
    if row is not None and row.prog_type == prog_type:
        return row.method
    if prog_type.startswith("cgroup"):
        return "attach_cgroup"
    return _BY_TYPE.get(prog_type, row.method if row is not None else None)


def auto_attachable(section: str) -> bool:
    """Whether ``section`` names its own target, so ``Object.attach()`` can attach it."""
    row = lookup(section)
    if row is None or not row.auto:
        return False
    if row.auto == "yes":
        return True
    base = row.prefix.rstrip("+/")
    target = section[len(base) + 1:] if section.startswith(base + "/") else ""
    return bool(target) and (row.auto != ":" or ":" in target)


# Ways to reach one kernel event, most capable first (libbpf-tools' order: a tp_btf
# program is chosen over its raw_tp twin when the kernel has tp_btf, fentry over kprobe).
_EVENT_KINDS = {"tp_btf": ("tp", 0), "raw_tp": ("tp", 1), "raw_tracepoint": ("tp", 1),
                "tracepoint": ("tp", 2), "tp": ("tp", 2),
                "fentry": ("entry", 0), "kprobe": ("entry", 1),
                "fexit": ("exit", 0), "kretprobe": ("exit", 1)}


def event_of(section: str) -> tuple[tuple[str, str], int] | None:
    """The kernel event a tracing section reaches and the rank of its way of reaching
    it: ``tp_btf/sched_switch``, ``raw_tp/sched_switch`` and
    ``tracepoint/sched/sched_switch`` are one event ((``"tp"``, ``"sched_switch"``))
    of ranks 0, 1, 2; ``fentry/f`` and ``kprobe/f`` one entry event. None for other
    sections (or when the section names no target)."""
    prefix, _, target = section.partition("/")
    kind = _EVENT_KINDS.get(prefix)
    if kind is None or not target:
        return None
    if prefix in ("tracepoint", "tp"):
        target = target.rpartition("/")[2]
    return (kind[0], target), kind[1]


_lock = threading.Lock()
_registered: dict[str, int] = {}
_done = False


def _libbpf_knows(name: str) -> bool:
    pt = ffi.new("enum bpf_prog_type *")
    at = ffi.new("enum bpf_attach_type *")
    return bool(lib.libbpf_prog_type_by_name(name.encode(), pt, at) == 0)


def register_handlers() -> dict[str, int]:
    """Register every row the linked libbpf does not know (once per process).

    Costs a libbpf name lookup per row the first time; then nothing. Returns
    section prefix -> libbpf handler id of what was registered.
    """
    global _done
    with _lock:
        if _done:
            return dict(_registered)
        for row in SECTIONS:
            if not row.since or row.prog_type not in _PROG_TYPES:
                continue
            if _libbpf_knows(row.sample):
                continue
            hid = lib.pybpf_register_section(row.prefix.encode(), _PROG_TYPES[row.prog_type],
                                             row.attach_type or 0, row.flags)
            if hid >= 0:
                _registered[row.prefix] = int(hid)
        _done = True
        return dict(_registered)


def registered() -> dict[str, int]:
    """Section prefixes pybpf registered with libbpf (prefix -> handler id)."""
    return dict(register_handlers())


# --- .struct_ops.link on libbpf < 1.2 ------------------------------------------------

BPF_F_LINK = 1 << 13
_STRUCT_OPS_LINK = b".struct_ops.link\0"


def for_libbpf(data: bytes, section_names: Iterable[str] | None = None
               ) -> tuple[bytes, tuple[str, ...]]:
    """Adapt an object's ELF image to the linked libbpf before it opens it.

    libbpf before 1.2 ignores ``SEC(".struct_ops.link")`` (struct_ops maps registered
    by BPF links): the section is renamed ``.struct_ops`` in the section-name table
    (in place: ``.struct_ops\\0ink``) and the names of its maps are returned, to get
    ``BPF_F_LINK`` with :func:`after_open`. Any other image comes back unchanged.
    ``section_names`` (the object's, when the caller has them: ``_validate`` returns
    them) spares the scan of the image for the section name; a parse only when present.
    """
    if section_names is not None:
        if ".struct_ops.link" not in section_names:
            return data, ()
    elif _STRUCT_OPS_LINK not in data:
        return data, ()
    if (lib.libbpf_major_version(), lib.libbpf_minor_version()) >= (1, 2):
        return data, ()
    import struct

    if data[:6] != b"\x7fELF\x02\x01":  # ELF64 little-endian: what BPF objects are
        return data, ()
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    heads = [struct.unpack_from("<IIQQQQII", data, shoff + i * shentsize)
             for i in range(shnum)]
    str_off, str_size = heads[shstrndx][4], heads[shstrndx][5]

    def name(i: int) -> bytes:
        start = str_off + heads[i][0]
        return data[start:data.index(b"\0", start)]

    names = [name(i) for i in range(shnum)]
    if b".struct_ops" in names:
        return data, ()  # libbpf < 1.2 takes one struct_ops section: leave it alone
    link_secs = {i for i, n in enumerate(names) if n == b".struct_ops.link"}
    out = bytearray(data)
    # the section-name table, and BTF (its DATASEC is named after the section)
    ranges = [(str_off, str_off + str_size)] + [
        (heads[i][4], heads[i][4] + heads[i][5]) for i, n in enumerate(names) if n == b".BTF"]
    for lo, hi in ranges:
        pos = lo
        while True:
            pos = out.find(_STRUCT_OPS_LINK, pos, hi)
            if pos < 0:
                break
            out[pos + len(b".struct_ops")] = 0  # ".struct_ops\0ink": shared tails too
            pos += len(_STRUCT_OPS_LINK)
    maps: list[str] = []
    for h in heads:
        if h[1] != 2:  # SHT_SYMTAB
            continue
        sym_off, sym_size, strtab = h[4], h[5], heads[h[6]][4]
        for at in range(sym_off, sym_off + sym_size, 24):
            st_name, st_info, _, st_shndx = struct.unpack_from("<IBBH", data, at)
            if st_shndx in link_secs and st_info & 0xF == 1:  # STT_OBJECT
                start = strtab + st_name
                maps.append(data[start:data.index(b"\0", start)].decode())
    return bytes(out), tuple(maps)


def after_open(obj_ptr: object, link_maps: tuple[str, ...]) -> None:
    """Give ``BPF_F_LINK`` to the struct_ops maps :func:`for_libbpf` found (before load)."""
    for name in link_maps:
        m = lib.bpf_object__find_map_by_name(obj_ptr, name.encode())
        if m != ffi.NULL:
            lib.bpf_map__set_map_flags(m, lib.bpf_map__map_flags(m) | BPF_F_LINK)
