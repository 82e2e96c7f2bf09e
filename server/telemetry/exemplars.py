"""Exemplars: the trace id of a call beside its latency observation, so a latency panel in
Grafana links to a trace of that latency.

Only a trace that reaches the collector may be named: one head-sampled, or one the keep policy
exports after the fact (``keep.py``). Exemplars are served in the OpenMetrics format, which
Prometheus asks for when it stores them (``--enable-feature=exemplar-storage``).
"""

from __future__ import annotations

from opentelemetry import trace

LABEL = "trace_id"


def exemplar(kept: bool = False, span: trace.Span | None = None) -> dict[str, str] | None:
    """``{"trace_id": ...}`` of the current (or given) span when its trace is exported
    (sampled, or ``kept``), else None."""
    ctx = (span or trace.get_current_span()).get_span_context()
    if not ctx.is_valid or not (ctx.trace_flags.sampled or kept):
        return None
    return {LABEL: format(ctx.trace_id, "032x")}
