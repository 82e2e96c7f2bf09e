"""W3C trace context (``traceparent``, ``tracestate``) in gRPC metadata.

gRPC metadata keys are lower case, like the W3C header names, so metadata tuples serve as the
carrier directly.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
TRACE_HEADERS = frozenset(_PROPAGATOR.fields)


def extract(metadata: Iterable[tuple[str, str | bytes]] | None) -> otel_context.Context:
    """The remote parent carried by incoming metadata (an empty context when there is none)."""
    carrier = {
        key: value.decode() if isinstance(value, bytes) else value
        for key, value in (metadata or ())
        if key in TRACE_HEADERS
    }
    return _PROPAGATOR.extract(carrier)


def inject(context: otel_context.Context | None = None) -> list[tuple[str, str]]:
    """Metadata entries naming the current span (or ``context``'s) as the remote parent."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    return list(carrier.items())


def trace_id_hex(span: trace.Span | None = None) -> str:
    """32 hex digits of the current (or given) span's trace id; "" when not tracing."""
    ctx = (span or trace.get_current_span()).get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


def traceparent_trace_id(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The trace id a peer reported in its ``traceparent`` metadata, or ""."""
    ctx = trace.get_current_span(extract(metadata)).get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""
