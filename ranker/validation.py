"""Request validation: every rejection says what to change.

A request either lets the server retrieve (then it must say what to rank for: a query, a user or
viewed items) or brings its own candidates (then it needs nothing else). Caller candidates and
request features are checked here, before any store or model is touched, so a bad id list costs
the server one pass over it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from rankserve.ranker.errors import InvalidArgument
from rankserve.ranker.spec import BUILTIN_REQUEST_FEATURES
from rankserve.ranker.types import CallerCandidate, RankQuery

#: Most values one request feature (a vector) may hold.
MAX_FEATURE_VALUES = 10_000

_FEATURE_NAME = re.compile(r"[A-Za-z0-9_]+")
_SCALARS = (bool, int, float, str)


def candidate_count(query: RankQuery, default_candidates: int, max_candidates: int) -> int:
    """Validates ``query`` and returns how many candidates to retrieve (with caller
    candidates: how many it sent)."""
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
    if query.candidates:
        k = check_caller_candidates(query.candidates, query.candidate_limit, max_candidates)
    else:
        k = query.candidate_limit or min(default_candidates, max_candidates)
    if query.page_size <= 0:
        raise InvalidArgument(f"page_size must be >= 1, got {query.page_size}")
    # Caller candidates may be fewer than a page (a rare query): the page then holds them all.
    if not query.candidates and query.page_size > k:
        raise InvalidArgument(
            f"page_size {query.page_size} exceeds candidate_limit {k}; lower page_size or raise"
            " candidate_limit"
        )
    # A new user with no query is valid: retrieval falls back to popularity and says so.
    if (not query.candidates and not query.query.strip() and not query.user_id
            and not query.viewed_item_ids):
        raise InvalidArgument(
            "the request says nothing to rank for: send a query, a user id or viewed item ids,"
            " or the candidates to rank"
        )
    check_request_features(query.request_features)
    if query.model is not None and query.model.version is not None and query.model.version < 0:
        raise InvalidArgument(f"model version must be >= 0, got {query.model.version}")
    return k


def check_caller_candidates(candidates: tuple[CallerCandidate, ...], candidate_limit: int,
                            max_candidates: int) -> int:
    """Checks the caller's candidates and returns how many there are."""
    n = len(candidates)
    if n > max_candidates:
        raise InvalidArgument(
            f"the request sends {n} candidates; this server ranks at most {max_candidates}:"
            f" send at most {max_candidates}"
        )
    if candidate_limit and n > candidate_limit:
        raise InvalidArgument(
            f"the request sends {n} candidates but candidate_limit is {candidate_limit}; set"
            f" candidate_limit to 0 or at least {n}, or send at most {candidate_limit}"
        )
    first: dict[str, int] = {}
    duplicate: str | None = None
    for pos, cand in enumerate(candidates):
        if not cand.id:
            raise InvalidArgument(
                f"candidates[{pos}] has an empty id; every candidate needs an item id")
        if not math.isfinite(cand.retrieval_score):
            raise InvalidArgument(
                f"candidates[{pos}] ({_show(cand.id)}) has retrieval_score"
                f" {cand.retrieval_score}; send a finite score, or 0 for every candidate to"
                " rank in the order sent"
            )
        if duplicate is None and first.setdefault(cand.id, pos) != pos:
            duplicate = cand.id
    if duplicate is not None:
        where = ", ".join(f"candidates[{i}]" for i, c in enumerate(candidates)
                          if c.id == duplicate)
        raise InvalidArgument(
            f"candidate id {_show(duplicate)} is sent more than once ({where}); send each id"
            " once"
        )
    return n


def check_request_features(features: Mapping[str, object]) -> None:
    """Names are ``[A-Za-z0-9_]+`` and not built in; values are scalars or lists of one kind of
    scalar with at most MAX_FEATURE_VALUES values."""
    for name, value in features.items():
        if not name:
            raise InvalidArgument(
                "request_features has an empty name; name each feature with letters, digits"
                " and underscores"
            )
        if not _FEATURE_NAME.fullmatch(name):
            raise InvalidArgument(
                f"request feature name {_show(name)} is not [A-Za-z0-9_]+: use letters, digits"
                " and underscores, without the 'request.' prefix of a feature spec"
            )
        if name in BUILTIN_REQUEST_FEATURES:
            raise InvalidArgument(
                f"request feature '{name}' is built in; send it in its RankRequest field and"
                " drop it from request_features"
            )
        if isinstance(value, _SCALARS):
            continue
        if not isinstance(value, (tuple, list)):
            raise InvalidArgument(
                f"request feature '{name}' is a {type(value).__name__}; send a number, string,"
                " boolean or a list of one of them"
            )
        if len(value) > MAX_FEATURE_VALUES:
            raise InvalidArgument(
                f"request feature '{name}' has {len(value)} values; a feature holds at most"
                f" {MAX_FEATURE_VALUES}: send fewer or store it as a user or item feature"
            )
        kinds = {_kind(v) for v in value}
        if len(kinds) > 1 or None in kinds:
            raise InvalidArgument(
                f"request feature '{name}' mixes value types or holds a non-scalar; a list"
                " holds numbers, strings or booleans, one kind only"
            )


def _kind(value: object) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "str"
    return None


def _show(text: str, limit: int = 80) -> str:
    """A caller's string quoted for a message, cut so a huge id cannot flood it."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
