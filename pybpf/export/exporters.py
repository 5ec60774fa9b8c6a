"""One place that wires a tool, ``pybpf run`` or the agent to its exporters.

:func:`add_flags` adds ``--prometheus ADDR:PORT`` and ``--otlp ENDPOINT`` to a
command; :class:`Exporters` starts what they ask for, takes metric sources (an
object's maps, counters of its own) and events, and reports its losses.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Mapping
from typing import IO, Any

from .events import OTLPLogs, event_attributes, json_record, kernel_timestamp
from .host import KernelClock, resource_attributes
from .metrics import Family, MapMetrics, MetricSource, OTLPMetrics, PrometheusServer, Series

__all__ = ["Exporters", "add_flags"]


def add_flags(ap: argparse.ArgumentParser) -> None:
    """Add ``--prometheus`` and ``--otlp`` to a command's parser."""
    g = ap.add_argument_group("export")
    g.add_argument("--prometheus", metavar="ADDR:PORT",
                   help="serve the maps as Prometheus metrics on http://ADDR:PORT/metrics "
                        "(needs pybpf[prometheus])")
    g.add_argument("--otlp", metavar="ENDPOINT",
                   help="send events as OpenTelemetry logs and the maps as metrics over "
                        "OTLP/HTTP, e.g. http://collector:4318 (needs pybpf[otel])")


class Exporters:
    """The exporters a command asked for: Prometheus (``prometheus``: ``HOST:PORT``),
    OTLP (``otlp``: the collector's base URL). Both None: only JSON lines.

    :meth:`add_metrics` registers a metric source (read at scrape or export time);
    :meth:`event` turns one event into a JSON object and, with ``otlp``, an OTLP log.
    Every source also gets ``pybpf_events_total{service,event}`` and
    ``pybpf_export_dropped_total{service,sink}``. A context manager.
    """

    def __init__(self, service: str, *, prometheus: str | None = None,
                 otlp: str | None = None, clock: str = "monotonic",
                 otlp_interval: float = 10.0, max_queue: int = 8192,
                 announce: IO[str] | None = sys.stderr) -> None:
        self.service = service
        self.resource = resource_attributes(service)
        self.clock = KernelClock(clock)
        self._sources: list[MetricSource] = [self._own]
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self.prometheus: PrometheusServer | None = None
        self.logs: OTLPLogs | None = None
        self.metrics: OTLPMetrics | None = None
        try:
            if otlp:
                self.logs = OTLPLogs(otlp, self.resource, max_queue=max_queue)
                self.metrics = OTLPMetrics(otlp, self.sources, self.resource,
                                           interval=otlp_interval)
            if prometheus:
                self.prometheus = PrometheusServer(prometheus, self.sources)
        except BaseException:
            self.close()
            raise
        if announce is not None:
            if self.prometheus is not None:
                print(f"pybpf {service}: Prometheus metrics on {self.prometheus.url}",
                      file=announce, flush=True)
            if otlp:
                print(f"pybpf {service}: OTLP logs and metrics to {otlp}", file=announce,
                      flush=True)

    @classmethod
    def from_args(cls, args: argparse.Namespace, service: str) -> Exporters:
        """From the flags :func:`add_flags` added."""
        return cls(service, prometheus=getattr(args, "prometheus", None),
                   otlp=getattr(args, "otlp", None))

    @property
    def active(self) -> bool:
        """Whether any exporter runs (else only JSON lines are made)."""
        return self.prometheus is not None or self.logs is not None

    def sources(self) -> list[MetricSource]:
        """The registered metric sources (a copy)."""
        with self._lock:
            return list(self._sources)

    def add_metrics(self, source: MetricSource) -> MetricSource:
        """Register a metric source; returns it (for :meth:`remove_metrics`)."""
        with self._lock:
            self._sources.append(source)
        return source

    def watch(self, obj: Any, **options: Any) -> MetricSource:
        """Register an object's maps as metrics (:class:`MapMetrics` options)."""
        return self.add_metrics(MapMetrics(obj, **options))

    def remove_metrics(self, source: MetricSource) -> None:
        with self._lock:
            if source in self._sources:
                self._sources.remove(source)

    def event(self, name: str, event: Any, *, kernel_ts: int | None = None,
              attributes: Mapping[str, Any] | None = None,
              wall_ns: int | None = None) -> int:
        """One event: counted, and queued as an OTLP log with ``otlp`` (attributes: its
        flattened fields). Returns its wall-clock time in ns since the epoch:
        ``kernel_ts`` (default: the event's ``ts``-like field, see
        :data:`~pybpf.export.events.TIMESTAMP_FIELDS`) converted from the kernel's
        clock, else now; ``wall_ns`` gives the wall-clock time itself. Cost: a dict
        flattening and a deque append."""
        attrs = dict(attributes) if attributes is not None else event_attributes(event)
        if kernel_ts is None:
            kernel_ts = kernel_timestamp(attrs)
        now = time.time_ns()
        if wall_ns is not None:
            wall = wall_ns
        else:
            wall = self.clock.wall_ns(kernel_ts) if kernel_ts is not None else now
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + 1
        if self.logs is not None:
            self.logs.emit(name, attrs, wall, now)
        return wall

    def stamp(self, wall_ns: int) -> dict[str, Any]:
        """What a JSON line adds to an event's fields: ``time`` (RFC 3339, UTC),
        ``time_unix_nano`` and the resource (``host.name``, ``host.boot_id``...)."""
        return json_record({}, wall_ns, self.resource)

    @property
    def dropped(self) -> int:
        """Events the OTLP queue dropped (collector slow or absent) or failed to send."""
        return (self.logs.dropped + self.logs.failed) if self.logs is not None else 0

    def _own(self) -> list[Family]:
        with self._lock:
            counts = dict(self._counts)
        fams = [Family("pybpf_events", "counter", "events read from ring/perf buffers",
                       [Series({"service": self.service, "event": k}, v)
                        for k, v in sorted(counts.items())])]
        if self.logs is not None:
            fams.append(Family("pybpf_export_dropped", "counter",
                               "events not exported (queue full or export failed)",
                               [Series({"service": self.service, "sink": "otlp_queue"},
                                       self.logs.dropped),
                                Series({"service": self.service, "sink": "otlp_failed"},
                                       self.logs.failed)]))
        return fams

    def close(self) -> None:
        """Flush and stop every exporter; report losses on stderr. Idempotent."""
        for attr in ("prometheus", "logs", "metrics"):
            x = getattr(self, attr, None)
            setattr(self, attr, None)
            if x is not None:
                x.close()
                if isinstance(x, OTLPLogs) and (x.dropped or x.failed):
                    print(f"pybpf {self.service}: OTLP: {x.dropped} events dropped (queue "
                          f"full), {x.failed} in failed exports", file=sys.stderr)

    def __enter__(self) -> Exporters:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

