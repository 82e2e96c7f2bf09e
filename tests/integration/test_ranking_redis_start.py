"""A ranker whose Redis is down when it starts: it starts on the spec's declared features,
answers degraded with a reason (every candidate scored with defaults, none lost), and serves
the real features once Redis is back, without a restart."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from rankserve.ranking.v1 import ranking_pb2, ranking_pb2_grpc
from rankserve.server.features.checks import ImportOptions
from rankserve.server.features.importer import run as import_features
from rankserve.server.ranking import RankerSettings, RankingApp
from tests.support.predict_server import NumpyModel, PredictServer
from tests.support.redis_server import redis_server

pytestmark = pytest.mark.timeout(120)
SPEC = """\
features:
  item.price: {dtype: float32, default: 0.0}
inputs:
  - {name: candidates, per: candidate, dtype: float32, shape: [1], features: [item.price]}
  - {name: context, per: request, dtype: float32, shape: [1], features: [request.user_known]}
"""


def rank_request() -> ranking_pb2.RankRequest:
    req = ranking_pb2.RankRequest(page_size=3)
    for item_id in ("a", "b", "c"):
        req.candidates.add(id=item_id)
    return req


async def test_redis_down_at_start_then_back(tmp_path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    items = tmp_path / "items.csv"
    items.write_text("item_id,price\na,1.0\nb,3.0\nc,2.0\n")
    with redis_server() as redis:
        redis.stop()
        async with PredictServer(NumpyModel(weights=np.ones(1, np.float32))) as model:
            app = RankingApp(RankerSettings(
                spec=str(spec), item_features=redis.url, model_target=model.target, port=0,
                metrics_port=0, grace_s=0.1, spec_check_timeout_s=1))
            port = await app.start()
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = ranking_pb2_grpc.RankingServiceStub(channel)
                    down = await stub.Rank(rank_request(), timeout=10)
                    assert down.degradation.degraded and down.candidates_scored == 3
                    assert any("item features unavailable" in r
                               for r in down.degradation.reasons)
                    redis.start()
                    await asyncio.to_thread(import_features, ImportOptions(
                        entity="item", input=items, key="item_id", store=redis.url,
                        version="1", dtypes={"price": "float32"}))
                    for _ in range(50):  # the store reconnects by itself
                        up = await stub.Rank(rank_request(), timeout=10)
                        if not up.degradation.degraded:
                            break
                        await asyncio.sleep(0.1)
                    assert not up.degradation.degraded
                    assert [i.item_id for i in up.items] == ["b", "c", "a"]
            finally:
                await app.stop()
