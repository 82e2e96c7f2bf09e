"""A local OTLP trace receiver: keeps recent traces in memory so one can be looked at.

It speaks OTLP/gRPC (``opentelemetry.proto.collector.trace.v1.TraceService/Export``), the
protocol the ranker, the model servers and Envoy export with, and serves what it holds as JSON
on a loopback HTTP port: ``GET /traces`` (recent trace ids, newest last) and
``GET /traces/<32 hex digits>`` (every span of one trace). Bounded: the oldest trace is
dropped when ``max_traces`` are held, and the drop is counted.

With a certificate and key it serves OTLP over TLS, and with a client CA over mutual TLS (every
exporter presents a certificate of that CA), as `rankserve up --tls` runs it.

In a cluster spans go to Jaeger instead; this exists so `rankserve up` needs no collector.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from rankserve.server.common.tls import TlsFiles

_KINDS = {v: k.removeprefix("SPAN_KIND_") for k, v in trace_pb2.Span.SpanKind.items()}


def _value(v: common_pb2.AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, which) if which else None


def span_dict(span: trace_pb2.Span, service: str) -> dict[str, Any]:
    """One OTLP span as plain JSON-able values (ids as lower-case hex)."""
    return {
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex(),
        "name": span.name,
        "kind": _KINDS.get(span.kind, "UNSPECIFIED"),
        "service": service,
        "start_ns": span.start_time_unix_nano,
        "end_ns": span.end_time_unix_nano,
        "status": trace_pb2.Status.StatusCode.Name(span.status.code).removeprefix(
            "STATUS_CODE_"),
        "attributes": {kv.key: _value(kv.value) for kv in span.attributes},
        "events": [{"name": e.name, "time_ns": e.time_unix_nano,
                    "attributes": {kv.key: _value(kv.value) for kv in e.attributes}}
                   for e in span.events],
    }


class SpanStore:
    """Spans by trace id, at most ``max_traces`` traces (oldest dropped first); thread-safe."""

    def __init__(self, max_traces: int = 1000) -> None:
        self.max_traces = max_traces
        self.dropped_traces = 0
        self.spans_received = 0
        self._traces: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> int:
        added = 0
        with self._lock:
            for rs in request.resource_spans:
                service = next((kv.value.string_value for kv in rs.resource.attributes
                                if kv.key == "service.name"), "")
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        d = span_dict(span, service)
                        spans = self._traces.get(d["trace_id"])
                        if spans is None:
                            spans = self._traces[d["trace_id"]] = []
                            while len(self._traces) > self.max_traces:
                                self._traces.popitem(last=False)
                                self.dropped_traces += 1
                        spans.append(d)
                        added += 1
            self.spans_received += added
        return added

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._traces.get(trace_id.lower(), ()))

    def trace_ids(self) -> list[str]:
        with self._lock:
            return list(self._traces)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, store: SpanStore) -> None:
        self._store = store

    async def Export(self, request, context):  # noqa: N802 - gRPC method name
        self._store.add(request)
        return trace_service_pb2.ExportTraceServiceResponse()


def _http_handler(store: SpanStore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            parts = [p for p in self.path.split("?")[0].split("/") if p]
            if parts == ["traces"]:
                self._send(200, {"trace_ids": store.trace_ids(),
                                 "spans_received": store.spans_received,
                                 "dropped_traces": store.dropped_traces})
            elif len(parts) == 2 and parts[0] == "traces":
                spans = store.trace(parts[1])
                if spans:
                    self._send(200, {"trace_id": parts[1].lower(), "spans": spans})
                else:
                    self._send(404, {"error": f"no spans of trace {parts[1]} here (yet): spans"
                                     " arrive a moment after the call; the receiver keeps the"
                                     f" last {store.max_traces} traces"})
            else:
                self._send(404, {"error": "GET /traces or /traces/TRACE_ID"})

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:  # quiet: one line per GET is noise
            pass

    return Handler


class TraceReceiver:
    """OTLP/gRPC on ``host:port`` and the JSON view on ``host:http_port`` (0 = free ports);
    OTLP over TLS with ``tls`` (mutual TLS when it has a CA)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, http_port: int = 0,
                 max_traces: int = 1000, tls: TlsFiles | None = None) -> None:
        self.host = host
        self.tls = tls
        self.store = SpanStore(max_traces)
        self._port = port
        self._http_port = http_port
        self._server: grpc.aio.Server | None = None
        self._http: ThreadingHTTPServer | None = None
        self.address = ""
        self.http_address = ""

    async def start(self) -> None:
        server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
            _TraceService(self.store), server)
        where = f"{self.host}:{self._port}"
        if self.tls is not None and self.tls.enabled:
            port = server.add_secure_port(where, self.tls.server_credentials())
        else:
            port = server.add_insecure_port(where)
        await server.start()
        self._server = server
        self.address = f"{self.host}:{port}"
        self._http = ThreadingHTTPServer((self.host, self._http_port),
                                         _http_handler(self.store))
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, name="trace-receiver-http",
                         daemon=True).start()
        self.http_address = f"{self.host}:{self._http.server_address[1]}"

    async def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._server is not None:
            await self._server.stop(0.5)
            self._server = None

    async def __aenter__(self) -> TraceReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def serve(host: str, port: int, http_port: int, max_traces: int,
          ready_file: str | None, tls: TlsFiles | None = None) -> int:
    """Runs a receiver until SIGTERM or SIGINT (the `rankserve trace-receiver` process)."""
    import os
    import sys

    from rankserve.server.common.readyfile import write_ready_file
    from rankserve.server.common.shutdown import run_until_signal

    receiver = TraceReceiver(host, port, http_port, max_traces, tls)

    async def start() -> None:
        await receiver.start()
        secure = " (TLS)" if tls is not None and tls.enabled else ""
        print(f"trace receiver: OTLP/gRPC{secure} on {receiver.address}, traces as JSON on"
              f" http://{receiver.http_address}/traces", file=sys.stderr, flush=True)
        if ready_file:
            write_ready_file(ready_file, receiver.address, os.getpid(),
                             http_address=receiver.http_address)

    asyncio.run(run_until_signal(start, receiver.stop))
    return 0
