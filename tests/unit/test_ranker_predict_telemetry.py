"""One Predict call's telemetry: the batch span and its attributes, the call's metrics and the
batch index handed to request observers, all from ranker.predict_telemetry."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from rankserve.ranker.merge import BatchOutcome
from rankserve.ranker.metrics import RankerMetrics
from rankserve.ranker.predict_telemetry import (
    PREDICT_METHOD,
    PredictTelemetry,
    batch_index,
    request_sent,
)
from rankserve.ranker.types import ModelRef
from rankserve.server.telemetry.interceptors import drops_unsampled_parent
from rankserve.server.telemetry.keep import HeldSpans, KeepingTracerProvider, keeping_sampler


@pytest.fixture
def traced():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


async def test_a_batch_call_is_one_client_span_with_its_metrics(traced):
    tracer, exporter = traced
    registry = CollectorRegistry()
    metrics = RankerMetrics(registry)
    telemetry = PredictTelemetry(tracer, metrics)
    seen = []

    async def call(i: int) -> BatchOutcome:
        seen.append(batch_index())
        request_sent(1000 + i, "none", metrics)
        await asyncio.sleep(0)
        if i == 1:
            return BatchOutcome(slice(25, 50), error_status="UNAVAILABLE", error_message="down")
        return BatchOutcome(slice(0, 25), scores=np.zeros(25, np.float32), model_version=7)

    model = ModelRef("ranker", label="stable")
    outcomes = await asyncio.gather(*(telemetry.batch(model, i, 25, call(i)) for i in range(2)))
    assert [o.ok for o in outcomes] == [True, False]
    assert sorted(seen) == [0, 1] and batch_index() == -1
    spans = sorted(exporter.get_finished_spans(),
                   key=lambda s: s.attributes["rankserve.batch.index"])
    assert {s.name for s in spans} == {PREDICT_METHOD}
    assert all(s.kind == SpanKind.CLIENT for s in spans)
    ok, failed = (dict(s.attributes) for s in spans)
    assert ok == {"rpc.system": "grpc", "rpc.service": "tensorflow.serving.PredictionService",
                  "rpc.method": "Predict", "rankserve.batch.index": 0,
                  "rankserve.batch.size": 25, "rankserve.model.name": "ranker",
                  "rankserve.request.bytes": 1000, "rankserve.request.compression": "none",
                  "rankserve.model.version": "7", "rankserve.batch.outcome": "OK"}
    assert failed["rankserve.model.version"] == "stable"  # what was asked for
    assert failed["rankserve.batch.outcome"] == "UNAVAILABLE"
    assert spans[0].status.is_ok and not spans[1].status.is_ok

    def sample(name, **labels):
        return registry.get_sample_value(name, labels)

    assert sample("rankserve_predict_batch_rows_sum") == 50
    assert sample("rankserve_predict_request_bytes_count", compression="none") == 2
    assert sample("rankserve_predict_duration_seconds_count", model="ranker", version="7",
                  status="OK") == 1
    assert sample("rankserve_predict_duration_seconds_count", model="ranker",
                  version="stable", status="UNAVAILABLE") == 1


async def test_a_request_outside_a_batch_call_is_counted_but_touches_no_span(traced):
    tracer, exporter = traced
    registry = CollectorRegistry()
    with tracer.start_as_current_span("rank") as outer:
        request_sent(512, "gzip", RankerMetrics(registry))  # a shadow call, say
        assert batch_index() == -1
    assert "rankserve.request.bytes" not in outer.attributes
    assert registry.get_sample_value("rankserve_predict_request_bytes_count",
                                     {"compression": "gzip"}) == 1


async def _one_batch(tracer, telemetry):
    seen = []

    async def call() -> BatchOutcome:
        seen.append((trace.get_current_span().get_span_context(), batch_index()))
        return BatchOutcome(slice(0, 25), scores=np.zeros(25, np.float32), model_version=3)

    with tracer.start_as_current_span("rank") as rank:
        await telemetry.batch(ModelRef("ranker"), 4, 25, call())
    return rank.get_span_context(), seen[0]


def _provider(sampler, keep: bool = False):
    exporter = InMemorySpanExporter()
    if keep:
        held = HeldSpans(SimpleSpanProcessor(exporter), slower_than_s=0.0)
        provider = KeepingTracerProvider(sampler=sampler)
        provider.add_span_processor(held)
    else:
        provider = TracerProvider(sampler=sampler)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def test_only_a_parent_based_sampler_without_a_keep_policy_drops_unsampled_children():
    assert drops_unsampled_parent(_provider(ParentBased(ALWAYS_OFF))[0], remote=False)
    assert drops_unsampled_parent(_provider(ParentBased(ALWAYS_ON))[0], remote=False)
    assert not drops_unsampled_parent(_provider(ALWAYS_ON)[0], remote=False)
    assert not drops_unsampled_parent(_provider(keeping_sampler(0.05), keep=True)[0],
                                      remote=False)
    assert not drops_unsampled_parent(trace.NoOpTracer(), remote=False)


def _telemetry(tracer, metrics=None) -> PredictTelemetry:
    """As the ranker's composition root builds it."""
    return PredictTelemetry(tracer, metrics, drops_unsampled_parent(tracer, remote=False))


async def test_a_rank_that_was_not_sampled_makes_no_batch_span_and_hands_its_trace_on():
    registry = CollectorRegistry()
    tracer, exporter = _provider(ParentBased(ALWAYS_OFF))
    rank, (inside, index) = await _one_batch(tracer, _telemetry(tracer, RankerMetrics(registry)))
    # The call runs in the Rank's own context: its trace, not sampled, goes on to the model.
    assert inside == rank and inside.is_valid and not inside.trace_flags.sampled
    assert index == 4 and exporter.get_finished_spans() == ()
    assert registry.get_sample_value("rankserve_predict_duration_seconds_count",
                                     {"model": "ranker", "version": "3", "status": "OK"}) == 1


async def test_a_sampled_rank_and_a_keep_policy_still_make_the_batch_span():
    # A keep policy records every Rank (this one keeps those of 0 s or more: all of them).
    for tracer, exporter in (_provider(ParentBased(ALWAYS_ON)),
                             _provider(keeping_sampler(0.0), keep=True)):
        rank, (inside, _) = await _one_batch(tracer, _telemetry(tracer))
        assert inside.trace_id == rank.trace_id and inside.span_id != rank.span_id
        assert sorted(s.name for s in exporter.get_finished_spans()) == ["rank", PREDICT_METHOD]


async def test_with_tracing_off_a_batch_is_counted_without_a_span():
    registry = CollectorRegistry()
    tracer = trace.NoOpTracer()
    _, (inside, index) = await _one_batch(tracer, _telemetry(tracer, RankerMetrics(registry)))
    assert not inside.is_valid and index == 4
    assert registry.get_sample_value("rankserve_predict_batch_rows_sum") == 25
