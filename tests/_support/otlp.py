"""A real OTLP receiver in the test process: gRPC (the ``opentelemetry-proto`` service
definitions on a grpcio server) or HTTP (an ``http.server`` handler decoding the protobuf
requests), both on 127.0.0.1 with a port of the system's choosing.

Received spans are decoded into :class:`Span` values a test can check; ``wait_for`` blocks on
a condition variable the receiving threads notify (no polling).
"""

from __future__ import annotations

import gzip
import http.server
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

KIND_INTERNAL = 1  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_INTERNAL
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return _attrs(v.kvlist_value.values)
    return getattr(v, which) if which else None


def _attrs(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kv: KeyValue
    for kv in kvs:
        out[kv.key] = _value(kv.value)
    return out


@dataclass(frozen=True)
class Event:
    """One span event as received."""

    name: str
    time: int
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Span:
    """One span as received, ids as hex strings (``parent_id`` "" for a root)."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    start: int
    end: int
    attributes: dict[str, Any]
    events: tuple[Event, ...]
    status_code: int
    status_message: str
    resource: dict[str, Any]
    scope: str

    @property
    def seconds(self) -> float:
        """Duration in seconds."""
        return (self.end - self.start) / 1e9


@dataclass
class Receiver:
    """What arrived, whatever the protocol."""

    protocol: str
    endpoint: str = ""
    spans: list[Span] = field(default_factory=list)
    metric_requests: int = 0
    requests: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def add_traces(
        self, request: trace_service_pb2.ExportTraceServiceRequest, headers: dict[str, str]
    ) -> None:
        """Decode and keep the spans of one export request (and its headers, lower-cased)."""
        decoded: list[Span] = []
        for rs in request.resource_spans:
            resource = _attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    decoded.append(
                        Span(
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            kind=s.kind,
                            start=s.start_time_unix_nano,
                            end=s.end_time_unix_nano,
                            attributes=_attrs(s.attributes),
                            events=tuple(
                                Event(e.name, e.time_unix_nano, _attrs(e.attributes))
                                for e in s.events
                            ),
                            status_code=s.status.code,
                            status_message=s.status.message,
                            resource=resource,
                            scope=ss.scope.name,
                        )
                    )
        with self._cond:
            self.requests += 1
            self.headers.append(headers)
            self.spans.extend(decoded)
            self._cond.notify_all()

    def add_metrics(self) -> None:
        """Count one metrics export request."""
        with self._cond:
            self.metric_requests += 1
            self._cond.notify_all()

    def wait_for(self, check: Callable[[list[Span]], bool], timeout: float = 20.0) -> list[Span]:
        """The spans once ``check(spans)`` holds; AssertionError after ``timeout`` seconds."""
        with self._cond:
            ok = self._cond.wait_for(lambda: check(self.spans), timeout)
            spans = list(self.spans)
        assert ok, f"receiver: condition not met; got {sorted(s.name for s in spans)}"
        return spans

    def clear(self) -> None:
        """Forget what arrived so far."""
        with self._cond:
            self.spans.clear()


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        headers = {k.lower(): str(v) for k, v in context.invocation_metadata()}
        self.receiver.add_traces(request, headers)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        self.receiver.add_metrics()
        return metrics_service_pb2.ExportMetricsServiceResponse()


def _grpc_receiver() -> Iterator[Receiver]:
    receiver = Receiver("grpc")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(receiver), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(receiver), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    receiver.endpoint = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        server.stop(grace=None)


def _http_receiver() -> Iterator[Receiver]:
    receiver = Receiver("http/protobuf")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            if self.path == "/v1/traces":
                request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                receiver.add_traces(request, {k.lower(): v for k, v in self.headers.items()})
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            elif self.path == "/v1/metrics":
                receiver.add_metrics()
                reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    receiver.endpoint = f"http://127.0.0.1:{server.server_port}"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def receiver(protocol: str) -> Iterator[Receiver]:
    """A running receiver for ``protocol`` ("grpc" or "http/protobuf"), stopped afterwards."""
    return _grpc_receiver() if protocol == "grpc" else _http_receiver()


def otlp_env(rcv: Receiver, **extra: str) -> dict[str, str]:
    """The SDK's environment variables that send both signals to ``rcv``."""
    return {
        "OTEL_EXPORTER_OTLP_PROTOCOL": rcv.protocol,
        "OTEL_EXPORTER_OTLP_ENDPOINT": rcv.endpoint,
        **extra,
    }


def by_name(spans: list[Span], name: str) -> Span:
    """The one span called ``name``."""
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{len(found)} spans named {name!r} in {sorted(s.name for s in spans)}"
    return found[0]


def parent(span: Span, spans: list[Span]) -> str | None:
    """The name of ``span``'s parent among ``spans`` (None if absent or a root)."""
    names = {s.span_id: s.name for s in spans}
    return names.get(span.parent_id)
