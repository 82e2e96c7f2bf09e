"""CandidateSource: the one retrieval interface the Ranker calls; Ranker.close()."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from rankserve.ranker import Catalog, Ranker
from rankserve.ranker.context import ContextEncoder
from rankserve.ranker.embedding_store import EmbeddingStore
from rankserve.ranker.retrieval import CandidateSource, EmbeddingRetriever
from rankserve.ranker.types import Candidates, RankQuery, RankResult, ScoredBatch
from rankserve.ranker.versioned_retrieval import VersionedRetriever
from rankserve.server.ranking.converters import to_response
from tests.support.catalog import make_catalog
from tests.support.ranker import catalog_ranker


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return Catalog.open(make_catalog(tmp_path_factory.mktemp("cat") / "c", num_items=200,
                                     num_features=4))


class IdsFromCaller:
    """A source that is not an index: the candidates the caller named, in its order."""

    def __init__(self, catalog: Catalog, ids: list[str], version: int | None) -> None:
        self.rows = np.array([catalog.item_row(i) for i in ids], dtype=np.int64)
        self.version = version
        self.calls: list[tuple[RankQuery, int]] = []

    def retrieve_for(self, query: RankQuery, k: int) -> Candidates:
        self.calls.append((query, k))
        rows = self.rows[:k]
        return Candidates(rows, np.zeros(len(rows), np.float32), self.version, None)


class RowScorer:
    def __init__(self) -> None:
        self.closed = 0

    async def score(self, model, inputs, rows, timeout_s, call=None):
        candidates = inputs["candidates"]
        return ScoredBatch(candidates[:, 1].copy(), 3)

    async def close(self) -> None:
        self.closed += 1


def ranker(catalog: Catalog, source: CandidateSource, scorer=None) -> Ranker:
    return catalog_ranker(catalog, scorer or RowScorer(), retriever=source)


def test_every_retriever_is_a_candidate_source(catalog, tmp_path):
    enc = ContextEncoder(catalog)
    assert isinstance(EmbeddingRetriever(catalog, enc), CandidateSource)
    versioned = VersionedRetriever(catalog, EmbeddingStore(tmp_path, "retrieval"))
    assert isinstance(versioned, CandidateSource)
    assert isinstance(IdsFromCaller(catalog, [], None), CandidateSource)
    assert not isinstance(RowScorer(), CandidateSource)


async def test_the_ranker_ranks_what_the_source_returns(catalog):
    ids = [catalog.item_id(r) for r in (5, 17, 42, 99, 150)]
    source = IdsFromCaller(catalog, ids, version=4)
    query = RankQuery("r1", query="red shoes", page_size=3, candidate_limit=5)
    res = await ranker(catalog, source).rank(query)
    [(seen, k)] = source.calls
    assert seen is query and k == 5
    features = np.asarray(catalog.item_features)
    expected = sorted(ids, key=lambda i: -features[catalog.item_row(i), 1])[:3]
    assert [i.item_id for i in res.items] == expected
    assert res.candidates_retrieved == 5 and res.embedding_version == 4
    assert to_response(res).embedding_version == 4


async def test_no_embedding_version_is_none_in_the_core_and_0_on_the_wire(catalog):
    enc = ContextEncoder(catalog)
    res = await ranker(catalog, EmbeddingRetriever(catalog, enc)).rank(
        RankQuery("r", query="red shoes", page_size=2, candidate_limit=10))
    assert res.embedding_version is None
    assert to_response(res).embedding_version == 0
    assert isinstance(res, RankResult)


async def test_close_releases_the_scorer_once_after_the_shadow_calls(catalog):
    scorer = RowScorer()
    r = ranker(catalog, IdsFromCaller(catalog, [catalog.item_id(1)], None), scorer)
    drained = asyncio.Event()

    async def shadow_call():
        await asyncio.sleep(0.01)
        assert scorer.closed == 0  # the scorer outlives every shadow call
        drained.set()

    task = asyncio.get_running_loop().create_task(shadow_call())
    r.shadow._tasks.add(task)
    task.add_done_callback(r.shadow._tasks.discard)
    await r.close()
    await r.close()
    assert drained.is_set() and scorer.closed == 1


async def test_close_skips_parts_that_hold_nothing(catalog):
    class PlainScorer:
        async def score(self, model, inputs, rows, timeout_s, call=None):
            return ScoredBatch(inputs["candidates"][:, 1].copy(), 1)

    r = ranker(catalog, IdsFromCaller(catalog, [catalog.item_id(1)], None), PlainScorer())
    await r.close()  # no close() on the scorer, the source or the feature store: nothing to do
