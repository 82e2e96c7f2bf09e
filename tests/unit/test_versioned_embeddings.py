"""Versioned embeddings: publish atomically, pair versions, never mix, degrade and say so."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from rankserve.demo.towers import RotationTowers
from rankserve.ranker import Catalog
from rankserve.ranker.catalog import write_catalog
from rankserve.ranker.context import ContextEncoder
from rankserve.ranker.embedding_store import ITEMS, TOWER, USERS, EmbeddingStore
from rankserve.ranker.retrieval import EmbeddingRetriever, top_k
from rankserve.ranker.types import RankQuery, ScoredBatch
from rankserve.ranker.version_metrics import VersionMetrics
from rankserve.ranker.versioned_retrieval import VersionedRetriever
from rankserve.server.embeddings.publish import publish
from tests.support.catalog import make_catalog
from tests.support.ranker import catalog_ranker

MODEL = "retrieval"
_metrics: dict[int, VersionMetrics] = {}
K = 100


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return Catalog.open(make_catalog(tmp_path_factory.mktemp("cat") / "c", num_items=3000,
                                     num_features=8, dim=16))


def retriever(catalog, root, registry=None):
    registry = registry or CollectorRegistry()
    metrics = _metrics.get(id(registry)) or _metrics.setdefault(id(registry),
                                                                VersionMetrics(registry))
    return VersionedRetriever(catalog, EmbeddingStore(root, MODEL), refresh_s=0.0,
                              metrics=metrics)


def retrieve(r, catalog, **q):
    return r.retrieve_for(RankQuery("r", **q), K)


def same_version_rows(catalog, version, query="red shoes"):
    """Brute force within one version: that version's query tower against its items."""
    t = RotationTowers(catalog, MODEL, version)
    vocab, tokens = t.tokens()
    idx = [vocab.index(w) for w in query.split()]
    q = tokens[idx].mean(axis=0)
    q /= np.linalg.norm(q)
    return top_k(t.items(np.arange(catalog.manifest.num_items)) @ q, K)


def test_query_at_v_with_items_at_v_and_v_minus_1_uses_only_v(catalog, tmp_path):
    store = EmbeddingStore(tmp_path, MODEL)
    publish(catalog, store, 1)
    publish(catalog, store, 2)
    cands = retrieve(retriever(catalog, tmp_path), catalog, query="red shoes")
    assert cands.embedding_version == 2 and cands.fallback_reason is None
    np.testing.assert_array_equal(cands.rows, same_version_rows(catalog, 2))
    # A rotation keeps cosines: one version retrieves what the catalog's own space does.
    enc = ContextEncoder(catalog)
    plain = EmbeddingRetriever(catalog, enc).retrieve(enc.encode("red shoes", "", False, ()), K)
    assert set(cands.rows.tolist()) == set(plain.rows.tolist())


def test_missing_index_at_v_uses_v_minus_1_for_both_sides(catalog, tmp_path):
    store = EmbeddingStore(tmp_path, MODEL)
    publish(catalog, store, 1)
    publish(catalog, store, 2, parts=(TOWER, USERS))  # v2's item index is not there (yet)
    registry = CollectorRegistry()
    cands = retrieve(retriever(catalog, tmp_path, registry), catalog, query="red shoes")
    assert cands.embedding_version == 1
    np.testing.assert_array_equal(cands.rows, same_version_rows(catalog, 1))
    assert cands.fallback_reason == (
        "embedding version 1 used for query and items: newest versions are not paired:"
        " item index at version 1, query tower at version 2")
    counted = {"embedding_model": MODEL}
    assert registry.get_sample_value("rankserve_embedding_version_mismatches_avoided_total",
                                     counted) == 1
    assert registry.get_sample_value("rankserve_retrieval_fallbacks_total",
                                     {**counted, "kind": "older_version"}) == 1
    # A newer item index without a query tower is passed over in the same way.
    store.publish_items(3, *_items(catalog, 3))
    cands = retrieve(retriever(catalog, tmp_path, registry), catalog, query="red shoes")
    assert cands.embedding_version == 1
    assert "item index at version 3, query tower at version 2" in cands.fallback_reason
    assert registry.get_sample_value("rankserve_embedding_version_mismatches_avoided_total",
                                     counted) == 2


def _items(catalog, version):
    rows = np.arange(catalog.manifest.num_items)
    return catalog.item_ids, RotationTowers(catalog, MODEL, version).items(rows)


def test_known_user_needs_the_users_embedding_of_the_same_version(catalog, tmp_path):
    store = EmbeddingStore(tmp_path, MODEL)
    publish(catalog, store, 1)
    publish(catalog, store, 2, parts=(ITEMS, TOWER))  # no user embeddings at v2
    r = retriever(catalog, tmp_path)
    assert retrieve(r, catalog, user_id="user-3", user_known=True).embedding_version == 1
    assert retrieve(r, catalog, query="lamp").embedding_version == 2


def test_no_complete_version_degrades_to_popularity_and_says_so(catalog, tmp_path):
    store = EmbeddingStore(tmp_path, MODEL)
    publish(catalog, store, 1, parts=(TOWER,))
    publish(catalog, store, 2, parts=(ITEMS,))
    registry = CollectorRegistry()
    cands = retrieve(retriever(catalog, tmp_path, registry), catalog, query="red")
    assert cands.embedding_version is None
    assert "popularity retrieval" in cands.fallback_reason
    assert "'retrieval'" in cands.fallback_reason
    np.testing.assert_array_equal(cands.rows, top_k(np.asarray(catalog.item_popularity), K))
    assert registry.get_sample_value("rankserve_retrieval_fallbacks_total",
                                     {"embedding_model": MODEL, "kind": "popularity"}) == 1


def test_mixing_two_versions_is_near_random(catalog):
    """Why pairing matters: v2's query against v1's items finds almost none of v2's top 100."""
    n = catalog.manifest.num_items
    v1, v2 = RotationTowers(catalog, MODEL, 1), RotationTowers(catalog, MODEL, 2)
    items1, items2 = v1.items(np.arange(n)), v2.items(np.arange(n))
    vocab, tok2 = v2.tokens()
    overlaps_same, overlaps_mixed = [], []
    for words in (["red"], ["blue", "shirt"], ["lamp"], ["chair", "red"], ["shoes"]):
        q = tok2[[vocab.index(w) for w in words]].mean(axis=0)
        truth = set(top_k(items2 @ q, K).tolist())
        overlaps_same.append(len(truth & set(top_k(items2 @ q, K).tolist())) / K)
        overlaps_mixed.append(len(truth & set(top_k(items1 @ q, K).tolist())) / K)
    assert np.mean(overlaps_same) == 1.0
    assert np.mean(overlaps_mixed) < 0.15, overlaps_mixed  # random would be K/n = 0.033


def _catalog_variant(path, base: Catalog, *, drop: int, change: list[int], add: int):
    """``base`` without its first ``drop`` items, with ``change`` rows re-embedded and ``add``
    new items appended."""
    rng = np.random.default_rng(3)
    ids = [s.decode() for s in base.item_ids.tolist()][drop:]
    emb = np.asarray(base.item_embeddings)[drop:].copy()
    def unit(n):
        v = rng.standard_normal((n, emb.shape[1])).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    for row in change:
        emb[row - drop] = unit(1)[0]
    ids += [f"new-{i}" for i in range(add)]
    emb = np.vstack([emb, unit(add)]).astype(np.float32)
    feats = np.zeros((len(ids), 8), np.float32)
    write_catalog(path, item_ids=ids, item_features=feats, item_embeddings=emb,
                  item_popularity=np.ones(len(ids), np.float32),
                  feature_names=[f"f{i}" for i in range(8)],
                  vocab=sorted(base.vocab, key=base.vocab.get),
                  token_embeddings=np.asarray(base.token_embeddings),
                  user_ids=[s.decode() for s in base.user_ids.tolist()],
                  user_embeddings=np.asarray(base.user_embeddings),
                  user_features=np.asarray(base.user_features), devices=["mobile"],
                  locales=["en-US"], seed=1)
    return Catalog.open(path)


def test_bulk_and_delta_publish_give_the_same_index(catalog, tmp_path):
    changed_rows = [10, 11, 500, 2999]
    after = _catalog_variant(tmp_path / "after", catalog, drop=5, change=changed_rows, add=7)
    delta_store = EmbeddingStore(tmp_path / "delta", MODEL)
    publish(catalog, delta_store, 4)
    changed = ([catalog.item_id(r) for r in changed_rows]
               + [catalog.item_id(r) for r in range(5)] + [f"new-{i}" for i in range(7)])
    res = publish(after, delta_store, 4, mode="delta", changed_ids=changed)
    assert (res.recomputed, res.removed, res.items) == (len(changed_rows) + 7, 5, 3002)
    bulk_store = EmbeddingStore(tmp_path / "bulk", MODEL)
    publish(after, bulk_store, 4)
    got, want = delta_store.load_items(4), bulk_store.load_items(4)
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_array_equal(got.embeddings, want.embeddings)
    # The changed items really changed: the delta did not just keep the old index.
    old_row = np.flatnonzero(catalog.item_ids == catalog.item_ids[500])[0]
    assert not np.allclose(RotationTowers(catalog, MODEL, 4).items(np.array([old_row]))[0],
                           got.embeddings[list(got.ids).index(catalog.item_ids[500])])


def test_users_keep_their_last_n_versions(catalog, tmp_path):
    store = EmbeddingStore(tmp_path, MODEL)
    for v in (1, 2, 3, 4):
        publish(catalog, store, v, keep_user_versions=2)
    assert store.versions(USERS) == [4, 3]
    assert store.versions(ITEMS) == [4, 3, 2, 1]


def test_a_reader_never_sees_half_an_index(tmp_path):
    store = EmbeddingStore(tmp_path, MODEL)
    ids = np.array([f"i{i}" for i in range(2000)], dtype="S")
    store.publish_items(1, ids, np.zeros((2000, 8), np.float32))
    stop = threading.Event()
    seen, bad = set(), []

    def read():
        while not stop.is_set():
            index = store.load_items(1)
            values = np.unique(index.embeddings)
            if index.embeddings.shape != (2000, 8) or values.size != 1:
                bad.append(values)
            seen.add(float(values[0]))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for generation in range(1, 41):
            store.publish_items(1, ids, np.full((2000, 8), generation, np.float32))
    finally:
        stop.set()
        reader.join(10)
    assert not bad
    assert len(seen) > 1  # the reader really ran during the publishes


class RowScorer:
    async def score(self, model, inputs, rows, timeout_s, call=None):
        return ScoredBatch(inputs["candidates"][:, 1].copy(), 1)


async def test_publishing_during_a_stream_of_rank_calls(catalog, tmp_path):
    """Every call succeeds and every page comes from one version (a mixed one is near random,
    so it would miss the same-version candidate set)."""
    store = EmbeddingStore(tmp_path, MODEL)
    publish(catalog, store, 1)
    ranker = catalog_ranker(catalog, RowScorer(), retriever=retriever(catalog, tmp_path))
    queries = ["red shoes", "blue shirt", "lamp", "chair"]
    expected = {q: {catalog.item_id(r) for r in same_version_rows(catalog, 1, q)}
                for q in queries}

    def publisher():
        for v in (2, 3):
            publish(catalog, store, v)
            publish(catalog, store, v, mode="delta", changed_ids=[catalog.item_id(7)])

    thread = threading.Thread(target=publisher)
    versions = []
    thread.start()
    try:
        i = 0
        while thread.is_alive() and i < 5000 or i < 150:
            i += 1
            q = queries[i % len(queries)]
            res = await ranker.rank(RankQuery(f"r{i}", query=q, page_size=20,
                                              candidate_limit=K))
            assert {it.item_id for it in res.items} <= expected[q]
            # Mid-publish, a newer tower without its items is passed over, and said so.
            assert all(r.startswith("retrieval: embedding version ")
                       for r in res.degradation.reasons)
            assert res.candidates_scored == K
            versions.append(res.embedding_version)
            await asyncio.sleep(0)
    finally:
        thread.join(60)
    res = await ranker.rank(RankQuery("last", query="lamp", page_size=5, candidate_limit=K))
    assert res.embedding_version == 3
    assert set(versions) <= {1, 2, 3} and len(versions) >= 150
