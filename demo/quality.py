"""Ranking quality against the hidden relevance: NDCG@k and the baselines a model must beat."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rankserve.demo.ids import item_row
from rankserve.demo.queries import DemoRequest
from rankserve.demo.relevance import Truth, grades


def dcg_at_k(rels: Sequence[float] | np.ndarray, k: int) -> float:
    """Discounted cumulative gain of the first k grades: sum (2^rel - 1) / log2(rank + 1)."""
    r = np.asarray(rels, dtype=np.float64)[:k]
    if r.size == 0:
        return 0.0
    discounts = np.log2(np.arange(2, r.size + 2))
    return float(((2.0**r - 1.0) / discounts).sum())


def ndcg_at_k(
    rels: Sequence[float] | np.ndarray, k: int, pool: Sequence[float] | np.ndarray | None = None
) -> float:
    """NDCG@k of grades in ranked order. The ideal ranking is the best order of ``pool`` (by
    default the same grades): every order of the same candidates is judged against the same
    ideal. A pool with nothing relevant scores 0."""
    ideal = np.sort(np.asarray(rels if pool is None else pool, dtype=np.float64))[::-1]
    best = dcg_at_k(ideal, k)
    return dcg_at_k(rels, k) / best if best > 0 else 0.0


def ndcg_of_rows(truth: Truth, request: DemoRequest, ranked_rows: np.ndarray, k: int = 10) -> float:
    """NDCG@k of catalog rows in ranked order; the ideal is the best order of the same rows."""
    g = grades(truth, request, np.asarray(ranked_rows))
    return ndcg_at_k(g, k)


def ndcg_of_ids(
    truth: Truth, request: DemoRequest, ranked_ids: Sequence[str], k: int = 10
) -> float:
    """NDCG@k of a ranked page of item ids (ids outside the catalog count as irrelevant)."""
    rows = [item_row(i, truth.num_items) for i in ranked_ids]
    g = np.zeros(len(rows), np.int32)
    known = [i for i, r in enumerate(rows) if r is not None]
    if known:
        g[known] = grades(truth, request, np.array([rows[i] for i in known]))
    return ndcg_at_k(g, k)


def random_order(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The floor: the retrieved candidates in a random order."""
    return rng.permutation(np.asarray(rows))


def retrieval_order(rows: np.ndarray, retrieval_scores: np.ndarray) -> np.ndarray:
    """What the ranker would return without a model: candidates by retrieval score."""
    order = np.argsort(-np.asarray(retrieval_scores), kind="stable")
    return np.asarray(rows)[order]


def model_order(rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Candidates by model score, highest first (ties keep retrieval order)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    return np.asarray(rows)[order]
