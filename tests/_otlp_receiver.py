"""A small OTLP/HTTP receiver for the exporter tests: an http.server on loopback that
keeps every POST (path, decoded protobuf) and answers 200 (optionally after a delay,
to play a slow collector). Decoding uses opentelemetry-proto, independent of pybpf."""

from __future__ import annotations

import gzip
import http.server
import threading
import time
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

_KINDS = {"/v1/logs": (ExportLogsServiceRequest, ExportLogsServiceResponse),
          "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse)}


def any_value(v: Any) -> Any:
    """An OTLP AnyValue as a Python value."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind is None:
        return None
    return getattr(v, kind)


def attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


class Receiver:
    """``with Receiver() as r:`` ... ``r.endpoint`` is ``http://127.0.0.1:PORT``;
    ``r.requests`` lists (path, message); ``delay`` seconds before each answer."""

    def __init__(self, delay: float = 0.0) -> None:
        self.requests: list[tuple[str, Any]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                req_t, resp_t = _KINDS.get(self.path, (None, None))
                if req_t is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                msg = req_t()
                msg.ParseFromString(body)
                if delay:
                    time.sleep(delay)
                with owner.lock:
                    owner.requests.append((self.path, msg))
                out = resp_t().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"

    def of(self, path: str) -> list[Any]:
        with self.lock:
            return [m for p, m in self.requests if p == path]

    def log_records(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, LogRecord) of every log received."""
        out = []
        for req in self.of("/v1/logs"):
            for rl in req.resource_logs:
                res = attrs(rl.resource.attributes)
                for sl in rl.scope_logs:
                    out += [(res, rec) for rec in sl.log_records]
        return out

    def metrics(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, Metric) of every metric received, in order."""
        out = []
        for req in self.of("/v1/metrics"):
            for rm in req.resource_metrics:
                res = attrs(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    out += [(res, m) for m in sm.metrics]
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
