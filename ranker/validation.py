"""Request validation: every rejection says what to change."""

from __future__ import annotations

from rankserve.ranker.errors import InvalidArgument
from rankserve.ranker.types import RankQuery


def candidate_count(query: RankQuery, default_candidates: int, max_candidates: int) -> int:
    """Validates ``query`` and returns how many candidates to retrieve."""
    if query.candidate_limit < 0:
        raise InvalidArgument(
            f"candidate_limit must be >= 0 (0 means the default {default_candidates}),"
            f" got {query.candidate_limit}"
        )
    if query.candidate_limit > max_candidates:
        raise InvalidArgument(
            f"candidate_limit {query.candidate_limit} exceeds this server's maximum of"
            f" {max_candidates}; ask for at most {max_candidates}"
        )
    k = query.candidate_limit or min(default_candidates, max_candidates)
    if query.page_size <= 0:
        raise InvalidArgument(f"page_size must be >= 1, got {query.page_size}")
    if query.page_size > k:
        raise InvalidArgument(
            f"page_size {query.page_size} exceeds candidate_limit {k}; lower page_size or raise"
            " candidate_limit"
        )
    # A new user with no query is valid: retrieval falls back to popularity and says so.
    if not query.query.strip() and not query.user_id and not query.viewed_item_ids:
        raise InvalidArgument(
            "the request says nothing to rank for: send a query, a user id or viewed item ids"
        )
    if query.model is not None and query.model.version is not None and query.model.version < 0:
        raise InvalidArgument(f"model version must be >= 0, got {query.model.version}")
    return k
