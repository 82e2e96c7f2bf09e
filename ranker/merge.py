"""Merge: per-batch scores (or failures) and retrieval order -> the ranked page.

The rule for candidates the model did not score (their batch failed, or the model returned a
non-finite score for them):

* model-scored candidates come first, by model score descending (ties: retrieval order);
* fallback candidates come after every model-scored one, in retrieval order;
* a fallback score is ``floor - 1 - i`` for the i-th fallback candidate in retrieval order,
  where ``floor`` is the lowest model score on the response (0 when nothing was scored), so
  the page's scores still descend and a fallback item can never outrank a scored one.

Why below rather than interleaved: model scores and retrieval similarities are on different
scales, so no mixing of them is meaningful; a scored item's relevance is known while a
fallback item's is only guessed. Retrieval order is the best guess available, and when every
batch failed the page is exactly the retrieval order. Every fallback candidate is counted in
the degradation record, with one reason per failure status.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rankserve.ranker.types import Degradation, RankedItem


@dataclass(frozen=True)
class BatchOutcome:
    """One batch's slice of the candidates and either its scores or its failure status."""

    batch: slice
    scores: np.ndarray | None = None
    model_version: int = 0
    error_status: str | None = None
    error_message: str = ""

    @property
    def ok(self) -> bool:
        return self.scores is not None


@dataclass
class MergedPage:
    items: list[RankedItem]
    degradation: Degradation
    candidates_scored: int
    # The version that scored the most rows (0 when nothing was scored).
    model_version: int


def merge(
    outcomes: Sequence[BatchOutcome],
    n: int,
    page_size: int,
    item_id: Callable[[int], str],
    retrieval_scores: np.ndarray | None = None,
    debug: bool = False,
) -> MergedPage:
    """Builds the top ``page_size`` of ``n`` candidates (positions in retrieval order)."""
    scores = np.full(n, np.nan, dtype=np.float64)
    versions: Counter[int] = Counter()
    failures: Counter[str] = Counter()
    failed_rows = 0
    for out in outcomes:
        size = out.batch.stop - out.batch.start
        if out.ok:
            scores[out.batch] = out.scores
            versions[out.model_version] += size
        else:
            failures[out.error_status or "UNKNOWN"] += 1
            failed_rows += size
    scored = np.isfinite(scores)
    nonfinite_scores = n - int(scored.sum()) - failed_rows
    positions = np.arange(n)
    good = positions[scored]
    # Descending score, ties by retrieval position: lexsort's last key is the primary one.
    good = good[np.lexsort((good, -scores[good]))]
    fallback = positions[~scored]
    floor = float(scores[good].min()) if good.size else 0.0
    order = np.concatenate([good, fallback])[: max(page_size, 0)]

    items: list[RankedItem] = []
    for rank_pos, pos in enumerate(order.tolist()):
        is_fallback = rank_pos >= good.size
        score = floor - 1.0 - (rank_pos - good.size) if is_fallback else float(scores[pos])
        items.append(
            RankedItem(
                item_id=item_id(pos),
                score=score,
                fallback=is_fallback,
                retrieval_score=float(retrieval_scores[pos])
                if debug and retrieval_scores is not None
                else 0.0,
                retrieval_rank=pos if debug else 0,
            )
        )

    total = len(outcomes)
    reasons = [
        f"{count} of {total} batches failed: {status}" for status, count in sorted(failures.items())
    ]
    if nonfinite_scores:
        reasons.append(f"{nonfinite_scores} candidates got a non-finite model score")
    version = 0
    if versions:
        # Most rows wins; a tie goes to the newer version.
        version = max(versions.items(), key=lambda kv: (kv[1], kv[0]))[0]
        if len(versions) > 1:
            parts = ", ".join(f"{v} ({rows} rows)" for v, rows in sorted(versions.items()))
            reasons.append(f"batches were scored by model versions {parts}; reporting {version}")
    fallback_count = int(fallback.size)
    degradation = Degradation(
        degraded=fallback_count > 0,
        reasons=reasons,
        fallback_candidates=fallback_count,
        failed_batches=sum(failures.values()),
        total_batches=total,
    )
    return MergedPage(items, degradation, n - fallback_count, version)
