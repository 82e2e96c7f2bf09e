"""The Rank API's caller candidates, request features and degradation counts through the
protobuf converters, and the `rankserve rank` flags that send them."""

from __future__ import annotations

import argparse
import math
from types import MappingProxyType

import pytest

from rankserve.ranker.errors import InvalidArgument
from rankserve.ranker.types import (
    CallerCandidate,
    Degradation,
    ModelRef,
    RankResult,
    StageTimings,
)
from rankserve.ranking.v1 import ranking_pb2
from rankserve.server.ranking.converters import to_query, to_response
from rankserve.tools.client import rank

FV = ranking_pb2.FeatureValue


def _features() -> dict[str, ranking_pb2.FeatureValue]:
    return {
        "f": FV(float_value=0.1),
        "i": FV(int_value=-(2**40)),
        "s": FV(string_value="gold"),
        "b": FV(bool_value=True),
        "fl": FV(float_list=ranking_pb2.FloatList(values=[0.5, -1.25])),
        "il": FV(int_list=ranking_pb2.Int64List(values=[1, 2, 3])),
        "sl": FV(string_list=ranking_pb2.StringList(values=["a", "b"])),
        "empty": FV(float_list=ranking_pb2.FloatList()),
        "zero": FV(int_value=0),
    }


def test_candidates_and_features_to_query():
    req = ranking_pb2.RankRequest(
        page_size=2,
        candidates=[ranking_pb2.Candidate(id="x", retrieval_score=2.5),
                    ranking_pb2.Candidate(id="y")],
        request_features=_features(),
    )
    q = to_query(req, None, 1.0)
    assert q.candidates == (CallerCandidate("x", 2.5), CallerCandidate("y", 0.0))
    assert isinstance(q.request_features, MappingProxyType)
    assert dict(q.request_features) == {
        "f": 0.1, "i": -(2**40), "s": "gold", "b": True, "fl": (0.5, -1.25), "il": (1, 2, 3),
        "sl": ("a", "b"), "empty": (), "zero": 0,
    }
    assert type(q.request_features["b"]) is bool and type(q.request_features["i"]) is int
    assert type(q.request_features["zero"]) is int


def test_no_candidates_or_features():
    q = to_query(ranking_pb2.RankRequest(query="q"), None, 1.0)
    assert q.candidates == () and dict(q.request_features) == {}


def test_non_finite_scores_pass_through_to_validation():
    req = ranking_pb2.RankRequest(candidates=[ranking_pb2.Candidate(id="a",
                                                                   retrieval_score=math.nan)])
    assert math.isnan(to_query(req, None, 1.0).candidates[0].retrieval_score)


def test_unset_feature_value_is_invalid_argument():
    req = ranking_pb2.RankRequest(query="q", request_features={"seg": FV()})
    with pytest.raises(InvalidArgument, match="request feature 'seg' has no value; set one of"):
        to_query(req, None, 1.0)


def test_wire_round_trip():
    req = ranking_pb2.RankRequest(candidates=[ranking_pb2.Candidate(id="x", retrieval_score=1)],
                                  request_features=_features())
    again = ranking_pb2.RankRequest.FromString(req.SerializeToString())
    assert to_query(again, None, 1.0).request_features == to_query(req, None, 1.0).request_features


def test_degradation_counts_to_response():
    d = Degradation(True, ["r"], 3, 1, 4, unknown_candidates=7, dropped_candidates=5,
                    missing_feature_values=11)
    res = RankResult("r", [], ModelRef("m"), 10, 5, d, StageTimings())
    pb = to_response(res).degradation
    assert (pb.unknown_candidates, pb.dropped_candidates, pb.missing_feature_values) == (7, 5, 11)
    assert (pb.fallback_candidates, pb.failed_batches, pb.total_batches) == (3, 1, 4)
    assert Degradation().unknown_candidates == Degradation().dropped_candidates == 0
    assert Degradation().missing_feature_values == 0


# ---- rankserve rank --------------------------------------------------------------------------

def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    rank.add_parser(parser.add_subparsers(dest="cmd"))
    return parser.parse_args(["rank", *argv])


def test_candidates_file(tmp_path):
    path = tmp_path / "hits.tsv"
    path.write_text("a\t0.5\n\n b \nc\t-2\n")
    req = rank.build_request(_args("--candidates", str(path), "--candidate-limit", "3"))
    assert [(c.id, c.retrieval_score) for c in req.candidates] == [("a", 0.5), ("b", 0.0),
                                                                   ("c", -2.0)]
    assert req.candidate_limit == 3 and req.query == ""


def test_candidates_file_errors(tmp_path, capsys):
    path = tmp_path / "bad.tsv"
    path.write_text("a\t0.5\nb\tx\n")
    with pytest.raises(SystemExit):
        _args("--candidates", str(path))
    assert "bad.tsv:2: score 'x' is not a number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _args("--candidates", str(tmp_path / "missing"))
    assert "missing" in capsys.readouterr().err


def test_feature_flags_are_typed():
    req = rank.build_request(_args(
        "q", "--feature", "seg=3", "--feature", "w=0.5", "--feature", "on=true",
        "--feature", "off=false", "--feature", "tier=gold", "--feature", "v=0.5,1",
        "--feature", "ids=1,2", "--feature", "tags=a,b", "--feature", "one=5,",
        "--feature", "blank="))
    q = to_query(req, None, 1.0)
    assert dict(q.request_features) == {
        "seg": 3, "w": 0.5, "on": True, "off": False, "tier": "gold", "v": (0.5, 1.0),
        "ids": (1, 2), "tags": ("a", "b"), "one": (5,), "blank": "",
    }
    assert req.request_features["seg"].WhichOneof("kind") == "int_value"
    assert req.request_features["v"].WhichOneof("kind") == "float_list"


def test_feature_flag_needs_a_name(capsys):
    for bad in ("seg", "=3"):
        with pytest.raises(SystemExit):
            _args("--feature", bad)
        assert "expected NAME=VALUE" in capsys.readouterr().err


def test_no_new_flags_leave_the_request_as_before():
    req = rank.build_request(_args("lamp", "--candidate-limit", "50"))
    assert req.candidate_limit == 50 and not req.candidates and not req.request_features
