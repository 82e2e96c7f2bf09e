"""Capture in a running ranker, then replay: every captured record goes back on the wire."""

from __future__ import annotations

import grpc
import pytest

from rankserve.loadtest.runner import LoadSpec, run
from rankserve.loadtest.sources import replay
from rankserve.loadtest.stats import summarize
from rankserve.loadtest.targets import Target
from rankserve.ranking.v1 import ranking_pb2, ranking_pb2_grpc
from rankserve.server.ranking import RankerSettings, RankingApp
from rankserve.server.ranking.capture_files import list_capture_files, read_records
from tests.support.catalog import make_catalog
from tests.support.predict_server import NumpyModel, PredictServer

pytestmark = pytest.mark.timeout(60)
QUERIES = ["red shoes", "blue lamp", "chair", "red shirt", "lamp"]


async def test_capture_then_replay_round_trips_every_record(tmp_path):
    catalog = make_catalog(tmp_path / "catalog", num_items=3000)
    capture_dir = tmp_path / "capture"
    seen: list[tuple[float, ...]] = []

    def note(cands):  # the server records which catalog rows (column 0) each batch holds
        seen.append(tuple(cands[:, 0].tolist()))
        return 0.0

    model = NumpyModel(delay=note)
    async with PredictServer(model) as predict:
        app = RankingApp(RankerSettings(
            catalog_dir=str(catalog), model_target=predict.target, port=0, grace_s=0.5,
            capture_dir=str(capture_dir), capture_rate=1.0, capture_max_per_minute=100))
        port = await app.start()
        sent = [ranking_pb2.RankRequest(request_id=f"cap-{i}", query=q, page_size=5)
                for i, q in enumerate(QUERIES)]
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = ranking_pb2_grpc.RankingServiceStub(ch)
                for req in sent:
                    await stub.Rank(req, timeout=10)
        finally:
            await app.stop()
        live = sorted(seen)

        records = list(read_records(list_capture_files(capture_dir)))
        ranks = [r for r in records if r.WhichOneof("record") == "rank"]
        predicts = [r for r in records if r.WhichOneof("record") == "predict"]
        assert [r.rank.request for r in ranks] == sent
        assert len(predicts) == 5 * 40 == len(live)
        for req in sent:
            idx = sorted(r.predict.batch_index for r in predicts
                         if r.request_id == req.request_id)
            assert idx == list(range(40))

        # Replay the Predict records straight at the model server: the same batches arrive.
        seen.clear()
        payloads = replay(capture_dir, "predict")
        assert len(payloads) == 200
        out = await run(Target("predict", predict.target), payloads,
                        LoadSpec(mode="closed", concurrency=4, max_requests=200, warmup_s=0,
                                 duration_s=30))
        s = summarize(out)
        assert s["status_codes"] == {"OK": 200}
        assert sorted(seen) == live

        # And the Rank records at a ranker (capture off this time).
        app2 = RankingApp(RankerSettings(catalog_dir=str(catalog), model_target=predict.target,
                                         port=0, grace_s=0.5))
        port2 = await app2.start()
        try:
            ranks_out = await run(Target("rank", f"127.0.0.1:{port2}"), replay(capture_dir, "rank"),
                                  LoadSpec(mode="closed", concurrency=1, max_requests=5,
                                           warmup_s=0, duration_s=30))
        finally:
            await app2.stop()
    assert summarize(ranks_out)["status_codes"] == {"OK": 5}
    assert len(seen) == 200 + 5 * 40


async def test_replay_can_re_split_batches_and_re_address_the_model(tmp_path):
    catalog = make_catalog(tmp_path / "catalog", num_items=3000)
    capture_dir = tmp_path / "capture"
    async with PredictServer(NumpyModel(versions=(1, 2))) as predict:
        app = RankingApp(RankerSettings(catalog_dir=str(catalog), model_target=predict.target,
                                        port=0, capture_dir=str(capture_dir), capture_rate=1.0))
        port = await app.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                await ranking_pb2_grpc.RankingServiceStub(ch).Rank(
                    ranking_pb2.RankRequest(query="red shoes", page_size=5), timeout=10)
        finally:
            await app.stop()
    from rankserve.loadtest.sources import parse_model

    p = replay(capture_dir, "predict", batch_size=10, model=parse_model("ranker@2"))
    assert len(p) == 100 and set(p.batch_sizes) == {10}
    from rankserve.ranker.tensors import from_tensor_proto
    from rankserve.tfserving.v1 import predict_pb2

    req = predict_pb2.PredictRequest.FromString(p[0])
    assert req.model_spec.version.value == 2
    assert from_tensor_proto(req.inputs["candidates"]).shape == (10, 300)
    async with PredictServer(NumpyModel(versions=(1, 2))) as predict:
        out = await run(Target("predict", predict.target), p,
                        LoadSpec(mode="closed", concurrency=2, max_requests=100, warmup_s=0))
    assert summarize(out)["status_codes"] == {"OK": 100}
