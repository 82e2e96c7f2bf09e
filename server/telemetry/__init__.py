"""Observability shared by rankserve's processes: tracing setup, W3C trace context over gRPC,
tracing interceptors, the Prometheus endpoint, the local trace receiver and its waterfall."""

from server.telemetry.interceptors import TracingClientInterceptor, TracingServerInterceptor
from server.telemetry.metrics_http import MetricsServer
from server.telemetry.tracing import make_provider, shutdown_provider, tracer_of
from server.telemetry.waterfall import format_waterfall

__all__ = [
    "MetricsServer",
    "TracingClientInterceptor",
    "TracingServerInterceptor",
    "format_waterfall",
    "make_provider",
    "shutdown_provider",
    "tracer_of",
]
