"""The Ranker with in-process scorers: validation, budgets, failure rules, feature hygiene."""

import asyncio
import time

import numpy as np
import pytest

from rankserve.ranker import Catalog, RankerConfig
from rankserve.ranker.catalog_features import catalog_items, catalog_users
from rankserve.ranker.errors import DeadlineExceeded, InvalidArgument, ScoringError
from rankserve.ranker.model_inputs import InputAssembler
from rankserve.ranker.types import ModelRef, RankQuery, ScoredBatch
from tests.support.catalog import make_catalog
from tests.support.ranker import catalog_ranker, catalog_spec


class FakeScorer:
    """Scores by column 1 of the features; fails rows chosen by ``fail(first_row)``."""

    def __init__(self, fail=None, version=5, delay=0.0):
        self.fail = fail
        self.version = version
        self.delay = delay
        self.calls = []

    async def score(self, model, inputs, rows, timeout_s, call=None):
        candidates = inputs["candidates"]
        self.calls.append((model, candidates.shape, timeout_s))
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.fail(int(candidates[0, 0])) if self.fail else None
        if status:
            raise ScoringError(status, f"{status.lower()} from the model server")
        return ScoredBatch(candidates[:, 1].copy(), self.version)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return Catalog.open(make_catalog(tmp_path_factory.mktemp("cat") / "c", num_items=600,
                                     num_features=8))


def make(catalog, scorer, **cfg):
    return catalog_ranker(catalog, scorer, RankerConfig(**cfg))


async def test_ranks_by_model_score(catalog):
    scorer = FakeScorer()
    res = await make(catalog, scorer).rank(RankQuery("r1", query="red shoes", page_size=7,
                                                     candidate_limit=100))
    assert len(scorer.calls) == 4 and all(c[1] == (25, 8) for c in scorer.calls)
    scores = [i.score for i in res.items]
    assert scores == sorted(scores, reverse=True) and len(scores) == 7
    rows = [catalog.item_row(i.item_id) for i in res.items]
    np.testing.assert_allclose(scores, np.asarray(catalog.item_features)[rows, 1])
    assert res.model == ModelRef("ranker") and res.model_version == 5
    assert res.candidates_scored == 100
    assert res.degradation.total_batches == 4 and not res.degradation.degraded
    assert res.timings.total_ms >= res.timings.score_ms > 0


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (RankQuery("r", page_size=3), "send a query, a user id or viewed item ids"),
        (RankQuery("r", query="x", page_size=0), "page_size must be >= 1"),
        (RankQuery("r", query="x", page_size=11, candidate_limit=10),
         "page_size 11 exceeds candidate_limit 10"),
        (RankQuery("r", query="x", candidate_limit=5001), "maximum of 5000"),
        (RankQuery("r", query="x", candidate_limit=-1), "candidate_limit must be >= 0"),
    ],
)
async def test_bad_requests_say_what_to_change(catalog, query, message):
    with pytest.raises(InvalidArgument, match=message):
        await make(catalog, FakeScorer()).rank(query)


async def test_known_user_or_viewed_items_suffice(catalog):
    r = make(catalog, FakeScorer())
    assert (await r.rank(RankQuery("r", user_id="user-1", user_known=True, page_size=2))).items
    assert (await r.rank(RankQuery("r", viewed_item_ids=("item-00001",), page_size=2))).items


async def test_deadline_too_short_names_the_minimum(catalog):
    q = RankQuery("r", query="x", deadline=time.monotonic() + 0.001)
    with pytest.raises(DeadlineExceeded, match="at least 10 ms"):
        await make(catalog, FakeScorer()).rank(q)


async def test_timeouts_come_from_the_remaining_budget(catalog):
    scorer = FakeScorer()
    await make(catalog, scorer).rank(RankQuery("r", query="x", deadline=time.monotonic() + 0.3))
    assert all(0.2 < c[2] < 0.3 for c in scorer.calls)


async def test_hanging_scorer_is_abandoned_at_the_deadline(catalog):
    scorer = FakeScorer(delay=30)
    t0 = time.monotonic()
    res = await make(catalog, scorer).rank(
        RankQuery("r", query="red", candidate_limit=50, deadline=time.monotonic() + 0.1))
    assert time.monotonic() - t0 < 1.0
    assert res.degradation.reasons == ["2 of 2 batches failed: DEADLINE_EXCEEDED"]
    assert res.degradation.fallback_candidates == 50 and res.model_version == 0


@pytest.mark.parametrize("status", ["NOT_FOUND", "INVALID_ARGUMENT"])
async def test_config_errors_on_every_batch_fail_the_request(catalog, status):
    with pytest.raises(ScoringError, match="from the model server") as info:
        await make(catalog, FakeScorer(fail=lambda row: status)).rank(RankQuery("r", query="x"))
    assert info.value.status == status and "ranker@latest" in info.value.message


async def test_transient_errors_on_every_batch_degrade(catalog):
    res = await make(catalog, FakeScorer(fail=lambda row: "UNAVAILABLE")).rank(
        RankQuery("r", query="x", page_size=5, candidate_limit=100))
    assert [i.fallback for i in res.items] == [True] * 5
    assert res.degradation.failed_batches == 4 and res.candidates_scored == 0


async def test_mixed_failures_degrade(catalog):
    seen = []

    def fail(row):
        seen.append(row)
        return "NOT_FOUND" if len(seen) % 2 else "UNAVAILABLE"

    res = await make(catalog, FakeScorer(fail=fail)).rank(
        RankQuery("r", query="x", candidate_limit=50))
    assert res.degradation.failed_batches == 2 and res.degradation.degraded


async def test_semaphore_bounds_calls_in_flight(catalog):
    active = peak = 0

    class Counting(FakeScorer):
        async def score(self, *a):
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.005)
            active -= 1
            return await super().score(*a)

    await make(catalog, Counting(), max_in_flight=3).rank(RankQuery("r", query="x"))
    assert peak == 3


class DirtyItems:
    """The catalog's items with NaN, inf and -inf planted in the features of given ids."""

    def __init__(self, catalog, dirty):
        self._inner = catalog_items(catalog)
        self._dirty = dirty
        self.entity = "item"

    def schema(self):
        return self._inner.schema()

    async def fetch(self, keys, names):
        got = await self._inner.fetch(keys, names)
        for pos, key in enumerate(keys):
            if key in self._dirty:
                got.columns["features"][pos, 3:6] = [np.nan, np.inf, -np.inf]
        return got

    async def close(self):
        return None


async def test_non_finite_features_are_zeroed_and_counted(catalog):
    ids = [catalog.item_id(r) for r in (5, 2, 5)]
    assembler = InputAssembler(catalog_spec(catalog), items=DirtyItems(catalog, {ids[1]}),
                               users=catalog_users(catalog))
    inputs, report = await assembler.assemble(RankQuery("r", query="x"), ids)
    cands = inputs.per_candidate["candidates"]
    assert cands.flags.c_contiguous and cands.flags.writeable
    np.testing.assert_array_equal(cands[1, 3:6], [0, 0, 0])
    np.testing.assert_array_equal(cands[0], np.asarray(catalog.item_features)[5])
    assert report.nonfinite == 3 and report.nonfinite_rows == 1


async def test_non_finite_features_reach_the_reasons(catalog):
    first = catalog.item_id(0)
    ranker = catalog_ranker(catalog, FakeScorer())
    dirty = DirtyItems(catalog, {first})
    ranker._inputs(ModelRef("ranker"))._stores["item"] = dirty
    res = await ranker.rank(RankQuery("r", query="x", candidate_limit=1000))
    assert res.degradation.reasons[0].startswith("retrieval: no query tokens")
    assert "3 non-finite feature values replaced by 0 (1 candidates)" in \
        res.degradation.reasons


def test_named_rows_turn_back_into_the_same_rows_without_a_probe_only_while_unchanged(
        catalog, tmp_path):
    rows = np.array([5, 0, 599, 5, 42])
    names = catalog.name_rows(rows)
    assert names == [catalog.item_id(int(r)) for r in rows]
    probed = catalog.item_rows(list(names))  # a plain list: one dict probe per id
    np.testing.assert_array_equal(catalog.item_rows(names), probed)
    np.testing.assert_array_equal(probed, rows)
    # The rows handed back are a copy: a store that marks misses in them changes nothing here.
    catalog.item_rows(names)[:] = -1
    np.testing.assert_array_equal(catalog.item_rows(names), rows)
    # A grown list, or names of another catalog, are probed like any list.
    names.append("no-such-item")
    np.testing.assert_array_equal(catalog.item_rows(names), [*rows, -1])
    other = Catalog.open(make_catalog(tmp_path / "other", num_items=10, num_features=8))
    foreign = other.name_rows(np.array([3]))
    np.testing.assert_array_equal(catalog.item_rows(foreign), catalog.item_rows(list(foreign)))
