"""The caller's own candidates as a ``CandidateSource``.

A search frontend that already ran its own engine sends its candidates with the call; the
ranker then retrieves nothing. The caller's order is the retrieval order (fallback scores follow
it), and its retrieval scores are kept as sent, descending or not. A caller that sends no scores
(all 0) gets rank-based ones, ``(N - i) / N``, so debug output still shows a descending
retrieval score. Ids are not looked up here: the rows are positions in the caller's list and
``Candidates.ids`` names them; the item stores say later which ids they know.
"""

from __future__ import annotations

import numpy as np

from rankserve.ranker.types import Candidates, RankQuery


class CallerCandidates:
    """Returns ``query.candidates`` (at most ``k`` of them) in the caller's order."""

    def retrieve_for(self, query: RankQuery, k: int) -> Candidates:
        sent = query.candidates[: max(k, 0)]
        n = len(sent)
        ids = np.empty(n, dtype=object)
        ids[:] = [c.id for c in sent]
        scores = np.fromiter((c.retrieval_score for c in sent), dtype=np.float32, count=n)
        if not scores.any():
            scores = rank_scores(n)
        return Candidates(rows=np.arange(n, dtype=np.int64), scores=scores,
                          embedding_version=None, fallback_reason=None, ids=ids)


def rank_scores(n: int) -> np.ndarray:
    """``[1, (N-1)/N, ..., 1/N]``: strictly descending, positive, float32."""
    return (np.arange(n, 0, -1, dtype=np.float64) / max(n, 1)).astype(np.float32)
