"""Exporters: BPF maps as Prometheus/OpenTelemetry metrics, events as OpenTelemetry
logs and JSON lines, stack samples as pprof profiles.

The exporters' libraries are optional extras: ``pip install 'pybpf[prometheus]'``
(prometheus-client) and ``'pybpf[otel]'`` (opentelemetry-sdk and its OTLP/HTTP
exporter). Importing this package needs neither; using an exporter without its
extra raises :class:`MissingExtraError` naming the extra.

* :mod:`pybpf.export.metrics`: :class:`MapMetrics`, :func:`serve_prometheus`,
  :class:`OTLPMetrics`;
* :mod:`pybpf.export.events`: :class:`OTLPLogs`, :func:`event_attributes`;
* :mod:`pybpf.export.host`: :class:`KernelClock`, :func:`resource_attributes`;
* :mod:`pybpf.export.pprof`: :func:`write_pprof`;
* :mod:`pybpf.export.exporters`: :class:`Exporters`, the CLI flags.
"""

from __future__ import annotations

from ._extras import MissingExtraError
from .events import OTLPLogs, event_attributes
from .exporters import Exporters, add_flags
from .host import KernelClock, boot_id, resource_attributes
from .metrics import Family, MapMetrics, OTLPMetrics, PrometheusServer, serve_prometheus

__all__ = ["MissingExtraError", "OTLPLogs", "event_attributes", "Exporters", "add_flags",
           "KernelClock", "boot_id", "resource_attributes", "Family", "MapMetrics",
           "OTLPMetrics", "PrometheusServer", "serve_prometheus"]
