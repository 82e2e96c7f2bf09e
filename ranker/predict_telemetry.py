"""What one Predict call of a Rank reports: its batch span, the span's attributes, the call's
metrics, and the batch index that observers of the request (request capture) are handed.

Traces, dashboards and capture files all name these; keeping them in one module keeps them
agreeing. The pipeline wraps each batch's call in :meth:`PredictTelemetry.batch`; the scorer
reports what it sent with :func:`request_sent` and reads :func:`batch_index` for its observers.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable
from typing import NamedTuple

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from rankserve.ranker.merge import BatchOutcome
from rankserve.ranker.metrics import RankerMetrics
from rankserve.ranker.types import ModelRef

# The span name of a batch: the gRPC method, as OpenTelemetry names client calls.
PREDICT_METHOD = "tensorflow.serving.PredictionService/Predict"


class _Call(NamedTuple):
    batch: int
    span: trace.Span


# The batch call of the current task. Each batch is scored in a task of its own, so the value
# never leaks into another batch's call.
_CALL: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("rankserve_predict_call",
                                                                     default=None)


def batch_index() -> int:
    """The index within its Rank of the batch this task is scoring; -1 outside a batch call."""
    call = _CALL.get()
    return -1 if call is None else call.batch


def request_sent(request_bytes: int, compression: str, metrics: RankerMetrics | None) -> None:
    """Records a PredictRequest about to be sent: its size before compression and the codec.

    The attributes go on the batch span when there is one (a shadow call has none); the metric
    counts every request the scorer sends.
    """
    call = _CALL.get()
    if call is not None and call.span.is_recording():
        call.span.set_attribute("rankserve.request.bytes", request_bytes)
        call.span.set_attribute("rankserve.request.compression", compression)
    if metrics is not None:
        metrics.request_bytes.labels(compression).observe(request_bytes)


def _in_unsampled_trace() -> bool:
    """Whether the current span belongs to a trace that was not sampled (a span with no valid
    parent would be a root, which the sampler may still pick)."""
    ctx = trace.get_current_span().get_span_context()
    return ctx.is_valid and not ctx.trace_flags.sampled


def _status_and_version(model: ModelRef, outcome: BatchOutcome) -> tuple[str, str]:
    """A batch's status and the version it names: the one that answered, else the one asked
    for."""
    if outcome.ok:
        return "OK", str(outcome.model_version)
    return outcome.error_status or "UNKNOWN", requested_version(model)


def requested_version(model: ModelRef) -> str:
    """The version label value of a failed call: what was asked for."""
    if model.version is not None:
        return str(model.version)
    return model.label or "latest"


class PredictTelemetry:
    """The spans and metrics of a Ranker's Predict calls."""

    def __init__(self, tracer: trace.Tracer, metrics: RankerMetrics | None,
                 skip_unsampled: bool = False) -> None:
        """``skip_unsampled``: the tracer's sampler drops every span whose parent in this
        process was not sampled (a parent-based one without a keep policy), so a batch call
        of a Rank that was not sampled need not make one."""
        self._tracer = tracer
        self._metrics = metrics
        # A span nobody records is not made: with tracing off, or in a Rank that was not
        # sampled when the sampler would drop it anyway. The call then runs in the Rank's
        # context, whose unsampled trace it hands on. Each of a Rank's 40 calls saves
        # starting, entering, filling and ending a span (py-spy on the local stack, tracing
        # off: 5-8% of the ranker's time went to the no-op tracer's spans).
        self._untraced = isinstance(tracer, trace.NoOpTracer)
        self._skip_unsampled = skip_unsampled and not self._untraced

    async def batch(self, model: ModelRef, index: int, rows: int,
                    call: Awaitable[BatchOutcome]) -> BatchOutcome:
        """Awaits ``call``, the scoring of batch ``index`` (``rows`` candidates), as one client
        span when its trace is recorded, and observes its outcome. A failed batch is an error
        span, never an exception."""
        if self._untraced or (self._skip_unsampled and _in_unsampled_trace()):
            started = time.monotonic()
            token = _CALL.set(_Call(index, trace.INVALID_SPAN))
            try:
                outcome = await call
            finally:
                _CALL.reset(token)
            self._observe(model, rows, *_status_and_version(model, outcome), started)
            return outcome
        attributes: dict[str, AttributeValue] = {
            "rpc.system": "grpc", "rpc.service": PREDICT_METHOD.split("/")[0],
            "rpc.method": "Predict", "rankserve.batch.index": index,
            "rankserve.batch.size": rows, "rankserve.model.name": model.name,
        }
        # Made current by hand, not with start_as_current_span, whose two context managers
        # add nothing here but attach, end and detach: a batch's held span under a keep policy
        # (every batch has one) cost 14-20 us in process with them, 10-11 without.
        span = self._tracer.start_span(PREDICT_METHOD, kind=SpanKind.CLIENT,
                                       attributes=attributes)
        context_token = otel_context.attach(trace.set_span_in_context(span))
        started = time.monotonic()
        token = _CALL.set(_Call(index, span))
        try:
            outcome = await call
            status, version = _status_and_version(model, outcome)
            span.set_attribute("rankserve.model.version", version)
            span.set_attribute("rankserve.batch.outcome", status)
            if not outcome.ok:
                span.set_status(Status(StatusCode.ERROR, f"{status}: {outcome.error_message}"))
        finally:
            _CALL.reset(token)
            span.end()
            otel_context.detach(context_token)
        self._observe(model, rows, status, version, started)
        return outcome

    def _observe(self, model: ModelRef, rows: int, status: str, version: str, started: float
                 ) -> None:
        if self._metrics is None:
            return
        self._metrics.batch_rows.observe(rows)
        self._metrics.predict_duration.labels(model.name, version, status).observe(
            time.monotonic() - started)
