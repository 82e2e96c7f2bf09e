"""Tracer setup from the standard OTEL_* environment variables.

Tracing is on when an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) and not switched off (``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none``). The SDK itself reads the rest: ``OTEL_SERVICE_NAME``,
``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` and the ``OTEL_BSP_*`` queue limits.

Spans leave through a batch span processor: a worker thread exports them, so a request never
waits for the collector, and a collector that is down only costs dropped spans.

TLS to the collector is the standard variables' too: an ``https://`` endpoint, the CA in
``OTEL_EXPORTER_OTLP_CERTIFICATE`` and, for mutual TLS, ``OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE``
and ``OTEL_EXPORTER_OTLP_CLIENT_KEY`` (or their ``_TRACES_`` forms). The files are read at
start: a missing one stops the process with the variable's name, where the SDK would only log
it and fall back to the system's roots.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from rankserve.server.common.tls import TlsFiles, read_pem

log = logging.getLogger(__name__)

INSTRUMENTATION = "rankserve"
_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_TLS_FILE_VARS = {
    f"OTEL_EXPORTER_OTLP{infix}_{name}": what
    for infix in ("", "_TRACES")
    for name, what in (("CERTIFICATE", "CA certificate"),
                       ("CLIENT_CERTIFICATE", "client certificate"),
                       ("CLIENT_KEY", "client private key"))
}


def check_tls_files(env: Mapping[str, str] | None = None) -> None:
    """Reads every OTLP TLS file the environment names; TlsFileError names the variable."""
    env = os.environ if env is None else env
    for var, what in _TLS_FILE_VARS.items():
        if env.get(var):
            read_pem(env[var], var, what)


def tracing_enabled(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return any(env.get(v) for v in _ENDPOINT_VARS)


def make_provider(
    default_service: str, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """A provider exporting over OTLP/gRPC, or None when the environment turns tracing off.

    ``exporter`` replaces the OTLP exporter (tests pass an in-memory one). The provider is
    never installed globally: each process passes its tracer to the components that need it.
    """
    if exporter is None and not tracing_enabled():
        return None
    service = os.environ.get("OTEL_SERVICE_NAME") or default_service
    # Shut down explicitly (bounded) by the process, never by an atexit hook that could wait
    # for a dead collector.
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}),
                              shutdown_on_exit=False)
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        check_tls_files()
        exporter = OTLPSpanExporter()
        endpoint = next(os.environ[v] for v in _ENDPOINT_VARS if os.environ.get(v))
        log.info("tracing on: service %s exports OTLP/gRPC to %s", service, endpoint)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def exporting_provider(service: str, endpoint: str, tls: TlsFiles | None = None
                       ) -> TracerProvider:
    """A provider that exports to ``endpoint`` (``http://HOST:PORT``, or ``https://`` with
    ``tls``) whatever the environment says: for a client that talks to a stack it knows, e.g.
    the demo and the tests."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}),
                              shutdown_on_exit=False)
    if tls is not None and tls.enabled:
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=False,
                                    credentials=tls.channel_credentials())
    else:
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    return provider


def tracer_of(provider: TracerProvider | None) -> trace.Tracer:
    """The provider's tracer, or a no-op tracer when tracing is off."""
    if provider is None:
        return trace.NoOpTracer()
    return provider.get_tracer(INSTRUMENTATION)


def shutdown_provider(provider: TracerProvider | None, timeout_s: float = 2.0) -> None:
    """Export what is queued, then stop the export thread; gives up after ``timeout_s``.

    A collector that is down makes the exporter retry with backoff; a process that is shutting
    down does not wait for that: what is still queued is dropped (and logged).
    """
    if provider is None:
        return

    def flush_and_stop() -> None:
        provider.force_flush(int(timeout_s * 1000))
        provider.shutdown()

    worker = threading.Thread(target=flush_and_stop, name="rankserve-trace-shutdown",
                              daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        log.warning("trace export did not finish within %.1f s (collector down?); queued spans"
                    " are dropped", timeout_s)
