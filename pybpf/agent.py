"""``pybpf agent CONFIG.toml``: several probes in one process, exported, as a service.

Each ``[[probe]]`` is a shipped tool (``tool = "execsnoop"``; ``opensnoop``,
``tcpconnect``, ``biolatency``) with its options, or any object (``object =
"PATH.bpf.o"``) with its ``.rodata`` settings. The agent loads and attaches them all,
serves their maps on one Prometheus endpoint, sends their events as OTLP logs and/or
JSON lines, and:

* on SIGHUP re-reads the file: probes whose section changed are reloaded, removed
  ones detached, new ones started, unchanged ones keep running (and counting); an
  invalid file is reported and the running configuration kept;
* on SIGTERM or SIGINT detaches every link, closes every object, flushes the
  exporters and exits 0.

Configuration (every key but a probe's ``tool``/``object`` is optional)::

    [agent]
    prometheus = "0.0.0.0:9435"       # ADDR:PORT of /metrics
    otlp = "http://collector:4318"     # OTLP/HTTP base URL: events -> logs, maps -> metrics
    json = "-"                         # JSON lines: "-" for stdout, or a file to append to
    service = "pybpf-agent"            # service.name of the resource

    [[probe]]
    name = "execs"                     # metric prefix pybpf_<name>_..., event name
    tool = "execsnoop"
    options = { uid = 1000 }           # keyword arguments of the tool's class
    cgroup = "/sys/fs/cgroup/system.slice"   # scope (tools): a cgroup v2 subtree

    [[probe]]
    name = "mine"
    object = "/opt/probes/counts.bpf.o"
    rodata = { targ_port = 443 }       # const volatile globals, set before load
    maps = ["counts", "lat_hist"]      # which maps become metrics (default: all)
    gauges = ["inflight"]              # maps (or map.field) that go up and down
    histograms = []                    # more log2 histograms than the names tell
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from ._source import read_regular
from .errors import BPFError
from .export.events import event_attributes
from .export.exporters import Exporters

__all__ = ["Agent", "ConfigError", "load_config", "main"]

_TOOLS = {"execsnoop": ("pybpf.tools.execsnoop", "ExecSnoop"),
          "opensnoop": ("pybpf.tools.opensnoop", "OpenSnoop"),
          "tcpconnect": ("pybpf.tools.tcpconnect", "TcpConnect"),
          "biolatency": ("pybpf.tools.biolatency", "BioLatency")}
_AGENT_KEYS = {"prometheus", "otlp", "json", "service"}
_PROBE_KEYS = {"name", "tool", "object", "options", "rodata", "maps", "gauges", "histograms",
               "cgroup"}


_MAX_CONFIG = 16 << 20  # bytes of TOML read at most


class ConfigError(ValueError):
    """The configuration file is invalid; the message names the file and the key."""


def _toml(path: str) -> dict[str, Any]:
    try:
        import tomllib as toml
    except ImportError:  # Python < 3.11
        try:
            import tomli as toml  # type: ignore[no-redef, import-not-found]
        except ImportError:
            raise ConfigError("pybpf agent reads TOML with tomllib (Python 3.11+); on "
                              "older Pythons: pip install 'pybpf[agent]'") from None
    try:  # a FIFO, a device or a huge file is refused before any read
        text = read_regular(path, "agent configuration", limit=_MAX_CONFIG, error=BPFError)
        data: dict[str, Any] = toml.loads(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 ({exc.reason})") from None
    except BPFError as exc:
        raise ConfigError(f"{path}: {exc.message}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except toml.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return data


def load_config(path: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(``[agent]`` settings, probes by name) of a configuration file, checked."""
    data = _toml(path)
    extra = set(data) - {"agent", "probe"}
    if extra:
        raise ConfigError(f"{path}: unknown section(s) {sorted(extra)} (agent, probe)")
    agent = dict(data.get("agent", {}))
    bad = set(agent) - _AGENT_KEYS
    if bad:
        raise ConfigError(f"{path}: [agent] has unknown key(s) {sorted(bad)}")
    probes: dict[str, dict[str, Any]] = {}
    for i, p in enumerate(data.get("probe", [])):
        where = f"{path}: probe #{i + 1}"
        bad = set(p) - _PROBE_KEYS
        if bad:
            raise ConfigError(f"{where} has unknown key(s) {sorted(bad)}")
        if ("tool" in p) == ("object" in p):
            raise ConfigError(f"{where} needs exactly one of tool = NAME or object = PATH")
        if "tool" in p and p["tool"] not in _TOOLS:
            raise ConfigError(f"{where}: no tool {p['tool']!r} (one of {sorted(_TOOLS)})")
        if "object" in p and not os.path.isfile(p["object"]):
            raise ConfigError(f"{where}: object {p['object']!r} does not exist")
        name = str(p.get("name") or p.get("tool") or
                   os.path.basename(p["object"]).split(".")[0])
        if name in probes:
            raise ConfigError(f"{where}: a second probe named {name!r} (set name = ...)")
        probes[name] = dict(p)
    return agent, probes


class _Probe:
    """One running probe: its object, its event readers and its metric source."""

    def __init__(self, name: str, spec: dict[str, Any], exp: Exporters,
                 emit: Callable[[str, Any], None]) -> None:
        self.name, self.spec = name, spec
        self.session: Any = None
        self.obj: Any = None
        self.readers: list[Any] = []
        metric_opts = {k: spec[k] for k in ("maps", "gauges", "histograms") if k in spec}
        try:
            if "tool" in spec:
                self._start_tool(spec, emit)
            else:
                self._start_object(spec, emit)
        except BaseException:
            self.close()
            raise
        if "tool" in spec and "maps" not in metric_opts:
            metric_opts["maps"] = (["hists"] if spec["tool"] == "biolatency"
                                   else ["pybpf_ringbuf_drops"])
        self.metrics = exp.watch(self.obj, name=name, **metric_opts)

    def _start_tool(self, spec: dict[str, Any], emit: Callable[[str, Any], None]) -> None:
        import importlib

        from .tools._common import Scope

        mod_name, cls_name = _TOOLS[spec["tool"]]
        cls = getattr(importlib.import_module(mod_name), cls_name)
        options = dict(spec.get("options", {}))
        if "cgroup" in spec:
            options["scope"] = Scope(cgroup=spec["cgroup"])
        try:
            self.session = cls(**options)
        except TypeError as exc:
            raise ConfigError(f"probe {self.name!r}: bad options for {spec['tool']}: "
                              f"{exc}") from None
        self.obj = self.session.obj
        if self.session.event_struct:
            self.readers.append(_Drain(self.session, self.name, emit))

    def _start_object(self, spec: dict[str, Any], emit: Callable[[str, Any], None]) -> None:
        from .object import Object
        from .perfbuf import PerfBuffer
        from .ringbuf import RingBuffer
        from .tools._common import decode, ringbuf_event_type

        self.obj = obj = Object.open(spec["object"])
        for key, value in spec.get("rodata", {}).items():
            obj.set_rodata(key, int(value) if isinstance(value, bool) else
                           value.encode() if isinstance(value, str) else value)
        obj.load()
        btf = obj.btf
        for m in obj.maps.values():
            if m.type not in ("ringbuf", "perf_event_array"):
                continue
            ev_type = ringbuf_event_type(btf, m.name)

            def on_record(data: bytes, _t: Any = ev_type, _m: str = m.name) -> None:
                ev = decode(btf, _t.id, data, enum_names=True) if _t is not None else \
                    {"data": bytes(data).hex()}
                emit(f"{self.name}.{_m}", ev)

            cls = RingBuffer if m.type == "ringbuf" else PerfBuffer
            self.readers.append(cls(m, callback=on_record))
        for p in obj.programs.values():  # after the readers, as pybpf run
            if p.autoload:
                if p.type == "perf_event":
                    p.attach_perf_event()
                else:
                    p.attach_auto()

    def close(self) -> None:
        """Detach every link and close the object (idempotent)."""
        for r in self.readers:
            r.close()
        self.readers = []
        if self.session is not None:
            self.session.close()
        elif self.obj is not None:
            self.obj.close()


class _Drain:
    """A tool session's ring, read through the tool's own event converters."""

    def __init__(self, session: Any, name: str, emit: Callable[[str, Any], None]) -> None:
        self.session, self.name, self.emit = session, name, emit

    def fileno(self) -> int:
        return int(self.session.fileno())

    def poll(self, timeout: float) -> None:
        for ev in self.session.drain():
            self.emit(self.name, ev)

    def close(self) -> None:
        pass  # the session closes its reader


class Agent:
    """The probes of a configuration file, running; :meth:`run` until SIGTERM/SIGINT."""

    def __init__(self, path: str, *, log: IO[str] = sys.stderr) -> None:
        self.path = path
        self.log = log
        self.probes: dict[str, _Probe] = {}
        self.settings: dict[str, Any] = {}
        self.exp: Exporters | None = None
        self._json: IO[str] | None = None
        self._reload = False
        self._stop = False
        self.reloads = 0

    def _say(self, msg: str) -> None:
        print(f"pybpf agent: {msg}", file=self.log, flush=True)

    def _emit(self, name: str, ev: Any) -> None:
        assert self.exp is not None
        attrs = event_attributes(ev)
        wall = self.exp.event(name, ev, attributes=attrs)
        if self._json is not None:
            self._json.write(json.dumps({"probe": name, **attrs, **self.exp.stamp(wall)},
                                        default=str) + "\n")
            self._json.flush()

    def _apply(self, settings: dict[str, Any], probes: dict[str, dict[str, Any]]) -> None:
        if settings != self.settings or self.exp is None:
            # new exporters: every probe re-registers its metrics with them
            for name in list(self.probes):
                self.probes.pop(name).close()
            if self.exp is not None:
                self.exp.close()
            if self._json not in (None, sys.stdout):
                self._json.close()
            self.exp = None
            out = settings.get("json")
            self._json = None if not out else sys.stdout if out == "-" else open(  # noqa: SIM115
                out, "a")
            self.exp = Exporters(settings.get("service", "pybpf-agent"),
                                 prometheus=settings.get("prometheus"),
                                 otlp=settings.get("otlp"), announce=self.log)
            self.settings = settings
        for name in [n for n, p in self.probes.items() if probes.get(n) != p.spec]:
            p = self.probes.pop(name)
            self.exp.remove_metrics(p.metrics)
            p.close()
            self._say(f"stopped probe {name}")
        for name, spec in probes.items():
            if name not in self.probes:
                self.probes[name] = _Probe(name, spec, self.exp, self._emit)
                self._say(f"started probe {name} "
                          f"({spec.get('tool') or spec.get('object')})")

    def start(self) -> None:
        """Read the file and start everything (errors propagate: nothing is left)."""
        settings, probes = load_config(self.path)
        try:
            self._apply(settings, probes)
        except BaseException:
            self.close()
            raise
        self._say(f"running {len(self.probes)} probes: {', '.join(self.probes) or 'none'}")

    def reload(self) -> bool:
        """Re-read the file and apply the differences; on an error, say so and keep
        (or restore) what ran before. Returns whether the new file was applied."""
        self.reloads += 1
        try:
            settings, probes = load_config(self.path)
        except ConfigError as exc:
            self._say(f"reload #{self.reloads} refused, keeping the running "
                      f"configuration: {exc}")
            return False
        before = {n: p.spec for n, p in self.probes.items()}
        try:
            self._apply(settings, probes)
        except (BPFError, ValueError, LookupError, OSError) as exc:
            for name in [n for n, p in self.probes.items() if before.get(n) != p.spec]:
                self.probes.pop(name).close()
            assert self.exp is not None
            for name, spec in before.items():
                if name not in self.probes:
                    try:
                        self.probes[name] = _Probe(name, spec, self.exp, self._emit)
                    except (BPFError, ValueError, LookupError, OSError) as exc2:
                        self._say(f"probe {name} could not be restarted: {exc2}")
            self._say(f"reload #{self.reloads} failed ({exc}); running the previous "
                      f"probes: {', '.join(self.probes) or 'none'}")
            return False
        self._say(f"reload #{self.reloads}: running {len(self.probes)} probes: "
                  f"{', '.join(self.probes) or 'none'}")
        return True

    def run(self) -> int:
        """:meth:`start` (unless started), then serve until SIGTERM/SIGINT; SIGHUP
        reloads. The signals are handled from before the start. Returns 0."""
        def on_hup(signum: int, frame: Any) -> None:
            self._reload = True

        def on_term(signum: int, frame: Any) -> None:
            self._stop = True

        old = {s: signal.signal(s, h) for s, h in ((signal.SIGHUP, on_hup),
                                                   (signal.SIGTERM, on_term),
                                                   (signal.SIGINT, on_term))}
        try:
            if self.exp is None:
                self.start()
            while not self._stop:
                if self._reload:
                    self._reload = False
                    self.reload()
                readers = [r for p in self.probes.values() for r in p.readers]
                if not readers:
                    time.sleep(0.2)
                    continue
                with selectors.DefaultSelector() as sel:
                    for r in readers:
                        sel.register(r.fileno(), selectors.EVENT_READ, r)
                    for key, _ in sel.select(0.2):
                        key.data.poll(0)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.close()
        return 0

    def close(self) -> None:
        """Detach and close every probe, flush and stop the exporters (idempotent)."""
        for name in list(self.probes):
            self.probes.pop(name).close()
        if self.exp is not None:
            self.exp.close()
            self.exp = None
        if self._json not in (None, sys.stdout):
            self._json.close()
        self._json = None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="pybpf agent", description="Run the probes of a TOML file in one process, "
        "exported to Prometheus/OpenTelemetry; SIGHUP reloads the file, SIGTERM detaches "
        "everything and exits.",
        epilog="examples:\n  pybpf agent /etc/pybpf/agent.toml\n"
               "  pybpf agent --check agent.toml      # validate only\n"
               "configuration: see docs/agent/agent.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="the agent's TOML configuration")
    ap.add_argument("--check", action="store_true", help="validate the file and exit")
    args = ap.parse_args(argv)
    if args.check:
        _, probes = load_config(args.config)
        print(f"{args.config}: {len(probes)} probes: {', '.join(probes) or 'none'}")
        return 0
    return Agent(args.config).run()
