"""RankingApp over real sockets against a numpy PredictionService speaking TF Serving's API."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from rankserve.ranker.catalog import Catalog
from rankserve.ranking.v1 import ranking_pb2, ranking_pb2_grpc
from rankserve.server.ranking import RankerSettings, RankingApp
from tests.support.catalog import make_catalog
from tests.support.predict_server import NumpyModel, PredictServer
from tests.support.tcp_proxy import CountingProxy

pytestmark = pytest.mark.timeout(60)
F = 300


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory):
    return make_catalog(tmp_path_factory.mktemp("catalog") / "c", num_items=3000, num_features=F)


@pytest.fixture(scope="module")
def features(catalog_dir):
    return np.asarray(Catalog.open(catalog_dir).item_features)


def weights() -> np.ndarray:
    w = np.random.default_rng(1).standard_normal(F).astype(np.float32)
    w[0] = 0.0  # column 0 is the row number: keep it out of the score
    return w


@asynccontextmanager
async def stack(catalog_dir, model: NumpyModel | None = None, **settings):
    model = model or NumpyModel(versions=(1, 3), labels={"stable": 1}, weights=weights())
    async with PredictServer(model) as predict:
        app = RankingApp(RankerSettings(catalog_dir=str(catalog_dir), model_target=predict.target,
                                        port=0, metrics_port=0, grace_s=0.5,
                                        **settings))
        port = await app.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield ranking_pb2_grpc.RankingServiceStub(channel), model, channel
        finally:
            await app.stop()


def rows_of(items) -> list[int]:
    return [int(i.item_id.split("-")[1]) for i in items]


def request(**kw) -> ranking_pb2.RankRequest:
    base = {"query": "red shoes", "page_size": 10}
    base.update(kw)
    return ranking_pb2.RankRequest(**base)


async def test_rank_returns_the_page_in_model_score_order(catalog_dir, features):
    async with stack(catalog_dir) as (stub, model, _):
        full = await stub.Rank(request(page_size=1000, debug=True), timeout=10)
        page = await stub.Rank(request(page_size=10), timeout=10)
    assert model.requests == 80
    assert full.candidates_retrieved == 1000 and full.candidates_scored == 1000
    assert full.degradation == ranking_pb2.Degradation(total_batches=40)
    assert full.model == ranking_pb2.ModelVersion(name="ranker", version=3)
    rows = rows_of(full.items)
    assert len(set(rows)) == 1000
    # Context is the same for every item, so the order is that of candidates @ w.
    expect = features[rows] @ weights()
    got = np.array([i.score for i in full.items])
    assert np.all(np.diff(got) <= 0)
    np.testing.assert_allclose(got - got[0], expect - expect[0], rtol=1e-4, atol=1e-3)
    assert sorted(i.retrieval_rank for i in full.items) == list(range(1000))
    assert [i.item_id for i in page.items] == [i.item_id for i in full.items[:10]]
    assert page.items[0].retrieval_rank == 0 and page.items[0].retrieval_score == 0
    assert page.timings.total_ms >= page.timings.score_ms > 0


async def test_model_selector_version_and_label(catalog_dir):
    async with stack(catalog_dir) as (stub, _, _):
        by_label = await stub.Rank(request(model=ranking_pb2.ModelSelector(
            name="ranker", label="stable")), timeout=10)
        by_version = await stub.Rank(request(model=ranking_pb2.ModelSelector(version=1)),
                                     timeout=10)
    assert by_label.model == ranking_pb2.ModelVersion(name="ranker", version=1, label="stable")
    assert by_version.model == ranking_pb2.ModelVersion(name="ranker", version=1)


async def test_failed_batches_degrade_with_exact_counts(catalog_dir):
    async with stack(catalog_dir) as (stub, model, _):
        full = await stub.Rank(request(page_size=1000, debug=True), timeout=10)
        by_rank = {i.retrieval_rank: r for i, r in zip(full.items, rows_of(full.items),
                                                       strict=True)}
        # Batches 0 and 17 of 40 start at retrieval ranks 0 and 425.
        failing = {by_rank[0], by_rank[425]}
        model.fail = lambda ctx, c: (grpc.StatusCode.UNAVAILABLE if int(c[0, 0]) in failing
                                     else None)
        res = await stub.Rank(request(page_size=1000, debug=True), timeout=10)
    d = res.degradation
    assert (d.degraded, d.failed_batches, d.total_batches, d.fallback_candidates) == (
        True, 2, 40, 50)
    assert list(d.reasons) == ["2 of 40 batches failed: UNAVAILABLE"]
    assert res.candidates_scored == 950
    assert not any(i.fallback for i in res.items[:950])
    tail = res.items[950:]
    assert all(i.fallback for i in tail)
    assert [i.retrieval_rank for i in tail] == [*range(0, 25), *range(425, 450)]
    scores = [i.score for i in res.items]
    assert scores == sorted(scores, reverse=True)


async def test_transient_failure_everywhere_gives_retrieval_order(catalog_dir):
    model = NumpyModel(fail=lambda ctx, c: grpc.StatusCode.RESOURCE_EXHAUSTED)
    async with stack(catalog_dir, model) as (stub, _, _):
        res = await stub.Rank(request(page_size=5, debug=True), timeout=10)
    assert [i.retrieval_rank for i in res.items] == [0, 1, 2, 3, 4]
    assert all(i.fallback for i in res.items)
    assert res.model.version == 0 and res.degradation.fallback_candidates == 1000
    assert list(res.degradation.reasons) == ["40 of 40 batches failed: RESOURCE_EXHAUSTED"]


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        (ranking_pb2.ModelSelector(name="nope"), "Servable not found for request: Latest(nope)"),
        (ranking_pb2.ModelSelector(name="ranker", version=9), "Specific(ranker, 9)"),
        (ranking_pb2.ModelSelector(label="canary"), "Unrecognized servable version label"),
    ],
)
async def test_unknown_model_is_not_found(catalog_dir, selector, message):
    async with stack(catalog_dir) as (stub, _, _):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Rank(request(model=selector), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert message in info.value.details()


async def test_model_rejecting_inputs_is_invalid_argument(catalog_dir):
    model = NumpyModel(weights=np.ones(F + 1, np.float32))
    async with stack(catalog_dir, model) as (stub, _, _):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Rank(request(), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "candidates must be [B, 301]" in info.value.details()


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (ranking_pb2.RankRequest(page_size=10),
         "send a query, a user id or viewed item ids"),
        (request(page_size=0), "page_size must be >= 1, got 0"),
        (request(page_size=-3), "page_size must be >= 1, got -3"),
        (request(page_size=20, candidate_limit=10), "page_size 20 exceeds candidate_limit 10"),
        (request(candidate_limit=6000), "exceeds this server's maximum of 5000"),
        (request(candidate_limit=-1), "candidate_limit must be >= 0"),
    ],
)
async def test_bad_input_gets_invalid_argument_with_advice(catalog_dir, req, message):
    async with stack(catalog_dir) as (stub, model, _):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Rank(req, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()
    assert model.requests == 0


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff", b"\x0a\x80", b"\x12\x05abc"])
async def test_unparsable_request_is_invalid_argument_without_parser_text(catalog_dir, garbage):
    async with stack(catalog_dir) as (_, model, channel):
        raw = channel.unary_unary("/rankserve.ranking.v1.RankingService/Rank")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(garbage, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == (
        f"the {len(garbage)}-byte request to /rankserve.ranking.v1.RankingService/Rank is not a"
        " valid rankserve.ranking.v1.RankRequest message; send a serialized message of that type"
    )
    assert model.requests == 0


async def test_user_or_viewed_items_without_query_are_enough(catalog_dir):
    async with stack(catalog_dir) as (stub, _, _):
        a = await stub.Rank(ranking_pb2.RankRequest(
            page_size=3, user=ranking_pb2.User(id="user-2", known=True)), timeout=10)
        b = await stub.Rank(ranking_pb2.RankRequest(
            page_size=3, context=ranking_pb2.Context(viewed_item_ids=["item-00007"])),
            timeout=10)
    assert len(a.items) == 3 and len(b.items) == 3
    assert a.request_id and a.request_id != b.request_id


async def test_new_user_without_query_gets_a_popularity_page(catalog_dir):
    async with stack(catalog_dir) as (stub, _, _):
        resp = await stub.Rank(ranking_pb2.RankRequest(
            page_size=5, user=ranking_pb2.User(id="brand-new-user", known=False)), timeout=10)
    assert len(resp.items) == 5
    assert resp.candidates_scored == resp.candidates_retrieved > 0
    assert any("popularity retrieval" in r for r in resp.degradation.reasons)


async def test_deadline_too_short_to_score(catalog_dir):
    async with stack(catalog_dir, min_score_budget_ms=500) as (stub, model, _):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Rank(request(), timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "scoring needs at least 505 ms" in info.value.details()
    assert model.requests == 0


async def test_slow_model_and_short_deadline_never_hang(catalog_dir):
    # Half the batches answer at once, the rest after 5 s: the page comes back degraded in
    # time, or (on a starved machine) the call ends with DEADLINE_EXCEEDED; it never hangs.
    model = NumpyModel(weights=weights(), delay=lambda c: 5.0 if int(c[0, 0]) % 2 else 0.0)
    async with stack(catalog_dir, model) as (stub, _, _):
        t0 = time.monotonic()
        try:
            res = await stub.Rank(request(), timeout=0.5)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        else:
            d = res.degradation
            assert d.degraded and d.failed_batches > 0
            assert d.fallback_candidates == 1000 - res.candidates_scored
            assert all(r.endswith("batches failed: DEADLINE_EXCEEDED") for r in d.reasons)
        assert time.monotonic() - t0 < 2.0


async def test_no_caller_deadline_uses_the_default(catalog_dir):
    model = NumpyModel(delay=lambda c: 5.0)
    async with stack(catalog_dir, model, default_deadline_ms=300) as (stub, _, _):
        t0 = time.monotonic()
        res = await stub.Rank(request(candidate_limit=50))
        assert time.monotonic() - t0 < 2.0
    assert res.degradation.failed_batches == 2


async def _bytes_sent(catalog_dir, **settings) -> int:
    model = NumpyModel(weights=weights())
    async with PredictServer(model) as predict, CountingProxy(predict.target) as proxy:
        app = RankingApp(RankerSettings(catalog_dir=str(catalog_dir), model_target=proxy.target,
                                        port=0, metrics_port=0, grace_s=0.5,
                                        **settings))
        port = await app.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = ranking_pb2_grpc.RankingServiceStub(channel)
                res = await stub.Rank(request(), timeout=10)
        finally:
            await app.stop()
    assert res.candidates_scored == 1000 and not res.degradation.degraded
    assert model.requests == 40
    return proxy.sent


async def test_gzip_and_deflate_on_and_off(catalog_dir):
    plain = await _bytes_sent(catalog_dir, compression="none")
    gzip = await _bytes_sent(catalog_dir, compression="gzip", gzip_min_bytes=0)
    deflate = await _bytes_sent(catalog_dir, compression="deflate", gzip_min_bytes=0)
    above_threshold = await _bytes_sent(catalog_dir, compression="gzip", gzip_min_bytes=10**6)
    # 40 requests of 25 x 300 float32 (30 KB each) cross the wire either way; random normal
    # features still shrink under either codec (the exponent bytes repeat), and the model
    # server reads both (the Ranks above were answered whole).
    assert plain > 40 * 30_000
    assert gzip < 0.95 * plain
    assert deflate < 0.95 * plain
    assert abs(above_threshold - plain) < 0.01 * plain


async def test_health_and_reflection(catalog_dir):
    async with stack(catalog_dir) as (_, _, channel):
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "rankserve.ranking.v1.RankingService"):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = refl.ServerReflectionInfo(timeout=5)
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        resp = await call.read()
        await call.done_writing()
        names = {s.name for s in resp.list_services_response.service}
        assert {"rankserve.ranking.v1.RankingService", "grpc.health.v1.Health"} <= names


async def test_stop_turns_health_not_serving_before_draining(catalog_dir):
    model = NumpyModel(delay=lambda c: 0.3)
    async with PredictServer(model) as predict:
        app = RankingApp(RankerSettings(catalog_dir=str(catalog_dir), model_target=predict.target,
                                        port=0, metrics_port=0, grace_s=3))
        port = await app.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = ranking_pb2_grpc.RankingServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=5)
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            in_flight = asyncio.ensure_future(stub.Rank(request(candidate_limit=50), timeout=5))
            await asyncio.sleep(0.1)
            stopping = asyncio.ensure_future(app.stop())
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()  # an open Watch stream would hold the server for the whole grace
            await asyncio.sleep(0.05)
            with pytest.raises(grpc.aio.AioRpcError):
                await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            res = await in_flight  # the call in flight finishes within the grace period
            await stopping
    assert res.candidates_scored == 50


async def test_ranker_pins_blas_to_one_thread(catalog_dir):
    """Idle OpenBLAS threads spin after each retrieval product; the ranker runs BLAS on one."""
    from threadpoolctl import threadpool_info

    async with stack(catalog_dir, blas_threads=1) as (stub, _, _):
        await stub.Rank(request(), timeout=10)
        blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
    assert blas, "numpy exposes no BLAS thread pool"
    assert all(p["num_threads"] == 1 for p in blas), blas
