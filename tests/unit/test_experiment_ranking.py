"""Experiments through the Ranker: the arm on the result and in metrics, shadow arms that never
reach the caller, score health per model version."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from rankserve.ranker import Catalog, RankerConfig
from rankserve.ranker.errors import ScoringError
from rankserve.ranker.routing_config import parse_policy
from rankserve.ranker.types import RankQuery, ScoredBatch
from rankserve.ranker.version_metrics import VersionMetrics
from tests.support.catalog import make_catalog
from tests.support.ranker import catalog_ranker

POLICY = {
    "default": {"experiment": "exp"},
    "experiments": {"exp": {
        "arms": [{"name": "control", "model": "ranker", "version": 1, "weight": 1},
                 {"name": "treatment", "model": "ranker", "version": 2, "weight": 1}],
        "shadow": {"name": "next", "model": "shadow", "version": 9}}},
}


class VersionScorer:
    """Version 1 scores by feature column 1; version 2 returns the same score for every row;
    the shadow model fails, or hangs, as the test says."""

    def __init__(self, shadow="fail"):
        self.shadow = shadow
        self.shadow_calls = 0

    async def score(self, model, inputs, rows, timeout_s, call=None):
        candidates = inputs["candidates"]
        if model.name == "shadow":
            self.shadow_calls += 1
            if self.shadow == "fail":
                raise ScoringError("UNAVAILABLE", "shadow model down")
            if self.shadow == "hang":
                await asyncio.sleep(30)
            return ScoredBatch(np.zeros(len(candidates), np.float32), 9)
        if model.version == 2:
            return ScoredBatch(np.full(len(candidates), 0.5, np.float32), 2)
        return ScoredBatch(candidates[:, 1].copy(), 1)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return Catalog.open(make_catalog(tmp_path_factory.mktemp("cat") / "c", num_items=600,
                                     num_features=8))


def make(catalog, scorer, registry):
    router = parse_policy(POLICY)
    return catalog_ranker(catalog, scorer, RankerConfig(), router=lambda: router,
                          version_metrics=VersionMetrics(registry))


@pytest.mark.parametrize("shadow", ["fail", "hang"])
async def test_arm_recorded_and_shadow_failures_never_reach_the_caller(catalog, shadow):
    registry = CollectorRegistry()
    scorer = VersionScorer(shadow)
    ranker = make(catalog, scorer, registry)
    ranker.shadow._timeout = 0.2  # a hanging shadow is cut off by its own timeout
    arms = {}
    for i in range(40):
        res = await ranker.rank(RankQuery(f"r{i}", query="red shoes", user_id=f"user-{i}",
                                          page_size=5, candidate_limit=50))
        assert res.experiment == "exp" and not res.degradation.degraded
        assert res.model_version == {"control": 1, "treatment": 2}[res.experiment_arm]
        arms[res.experiment_arm] = arms.get(res.experiment_arm, 0) + 1
    await ranker.shadow.drain()
    assert set(arms) == {"control", "treatment"}
    assert scorer.shadow_calls > 0
    errors = registry.get_sample_value("rankserve_shadow_requests_total",
                                       {"experiment": "exp", "arm": "next", "outcome": "error"})
    dropped = registry.get_sample_value("rankserve_shadow_requests_total",
                                        {"experiment": "exp", "arm": "next",
                                         "outcome": "dropped"}) or 0
    assert errors + dropped == 40
    for arm, n in arms.items():
        assert registry.get_sample_value("rankserve_experiment_requests_total",
                                         {"experiment": "exp", "arm": arm, "outcome": "ok"}) == n
        assert registry.get_sample_value("rankserve_experiment_request_duration_seconds_count",
                                         {"experiment": "exp", "arm": arm}) == n


async def test_score_health_shows_a_version_that_scores_everything_alike(catalog):
    registry = CollectorRegistry()
    ranker = make(catalog, VersionScorer("ok"), registry)
    for i in range(40):
        await ranker.rank(RankQuery(f"r{i}", query="lamp", user_id=f"user-{i}", page_size=5,
                                    candidate_limit=50))
    await ranker.shadow.drain()

    def spread(version, le):
        labels = {"model": "ranker", "version": version}
        bucket = registry.get_sample_value("rankserve_model_score_spread_bucket",
                                           {**labels, "le": le})
        return bucket, registry.get_sample_value("rankserve_model_score_spread_count", labels)

    broken_flat, broken_all = spread("2", "1e-06")
    healthy_flat, healthy_all = spread("1", "1e-06")
    assert broken_all > 0 and broken_flat == broken_all  # every request: all scores equal
    assert healthy_all > 0 and healthy_flat == 0
    assert registry.get_sample_value("rankserve_model_scores_count",
                                     {"model": "shadow", "version": "9"}) > 0


async def test_nan_scores_are_counted_per_version(catalog):
    registry = CollectorRegistry()
    metrics = VersionMetrics(registry)
    metrics.observe_scores("ranker", 7, np.array([1.0, np.nan, np.inf, 2.0], np.float32))
    assert registry.get_sample_value("rankserve_model_nonfinite_scores_total",
                                     {"model": "ranker", "version": "7"}) == 2
    assert registry.get_sample_value("rankserve_model_scores_count",
                                     {"model": "ranker", "version": "7"}) == 2
