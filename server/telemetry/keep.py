"""Keeping the traces of slow and failed Ranks at close to the cost of head sampling.

Head sampling decides when a Rank starts, so it throws away the slow Ranks a trace is wanted
for. Here every process records every span, but a span whose trace was not head-sampled is held
in memory, not exported. When a Rank ends slow or failed, the ranker exports its held spans and
names the trace in the ``x-rankserve-keep-traces`` header of its next Predict calls for a few
seconds; each model server, reached by those calls through Envoy's round robin, exports what it
holds of that trace. Held spans of any other trace are dropped after ``hold_s``. So a kept Rank
has every ranker span and every model-server span, exported after the fact; Envoy's spans follow
the head decision only (Envoy cannot hold them), so its hop shows as the gap between the
ranker's client span and the model server's span.

The head ratio keeps a random share of the rest in full, Envoy included. A span of an
unsampled trace is recorded as a ``HeldSpan`` (plain fields), not an SDK span, and becomes one
only if its trace is kept: with that, the policy costs a little more than head sampling alone
(bench/results/tracing_bench.md). It stays opt-in.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from rankserve.server.telemetry.held_span import HeldSpan, HoldingTracer

#: Metadata key naming traces to keep: comma-separated 32-hex-digit trace ids.
KEEP_HEADER = "x-rankserve-keep-traces"
#: At most this many ids ride on one call (the newest): a header stays small.
MAX_IDS_PER_CALL = 16


class _RecordOnly(Sampler):
    """Record the span (so it can be kept later) without marking it sampled."""

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Sequence[Link] | None = None,
                      trace_state: TraceState | None = None) -> SamplingResult:
        return SamplingResult(Decision.RECORD_ONLY, attributes, trace_state)

    def get_description(self) -> str:
        return "RecordOnly"


class _RatioOrRecord(Sampler):
    """A root span: sampled for ``ratio`` of trace ids, else recorded only."""

    def __init__(self, ratio: float) -> None:
        self._ratio = TraceIdRatioBased(ratio)

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Sequence[Link] | None = None,
                      trace_state: TraceState | None = None) -> SamplingResult:
        result = self._ratio.should_sample(parent_context, trace_id, name, kind, attributes,
                                           links, trace_state)
        if result.decision == Decision.DROP:
            return SamplingResult(Decision.RECORD_ONLY, attributes, trace_state)
        return result

    def get_description(self) -> str:
        return f"RatioOrRecord{{{self._ratio.get_description()}}}"


def keeping_sampler(ratio: float) -> Sampler:
    """Head-sample ``ratio`` of new traces and follow a caller's decision; record the rest."""
    record = _RecordOnly()
    return ParentBased(_RatioOrRecord(ratio), remote_parent_sampled=ALWAYS_ON,
                       remote_parent_not_sampled=record, local_parent_sampled=ALWAYS_ON,
                       local_parent_not_sampled=record)


def _as_sampled(span: ReadableSpan | HeldSpan) -> ReadableSpan:
    if isinstance(span, HeldSpan):
        return span.as_readable()
    ctx = span.context
    assert ctx is not None
    return ReadableSpan(
        name=span.name,
        context=SpanContext(ctx.trace_id, ctx.span_id, is_remote=False,
                            trace_flags=TraceFlags(TraceFlags.SAMPLED),
                            trace_state=ctx.trace_state),
        parent=span.parent, resource=span.resource, attributes=span.attributes,
        events=span.events, links=span.links, kind=span.kind, status=span.status,
        start_time=span.start_time, end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope)


class HeldSpans(SpanProcessor):
    """Passes sampled spans to ``export``; holds the others by trace until kept or too old.

    ``slower_than_s``: a local root span (a call this process served) that took at least this
    long, or ended in error, keeps its trace here and is reported to ``on_keep`` (the ranker
    passes the id on to the model servers). None: this process only keeps what it is told to.
    At most ``max_spans`` are held; the oldest traces go first.
    """

    def __init__(self, export: SpanProcessor, *, hold_s: float = 10.0, max_spans: int = 20000,
                 slower_than_s: float | None = None,
                 on_keep: Callable[[int], None] | None = None) -> None:
        self._export = export
        self._hold_ns = int(hold_s * 1e9)
        self._max_spans = max_spans
        self._slower_ns = None if slower_than_s is None else int(slower_than_s * 1e9)
        self._on_keep = on_keep
        self._lock = threading.Lock()
        # trace id -> (first arrival ns, spans), oldest first
        self._held: OrderedDict[int, tuple[int, list[ReadableSpan | HeldSpan]]] = OrderedDict()
        self._count = 0
        # Traces kept recently: their spans that end later are exported at once.
        self._kept: OrderedDict[int, int] = OrderedDict()
        self.kept_traces = 0
        self.dropped_spans = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._export.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None:
            return
        if ctx.trace_flags.sampled:
            self._export.on_end(span)
            return
        self.hold(span)

    def hold(self, span: ReadableSpan | HeldSpan) -> None:
        """An ended span of a trace that was not head-sampled: exported at once if its trace
        was kept, else held."""
        assert span.context is not None
        now = time.time_ns()
        trace_id = span.context.trace_id
        with self._lock:
            if trace_id in self._kept:
                self._export.on_end(_as_sampled(span))
                return
            entry = self._held.get(trace_id)
            if entry is None:
                entry = self._held[trace_id] = (now, [])
            entry[1].append(span)
            self._count += 1
            self._evict(now)
        if self._is_slow_root(span):
            self.keep(trace_id)
            if self._on_keep is not None:
                self._on_keep(trace_id)

    def would_keep(self, seconds: float, failed: bool) -> bool:
        """Whether a call of this process that took ``seconds`` (and failed or not) keeps its
        trace here: what an exemplar may point to."""
        return self._slower_ns is not None and (failed or seconds * 1e9 >= self._slower_ns)

    def _is_slow_root(self, span: ReadableSpan | HeldSpan) -> bool:
        if self._slower_ns is None or (span.parent is not None and not span.parent.is_remote):
            return False
        if span.status.status_code == StatusCode.ERROR:
            return True
        return (span.end_time or 0) - (span.start_time or 0) >= self._slower_ns

    def _evict(self, now: int) -> None:
        while self._held:
            trace_id, (first, spans) = next(iter(self._held.items()))
            if now - first < self._hold_ns and self._count <= self._max_spans:
                break
            del self._held[trace_id]
            self._count -= len(spans)
            self.dropped_spans += len(spans)
        while self._kept and now - next(iter(self._kept.values())) >= self._hold_ns:
            self._kept.popitem(last=False)

    def keep(self, trace_id: int) -> None:
        """Export what is held of ``trace_id``, and its spans that end within ``hold_s``."""
        with self._lock:
            if trace_id in self._kept:
                return
            self._kept[trace_id] = time.time_ns()
            entry = self._held.pop(trace_id, None)
            self.kept_traces += 1
            if entry is None:
                return
            self._count -= len(entry[1])
        for span in entry[1]:
            self._export.on_end(_as_sampled(span))

    def keep_hex(self, ids: Iterable[str]) -> None:
        """``keep`` for trace ids as the keep header carries them; malformed ones are ignored
        (a header is caller input, and a bad id must not fail the call)."""
        for text in ids:
            try:
                trace_id = int(text, 16)
            except ValueError:
                continue
            if 0 < trace_id < 1 << 128:
                self.keep(trace_id)

    def shutdown(self) -> None:
        self._export.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._export.force_flush(timeout_millis)


class KeepingTracerProvider(TracerProvider):
    """A provider whose tracers record the spans of unsampled traces as ``HeldSpan``s into
    ``held`` (set once it exists); a root span stays the SDK's (its sampler draws the head
    share)."""

    held: HeldSpans | None = None

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        tracer = super().get_tracer(*args, **kwargs)
        if self.held is None or not isinstance(tracer, SdkTracer):
            return tracer
        return HoldingTracer(tracer, self.held.hold)


class KeepSignal:
    """Trace ids to name in the keep header of outgoing calls, each for ``for_s`` seconds."""

    def __init__(self, for_s: float = 3.0) -> None:
        self._for_s = for_s
        self._ids: deque[tuple[float, str]] = deque()
        self._lock = threading.Lock()

    def add(self, trace_id: int) -> None:
        with self._lock:
            self._ids.append((time.monotonic(), format(trace_id, "032x")))

    def header(self) -> tuple[str, str] | None:
        """(KEEP_HEADER, ids) for the next call, or None when no trace is to be kept."""
        if not self._ids:
            return None
        with self._lock:
            cutoff = time.monotonic() - self._for_s
            while self._ids and self._ids[0][0] < cutoff:
                self._ids.popleft()
            if not self._ids:
                return None
            newest = list(self._ids)[-MAX_IDS_PER_CALL:]
        return KEEP_HEADER, ",".join(i for _, i in newest)


def keep_ids(metadata: Iterable[tuple[str, str | bytes]] | None) -> list[str]:
    """The trace ids an incoming call's keep header names."""
    out: list[str] = []
    for key, value in metadata or ():
        if key == KEEP_HEADER:
            text = value.decode() if isinstance(value, bytes) else value
            out.extend(t.strip() for t in text.split(",")[:MAX_IDS_PER_CALL] if t.strip())
    return out
