"""The ranking server's spans and metrics, read the way a user reads them: spans as exported
(an in-memory exporter instead of OTLP), metrics scraped over HTTP from --metrics-port."""

from __future__ import annotations

import time
import urllib.request
from contextlib import asynccontextmanager

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from rankserve.ranking.v1 import ranking_pb2_grpc
from rankserve.server.ranking.app import RankingApp
from rankserve.server.ranking.settings import RankerSettings
from tests.integration.test_ranking_server import F, request, weights
from tests.support.catalog import make_catalog
from tests.support.predict_server import NumpyModel, PredictServer

pytestmark = pytest.mark.timeout(60)
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
STAGES = ["route", "retrieve", "features", "plan", "score", "merge"]


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory):
    return make_catalog(tmp_path_factory.mktemp("catalog") / "c", num_items=3000, num_features=F)


@asynccontextmanager
async def serving(catalog_dir, model=None, exporter=None, **settings):
    model = model or NumpyModel(weights=weights())
    async with PredictServer(model) as predict:
        app = RankingApp(RankerSettings(catalog_dir=str(catalog_dir), model_target=predict.target,
                                        port=0, metrics_port=0, grace_s=0.5, **settings),
                         span_exporter=exporter)
        port = await app.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield ranking_pb2_grpc.RankingServiceStub(channel), model, app
        finally:
            await app.stop()


def scrape(address: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def rank_as_caller(catalog_dir, flags: str):
    """One Rank under the caller's traceparent with ``flags`` ("01" sampled, "00" not): the
    response, its trailers, the spans exported and the model's record of its calls."""
    exporter = InMemorySpanExporter()
    async with serving(catalog_dir, exporter=exporter) as (stub, model, app):
        call = stub.Rank(request(), timeout=10,
                         metadata=(("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-{flags}"),))
        resp = await call
        answered = dict(await call.trailing_metadata())
        app.tracer_provider.force_flush()
    return resp, answered, exporter.get_finished_spans(), model


async def test_spans_continue_the_callers_trace_and_answer_with_its_id(catalog_dir):
    resp, answered, spans, _ = await rank_as_caller(catalog_dir, "01")
    assert resp.trace_id == CALLER_TRACE
    assert answered["traceparent"].split("-")[1] == CALLER_TRACE
    assert {format(s.context.trace_id, "032x") for s in spans} == {CALLER_TRACE}
    [server] = [s for s in spans if s.kind == SpanKind.SERVER]
    assert server.name == "rankserve.ranking.v1.RankingService/Rank"
    assert format(server.parent.span_id, "016x") == CALLER_SPAN and server.parent.is_remote
    # The caller's traceparent names the server span as its child's parent.
    assert answered["traceparent"].split("-")[2] == format(server.context.span_id, "016x")
    stages = sorted((s for s in spans if s.parent and s.parent.span_id == server.context.span_id),
                    key=lambda s: s.start_time)
    assert [s.name for s in stages] == STAGES
    score = stages[STAGES.index("score")]
    batches = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert len(batches) == resp.degradation.total_batches == 40
    assert all(b.parent.span_id == score.context.span_id for b in batches)
    assert sorted(b.attributes["rankserve.batch.index"] for b in batches) == list(range(40))
    assert {b.attributes["rankserve.batch.outcome"] for b in batches} == {"OK"}
    assert {b.attributes["rankserve.model.version"] for b in batches} == {"1"}
    assert all(b.attributes["rankserve.request.bytes"] > 25 * 300 * 4 for b in batches)


async def test_a_caller_that_did_not_sample_gets_no_span_but_learns_its_trace_id(catalog_dir):
    # The sampler follows the caller: no span of the Rank is recorded (the server skips its own
    # span instead of recording a dropped one), yet the answer names the caller's trace.
    resp, answered, spans, model = await rank_as_caller(catalog_dir, "00")
    assert resp.degradation.total_batches == 40 and not resp.degradation.degraded
    assert resp.trace_id == CALLER_TRACE
    assert answered["traceparent"] == f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"
    assert spans == ()
    # The model calls carried the caller's decision on: not sampled, same trace.
    sent = model.traceparents
    assert len(sent) == 40
    assert all(t.startswith(f"00-{CALLER_TRACE}-") and t.endswith("-00") for t in sent)
    # No batch call made a span of its own that nobody records: all 40 name one parent.
    assert len({t.split("-")[2] for t in sent}) == 1


async def test_failed_batches_are_error_spans_and_counted(catalog_dir):
    exporter = InMemorySpanExporter()
    model = NumpyModel(weights=weights(),
                       fail=lambda ctx, c: grpc.StatusCode.UNAVAILABLE if c[0, 0] % 2 else None)
    async with serving(catalog_dir, model, exporter) as (stub, _, app):
        resp = await stub.Rank(request(page_size=10), timeout=10)
        app.tracer_provider.force_flush()
        metrics = scrape(app.metrics_address)
    failed = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT
              and s.attributes["rankserve.batch.outcome"] == "UNAVAILABLE"]
    assert resp.degradation.degraded
    assert len(failed) == resp.degradation.failed_batches > 0
    assert all(not s.status.is_ok for s in failed)
    assert metrics[("rankserve_rank_degraded_total", ())] == 1
    assert metrics[("rankserve_rank_fallback_candidates_total", ())] == (
        resp.degradation.fallback_candidates)
    assert metrics[("rankserve_predict_duration_seconds_count", (
        ("model", "ranker"), ("status", "UNAVAILABLE"), ("version", "latest")))] == len(failed)


async def test_metrics_of_rank_calls_by_outcome(catalog_dir):
    async with serving(catalog_dir) as (stub, _, app):
        for _ in range(3):
            await stub.Rank(request(), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Rank(request(page_size=0), timeout=10)
        metrics = scrape(app.metrics_address)
    assert app.tracer_provider is None  # no OTEL_* endpoint: nothing traced
    assert metrics[("rankserve_rank_duration_seconds_count", (("outcome", "OK"),))] == 3
    assert metrics[("rankserve_rank_duration_seconds_count",
                    (("outcome", "INVALID_ARGUMENT"),))] == 1
    assert metrics[("rankserve_rank_in_flight_requests", ())] == 0
    for stage in STAGES:
        assert metrics[("rankserve_rank_stage_duration_seconds_count", (("stage", stage),))] == 3
    assert metrics[("rankserve_rank_batches_sum", ())] == 120
    assert metrics[("rankserve_predict_batch_rows_sum", ())] == 3000
    assert metrics[("rankserve_predict_request_bytes_count", (("compression", "none"),))] == 120
    assert metrics[("rankserve_predict_duration_seconds_count", (
        ("model", "ranker"), ("status", "OK"), ("version", "1")))] == 120
    assert metrics[("rankserve_rank_degraded_total", ())] == 0


async def test_a_collector_that_is_down_costs_no_request(catalog_dir, monkeypatch):
    # Nothing listens on the discard port of loopback: every export fails.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    async with serving(catalog_dir) as (stub, _, app):
        assert app.tracer_provider is not None
        results = [await stub.Rank(request(), timeout=10) for _ in range(20)]
        stop_started = time.monotonic()
    # Nor does it hold up shutdown beyond the export bound (2 s) plus the grace period.
    assert time.monotonic() - stop_started < 10
    assert all(not r.degradation.degraded and len(r.trace_id) == 32 for r in results)
    assert len({r.trace_id for r in results}) == 20
