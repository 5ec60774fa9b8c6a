"""Metrics read from BPF maps, typed by BTF, for Prometheus and OpenTelemetry.

:class:`MapMetrics` reads an object's hash, array and per-CPU maps (and the numeric
variables of ``.bss``/``.data``) each time :meth:`MapMetrics.families` is called: one
walk per map (the batch walk of :meth:`pybpf.Map.items_raw`), no thread, no cache.
What becomes what:

* the metric name is ``pybpf_<object>_<map>[_<field>]`` (``bss``/``data`` for the
  object's sections), sanitized to ``[a-zA-Z0-9_]``;
* key struct fields become labels (nested fields joined by ``_``, enums by their
  name, ``char`` arrays as text); a scalar key is the label ``key``;
* every integer or float leaf of the value is a counter (``gauges`` names the maps or
  ``map.field`` leaves that go up and down); per-CPU values are summed over CPUs;
  an array of numbers that is not a histogram gets the label ``index``;
* log2 histograms become real histograms: an integer array named ``slots`` or
  ``*hist*`` (or in a map named ``*hist*``, or named in ``histograms``), slot ``i``
  counting values in ``[2**i, 2**(i+1))`` (slot 0: 0 and 1), become cumulative buckets
  with ``le`` = ``2**(i+1) - 1``, ``_count`` (the sum of the slots) and ``_sum``: the
  value's own ``sum`` member next to the slots when it has one (exact), else the
  lower bound ``sum(count_i * 2**i)``. An array map of integers named ``*hist*`` is
  one histogram whose slot is the key.

:class:`Family` is the neutral form both exporters read: :func:`prometheus_collector`
(prometheus-client, at scrape time) and :class:`OTLPMetrics` (opentelemetry-sdk data
points pushed by its exporter).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import BPFError, ClosedError
from ._extras import require

__all__ = ["Family", "Series", "HistogramSeries", "MapMetrics", "MetricSource",
           "metric_name", "prometheus_collector", "PrometheusServer", "serve_prometheus",
           "OTLPMetrics"]

_KINDS = ("hash", "array", "percpu_hash", "percpu_array", "lru_hash", "lru_percpu_hash")


@dataclass
class Series:
    """One labelled value of a counter or gauge."""

    labels: dict[str, str]
    value: float


@dataclass
class HistogramSeries:
    """One labelled histogram: ``buckets`` are (upper bound, cumulative count)."""

    labels: dict[str, str]
    buckets: list[tuple[float, int]]
    sum: float
    count: int


@dataclass
class Family:
    """Metrics of one name: ``kind`` is ``counter``, ``gauge`` or ``histogram``."""

    name: str
    kind: str
    help: str
    series: list[Any] = field(default_factory=list)


MetricSource = Callable[[], "list[Family]"]
"""Anything that returns the current families when called (at scrape/export time)."""


def metric_name(*parts: str) -> str:
    """Parts joined by ``_`` and sanitized to a Prometheus/OTel metric name."""
    name = "_".join(p for p in parts if p)
    name = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    return re.sub(r"__+", "_", name).strip("_") or "_"


def _label_name(name: str) -> str:
    n = re.sub(r"[^a-zA-Z0-9_]", "_", name) or "key"
    return f"_{n}" if n[0].isdigit() else n


def _label_value(v: Any) -> str:
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    if isinstance(v, list):
        return ",".join(_label_value(x) for x in v)
    return str(v)


def _labels(key: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(key, dict):
        out: dict[str, str] = {}
        for k, v in key.items():
            out.update(_labels(v, f"{prefix}_{k}" if prefix else str(k)))
        return out
    return {_label_name(prefix or "key"): _label_value(key)}


def _add(a: Any, b: Any) -> Any:
    """Element-wise sum of two decoded values of one type (per-CPU copies)."""
    if isinstance(a, dict):
        return {k: _add(v, b[k]) for k, v in a.items()}
    if isinstance(a, list):
        return [_add(x, y) for x, y in zip(a, b)]
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        return a + b
    return a


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def log2_buckets(slots: Sequence[int]) -> list[tuple[float, int]]:
    """Cumulative (le, count) buckets of log2 slots: slot i holds [2**i, 2**(i+1))."""
    out, acc = [], 0
    for i, c in enumerate(slots):
        acc += c
        out.append((float((1 << (i + 1)) - 1), acc))
    return out


class _Builder:
    def __init__(self) -> None:
        self.families: dict[str, Family] = {}

    def add(self, name: str, kind: str, help: str, series: Any) -> None:
        fam = self.families.get(name)
        if fam is None:
            fam = self.families[name] = Family(name, kind, help)
        if fam.kind == kind:
            fam.series.append(series)


class MapMetrics:
    """Metrics of one loaded :class:`~pybpf.Object`'s maps, read when asked.

    ``maps`` limits which maps (default: every hash/array/per-CPU map and the
    ``.bss``/``.data`` sections); ``gauges`` and ``histograms`` name maps or
    ``map.field`` leaves (see the module's rules); ``labels`` maps a map name to a
    function rewriting its key's labels (e.g. a device number to a disk name);
    ``name`` replaces the object's name in metric names. Calling the instance is
    :meth:`families`.
    """

    def __init__(self, obj: Any, *, name: str | None = None, prefix: str = "pybpf",
                 maps: Iterable[str] | None = None, gauges: Iterable[str] = (),
                 histograms: Iterable[str] = (),
                 labels: dict[str, Callable[[dict[str, str]], dict[str, str]]] | None = None
                 ) -> None:
        self.obj = obj
        self.name = name or obj.name
        self.prefix = prefix
        self.only = set(maps) if maps is not None else None
        self.gauges = set(gauges)
        self.histograms = set(histograms)
        self.relabel = dict(labels or {})

    def _maps(self) -> list[tuple[str, Any]]:
        out = []
        for m in self.obj.maps.values():
            if m.internal:
                sec = m.name.rpartition(".")[2]
                if sec not in ("bss", "data"):
                    continue
                label = sec
            else:
                if m.type not in _KINDS:
                    continue
                label = m.name
            if self.only is not None and m.name not in self.only and label not in self.only:
                continue
            out.append((label, m))
        return out

    def __call__(self) -> list[Family]:
        return self.families()

    def families(self) -> list[Family]:
        """Every metric of the maps as of now: one batch walk per map. A closed object
        gives none."""
        b = _Builder()
        try:
            btf = self.obj.btf
            for label, m in self._maps():
                self._map(b, btf, label, m)
        except ClosedError:
            return []
        return list(b.families.values())

    def _decode(self, btf: Any, tid: int, data: bytes) -> Any:
        from ..tools._common import decode

        return decode(btf, tid, data, enum_names=True)

    def _entries(self, btf: Any, m: Any) -> list[tuple[Any, Any]]:
        from ..maps import possible_cpus

        kid, vid = m.btf_key_type_id, m.btf_value_type_id
        out = []
        for k, v in m.items_raw():
            key: Any = self._decode(btf, kid, k) if kid else int.from_bytes(k, "little")
            if not vid:
                val: Any = int.from_bytes(v[:8], "little") if m.value_size <= 8 else None
                if m.percpu:
                    step = (m.value_size + 7) // 8 * 8
                    val = sum(int.from_bytes(v[i * step:i * step + min(8, m.value_size)],
                                             "little") for i in range(possible_cpus()))
            elif m.percpu:
                step = (m.value_size + 7) // 8 * 8
                vals = [self._decode(btf, vid, v[i * step:i * step + m.value_size])
                        for i in range(possible_cpus())]
                val = vals[0]
                for x in vals[1:]:
                    val = _add(val, x)
            else:
                val = self._decode(btf, vid, v)
            if val is not None:
                out.append((key, val))
        return out

    def _map(self, b: _Builder, btf: Any, label: str, m: Any) -> None:
        try:
            entries = self._entries(btf, m)
        except ClosedError:
            raise
        except BPFError:
            return  # a map that cannot be walked (e.g. removed under us) is left out
        base = metric_name(self.prefix, self.name, label)
        relabel = self.relabel.get(m.name) or self.relabel.get(label)
        help_ = f"BPF map {m.name} ({m.type}) of {self.obj.name}"
        if m.internal:
            for _, val in entries:
                if isinstance(val, dict):
                    self._leaves(b, base, label, {}, val, help_, [])
            return
        if ("hist" in label.lower() or label in self.histograms) and m.type in (
                "array", "percpu_array") and entries and all(
                _is_num(v) and isinstance(k, int) for k, v in entries):
            slots = [0] * (max(k for k, _ in entries) + 1)
            for k, v in entries:
                slots[k] = int(v)
            self._histogram(b, base, {}, slots, None, help_)
            return
        for key, val in entries:
            labels = _labels(key)
            if relabel is not None:
                labels = relabel(labels)
            self._leaves(b, base, label, labels, val, help_, [])

    def _leaves(self, b: _Builder, name: str, map_label: str, labels: dict[str, str],
                val: Any, help_: str, path: list[str]) -> None:
        dotted = ".".join([map_label, *path])
        if _is_num(val):
            kind = "gauge" if (map_label in self.gauges or dotted in self.gauges) else "counter"
            b.add(name, kind, help_, Series(labels, val))
        elif isinstance(val, dict):
            hists = [k for k, v in val.items() if self._is_hist(map_label, [*path, k], v)]
            sum_key = next((k for k in ("sum", "total") if len(hists) == 1 and k in val
                            and _is_num(val[k])), None)
            for k, v in val.items():
                if k in hists:
                    self._histogram(b, metric_name(name, k), labels, v,
                                    val[sum_key] if sum_key else None, help_)
                elif k != sum_key:
                    self._leaves(b, metric_name(name, k), map_label, labels, v, help_,
                                 [*path, k])
        elif isinstance(val, list) and val:
            if self._is_hist(map_label, path, val):
                self._histogram(b, name, labels, val, None, help_)
                return
            index = "index" if "index" not in labels else f"index_{len(path)}"
            for i, x in enumerate(val):  # numbers, or structs: one series per element
                self._leaves(b, name, map_label, {**labels, index: str(i)}, x, help_, path)

    def _is_hist(self, map_label: str, path: list[str], val: Any) -> bool:
        if not (isinstance(val, list) and len(val) > 1
                and all(isinstance(x, int) and not isinstance(x, bool) for x in val)):
            return False
        last = path[-1].lower() if path else ""
        return ("slot" in last or "hist" in last or "hist" in map_label.lower()
                or map_label in self.histograms
                or ".".join([map_label, *path]) in self.histograms)

    @staticmethod
    def _histogram(b: _Builder, name: str, labels: dict[str, str], slots: Sequence[int],
                   total: float | None, help_: str) -> None:
        count = sum(slots)
        if total is None:
            total = float(sum(c << i for i, c in enumerate(slots)))
        b.add(name, "histogram", help_,
              HistogramSeries(labels, log2_buckets(slots), float(total), count))


# --- Prometheus -----------------------------------------------------------------------
def prometheus_collector(sources: Callable[[], Iterable[MetricSource]]) -> Any:
    """A prometheus-client collector whose ``collect()`` calls every source that
    ``sources()`` returns, at scrape time (needs ``pybpf[prometheus]``)."""
    core = require("prometheus_client.core", "Prometheus export")

    class _Collector:
        def collect(self) -> Iterable[Any]:
            seen: set[str] = set()
            for source in list(sources()):
                for fam in source():
                    if fam.name in seen:
                        continue
                    seen.add(fam.name)
                    yield _prom_family(core, fam)

        def describe(self) -> list[Any]:
            return []  # families change with the maps: no fixed description

    return _Collector()


def _prom_family(core: Any, fam: Family) -> Any:
    names = sorted({k for s in fam.series for k in s.labels})
    if fam.kind == "histogram":
        out = core.HistogramMetricFamily(fam.name, fam.help, labels=names)
        for s in fam.series:
            buckets = [(str(le), n) for le, n in s.buckets]
            buckets.append(("+Inf", s.count))
            out.add_metric([s.labels.get(n, "") for n in names], buckets, s.sum)
        return out
    cls = core.CounterMetricFamily if fam.kind == "counter" else core.GaugeMetricFamily
    out = cls(fam.name, fam.help, labels=names)
    for s in fam.series:
        out.add_metric([s.labels.get(n, "") for n in names], s.value)
    return out


class PrometheusServer:
    """An HTTP server answering ``GET /metrics`` (prometheus-client's exposition) from
    its own registry; the sources are read on every scrape. ``address`` is the
    ``(host, port)`` it listens on. A context manager; :meth:`close` stops it."""

    def __init__(self, addr: str, sources: Callable[[], Iterable[MetricSource]]) -> None:
        prom = require("prometheus_client", "--prometheus")
        host, sep, port = addr.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"--prometheus takes ADDR:PORT (e.g. 0.0.0.0:9435), got {addr!r}")
        host = host.strip("[]") or "0.0.0.0"
        self.registry = prom.CollectorRegistry(auto_describe=False)
        self.registry.register(prometheus_collector(sources))
        try:
            self._server, self._thread = prom.start_http_server(
                int(port), addr=host, registry=self.registry)
        except OSError as exc:
            raise BPFError(exc.errno or 98, f"--prometheus {addr}: cannot listen: "
                                            f"{exc.strerror or exc}") from None
        self.address: tuple[str, int] = (host, int(self._server.server_port))

    @property
    def url(self) -> str:
        host = f"[{self.address[0]}]" if ":" in self.address[0] else self.address[0]
        return f"http://{host}:{self.address[1]}/metrics"

    def close(self) -> None:
        """Stop serving (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_prometheus(addr: str, sources: Iterable[MetricSource] | Callable[
        [], Iterable[MetricSource]]) -> PrometheusServer:
    """Serve ``/metrics`` on ``addr`` (``HOST:PORT``, port 0 picks one) from ``sources``
    (a list, or a function returning the current list)."""
    if callable(sources):
        return PrometheusServer(addr, sources)
    fixed = list(sources)
    return PrometheusServer(addr, lambda: fixed)


# --- OpenTelemetry --------------------------------------------------------------------
class OTLPMetrics:
    """The same families as OpenTelemetry metrics (cumulative sums, gauges, explicit
    bucket histograms), sent by opentelemetry-sdk's OTLP/HTTP exporter to
    ``endpoint`` + ``/v1/metrics`` every ``interval`` seconds by one thread, which
    reads the maps when it sends (needs ``pybpf[otel]``). :meth:`collect` builds the
    ``MetricsData`` without sending."""

    def __init__(self, endpoint: str, sources: Callable[[], Iterable[MetricSource]],
                 resource: dict[str, str], *, interval: float = 10.0,
                 timeout: float = 10.0) -> None:
        self._e = require("opentelemetry.sdk.metrics.export", "--otlp")
        res = require("opentelemetry.sdk.resources", "--otlp")
        http = require("opentelemetry.exporter.otlp.proto.http.metric_exporter", "--otlp")
        scope = require("opentelemetry.sdk.util.instrumentation", "--otlp")
        self._resource = res.Resource.create(resource)
        self._scope = scope.InstrumentationScope("pybpf")
        self._exporter = http.OTLPMetricExporter(
            endpoint=endpoint.rstrip("/") + "/v1/metrics", timeout=timeout)
        self._sources = sources
        self._start = time.time_ns()
        self.failed = 0
        """Exports that failed (collector down or refusing)."""
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, name="pybpf-otlp-metrics",
                                        daemon=True)
        self._thread.start()

    def collect(self) -> Any:
        """The current values as an opentelemetry-sdk ``MetricsData`` (reads the maps)."""
        e, now = self._e, time.time_ns()
        metrics = []
        for source in list(self._sources()):
            for fam in source():
                if fam.kind == "histogram":
                    pts = [e.HistogramDataPoint(
                        attributes=s.labels, start_time_unix_nano=self._start,
                        time_unix_nano=now, count=s.count, sum=s.sum,
                        bucket_counts=[b - a for a, b in zip(
                            [0] + [n for _, n in s.buckets], [n for _, n in s.buckets]
                            + [s.count])],
                        explicit_bounds=[le for le, _ in s.buckets], min=0, max=0)
                        for s in fam.series]
                    data: Any = e.Histogram(pts, e.AggregationTemporality.CUMULATIVE)
                else:
                    nps = [e.NumberDataPoint(attributes=s.labels,
                                             start_time_unix_nano=self._start,
                                             time_unix_nano=now, value=s.value)
                           for s in fam.series]
                    data = (e.Sum(nps, e.AggregationTemporality.CUMULATIVE, True)
                            if fam.kind == "counter" else e.Gauge(nps))
                metrics.append(e.Metric(fam.name, fam.help, None, data))
        return e.MetricsData([e.ResourceMetrics(
            self._resource, [e.ScopeMetrics(self._scope, metrics, "")], "")])

    def export(self) -> bool:
        """Read the maps and send once now; False (and :attr:`failed` + 1) on failure."""
        try:
            ok = bool(self._exporter.export(self.collect()) == self._e.MetricExportResult.SUCCESS)
        except Exception:
            ok = False
        if not ok:
            self.failed += 1
        return ok

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.export()

    def close(self) -> None:
        """Send a last time, then stop (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        self.export()
        self._exporter.shutdown()
