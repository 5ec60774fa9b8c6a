"""Events (ring and perf buffer records, decoded by BTF) as JSON lines and as
OpenTelemetry log records sent over OTLP.

Both carry the same fields: the record's BTF fields as attributes (nested structs
flattened with ``.``, enums by name, IP addresses and bytes as text), the wall-clock
time converted from the kernel's clock (:class:`~pybpf.export.host.KernelClock`),
and the host's resource (:func:`~pybpf.export.host.resource_attributes`).

:class:`OTLPLogs` never lets a slow or absent collector cost unbounded memory: events
wait in a queue of at most ``max_queue`` records; one more is dropped and counted
in :attr:`OTLPLogs.dropped`, and exports that fail count their records in
:attr:`OTLPLogs.failed`. One thread sends batches of ``batch`` records.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import ipaddress
import threading
import time
from collections.abc import Mapping
from typing import Any

from ._extras import require
from .host import rfc3339

__all__ = ["event_attributes", "json_record", "OTLPLogs", "TIMESTAMP_FIELDS"]

TIMESTAMP_FIELDS = ("ts", "timestamp", "ts_ns", "time_ns", "timestamp_ns")
"""Record fields read as the event's kernel timestamp, in this order."""

Scalar = Any  # str | int | float | bool | list of those


def _scalar(v: Any) -> Scalar:
    if isinstance(v, enum.Enum):
        return v.name
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(v)
    if isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


def event_attributes(event: Any) -> dict[str, Scalar]:
    """An event (a dict of decoded BTF fields, a dataclass, or an object with
    ``to_dict()``) as flat attributes: nested dicts joined with ``.``, lists of
    scalars kept as lists, everything else as text."""
    if dataclasses.is_dataclass(event) and not isinstance(event, type):
        to_dict = getattr(event, "to_dict", None)
        data = to_dict() if callable(to_dict) else dataclasses.asdict(event)
    elif isinstance(event, Mapping):
        data = dict(event)
    else:
        to_dict = getattr(event, "to_dict", None)
        data = to_dict() if callable(to_dict) else {"value": event}
    out: dict[str, Scalar] = {}
    _flatten(data, "", out)
    return out


def _flatten(v: Any, prefix: str, out: dict[str, Scalar]) -> None:
    if isinstance(v, Mapping):
        for k, x in v.items():
            _flatten(x, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(v, (list, tuple)):
        if all(not isinstance(x, (Mapping, list, tuple)) for x in v):
            out[prefix or "value"] = [_scalar(x) for x in v]
        else:
            for i, x in enumerate(v):
                _flatten(x, f"{prefix}.{i}", out)
    else:
        out[prefix or "value"] = _scalar(v)


def kernel_timestamp(attrs: Mapping[str, Any]) -> int | None:
    """The first of :data:`TIMESTAMP_FIELDS` that is a non-zero int, else None."""
    for name in TIMESTAMP_FIELDS:
        v = attrs.get(name)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def json_record(fields: Mapping[str, Any], wall_ns: int,
                resource: Mapping[str, str]) -> dict[str, Any]:
    """A JSON line's object: ``fields`` followed by ``time`` (RFC 3339, UTC),
    ``time_unix_nano`` and the resource's attributes (``host.name``...)."""
    out = dict(fields)
    out["time"] = rfc3339(wall_ns)
    out["time_unix_nano"] = wall_ns
    out.update(resource)
    return out


class OTLPLogs:
    """Send events as OpenTelemetry log records to ``endpoint`` (OTLP/HTTP
    protobuf, ``endpoint`` + ``/v1/logs``) with ``resource`` (needs ``pybpf[otel]``).

    :meth:`emit` only queues (a deque append, no I/O). Thread-safe.
    """

    def __init__(self, endpoint: str, resource: Mapping[str, str], *,
                 max_queue: int = 8192, batch: int = 512, interval: float = 1.0,
                 timeout: float = 10.0) -> None:
        if max_queue < 1 or batch < 1:
            raise ValueError("max_queue and batch must be at least 1")
        api = require("opentelemetry._logs", "--otlp")
        sdk = require("opentelemetry.sdk._logs", "--otlp")
        export = require("opentelemetry.sdk._logs.export", "--otlp")
        res = require("opentelemetry.sdk.resources", "--otlp")
        http = require("opentelemetry.exporter.otlp.proto.http._log_exporter", "--otlp")
        self._LogRecord = api.LogRecord
        self._severity = api.SeverityNumber.INFO
        base = getattr(export, "LogRecordExporter", None) or export.LogExporter
        inner = http.OTLPLogExporter(endpoint=endpoint.rstrip("/") + "/v1/logs",
                                     timeout=timeout)
        owner = self

        class _Counting(base):  # type: ignore[misc, valid-type]
            def export(self, batch: Any) -> Any:
                try:
                    result = inner.export(batch)
                except Exception:
                    result = None
                if result is None or getattr(result, "name", "") != "SUCCESS":
                    owner.failed += len(batch)
                else:
                    owner.sent += len(batch)
                return result

            def shutdown(self) -> None:
                inner.shutdown()

            def force_flush(self, timeout_millis: int = 30000) -> bool:
                return True

        self._provider = sdk.LoggerProvider(resource=res.Resource.create(dict(resource)))
        # The SDK's own queue holds one of our batches at most: it is flushed after each.
        self._processor = export.BatchLogRecordProcessor(
            _Counting(), max_queue_size=2 * batch, max_export_batch_size=batch,
            schedule_delay_millis=3_600_000)
        self._provider.add_log_record_processor(self._processor)
        self._logger = self._provider.get_logger("pybpf")
        self._queue: collections.deque[tuple[str, dict[str, Any], int, int]] = \
            collections.deque()
        self.max_queue = max_queue
        self.batch = batch
        self.dropped = 0
        """Events dropped because the queue was full (the collector is slow or absent)."""
        self.sent = 0
        """Events the collector accepted."""
        self.failed = 0
        """Events in exports that failed (collector down or refusing)."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closing = False
        self._interval = interval
        self._thread = threading.Thread(target=self._run, name="pybpf-otlp-logs", daemon=True)
        self._thread.start()

    def emit(self, name: str, attributes: Mapping[str, Any], wall_ns: int,
             observed_ns: int | None = None) -> bool:
        """Queue one event (``name`` is the log's event name and body); False when
        the queue is full and the event was dropped (counted in :attr:`dropped`)."""
        with self._lock:
            if self._closing or len(self._queue) >= self.max_queue:
                self.dropped += 1
                return False
            self._queue.append((name, dict(attributes), wall_ns,
                                observed_ns if observed_ns is not None else time.time_ns()))
            if len(self._queue) >= self.batch:
                self._wake.notify()
        return True

    def _take(self) -> list[tuple[str, dict[str, Any], int, int]]:
        with self._lock:
            if not self._queue and not self._closing:
                self._wake.wait(self._interval)
            n = min(self.batch, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _run(self) -> None:
        while True:
            items = self._take()
            if items:
                self._send(items)
            elif self._closing:
                return

    def _send(self, items: list[tuple[str, dict[str, Any], int, int]]) -> None:
        try:
            for name, attrs, wall, observed in items:
                self._logger.emit(self._LogRecord(
                    timestamp=wall, observed_timestamp=observed, severity_text="INFO",
                    severity_number=self._severity, body=name, attributes=attrs,
                    event_name=name))
            self._processor.force_flush()
        except Exception:  # the SDK refused the batch: count it, keep the thread alive
            self.failed += len(items)

    @property
    def queued(self) -> int:
        """Events waiting to be sent."""
        return len(self._queue)

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (waiting up to ``timeout`` seconds), then stop; events
        emitted after this are dropped and counted. Idempotent."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout)
        with self._lock:
            self.dropped += len(self._queue)  # not sent in time
            self._queue.clear()
        self._provider.shutdown()
