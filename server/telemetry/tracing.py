"""Tracer setup from the standard OTEL_* environment variables.

Tracing is on when an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) and not switched off (``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none``). The SDK itself reads the rest: ``OTEL_SERVICE_NAME``,
``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` and the ``OTEL_BSP_*`` queue limits.

Spans leave through a batch span processor: a worker thread exports them, so a request never
waits for the collector, and a collector that is down only costs dropped spans. With a
``KeepPolicy`` the spans of traces that were not head-sampled are recorded and held, and
exported only when their trace turns out slow or failed (``keep.py``).

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
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from rankserve.server.common.tls import TlsFiles, read_pem
from rankserve.server.telemetry.keep import (
    HeldSpans,
    KeepingTracerProvider,
    KeepSignal,
    keeping_sampler,
)

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


@dataclass
class KeepPolicy:
    """Hold the spans of traces that were not head-sampled; export a trace's when it is kept.

    ``slower_than_s``: this process keeps a trace whose call it served took at least this long
    or failed (None: only when told, by the keep header of a call). ``signal`` hears of each
    trace kept that way, to pass on downstream. ``held`` is set by ``make_provider``.
    """

    slower_than_s: float | None = None
    hold_s: float = 10.0
    max_spans: int = 20000
    signal: KeepSignal | None = None
    held: HeldSpans | None = field(default=None, init=False)


def head_ratio(env: Mapping[str, str] | None = None) -> float:
    """The head-sampling share the standard variables ask for (1.0 unless a ratio sampler)."""
    env = os.environ if env is None else env
    sampler = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    if sampler in ("traceidratio", "parentbased_traceidratio"):
        try:
            return min(1.0, max(0.0, float(env.get("OTEL_TRACES_SAMPLER_ARG", "1"))))
        except ValueError:
            return 1.0
    return 0.0 if sampler in ("always_off", "parentbased_always_off") else 1.0


def make_provider(
    default_service: str, exporter: SpanExporter | None = None,
    keep: KeepPolicy | None = None,
) -> TracerProvider | None:
    """A provider exporting over OTLP/gRPC, or None when the environment turns tracing off.

    ``exporter`` replaces the OTLP exporter (tests pass an in-memory one). The provider is
    never installed globally: each process passes its tracer to the components that need it.
    With ``keep``, traces that are not head-sampled are recorded and held (see KeepPolicy).
    """
    if exporter is None and not tracing_enabled():
        return None
    service = os.environ.get("OTEL_SERVICE_NAME") or default_service
    # Shut down explicitly (bounded) by the process, never by an atexit hook that could wait
    # for a dead collector.
    sampler = keeping_sampler(head_ratio()) if keep is not None else None
    provider = (KeepingTracerProvider if keep is not None else TracerProvider)(
        resource=Resource.create({SERVICE_NAME: service}), shutdown_on_exit=False,
        sampler=sampler)
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        check_tls_files()
        exporter = OTLPSpanExporter()
        endpoint = next(os.environ[v] for v in _ENDPOINT_VARS if os.environ.get(v))
        log.info("tracing on: service %s exports OTLP/gRPC to %s", service, endpoint)
    batch = BatchSpanProcessor(exporter)
    if keep is None:
        provider.add_span_processor(batch)
        return provider
    keep.held = HeldSpans(batch, hold_s=keep.hold_s, max_spans=keep.max_spans,
                          slower_than_s=keep.slower_than_s,
                          on_keep=keep.signal.add if keep.signal is not None else None)
    provider.add_span_processor(keep.held)
    assert isinstance(provider, KeepingTracerProvider)
    provider.held = keep.held
    if keep.slower_than_s is not None:
        log.info("tracing keeps every call slower than %g ms or failed, plus %g%% of the rest",
                 keep.slower_than_s * 1e3, 100 * head_ratio())
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
