"""Keeping slow and failed traces: what is held, what is exported, and when."""

from __future__ import annotations

import time

from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from rankserve.server.telemetry.keep import (
    KEEP_HEADER,
    MAX_IDS_PER_CALL,
    HeldSpans,
    KeepingTracerProvider,
    KeepSignal,
    keep_ids,
    keeping_sampler,
)


def _provider(ratio: float, **held_args) -> tuple[trace.Tracer, HeldSpans, InMemorySpanExporter]:
    exported = InMemorySpanExporter()
    held = HeldSpans(SimpleSpanProcessor(exported), **held_args)
    provider = KeepingTracerProvider(sampler=keeping_sampler(ratio))
    provider.add_span_processor(held)
    provider.held = held
    return provider.get_tracer("test"), held, exported


def _rank(tracer: trace.Tracer, seconds: float = 0.0, fail: bool = False,
          parent: trace.Span | None = None) -> int:
    ctx = trace.set_span_in_context(parent) if parent is not None else None
    with tracer.start_as_current_span("Rank", context=ctx, kind=trace.SpanKind.SERVER) as root:
        for i in range(3):
            with tracer.start_as_current_span(f"Predict {i}"):
                pass
        time.sleep(seconds)
        if fail:
            root.set_status(Status(StatusCode.ERROR, "UNAVAILABLE"))
    return root.get_span_context().trace_id


def test_a_fast_unsampled_rank_exports_nothing_and_its_spans_are_recorded() -> None:
    tracer, held, exported = _provider(0.0, slower_than_s=0.05)
    with tracer.start_as_current_span("Rank") as span:
        assert span.is_recording() and not span.get_span_context().trace_flags.sampled
    _rank(tracer)
    assert exported.get_finished_spans() == ()
    assert held.kept_traces == 0


def test_a_slow_rank_is_exported_whole_as_sampled() -> None:
    signalled = []
    tracer, held, exported = _provider(0.0, slower_than_s=0.05, on_keep=signalled.append)
    _rank(tracer)
    trace_id = _rank(tracer, seconds=0.06)
    spans = exported.get_finished_spans()
    assert sorted(s.name for s in spans) == ["Predict 0", "Predict 1", "Predict 2", "Rank"]
    assert {s.context.trace_id for s in spans} == {trace_id}
    assert all(s.context.trace_flags.sampled for s in spans)
    # Parent links are kept, so the waterfall is the same tree.
    root = next(s for s in spans if s.name == "Rank")
    assert all(s.parent.span_id == root.context.span_id for s in spans if s is not root)
    assert signalled == [trace_id]


def test_a_failed_rank_is_kept_however_fast() -> None:
    tracer, _, exported = _provider(0.0, slower_than_s=10.0)
    trace_id = _rank(tracer, fail=True)
    assert {s.context.trace_id for s in exported.get_finished_spans()} == {trace_id}
    assert len(exported.get_finished_spans()) == 4


def test_head_sampled_ranks_are_exported_at_once() -> None:
    tracer, held, exported = _provider(1.0, slower_than_s=10.0)
    _rank(tracer)
    assert len(exported.get_finished_spans()) == 4 and held.kept_traces == 0


def test_a_caller_that_sampled_is_followed_and_one_that_did_not_is_recorded() -> None:
    tracer, _, exported = _provider(0.0)
    for flags, exports in ((TraceFlags.SAMPLED, 4), (TraceFlags.DEFAULT, 0)):
        exported.clear()
        remote = NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=True,
                                              trace_flags=TraceFlags(flags)))
        _rank(tracer, parent=remote)
        assert len(exported.get_finished_spans()) == exports


def test_a_downstream_process_keeps_what_the_header_names_and_later_spans_of_it() -> None:
    tracer, held, exported = _provider(0.0)  # a model server: no slowness rule of its own
    remote = NonRecordingSpan(SpanContext(0x1234, 0x99, is_remote=True))
    first = _rank(tracer, seconds=0.0, parent=remote)
    other = _rank(tracer)
    assert exported.get_finished_spans() == ()
    held.keep_hex([format(first, "032x"), "not-hex", "0" * 32, "f" * 40])
    assert {s.context.trace_id for s in exported.get_finished_spans()} == {first}
    _rank(tracer, parent=remote)  # more of the kept trace: exported at once
    assert len(exported.get_finished_spans()) == 8
    assert other not in {s.context.trace_id for s in exported.get_finished_spans()}


def test_a_kept_trace_carries_what_was_recorded_on_its_held_spans() -> None:
    # The Rank (a root: the SDK's span) and its children (held in plain fields until kept)
    # are exported alike: parent, kind, attributes, timed events, status, exceptions.
    tracer, _, exported = _provider(0.0, slower_than_s=0.05)
    with tracer.start_as_current_span("Rank", kind=trace.SpanKind.SERVER):
        with tracer.start_as_current_span("Predict", kind=trace.SpanKind.CLIENT,
                                          attributes={"batch": 3}) as call:
            assert call.is_recording() and not call.get_span_context().trace_flags.sampled
            call.set_attributes({"model": "ranker", "rows": 25})
            call.add_event("queued", {"calls": 2}, timestamp=1_000)
            call.set_status(Status(StatusCode.ERROR, "UNAVAILABLE"))
        try:
            with tracer.start_as_current_span("merge"):
                raise ValueError("no scores")
        except ValueError:
            pass
        time.sleep(0.06)
    spans = {s.name: s for s in exported.get_finished_spans()}
    assert set(spans) == {"Rank", "Predict", "merge"}
    rank, predict, merge = spans["Rank"], spans["Predict"], spans["merge"]
    assert predict.parent.span_id == merge.parent.span_id == rank.context.span_id
    assert predict.context.trace_id == rank.context.trace_id
    assert predict.context.trace_flags.sampled and predict.kind == trace.SpanKind.CLIENT
    assert dict(predict.attributes) == {"batch": 3, "model": "ranker", "rows": 25}
    assert [(e.name, dict(e.attributes), e.timestamp) for e in predict.events] == [
        ("queued", {"calls": 2}, 1_000)]
    assert (predict.status.status_code, predict.status.description) == (
        StatusCode.ERROR, "UNAVAILABLE")
    assert predict.resource == rank.resource
    assert predict.instrumentation_scope.name == "test"
    assert rank.start_time < predict.start_time <= predict.end_time < rank.end_time
    [error] = merge.events
    assert error.name == "exception" and error.attributes["exception.type"] == "ValueError"
    assert merge.status.status_code == StatusCode.ERROR


def test_held_spans_are_bounded_oldest_trace_first() -> None:
    tracer, held, exported = _provider(0.0, max_spans=8)
    first = _rank(tracer)
    for _ in range(3):
        _rank(tracer)
    assert held.dropped_spans >= 4
    held.keep(first)
    assert exported.get_finished_spans() == ()


def test_the_signal_names_recent_traces_newest_last_and_forgets_old_ones() -> None:
    signal = KeepSignal(for_s=0.2)
    assert signal.header() is None
    for trace_id in range(1, MAX_IDS_PER_CALL + 3):
        signal.add(trace_id)
    key, value = signal.header()
    ids = value.split(",")
    assert key == KEEP_HEADER and len(ids) == MAX_IDS_PER_CALL
    assert ids[-1] == format(MAX_IDS_PER_CALL + 2, "032x")
    assert keep_ids([(key, value.encode()), ("other", "x")]) == ids
    time.sleep(0.25)
    assert signal.header() is None


def test_head_ratio_reads_the_standard_sampler_variables() -> None:
    from rankserve.server.telemetry.tracing import head_ratio

    assert head_ratio({}) == 1.0
    assert head_ratio({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                       "OTEL_TRACES_SAMPLER_ARG": "0.05"}) == 0.05
    assert head_ratio({"OTEL_TRACES_SAMPLER": "traceidratio",
                       "OTEL_TRACES_SAMPLER_ARG": "7"}) == 1.0
    assert head_ratio({"OTEL_TRACES_SAMPLER": "parentbased_always_off"}) == 0.0


def test_an_exemplar_names_only_a_trace_that_is_exported() -> None:
    from rankserve.server.telemetry.exemplars import exemplar

    tracer, held, _ = _provider(0.0, slower_than_s=0.05)
    with tracer.start_as_current_span("Rank") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        assert exemplar() is None  # recorded, not sampled
        assert exemplar(kept=held.would_keep(0.06, failed=False)) == {"trace_id": trace_id}
        assert not held.would_keep(0.01, failed=False) and held.would_keep(0.01, failed=True)
    sampled, _, _ = _provider(1.0)
    with sampled.start_as_current_span("Rank") as span:
        assert exemplar() == {"trace_id": format(span.get_span_context().trace_id, "032x")}
    assert exemplar(span=trace.INVALID_SPAN) is None
