"""Training lists for the ranking model: retrieval candidates of sampled requests, graded by
the hidden relevance.

Each request contributes one list: its context vector and a sample of its retrieved candidates
(the most relevant few, so every list teaches what belongs on top, plus a uniform sample of the
rest, so the model also sees the long tail it must push down).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rankserve.demo.candidates import RETRIEVE_K, CandidateMaker
from rankserve.demo.queries import random_requests
from rankserve.demo.relevance import Truth, grades


@dataclass
class TrainingLists:
    contexts: np.ndarray  # [R, C] float32
    rows: np.ndarray  # [R, L] int64 catalog rows
    labels: np.ndarray  # [R, L] float32 graded relevance


def make_training_lists(
    maker: CandidateMaker,
    truth: Truth,
    *,
    num_requests: int,
    seed: int,
    list_size: int = 64,
    top: int = 16,
    k: int = RETRIEVE_K,
) -> TrainingLists:
    rng = np.random.default_rng(seed)
    requests = random_requests(
        num_requests, seed=seed, num_items=truth.num_items, num_users=truth.num_users
    )
    contexts, rows, labels = [], [], []
    for req in requests:
        got = maker(req, k)
        if got.rows.size < list_size:
            continue
        g = grades(truth, req, got.rows)
        # Best first with random tie-breaks, so equal grades do not always favour retrieval rank.
        best = np.lexsort((rng.random(g.size), -g))[:top]
        rest = np.setdiff1d(np.arange(g.size), best)
        pick = np.concatenate([best, rng.choice(rest, list_size - top, replace=False)])
        rng.shuffle(pick)
        contexts.append(got.context)
        rows.append(got.rows[pick])
        labels.append(g[pick].astype(np.float32))
    return TrainingLists(np.stack(contexts), np.stack(rows), np.stack(labels))
