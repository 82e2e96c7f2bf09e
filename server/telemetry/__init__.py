"""Observability shared by rankserve's processes: tracing setup, W3C trace context over gRPC,
tracing interceptors and the Prometheus endpoint. The local trace receiver and its waterfall
are tools (``rankserve.tools.traces``)."""

from rankserve.server.telemetry.interceptors import (
    TracingClientInterceptor,
    TracingServerInterceptor,
)
from rankserve.server.telemetry.metrics_http import MetricsServer
from rankserve.server.telemetry.tracing import make_provider, shutdown_provider, tracer_of

__all__ = [
    "MetricsServer",
    "TracingClientInterceptor",
    "TracingServerInterceptor",
    "make_provider",
    "shutdown_provider",
    "tracer_of",
]
