"""server/ranking's pure parts: protobuf conversion, settings, flags over environment."""

import argparse
import time

import pytest
from pydantic import ValidationError

from rankserve.ranker.types import Degradation, ModelRef, RankedItem, RankResult, StageTimings
from rankserve.ranking.v1 import ranking_pb2
from rankserve.server.ranking.app import ranker_config
from rankserve.server.ranking.cli import add_parser, settings_from_args
from rankserve.server.ranking.converters import to_query, to_response
from rankserve.server.ranking.settings import RankerSettings


def test_request_conversion_and_deadline():
    req = ranking_pb2.RankRequest(
        request_id="r1", query="q", page_size=4, candidate_limit=50, debug=True,
        user=ranking_pb2.User(id="u", known=True),
        context=ranking_pb2.Context(device="mobile", locale="de-DE", viewed_item_ids=["a", "b"]),
        model=ranking_pb2.ModelSelector(name="m", label="canary"))
    before = time.monotonic()
    q = to_query(req, 0.25, 1.0)
    assert before + 0.25 <= q.deadline <= time.monotonic() + 0.25
    assert (q.request_id, q.query, q.user_id, q.user_known) == ("r1", "q", "u", True)
    assert (q.device, q.locale, q.viewed_item_ids) == ("mobile", "de-DE", ("a", "b"))
    assert (q.page_size, q.candidate_limit, q.debug) == (4, 50, True)
    assert q.model == ModelRef("m", label="canary")
    q = to_query(ranking_pb2.RankRequest(model=ranking_pb2.ModelSelector(version=0)), None, 2.0)
    assert q.model == ModelRef("", version=0) and q.deadline > time.monotonic() + 1.5
    assert q.request_id  # generated
    assert to_query(ranking_pb2.RankRequest(), None, 1.0).model is None


def test_response_conversion():
    res = RankResult("r", [RankedItem("i", 1.5, True, 0.25, 3)], ModelRef("m", label="stable"),
                     100, 75, Degradation(True, ["x"], 25, 1, 4), StageTimings(total_ms=2.5),
                     model_version=7)
    pb = to_response(res)
    assert pb.model == ranking_pb2.ModelVersion(name="m", version=7, label="stable")
    assert pb.items[0] == ranking_pb2.RankedItem(item_id="i", score=1.5, fallback=True,
                                                 retrieval_score=0.25, retrieval_rank=3)
    assert pb.degradation == ranking_pb2.Degradation(degraded=True, reasons=["x"],
                                                     fallback_candidates=25, failed_batches=1,
                                                     total_batches=4)
    assert (pb.candidates_retrieved, pb.candidates_scored, pb.timings.total_ms) == (100, 75, 2.5)


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="cmd"))
    return parser.parse_args(["ranker", *argv])


def test_flags_override_environment(monkeypatch):
    monkeypatch.setenv("RANKSERVE_RANKER_BATCH_SIZE", "10")
    monkeypatch.setenv("RANKSERVE_RANKER_MODEL_TARGET", "127.0.0.1:1234")
    args = _parse(["--batch-size", "20", "--compression", "gzip", "--ready-file", "/tmp/x"])
    s = settings_from_args(args)
    assert (s.batch_size, s.model_target, s.compression) == (20, "127.0.0.1:1234", "gzip")
    assert args.ready_file == "/tmp/x" and callable(args.func)


def test_every_setting_has_a_flag_and_a_description():
    for name, field in RankerSettings.model_fields.items():
        assert field.description, name
    args = _parse([])
    assert all(hasattr(args, name) for name in RankerSettings.model_fields)


def test_settings_validation_and_config():
    with pytest.raises(ValidationError, match="not both"):
        RankerSettings(model_label="stable", model_version=3)
    with pytest.raises(ValidationError):
        RankerSettings(batch_size=4)
    cfg = ranker_config(RankerSettings(model_name="m", model_label="stable",
                                       min_score_budget_ms=8, default_deadline_ms=250))
    assert cfg.default_model == ModelRef("m", label="stable")
    assert (cfg.min_score_budget_s, cfg.default_deadline_s) == (0.008, 0.25)


def test_by_default_every_admitted_rank_sends_all_its_calls_at_once(monkeypatch):
    """The Predict bound follows the Ranks served at once and a default Rank's batches; a
    bound below that makes a Rank's calls wait for another Rank's answers."""
    four = RankerSettings(max_concurrent_ranks=4, default_candidates=1000, batch_size=25)
    assert ranker_config(four).max_in_flight == 4 * 40
    odd = RankerSettings(max_concurrent_ranks=3, default_candidates=110, batch_size=25)
    assert ranker_config(odd).max_in_flight == 3 * 5  # the last, partial batch counts
    monkeypatch.setattr("rankserve.server.common.admission.available_cpus", lambda: 3.0)
    assert ranker_config(RankerSettings()).max_in_flight == 2 * 3 * 40  # 2 Ranks per CPU
    assert ranker_config(RankerSettings(max_in_flight=64)).max_in_flight == 64
