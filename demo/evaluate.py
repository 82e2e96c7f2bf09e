"""Mean NDCG of a scorer against the hidden relevance, beside the retrieval and random orders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rankserve.demo.candidates import RETRIEVE_K, CandidateMaker
from rankserve.demo.quality import model_order, ndcg_of_rows, random_order, retrieval_order
from rankserve.demo.queries import random_requests
from rankserve.demo.relevance import Truth

# Held-out requests: a seed that training (demo.build.TRAIN_SEED) never uses.
EVAL_SEED = 20261

Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Evaluation:
    k: int
    requests: int
    model: float
    retrieval: float
    random: float

    def __str__(self) -> str:
        return (
            f"NDCG@{self.k} over {self.requests} held-out requests: model {self.model:.3f},"
            f" retrieval {self.retrieval:.3f}, random {self.random:.3f}"
        )


def evaluate(
    maker: CandidateMaker,
    truth: Truth,
    scorer: Scorer,
    *,
    num_requests: int = 200,
    seed: int = EVAL_SEED,
    k: int = 10,
    candidates: int = RETRIEVE_K,
) -> Evaluation:
    """Re-ranks each request's retrieved candidates with ``scorer`` (context [1, C],
    candidates [B, F] -> [B]) and averages NDCG@k of the three orders of the same candidates."""
    rng = np.random.default_rng(seed)
    reqs = random_requests(
        num_requests, seed=seed, num_items=truth.num_items, num_users=truth.num_users
    )
    got = np.zeros((len(reqs), 3))
    for i, req in enumerate(reqs):
        r = maker(req, candidates)
        scores = scorer(r.context[None, :], maker.features(r.rows))
        got[i] = (
            ndcg_of_rows(truth, req, model_order(r.rows, scores), k),
            ndcg_of_rows(truth, req, retrieval_order(r.rows, r.scores), k),
            ndcg_of_rows(truth, req, random_order(r.rows, rng), k),
        )
    m, ret, rnd = got.mean(axis=0)
    return Evaluation(k, len(reqs), float(m), float(ret), float(rnd))
