"""Shared machinery of the shipped probes: BTF value decoding, scoping, the probe session.

:func:`decode` turns bytes into Python values by a BTF type (ints, strings for
char arrays, lists, dicts for structs). :class:`Scope` says which tasks a probe
watches (one pid, a cgroup v2 subtree, or a process tree), set as ``.rodata``
before load. :class:`ProbeSession` opens a shipped probe, configures, loads and
attaches it, and streams its ring buffer as decoded records.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .. import Object, probe_path
from .._args import c_int
from ..btf import BTF, BTFKind, BTFType
from ..errors import BPFError
from ..maps import Map, possible_cpus
from ..ringbuf import RingBuffer
from ..types import _RawCodec, codec_for, plain

__all__ = ["decode", "struct_layout", "type_name", "ringbuf_event_type", "Scope", "ProbeSession",
           "cgroup2_mount", "read_percpu_u64", "raw_items", "raw_keys", "table", "pump",
           "announce", "stream"]


# --- BTF values ------------------------------------------------------------------
def decode(btf: BTF, type_id: int, data: bytes, *, enum_names: bool = False) -> Any:
    """Decode ``data`` as the BTF type ``type_id`` into plain JSON-able values: the
    type's :mod:`pybpf.types` codec, then :func:`pybpf.types.plain` (structs as dicts,
    char arrays as ``str``, enums as ``int`` or their name with ``enum_names``).
    A section (``.bss``, ``.data``...) gives its variables by name; short data is read
    as if zero-padded; types without a value (``void``...) give None or hex."""
    t = btf.resolve(type_id)
    if t.kind == BTFKind.DATASEC:  # an internal map's value: its variables
        return {var.name: decode(btf, var.type, data[var.offset:var.offset + var.size],
                                 enum_names=enum_names)
                for var in t.members if btf.types[var.type].kind == BTFKind.VAR}
    if t.kind == BTFKind.VOID:
        return None
    codec = codec_for(btf, type_id)
    if type(codec) is _RawCodec:  # no value representation (fwd, func...)
        return bytes(data[:codec.size]).hex()
    if len(data) < codec.size:
        data = bytes(data) + bytes(codec.size - len(data))
    return plain(codec.decode(data, 0), enum_names=enum_names)


def type_name(btf: BTF, type_id: int) -> str:
    """C spelling of a BTF type, e.g. ``const volatile __u32``, ``char[16]``."""
    t = btf.types[type_id]
    k = t.kind
    if k == BTFKind.VOID:
        return "void"
    if k in (BTFKind.INT, BTFKind.FLOAT, BTFKind.TYPEDEF):
        return t.name
    if k in (BTFKind.STRUCT, BTFKind.UNION, BTFKind.ENUM, BTFKind.ENUM64, BTFKind.FWD):
        kw = {BTFKind.STRUCT: "struct", BTFKind.UNION: "union", BTFKind.FWD: "struct"}.get(
            k, "enum")
        return f"{kw} {t.name or '<anon>'}"
    if k in (BTFKind.CONST, BTFKind.VOLATILE, BTFKind.RESTRICT):
        return f"{k.name.lower()} {type_name(btf, t.type)}"
    if k == BTFKind.TYPE_TAG:
        return type_name(btf, t.type)
    if k == BTFKind.PTR:
        return f"{type_name(btf, t.type)} *"
    if k == BTFKind.ARRAY:
        return f"{type_name(btf, t.type)}[{t.nelems}]"
    if k == BTFKind.FUNC_PROTO:
        return "function"
    if k == BTFKind.VAR:
        return type_name(btf, t.type)
    return t.name or k.name.lower()


def struct_layout(btf: BTF, name: str) -> BTFType:
    """The STRUCT called ``name`` in ``btf`` (LookupError if absent)."""
    t = btf.find(name, BTFKind.STRUCT)
    if t is None:
        raise LookupError(f"no struct {name} in the object's BTF")
    return t


def ringbuf_event_type(btf: BTF, map_name: str) -> BTFType | None:
    """The record type a ring buffer carries, as named by ``PYBPF_EVENT_TYPE(map, type)``
    (a ``__pybpf_event__<map>`` pointer in the object's BTF), else None."""
    var = btf.find(f"__pybpf_event__{map_name}", BTFKind.VAR)
    if var is None:
        return None
    t = btf.resolve(var.type)
    if t.kind != BTFKind.PTR:
        return None
    return btf.resolve(t.type)


def raw_items(m: Map) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) bytes of every entry: :meth:`Map.items_raw` (the one walk)."""
    return m.items_raw()


def raw_keys(m: Map) -> list[bytes]:
    """Every key as bytes: :meth:`Map.keys` of the raw layer (the one walk)."""
    return list(Map.keys(m))


def read_percpu_u64(m: Map, key: bytes = b"\0\0\0\0") -> int:
    """Sum of a per-CPU u64 counter over every possible CPU (one syscall)."""
    raw = m.lookup(key)
    if raw is None:
        return 0
    n = possible_cpus()
    return sum(int.from_bytes(raw[i * 8:i * 8 + 8], "little") for i in range(n))


def table(rows: Sequence[Sequence[str]], *, right: Iterable[int] = ()) -> str:
    """Rows as aligned columns (the first row is the header); ``right`` aligns columns
    right by index."""
    if not rows:
        return ""
    r_cols = set(right)
    ncol = max(len(r) for r in rows)
    widths = [max((len(r[i]) for r in rows if i < len(r)), default=0) for i in range(ncol)]
    lines = []
    for r in rows:
        cells = [c.rjust(widths[i]) if i in r_cols else c.ljust(widths[i])
                 for i, c in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


# --- scope -------------------------------------------------------------------------
def cgroup2_mount() -> str | None:
    """Where the cgroup v2 hierarchy is mounted (from /proc/mounts), or None."""
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == "cgroup2":
                    return parts[1].replace("\\040", " ")
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class Scope:
    """Which tasks a probe reports: all (the default), or restricted to

    ``pid`` (one process), ``cgroup`` (a cgroup v2 directory and everything
    below it), or ``root_pid`` (that process and its descendants, found by
    walking ``real_parent`` in the kernel, up to 32 levels).
    """

    pid: int | None = None
    cgroup: str | None = None
    root_pid: int | None = None

    def __post_init__(self) -> None:
        if self.pid is not None:
            pid_filter(self.pid, "scope: pid")
        if self.root_pid is not None:
            pid_filter(self.root_pid, "scope: root_pid")

    def rodata(self) -> dict[str, int]:
        """The ``.rodata`` values of pybpf_scope.h for this scope."""
        out: dict[str, int] = {}
        if self.pid is not None:
            out["targ_pid"] = self.pid
        if self.root_pid is not None:
            out["scope_root_tgid"] = self.root_pid
        if self.cgroup is not None:
            cgid, level = cgroup_id_level(self.cgroup)
            out["scope_cgroup_id"] = cgid
            out["scope_cgroup_level"] = level
        return out


PID_MAX_LIMIT = 4 * 1024 * 1024  # the kernel's ceiling for pid_max (64-bit)


def pid_filter(value: Any, what: str = "pid") -> int:
    """A process id a probe can filter on: 1 to PID_MAX_LIMIT (0 would mean "every
    process" to the BPF side, a negative one "none"). BPFTypeError/BPFValueError."""
    return c_int(value, what, "s32", lo=1, hi=PID_MAX_LIMIT,
                 want=f"a process id (1 to {PID_MAX_LIMIT})")


def uid_filter(value: Any, what: str = "uid") -> int:
    """A user id a probe can filter on: 0 to 2**32 - 2 ((u32)-1 is no uid: the BPF side
    reads it as "every user"). BPFTypeError/BPFValueError."""
    return c_int(value, what, "u32", hi=(1 << 32) - 2,
                 want=f"a user id (0 to {(1 << 32) - 2})")


def _cli_type(check: Callable[[Any, str], int], what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        import argparse

        try:
            n = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r:.40}") from None
        try:
            return check(n, what)
        except BPFError as e:
            raise argparse.ArgumentTypeError(e.strerror or str(e)) from None
    parse.__name__ = what  # argparse names the type in its messages
    return parse


pid_arg = _cli_type(pid_filter, "pid")
"""argparse type of ``--pid``: :func:`pid_filter` of the number given."""
uid_arg = _cli_type(uid_filter, "uid")
"""argparse type of ``--uid``: :func:`uid_filter` of the number given."""


def cgroup_id_level(path: str) -> tuple[int, int]:
    """(cgroup id, depth below the cgroup v2 root) of a cgroup v2 directory."""
    root = cgroup2_mount()
    if root is None:
        raise BPFError(_errno.ENOENT, "no cgroup v2 hierarchy is mounted (see /proc/mounts)")
    real = os.path.realpath(path)
    rel = os.path.relpath(real, os.path.realpath(root))
    if rel.startswith(".."):
        raise BPFError(_errno.EINVAL, f"{path} is not inside the cgroup v2 mount {root}")
    try:
        st = os.stat(real)
    except OSError as exc:
        raise BPFError(exc.errno or _errno.ENOENT, f"cgroup {path}: {exc.strerror}") from None
    level = 0 if rel == "." else len(rel.split(os.sep))
    return st.st_ino, level


# --- probe session ------------------------------------------------------------------
_S = TypeVar("_S", bound="ProbeSession")


class ProbeSession:
    """A shipped probe, opened, configured, loaded and attached; a context manager.

    ``rodata`` sets ``const volatile`` globals before load; ``autoload`` turns
    programs on or off by name; ``ring_bytes`` sizes the ring buffer (a power
    of two, at least a page; records it cannot hold are counted in
    :attr:`dropped`).  The ``events`` ring buffer is read by one
    :class:`~pybpf.RingBuffer` whose ``decode`` is :meth:`_record` (``struct
    event`` through :meth:`_convert`): :meth:`events`, :meth:`drain` and
    :meth:`poll` are that reader's, and :attr:`dropped` its ``stats()``.
    """

    probe = ""
    event_struct = "event"

    def __init__(self, *, rodata: Mapping[str, int | bytes] | None = None,
                 scope: Scope | None = None, autoload: Mapping[str, bool] | None = None,
                 path: str | None = None, attach: bool = True,
                 ring_bytes: int | None = None) -> None:
        self.obj = Object.open(path or probe_path(self.probe))
        self._rb: RingBuffer | None = None
        self.callback: Callable[[Any], None] | None = None
        """If set, :meth:`poll` hands each event to it."""
        try:
            values: dict[str, int | bytes] = dict(scope.rodata() if scope else {})
            values.update(rodata or {})
            for name, value in values.items():
                self.obj.set_rodata(name, value)
            for name, on in (autoload or {}).items():
                self.obj.programs[name].autoload = on
            if ring_bytes is not None and "events" in self.obj.maps:
                self.obj.maps["events"].max_entries = ring_bytes
            self.configure()
            self.obj.load()
            if attach:
                self.attach()
            if self.event_struct and "events" in self.obj.maps:
                btf = self.obj.btf
                self._event_type = (ringbuf_event_type(btf, "events")
                                    or struct_layout(btf, self.event_struct))
                self._btf = btf
                self._codec = codec_for(btf, self._event_type.id)
                self._rb = RingBuffer(self.obj.maps["events"], decode=self._record)
        except BaseException:
            self.obj.close()
            raise

    def configure(self) -> None:
        """Hook for subclasses: adjust the object between open and load."""

    def attach(self) -> None:
        """Attach every loaded program (subclasses attach hooks that need targets)."""
        self.obj.attach()

    def _decode_event(self, data: bytes) -> dict[str, Any]:
        if len(data) >= self._codec.size:
            return plain(self._codec.decode(data, 0))  # type: ignore[no-any-return]
        result: dict[str, Any] = decode(self._btf, self._event_type.id, data)
        return result

    def _record(self, data: bytes) -> Any:
        """One record's event (the reader's ``decode``); None drops it."""
        return self._convert(self._decode_event(data))

    def _convert(self, raw: dict[str, Any]) -> Any:
        return raw

    def events(self, timeout: float | None = None) -> Iterator[Any]:
        """Yield events as they come; stop after ``timeout`` seconds without one."""
        if self._rb is None:
            return
        for ev in self._rb.events(timeout):
            if ev is not None:
                yield ev

    def drain(self) -> list[Any]:
        """Every event already in the ring buffer, without waiting."""
        out: list[Any] = []
        if self._rb is None:
            return out
        while True:
            batch = self._rb.read(0)
            if not len(batch):
                return out
            out += [ev for ev in batch.decoded() if ev is not None]

    def poll(self, timeout: float | None = None) -> int:
        """Wait up to ``timeout`` seconds for events.  With :attr:`callback`, hand it
        every waiting event and return how many; without, leave them for
        :meth:`drain`/:meth:`events` and return 1 if some are waiting, else 0."""
        if self._rb is None:
            return 0
        if self.callback is None:
            return int(self._rb.wait(timeout))
        events = [ev for ev in self._rb.read(timeout).decoded() if ev is not None]
        for ev in events:
            self.callback(ev)
        return len(events)

    @property
    def dropped(self) -> int:
        """Records the probe could not reserve (ring buffer full), summed over CPUs."""
        if self._rb is not None:
            return self._rb.stats().dropped or 0
        m = self.obj.maps.get("pybpf_ringbuf_drops")
        return read_percpu_u64(m) if m is not None else 0

    def fileno(self) -> int:
        """An fd that becomes readable when events arrive (for select/asyncio)."""
        if self._rb is None:
            raise BPFError(_errno.EINVAL, f"{self.probe} has no event stream")
        return self._rb.fileno()

    def close(self) -> None:
        """Detach and free the probe (idempotent)."""
        rb, self._rb = self._rb, None
        if rb is not None:
            rb.close()
        self.obj.close()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pump(session: ProbeSession, duration: float | None,
         handle: Callable[[Any], None]) -> None:
    """Hand every event of ``session`` to ``handle`` until ``duration`` seconds have
    passed (None: until interrupted), however busy the stream is."""
    import time

    deadline = None if duration is None else time.monotonic() + duration
    while True:
        wait = 0.2
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                break
        session.poll(wait)  # (without a callback: waits only)
        for ev in session.drain():
            handle(ev)


@contextlib.contextmanager
def term_as_interrupt() -> Iterator[None]:
    """Within the block (in the main thread), SIGTERM raises KeyboardInterrupt: a tool
    stopped by a service manager ends as on Ctrl-C (exporters flush, links detach)."""
    import signal
    import threading

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def announce(banner: str, header: str | None) -> None:
    """A streaming tool's start: ``banner... Hit Ctrl-C to end.`` on stderr, then the
    table header (None: no header, e.g. for JSON lines)."""
    print(f"{banner}... Hit Ctrl-C to end.", file=sys.stderr, flush=True)
    if header is not None:
        print(header, flush=True)


def stream(session: ProbeSession, tool: str, duration: float | None,
           handle: Callable[[Any], None]) -> None:
    """A streaming tool's main loop: every event to ``handle`` until ``duration``
    seconds, Ctrl-C or SIGTERM, then the events lost to a full ring buffer, if any, on
    stderr."""
    with term_as_interrupt():
        try:
            pump(session, duration, handle)
        except KeyboardInterrupt:
            pass
    if session.dropped:
        print(f"pybpf {tool}: {session.dropped} events lost (ring buffer full)",
              file=sys.stderr)


def tracepoint_exists(category: str, name: str) -> bool:
    """Whether tracefs lists ``category:name`` (mounting tracefs if needed)."""
    from .._fs import ensure_tracefs

    try:
        root = ensure_tracefs()
    except BPFError:
        return True  # let the attach report the real error
    return os.path.isdir(os.path.join(root, "events", category, name))


def seconds(text: str) -> float:
    """argparse type of a duration or interval: a finite number of seconds above 0
    (``--duration -1``, ``nan`` or ``0`` would end at once or never)."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value
