"""CallerCandidates: the caller's candidates as a CandidateSource, order and scores kept."""

from __future__ import annotations

import numpy as np

from rankserve.ranker.caller_candidates import CallerCandidates, rank_scores
from rankserve.ranker.retrieval import CandidateSource
from rankserve.ranker.types import CallerCandidate, Candidates, RankQuery


def _query(*cands: tuple[str, float]) -> RankQuery:
    return RankQuery("r", candidates=tuple(CallerCandidate(i, s) for i, s in cands))


def test_is_a_candidate_source():
    assert isinstance(CallerCandidates(), CandidateSource)


def test_keeps_the_callers_order_and_scores():
    # Not descending on purpose: the caller's order is the retrieval order whatever it scored.
    q = _query(("z", 0.5), ("a", 2.0), ("m", -1.0))
    got = CallerCandidates().retrieve_for(q, 1000)
    assert got.ids is not None and got.ids.dtype == object
    assert got.ids.tolist() == ["z", "a", "m"]
    assert got.rows.dtype == np.int64 and got.rows.tolist() == [0, 1, 2]
    assert got.scores.dtype == np.float32 and got.scores.tolist() == [0.5, 2.0, -1.0]
    assert (got.embedding_version, got.fallback_reason) == (None, None)


def test_no_scores_sent_gives_descending_rank_scores():
    q = _query(("b", 0.0), ("a", 0.0), ("c", 0.0), ("d", 0.0))
    got = CallerCandidates().retrieve_for(q, 1000)
    assert got.ids.tolist() == ["b", "a", "c", "d"]
    assert got.scores.tolist() == [1.0, 0.75, 0.5, 0.25]
    assert (np.diff(got.scores) < 0).all()


def test_some_scores_zero_are_kept_as_sent():
    got = CallerCandidates().retrieve_for(_query(("a", 0.0), ("b", 3.0)), 10)
    assert got.scores.tolist() == [0.0, 3.0]


def test_at_most_k():
    q = _query(*((f"i{n}", 0.0) for n in range(5)))
    got = CallerCandidates().retrieve_for(q, 3)
    assert got.ids.tolist() == ["i0", "i1", "i2"] and got.rows.tolist() == [0, 1, 2]
    assert got.scores.tolist() == rank_scores(3).tolist()


def test_empty():
    got = CallerCandidates().retrieve_for(RankQuery("r", query="q"), 10)
    assert got.rows.shape == (0,) and got.scores.shape == (0,) and got.ids.shape == (0,)


def test_rank_scores_are_strictly_descending_and_positive():
    s = rank_scores(1000)
    assert s.dtype == np.float32 and s[0] == 1.0 and s[-1] > 0
    assert (np.diff(s) < 0).all()


def test_catalog_sources_leave_ids_unset():
    assert Candidates(np.zeros(1, np.int64), np.zeros(1, np.float32)).ids is None
