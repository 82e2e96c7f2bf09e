"""Stage timing: one measurement feeds the stage's span, the response's timings and the metric."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from rankserve.ranker.metrics import RankerMetrics
from rankserve.ranker.stages import STAGES, StageTimer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def traced():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


def stage_count(registry: CollectorRegistry, stage: str) -> float:
    return registry.get_sample_value("rankserve_rank_stage_duration_seconds_count",
                                     {"stage": stage}) or 0.0


def test_a_stage_is_a_span_a_timing_and_on_finish_a_metric(traced):
    tracer, exporter = traced
    clock = Clock()
    registry = CollectorRegistry()
    metrics = RankerMetrics(registry)
    timer = StageTimer(tracer, clock=clock)
    with timer.stage("retrieve") as span:
        span.set_attribute("rankserve.candidates", 7)
        clock.now += 0.004
    clock.now += 0.001  # between stages: in the total only
    with timer.stage("score"):
        clock.now += 0.010
    [retrieve, score] = exporter.get_finished_spans()
    assert (retrieve.name, score.name) == ("retrieve", "score")
    assert retrieve.attributes["rankserve.candidates"] == 7
    assert timer.timings.retrieve_ms == pytest.approx(4.0)
    assert timer.timings.score_ms == pytest.approx(10.0)
    assert stage_count(registry, "retrieve") == 0  # nothing observed before the Rank answers

    timings = timer.finish(metrics)
    assert timings is timer.timings and timings.total_ms == pytest.approx(15.0)
    assert stage_count(registry, "retrieve") == stage_count(registry, "score") == 1
    assert registry.get_sample_value("rankserve_rank_stage_duration_seconds_sum",
                                     {"stage": "score"}) == pytest.approx(0.010)
    assert stage_count(registry, "merge") == 0  # never ran


def test_a_stage_that_raises_records_no_duration(traced):
    tracer, exporter = traced
    registry = CollectorRegistry()
    timer = StageTimer(tracer, clock=Clock())
    with pytest.raises(ValueError), timer.stage("features"):
        raise ValueError("store down")
    assert timer.timings.features_ms == 0.0
    timer.finish(RankerMetrics(registry))
    assert stage_count(registry, "features") == 0
    [span] = exporter.get_finished_spans()
    assert span.name == "features" and not span.status.is_ok


def test_every_stage_has_a_timing_field_and_a_metric():
    timer = StageTimer(TracerProvider().get_tracer("test"))
    metrics = RankerMetrics(CollectorRegistry())
    for stage in STAGES:
        with timer.stage(stage):
            pass
    timer.finish(metrics)
    assert set(metrics.stage_duration_labels) == set(STAGES)
    assert all(getattr(timer.timings, f"{stage}_ms") >= 0.0 for stage in STAGES)
