"""Request validation of caller candidates and request features: each rejection says what to
change."""

from __future__ import annotations

import math
from types import MappingProxyType

import pytest

from rankserve.ranker.errors import InvalidArgument
from rankserve.ranker.types import CallerCandidate, ModelRef, RankQuery
from rankserve.ranker.validation import MAX_FEATURE_VALUES, candidate_count

DEFAULT, MAX = 1000, 5000


def _cands(*ids: str, score: float = 0.0) -> tuple[CallerCandidate, ...]:
    return tuple(CallerCandidate(i, score) for i in ids)


def _count(query: RankQuery) -> int:
    return candidate_count(query, DEFAULT, MAX)


def _rejects(query: RankQuery, message: str) -> str:
    with pytest.raises(InvalidArgument, match=message) as err:
        _count(query)
    return err.value.message


def test_candidates_need_no_query_user_or_viewed_items():
    assert _count(RankQuery("r", page_size=2, candidates=_cands("a", "b", "c"))) == 3


def test_without_candidates_something_to_rank_for_is_still_required():
    msg = _rejects(RankQuery("r"), "send a query, a user id or viewed item ids")
    assert "candidates" in msg


def test_server_retrieval_count_is_unchanged():
    assert _count(RankQuery("r", query="q")) == DEFAULT
    assert _count(RankQuery("r", query="q", candidate_limit=50)) == 50


def test_too_many_candidates_names_the_limit():
    q = RankQuery("r", candidates=_cands(*(f"i{n}" for n in range(MAX + 1))))
    msg = _rejects(q, f"sends {MAX + 1} candidates")
    assert f"at most {MAX}" in msg


def test_exactly_the_maximum_is_fine():
    assert _count(RankQuery("r", candidates=_cands(*(f"i{n}" for n in range(MAX))))) == MAX


def test_duplicate_ids_name_the_first_and_every_position():
    q = RankQuery("r", candidates=_cands("a", "b", "c", "b", "a", "b"))
    msg = _rejects(q, "candidate id 'b' is sent more than once")
    assert "candidates[1], candidates[3], candidates[5]" in msg
    assert "send each id once" in msg


def test_empty_id_names_its_position():
    _rejects(RankQuery("r", candidates=_cands("a", "", "c")), r"candidates\[1\] has an empty id")


@pytest.mark.parametrize("score", [math.nan, math.inf, -math.inf])
def test_non_finite_retrieval_score(score):
    cands = (CallerCandidate("a", 1.0), CallerCandidate("b", score))
    msg = _rejects(RankQuery("r", candidates=cands), r"candidates\[1\] \('b'\) has retrieval_score")
    assert "finite" in msg


def test_huge_ids_are_cut_in_messages():
    long_id = "x" * 10_000
    msg = _rejects(RankQuery("r", candidates=_cands(long_id, long_id)), "more than once")
    assert len(msg) < 400


def test_candidate_limit_with_candidates():
    cands = _cands("a", "b", "c")
    assert _count(RankQuery("r", candidates=cands, candidate_limit=3)) == 3
    assert _count(RankQuery("r", candidates=cands, candidate_limit=100)) == 3
    msg = _rejects(RankQuery("r", candidates=cands, candidate_limit=2),
                   "sends 3 candidates but candidate_limit is 2")
    assert "candidate_limit to 0 or at least 3" in msg
    _rejects(RankQuery("r", candidates=cands, candidate_limit=MAX + 1), "maximum of 5000")


def test_page_size_with_candidates():
    # Fewer candidates than a page: the page holds them all.
    assert _count(RankQuery("r", page_size=10, candidates=_cands("a", "b"))) == 2
    _rejects(RankQuery("r", page_size=0, candidates=_cands("a")), "page_size must be >= 1")
    assert _count(RankQuery("r", page_size=5, candidate_limit=4, candidates=_cands("a"))) == 1


@pytest.mark.parametrize("value", [1.5, 3, "x", True, (0.5, 1.0), (1, 2), ("a", "b"), ()])
def test_request_feature_values_accepted(value):
    assert _count(RankQuery("r", query="q", request_features={"seg_1": value})) == DEFAULT


def test_request_feature_empty_name():
    _rejects(RankQuery("r", query="q", request_features={"": 1}), "empty name")


@pytest.mark.parametrize("name", ["request.seg", "a-b", "a b", "é", "seg\n"])
def test_request_feature_bad_name(name):
    msg = _rejects(RankQuery("r", query="q", request_features={name: 1}),
                   r"is not \[A-Za-z0-9_\]\+")
    assert "letters, digits and underscores" in msg


def test_request_feature_built_in_name():
    _rejects(RankQuery("r", query="q", request_features={"device": "mobile"}),
             "'device' is built in")


def test_request_feature_list_too_long():
    ok = tuple(range(MAX_FEATURE_VALUES))
    assert _count(RankQuery("r", query="q", request_features={"v": ok}))
    msg = _rejects(RankQuery("r", query="q", request_features={"v": (*ok, 1)}),
                   f"'v' has {MAX_FEATURE_VALUES + 1} values")
    assert f"at most {MAX_FEATURE_VALUES}" in msg


@pytest.mark.parametrize("value", [None, {"a": 1}, (1, "a"), ((1,),), b"bytes"])
def test_request_feature_bad_values(value):
    _rejects(RankQuery("r", query="q", request_features={"v": value}), "request feature 'v'")


def test_read_only_default_features():
    q = RankQuery("r")
    assert isinstance(q.request_features, MappingProxyType) and not q.request_features
    with pytest.raises(TypeError):
        q.request_features["x"] = 1  # type: ignore[index]


def test_model_version_rule_still_applies_with_candidates():
    _rejects(RankQuery("r", candidates=_cands("a"), model=ModelRef("m", version=-1)),
             "model version must be >= 0")
