"""NDCG arithmetic, and the synthetic world's determinism and relevance, at a small size."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rankserve.demo import (
    DemoRequest,
    dcg_at_k,
    generate,
    grades,
    ndcg_at_k,
    ndcg_of_ids,
    random_requests,
    retrieval_order,
    utility,
)
from rankserve.demo.candidates import CandidateMaker
from rankserve.demo.ids import item_id, item_row, user_id, user_row
from rankserve.demo.relevance import Truth
from rankserve.demo.vocab import VOCAB
from rankserve.ranker.catalog import Catalog

SMALL = {"num_items": 2_000, "num_users": 300, "seed": 3}


@pytest.fixture(scope="module")
def world():
    return generate(**SMALL)


@pytest.fixture(scope="module")
def written(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    world.write(root / "catalog", root / "truth", root / "titles.txt")
    return root


# --- NDCG -------------------------------------------------------------------------------------


def test_dcg_uses_exponential_gains_and_log2_discount():
    # (2^2-1)/log2(2) + (2^0-1)/log2(3) + (2^1-1)/log2(4) = 3 + 0 + 0.5
    assert dcg_at_k([2, 0, 1], 3) == pytest.approx(3.5)
    assert dcg_at_k([2, 0, 1], 1) == pytest.approx(3.0)
    assert dcg_at_k([], 5) == 0.0


def test_ndcg_hand_computed():
    ideal = 3.0 + 1.0 / math.log2(3)  # order [2, 1, 0]
    assert ndcg_at_k([2, 0, 1], 3) == pytest.approx(3.5 / ideal)
    assert ndcg_at_k([2, 1, 0], 3) == pytest.approx(1.0)
    assert ndcg_at_k([0, 1, 2], 3) == pytest.approx((1 / math.log2(3) + 3 / 2) / ideal)


def test_ndcg_cuts_at_k_and_judges_against_the_pool():
    assert ndcg_at_k([0, 0, 3], 2) == 0.0
    # The ideal top-1 of the pool has gain 7; the list's top-1 has gain 1.
    assert ndcg_at_k([1], 1, pool=[3, 1]) == pytest.approx(1 / 7)
    assert ndcg_at_k([0, 0, 0], 3) == 0.0


def test_ndcg_of_ids_counts_unknown_ids_as_irrelevant(world):
    req = DemoRequest(query="red leather bag")
    rows = np.arange(50)
    best = rows[np.argsort(-grades(world.truth, req, rows), kind="stable")]
    ids = [item_id(int(r)) for r in best[:10]]
    assert ndcg_of_ids(world.truth, req, ids) == pytest.approx(1.0)
    assert ndcg_of_ids(world.truth, req, ["nope"] + ids) < 1.0


# --- the synthetic world ----------------------------------------------------------------------


def test_same_seed_same_world():
    a, b = generate(**SMALL), generate(**SMALL)
    for name in ("item_features", "item_embeddings", "item_popularity", "token_embeddings",
                 "user_embeddings", "user_features"):  # fmt: skip
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.truth.item_true, b.truth.item_true)
    np.testing.assert_array_equal(a.truth.item_quality, b.truth.item_quality)
    assert a.titles == b.titles and a.item_ids == b.item_ids


def test_another_seed_another_world(world):
    other = generate(**{**SMALL, "seed": 4})
    assert not np.array_equal(world.item_features, other.item_features)


def test_shapes_ids_and_titles(world):
    assert world.item_features.shape == (2_000, 300)
    assert world.item_features.dtype == np.float32
    assert world.item_embeddings.shape == (2_000, 32)
    np.testing.assert_allclose(np.linalg.norm(world.item_embeddings, axis=1), 1.0, rtol=1e-5)
    assert world.item_ids[123] == "item-000123" and world.user_ids[42] == "user-000042"
    assert item_row("item-000123", 2_000) == 123 and item_row("item-002000", 2_000) is None
    assert user_row(user_id(7), 300) == 7 and user_row("guest-1", 300) is None
    # Titles read as vocabulary words.
    assert all(w in VOCAB for t in world.titles[:200] for w in t.split())
    # Sparse columns are mostly zeros.
    sparse = world.item_features[:, -60:]
    assert (sparse == 0).mean() > 0.9


def test_written_catalog_opens_with_the_ranker(world, written):
    cat = Catalog.open(written / "catalog")
    assert cat.manifest.num_items == 2_000 and cat.manifest.num_features == 300
    # The demo's spec fits the catalog it was written for: every feature exists, widths add up.
    from rankserve.demo.features import context_dim, write_spec
    from rankserve.ranker.catalog_features import catalog_items, catalog_users
    from rankserve.ranker.model_inputs import InputAssembler
    from rankserve.ranker.request_features import load_provider
    from rankserve.ranker.spec import load_spec

    spec = load_spec(write_spec(written / "catalog", cat.manifest))
    InputAssembler(spec, items=catalog_items(cat), users=catalog_users(cat),
                   providers=[load_provider(p, cat) for p in spec.request_features])
    assert spec.input("context").width == context_dim(cat.manifest)
    np.testing.assert_array_equal(np.asarray(cat.item_features), world.item_features)
    assert len((written / "titles.txt").read_text().splitlines()) == 2_000
    truth = Truth.open(written / "truth")
    np.testing.assert_array_equal(truth.item_true, world.truth.item_true)
    # The hidden truth stays outside the catalog directory.
    assert not any("true" in p.name for p in (written / "catalog").iterdir())


# --- hidden relevance -------------------------------------------------------------------------


def test_relevance_follows_the_query(world):
    rows = np.arange(2_000)
    bags = np.array(["bag" in t.split() for t in world.titles])
    tables = np.array(["table" in t.split() for t in world.titles])
    u_bag = utility(world.truth, DemoRequest(query="bag"), rows)
    u_table = utility(world.truth, DemoRequest(query="table"), rows)
    assert u_bag[bags].mean() > u_bag[tables].mean() + 1.0
    assert u_table[tables].mean() > u_table[bags].mean() + 1.0
    g = grades(world.truth, DemoRequest(query="bag"), rows)
    assert g.min() >= 0 and g.max() <= 4 and g.max() > g.min()


def test_relevance_depends_on_user_device_and_locale(world):
    rows = np.arange(2_000)
    base = DemoRequest(query="wool sweater")
    known = DemoRequest(query="wool sweater", user_id=user_id(5), user_known=True)
    unknown = DemoRequest(query="wool sweater", user_id=user_id(5), user_known=False)
    mobile = DemoRequest(query="wool sweater", device="mobile")
    japan = DemoRequest(query="wool sweater", locale="ja-JP")
    u = utility(world.truth, base, rows)
    np.testing.assert_array_equal(u, utility(world.truth, unknown, rows))
    for other in (known, mobile, japan):
        assert not np.allclose(u, utility(world.truth, other, rows))


def test_random_requests_are_seeded():
    a = random_requests(50, seed=1, num_items=2_000, num_users=300)
    assert a == random_requests(50, seed=1, num_items=2_000, num_users=300)
    assert a != random_requests(50, seed=2, num_items=2_000, num_users=300)
    assert any(r.query for r in a) and any(not r.query for r in a)
    assert any(r.user_known for r in a) and any(r.viewed_item_ids for r in a)


def test_retrieval_beats_random_on_the_small_world(world, written):
    maker = CandidateMaker.open(written / "catalog")
    rng = np.random.default_rng(0)
    got = []
    for req in random_requests(60, seed=5, num_items=2_000, num_users=300):
        r = maker(req, 200)
        g_ret = grades(world.truth, req, retrieval_order(r.rows, r.scores))
        g_rnd = grades(world.truth, req, rng.permutation(r.rows))
        got.append((ndcg_at_k(g_ret, 10), ndcg_at_k(g_rnd, 10)))
    ret, rnd = np.mean(got, axis=0)
    assert ret > rnd
