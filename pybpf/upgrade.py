"""Live upgrade: replace a running object by a new build of it, losing no event, no
packet and no counter (:meth:`pybpf.Object.upgrade`, ``pybpf upgrade``).

What happens to each map of the new build (decided from BTF before anything changes):

* **reused** -- same name, same type, identical key and value layout, same size and
  flags: the new object uses the old map itself (:meth:`pybpf.OpenMap.reuse`, libbpf's
  ``bpf_map__reuse_fd``, before load), with its contents; a ring buffer keeps its
  consumers, which read on. The old object stays its holder until the switch is
  committed (:meth:`pybpf.Object.take_over`), so a failed upgrade never closes it.
* **migrated** -- the value layout changed (or the size or flags): entries are copied
  by BTF member name. Added fields start at zero, removed fields are dropped, an
  integer that widens is converted, one that narrows is checked. What the old version
  writes while the switch is under way is added in after it has stopped (integers as
  counters: new value + old final - old snapshot).
* **created** -- new maps, the new build's constants (``.rodata``, ``.kconfig``) and
  maps that hold programs (prog arrays, maps of maps, struct_ops).
* **refused** -- a changed key layout or map type, a value that does not fit, a map
  whose contents cannot be copied (a ring buffer whose size changed...): the whole
  upgrade is refused before anything changes, unless ``migrate=`` has a function for
  that map. Each refusal names the map, the field and the reason.

Links: the new programs are loaded before anything is detached. Links the kernel can
update (XDP, tcx, cgroup, netns, netkit, sockmap) are switched atomically
(``BPF_LINK_UPDATE``). The others (tracepoints, raw tracepoints, uprobes...) get the
new program attached beside the old one, then the old one detached; an object built
with the **generation guard** (``#define PYBPF_GENERATIONS`` before including
``pybpf_common.h``, ``PYBPF_GUARD(ret)`` at the top of each such program) switches
from old to new with one write to a shared map, each event handled exactly once. An
object without the guard runs both versions for the window reported as
``both_attached_seconds``: every event in it is handled by both (none by neither).
If any step fails, the old version stays live and attached.

Pinned deployments (``pybpf upgrade``, :func:`upgrade_pinned`): maps are pinned under
:func:`pin_name` (the map name, "." made "_"), links under the names the old ones
had; the pins of maps the new build dropped are removed, in the same directory too,
and listed in :attr:`UpgradeReport.removed_pins`.

This module drives objects, maps and links through their public interface alone
(``tests/test_layering.py`` checks it): :meth:`pybpf.OpenMap.reuse`,
:meth:`pybpf.Object.take_over`, :meth:`pybpf.Link.update_program` /
:meth:`pybpf.Link.update_prog_fd`, :attr:`pybpf.Link.owner` / :attr:`pybpf.Link.fd`.
"""

from __future__ import annotations

import errno as _errno
import mmap
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._fd import bpf_fd_kind
from ._ffi import error_for, ffi, lib
from ._migrate import MapPlan, Migration, Refused, copy_map, fold_map, layouts_equal, plan_map
from .btf import BTF
from .errors import AttachError, BPFError, UpgradeError
from .link import Link
from .mapkinds import create_map, kernel_btf_by_id
from .maps import Map, possible_cpus

__all__ = ["MapReport", "LinkReport", "UpgradeReport", "Migration", "GENERATION_MAP",
           "layouts_equal", "wait_for_running_programs", "upgrade_object", "upgrade_pinned",
           "PinnedSide", "UPDATABLE_LINKS", "link_kind", "pin_name"]

GENERATION_MAP = "pybpf_generation"  # mmapable array, one u64 word (see pybpf_common.h)
GENERATION_HANDLED = "pybpf_gen_handled"  # per-CPU u32: the first runner's decision
GENERATION_VAR = "pybpf_gen"  # const volatile __u32 in .rodata: this build's generation
_GEN_MASK = 0x7FFFFFFF
_PAIR = 1 << 63

# Link kinds BPF_LINK_UPDATE switches atomically (kernel: link_update in each kind).
UPDATABLE_LINKS = frozenset({"xdp", "tcx", "cgroup", "netns", "netkit", "sockmap"})


# --- the report ---------------------------------------------------------------------
@dataclass(frozen=True)
class MapReport:
    """What the upgrade did with one map: ``action`` is "reused", "migrated",
    "created", "refused", or "dropped" (an old map the new build does not have, closed
    with the old object); ``reason`` says why; ``field`` names the member a refusal
    is about; ``entries`` counts the entries copied."""

    name: str
    action: str
    reason: str = ""
    field: str | None = None
    entries: int = 0
    folded: int = 0
    """Entries the old version changed during the switch, added in afterwards."""


@dataclass(frozen=True)
class LinkReport:
    """What the upgrade did with one link: ``action`` is "updated" (BPF_LINK_UPDATE,
    atomic), "generation-switched" (both attached, one write switched) or
    "re-attached" (both attached for the window, no guard)."""

    program: str
    target: str
    kind: str
    action: str


@dataclass
class UpgradeReport:
    """The outcome of an upgrade: per map, per link, and how long it took."""

    maps: dict[str, MapReport] = field(default_factory=dict)
    links: list[LinkReport] = field(default_factory=list)
    generation: int | None = None
    """The new build's generation (objects with the guard), else None."""
    seconds: float = 0.0
    """Wall time of the whole upgrade (plan, load, copy, switch, fold)."""
    both_attached_seconds: float = 0.0
    """How long old and new programs were both attached to a hook that cannot be
    updated (0 when every link was updated atomically)."""
    warnings: list[str] = field(default_factory=list)
    """Problems after the switch was committed (the new version is live)."""
    removed_pins: list[str] = field(default_factory=list)
    """Pins of maps the new build dropped, removed (``pybpf upgrade``: the directory
    then holds the new deployment alone)."""

    def __str__(self) -> str:
        lines = [f"upgrade: {self.seconds * 1e3:.1f} ms, both attached "
                 f"{self.both_attached_seconds * 1e3:.2f} ms"
                 + (f", generation {self.generation}" if self.generation is not None else "")]
        for m in self.maps.values():
            extra = (f" ({m.entries} entries, {m.folded} folded)" if m.action == "migrated"
                     else "")
            why = f": {m.reason}" if m.reason else ""
            lines.append(f"  map {m.name}: {m.action}{extra}{why}")
        for ln in self.links:
            lines.append(f"  link {ln.program} -> {ln.target} [{ln.kind}]: {ln.action}")
        for path in self.removed_pins:
            lines.append(f"  removed pin {path}")
        return "\n".join(lines)


class _OldSide(Protocol):
    """What is running now: a loaded Object (:class:`_ObjectSide`), or a pinned
    deployment (:class:`PinnedSide`)."""

    name: str

    def check(self) -> None: ...

    def live_maps(self) -> Mapping[str, Map]: ...

    def map_btf(self, m: Map) -> BTF | None: ...

    def old_links(self) -> list[Link]: ...

    def program_of(self, link: Link) -> str: ...

    def restorer(self, link: Link) -> Callable[[], None]: ...

    def detach(self, link: Link) -> None: ...

    def commit(self, new: Any, updated: list[Link]) -> dict[str, str]: ...


# --- waiting for programs in flight -------------------------------------------------
def wait_for_running_programs() -> None:
    """Return once every non-sleepable BPF program that was running has finished (an
    RCU grace period: the kernel waits for one on every update of a map of maps).
    Costs two map creations and one update (a few milliseconds)."""
    inner = create_map("array", 4, 4, 1, name="pybpf_rcu_in")
    try:
        outer = create_map("array_of_maps", 4, 4, 1, name="pybpf_rcu", inner_map=inner)
        try:
            key = ffi.new("__u32 *", 0)
            with outer.owner as ofd, inner.owner as ifd:
                val = ffi.new("__u32 *", ifd)
                if lib.bpf_map_update_elem(ofd, key, val, 0) < 0:
                    raise error_for(ffi.errno, "cannot wait for running BPF programs")
        finally:
            outer.close()
    finally:
        inner.close()


# --- the generation word ------------------------------------------------------------
class _GenerationWord:
    """The shared ``pybpf_generation`` map, written with one aligned 8-byte store."""

    def __init__(self, m: Map) -> None:
        with m.owner as fd:
            self._mm = mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
        self._view = memoryview(self._mm).cast("Q")

    def read(self) -> tuple[int, int, bool]:
        w = int(self._view[0])
        return w & _GEN_MASK, (w >> 32) & _GEN_MASK, bool(w & _PAIR)

    def write(self, active: int, last: int = 0, pair: bool = False) -> None:
        self._view[0] = (active & _GEN_MASK) | ((last & _GEN_MASK) << 32) | (
            _PAIR if pair else 0)

    def close(self) -> None:
        self._view.release()
        self._mm.close()


def guarded(maps: Iterable[str]) -> bool:
    return GENERATION_MAP in set(maps)


# Link kinds whose programs the kernel runs in attach order (a new one after the old);
# for the rest (uprobes: a new consumer goes first) the old program runs last.
# Programs on one hook run in attach order (a new one after the old) for tracepoints
# (one prog array per event), raw tracepoints and kprobes; a uprobe's consumers run
# newest first (tested: tests/test_upgrade.py, both kinds).
_NEWEST_FIRST_SECTIONS = ("uprobe", "uretprobe", "usdt")


def link_kind(link: Link) -> str:
    """The kernel's kind of ``link`` ("xdp", "perf_event"...), or "legacy" for a hook
    that is not a BPF link (netlink tc, socket filter), or "libbpf" for one without a
    single fd (USDT). One syscall."""
    try:
        return link.info().type
    except BPFError:
        return "legacy"


def refusal_error(old_name: str, refusals: list[tuple[str, str | None, str]]) -> UpgradeError:
    text = "; ".join(f"map {m!r}" + (f" field {f!r}" if f else "") + f": {r}"
                     for m, f, r in refusals)
    return UpgradeError(f"upgrade of {old_name!r} refused, nothing changed (the old version "
                        f"is still live): {text}", refusals=refusals)




# --- the driver ---------------------------------------------------------------------
@dataclass
class _LinkPlan:
    link: Link
    program: str
    kind: str
    new_program: Any
    attach: Callable[[Any], Link] | None  # None: BPF_LINK_UPDATE
    new_link: Link | None = None
    restore: Callable[[], None] | None = None


class _ObjectSide:
    """The old side of :meth:`pybpf.Object.upgrade`: a loaded Object."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        self.name: str = obj.name

    def live_maps(self) -> Mapping[str, Map]:
        return dict(self.obj.maps)

    def map_btf(self, m: Map) -> BTF | None:
        try:
            return self.obj.btf  # type: ignore[no-any-return]
        except BPFError:
            return None

    def old_links(self) -> list[Link]:
        return list(self.obj.links)

    def program_of(self, link: Link) -> str:
        return link.program

    def check(self) -> None:
        self.obj.owner.get()  # ClosedError once closed
        if not self.obj.loaded:
            raise UpgradeError(f"upgrade: the old object {self.name!r} is not loaded")

    def restorer(self, link: Link) -> Callable[[], None]:
        prog = self.obj.programs[link.program]
        return lambda: link.update_program(prog)

    def detach(self, link: Link) -> None:
        link.detach()

    def commit(self, new: Any, updated: list[Link]) -> dict[str, str]:
        new.take_over(self.obj, updated)  # reused maps, updated links, readers
        self.obj.close()
        return {}


def _pin_link(link: Link, path: str) -> None:
    """Pin ``link`` at ``path`` (a second pin of a pinned link too; one syscall)."""
    with link.owner:
        if lib.bpf_obj_pin(link.fd, path.encode()) < 0:
            raise error_for(ffi.errno, f"cannot pin link {link.program!r} at {path}",
                            kind=AttachError, program=link.program)


def _prog_name(fd: int) -> str:
    """The kernel's name of the program ``fd`` (its first 15 characters; one syscall)."""
    info = ffi.new("struct bpf_prog_info *")
    size = ffi.new("__u32 *", ffi.sizeof("struct bpf_prog_info"))
    if lib.bpf_obj_get_info_by_fd(fd, info, size) < 0:
        raise error_for(ffi.errno, "cannot read program info")
    return str(ffi.string(info.name).decode(errors="replace"))


class PinnedSide:
    """The old side of ``pybpf upgrade``: a pinned deployment, a bpffs directory with
    maps pinned under their names and links pinned under any name (the firewall's
    ``pybpf firewall attach --pin`` makes one). Holds an fd of each until closed."""

    def __init__(self, old_dir: str, new_dir: str | None = None) -> None:
        self.old_dir = os.path.abspath(old_dir)
        self.new_dir = os.path.abspath(new_dir or old_dir)
        self.name = self.old_dir
        self.maps: dict[str, Map] = {}
        self.links: dict[str, Link] = {}  # pin file name -> link
        self._progs: dict[int, tuple[str, int]] = {}  # link id -> (program name, prog fd)
        try:
            entries = sorted(os.listdir(self.old_dir))
        except OSError as e:
            raise UpgradeError(f"upgrade: cannot read the pin directory {old_dir}: "
                               f"{e.strerror}", err=e.errno or _errno.ENOENT) from None
        try:
            for entry in entries:
                path = os.path.join(self.old_dir, entry)
                fd = lib.bpf_obj_get(path.encode())
                if fd < 0:
                    continue  # not a BPF object
                kind = bpf_fd_kind(fd)
                os.close(fd)
                if kind == "map":
                    self.maps[entry] = Map.open_pinned(path)
                elif kind == "link":
                    link = Link.open_pinned(path)
                    link.target = f"pinned {path}"
                    self.links[entry] = link
                    info = link.info()
                    pfd = lib.bpf_prog_get_fd_by_id(info.prog_id)
                    if pfd < 0:
                        raise error_for(ffi.errno, f"cannot open program id {info.prog_id} "
                                                   f"of link {path}")
                    link.program = _prog_name(int(pfd))
                    self._progs[id(link)] = (link.program, int(pfd))
        except BaseException:
            self.close()
            raise
        if not self.maps and not self.links:
            raise UpgradeError(f"upgrade: {old_dir} has no pinned maps or links",
                               err=_errno.ENOENT)

    def check(self) -> None:
        pass

    def live_maps(self) -> Mapping[str, Map]:
        return dict(self.maps)

    def map_btf(self, m: Map) -> BTF | None:
        btf_id = m.info().btf_id
        return kernel_btf_by_id(btf_id) if btf_id else None

    def old_links(self) -> list[Link]:
        return list(self.links.values())

    def program_of(self, link: Link) -> str:
        return link.program

    def restorer(self, link: Link) -> Callable[[], None]:
        name, pfd = self._progs[id(link)]
        return lambda: link.update_prog_fd(pfd, name)

    def _pin_of(self, link: Link) -> str:
        return os.path.join(self.old_dir, next(n for n, lk in self.links.items() if lk is link))

    def detach(self, link: Link) -> None:
        os.unlink(self._pin_of(link))  # the pin held it attached
        link.detach()

    def commit(self, new: Any, updated: list[Link]) -> dict[str, str]:
        """Pin the new object's maps and links in ``new_dir`` (old pins in, new pins
        out): maps under their names, links under the names the old ones had. ``new``
        becomes the holder of the pinned maps it reused. The old map pins the new
        build does not pin (maps it dropped) are removed, in the same directory too:
        ``new_dir`` then holds the new deployment alone, and a later build that
        brings the name back does not find a stale map there. Returns them
        (map name -> removed pin path)."""
        new.take_over(None)
        os.makedirs(self.new_dir, exist_ok=True)
        same = self.new_dir == self.old_dir
        pinned: set[str] = set()  # the names the new deployment has pinned
        for name, m in new.maps.items():
            if m.internal and (".rodata" in name or ".kconfig" in name):
                continue
            pinned.add(pin_name(name))
            path = os.path.join(self.new_dir, pin_name(name))
            old = self.maps.get(pin_name(name))
            if old is not None and old is m and same:
                continue  # reused, already pinned there
            if old is None and os.path.exists(path):
                continue
            if same and os.path.exists(path):
                os.unlink(path)
            m.pin(path)
        for entry, link in self.links.items():
            if link in updated and not same:
                _pin_link(link, os.path.join(self.new_dir, entry))
                os.unlink(os.path.join(self.old_dir, entry))
        for entry, link in self.links.items():
            if link in updated:
                continue
            prog = new.programs.get(link.program)
            fresh = [lk for lk in new.links if prog is not None and lk.program == prog.name]
            if fresh:
                _pin_link(fresh[0], os.path.join(self.new_dir, entry))
        removed: dict[str, str] = {}
        for name in self.maps:
            if same and name in pinned:
                continue  # the new build's map is pinned there now
            path = os.path.join(self.old_dir, name)
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            if name not in pinned:  # else moved to new_dir
                removed[name] = path
        if not same:
            try:
                os.rmdir(self.old_dir)
            except OSError:
                pass
        return removed

    def close(self) -> None:
        for _, pfd in self._progs.values():
            os.close(pfd)
        self._progs = {}
        for m in self.maps.values():
            if m.object is None:  # not taken over by the new build (commit)
                m.close()
        for link in self.links.values():
            link.detach()  # closes this fd; a pin still holds the link


def upgrade_pinned(new: Any, old_dir: str, new_dir: str | None = None) -> UpgradeReport:
    """Live upgrade of the deployment pinned in ``old_dir`` to the opened (not loaded)
    Object ``new``, whose maps and links are pinned in ``new_dir`` (default: the same
    directory) at the end. Links whose sections do not name their target must be
    updatable (XDP, tcx...). ``new`` stays open: closing it leaves the pins."""
    side = PinnedSide(old_dir, new_dir)
    try:
        return _run(new, side, {}, {})
    finally:
        side.close()


def pin_name(map_name: str) -> str:
    """The file name a map is pinned under in a deployment's directory: its name with
    "." made "_" (bpffs refuses dots; libbpf's own pin paths do the same)."""
    return map_name.replace(".", "_")


def _match_pins(old: Mapping[str, Map], new_names: Iterable[str]) -> dict[str, Map]:
    """``old`` keyed by the new build's map names where a pin name stands for one
    (``upgrade__bss`` is ``upgrade_.bss``)."""
    by_pin = {pin_name(n): n for n in new_names if n not in old}
    return {by_pin.get(k, k): m for k, m in old.items()}


def _auto_attach(prog: Any) -> Link:
    return prog.attach_auto()  # type: ignore[no-any-return]


def _plan_links(side: _OldSide, new: Any, reattach: Mapping[str, Callable[[Any], Link]],
                refusals: list[tuple[str, str | None, str]]) -> list[_LinkPlan]:
    plans = []
    for link in side.old_links():
        name = side.program_of(link)
        kind = link_kind(link)
        newp = new.programs.get(name) or next(  # kernel names keep 15 characters
            (p for n, p in new.programs.items() if len(name) == 15 and n[:15] == name), None)
        if newp is None:
            refusals.append((f"link {link.target}", None, f"program {name!r} is attached "
                             "but the new build has no program of that name"))
            continue
        if not newp.autoload:
            refusals.append((f"link {link.target}", None, f"program {name!r} is attached "
                             "but the new build does not load it (autoload is off)"))
        elif kind in UPDATABLE_LINKS:
            plans.append(_LinkPlan(link, name, kind, newp, None))
        elif name in reattach:
            plans.append(_LinkPlan(link, name, kind, newp, reattach[name]))
        elif newp.auto_attachable:
            plans.append(_LinkPlan(link, name, kind, newp, _auto_attach))
        else:
            refusals.append((f"link {link.target}", None, f"a {kind} link cannot be updated "
                             f"and section {newp.section!r} does not name where to attach "
                             f"{name!r}: pass reattach={{{name!r}: fn}}"))
    return plans


def upgrade_object(new: Any, old: Any, *, migrate: Mapping[str, Migration],
                   reattach: Mapping[str, Callable[[Any], Link]]) -> UpgradeReport:
    """The live upgrade of loaded Object ``old`` to opened Object ``new`` (called by
    ``new.load()``): plan, load, copy, switch, fold, hand over; ``old`` is closed
    at the end. On any failure before the switch is committed, everything done is
    undone and ``old`` stays live and attached."""
    return _run(new, _ObjectSide(old), migrate, reattach)


def _run(new: Any, side: _OldSide, migrate: Mapping[str, Migration],
         reattach: Mapping[str, Callable[[Any], Link]]) -> UpgradeReport:
    side.check()
    t0 = time.perf_counter()
    report = UpgradeReport()
    refusals: list[tuple[str, str | None, str]] = []
    old_maps = _match_pins(side.live_maps(), new.maps)
    try:
        new_btf: BTF | None = new.btf
    except BPFError:
        new_btf = None
    plans: dict[str, MapPlan] = {}
    for name, om in new.maps.items():
        prev = old_maps.get(name)
        p = plan_map(prev, side.map_btf(prev) if prev is not None else None, om, new_btf,
                     migrate.get(name))
        plans[name] = p
        if p.action == "refused":
            refusals.append((name, p.field_, p.reason))
    for name in migrate:
        if name not in plans:
            refusals.append((name, None, "migrate= names a map the new build does not have"))
    links = _plan_links(side, new, reattach, refusals)
    if refusals:
        raise refusal_error(side.name, refusals)

    # The generation guard: the new build's generation, set before load.
    gen_old_map = old_maps.get(GENERATION_MAP)
    word: _GenerationWord | None = None
    g0 = g1 = 0
    if guarded(new.maps):
        if gen_old_map is not None and plans[GENERATION_MAP].action == "reused":
            word = _GenerationWord(gen_old_map)
            g0 = word.read()[0]
        g1 = (g0 + 1) & _GEN_MASK
        new.rodata[GENERATION_VAR] = g1
        report.generation = g1

    reused = {n: p.old for n, p in plans.items() if p.action == "reused" and p.old is not None}
    try:
        for n, m in reused.items():
            new.maps[n].reuse(m)  # obj.maps[n] of the new build will be m itself
        new.load()
    except BaseException:
        if word is not None:
            word.close()
        raise
    done_updates: list[_LinkPlan] = []
    try:
        migrated = [p for p in plans.values() if p.action == "migrated"]
        for p in migrated:
            copy_map(p, new.maps[p.name])
        if word is None and guarded(new.maps):
            word = _GenerationWord(new.maps[GENERATION_MAP])  # the old build had none
        both = _switch(side, new, links, word, g0, g1, done_updates, report)
        report.both_attached_seconds = both
    except BaseException as e:
        _undo(links, done_updates, word, g0)  # new keeps no reused map: not its holder
        if isinstance(e, Refused):
            raise refusal_error(side.name, [(e.map, e.field, e.reason)]) from None
        raise
    finally:
        if word is not None:
            word.close()
    # Committed: the new version is the live one.
    wait_for_running_programs()
    for p in migrated:
        try:
            fold_map(p, new.maps[p.name])
        except (Refused, BPFError, KeyError) as e:
            # committed: the new version stays live; the report says what is missing
            report.warnings.append(f"map {p.name!r}: what the old version wrote during "
                                   f"the switch was not all added in: {e}")
    for name, p in plans.items():
        report.maps[name] = MapReport(name, p.action, p.reason, p.field_, p.entries,
                                      p.folded)
    for name in old_maps.keys() - plans.keys():
        report.maps[name] = MapReport(name, "dropped", "not in the new build")
    removed = side.commit(new, [lp.link for lp in links if lp.attach is None])
    for name, path in removed.items():
        if report.maps[name].action == "dropped":
            report.maps[name] = MapReport(name, "dropped", f"not in the new build; its pin "
                                                           f"{path} was removed")
        report.removed_pins.append(path)
    report.seconds = time.perf_counter() - t0
    return report


def _order(links: list[_LinkPlan], g0: int, g1: int, report: UpgradeReport) -> int:
    """The generation whose programs the kernel runs last for one event: the new one,
    but for uprobes (whose newest consumer runs first)."""
    newest_first = {lp.new_program.section.startswith(_NEWEST_FIRST_SECTIONS)
                    or lp.kind == "uprobe_multi" for lp in links if lp.attach is not None}
    if len(newest_first) > 1:
        report.warnings.append("programs on uprobes and on other hooks in one object: the "
                               "generation guard orders them as uprobes, so events on the "
                               "other hooks from the switch to one RCU grace period later "
                               "may be handled twice")
    return g0 if True in newest_first else g1


def _switch(side: _OldSide, new: Any, links: list[_LinkPlan], word: _GenerationWord | None,
            g0: int, g1: int, done: list[_LinkPlan], report: UpgradeReport) -> float:
    """Switch every link; returns how long old and new were both attached."""
    for lp in links:
        if lp.attach is None:
            lp.restore = side.restorer(lp.link)
            lp.link.update_program(lp.new_program)
            done.append(lp)
            report.links.append(LinkReport(lp.program, lp.link.target, lp.kind, "updated"))
    again = [lp for lp in links if lp.attach is not None]
    guard_both = word is not None and GENERATION_MAP in side.live_maps()
    last = _order(links, g0, g1, report)
    if not again:
        if word is not None:
            word.write(g1)
        return 0.0
    if guard_both:
        assert word is not None
        handled = new.maps.get(GENERATION_HANDLED)
        if handled is not None:  # nobody reads it while the word says "one generation"
            handled.update(bytes(4), bytes(8 * possible_cpus()))
        word.write(g0, last, True)
    t_both = time.perf_counter()
    for lp in again:
        assert lp.attach is not None
        lp.new_link = lp.attach(lp.new_program)
        done.append(lp)
    if word is not None:
        word.write(g1, last, guard_both)  # the switch: one 8-byte store
        if guard_both:
            wait_for_running_programs()
            word.write(g1)
    for lp in again:
        side.detach(lp.link)
        report.links.append(LinkReport(lp.program, lp.link.target, lp.kind,
                                       "generation-switched" if guard_both else "re-attached"))
    return time.perf_counter() - t_both


def _undo(links: list[_LinkPlan], done: list[_LinkPlan], word: _GenerationWord | None,
          g0: int) -> None:
    """Put the old version back: links updated back, new links detached, generation."""
    for lp in reversed(done):
        try:
            if lp.attach is None and lp.restore is not None:
                lp.restore()
            elif lp.new_link is not None:
                lp.new_link.detach()
        except BPFError:
            pass
    if word is not None:
        try:
            word.write(g0)
        except (ValueError, BPFError):
            pass
