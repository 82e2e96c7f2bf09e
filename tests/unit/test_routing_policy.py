"""Routing policies and experiments from a config file: each kind of request to its model,
stable weighted splits, reload without restart, precise errors."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from rankserve.ranker.routing_config import (
    RoutingConfigError,
    RoutingPolicyFile,
    load_policy,
    parse_policy,
)
from rankserve.ranker.types import ModelRef, RankQuery

POLICY = Path(__file__).parent.parent / "testdata" / "routing.yaml"


def test_each_kind_of_request_goes_to_its_model():
    router = load_policy(POLICY)
    new_user = router.decide(RankQuery("r", query="red shoes", user_id="u1", user_known=False))
    assert new_user.model == ModelRef("ranker-generic", version=1) and not new_user.experiment
    anonymous = router.decide(RankQuery("r", query="lamp"))
    assert anonymous.model == ModelRef("ranker-generic", version=1)
    viewing = router.decide(RankQuery("r", user_id="u1", user_known=True,
                                      viewed_item_ids=("item-1",)))
    assert viewing.model == ModelRef("item2item", label="stable")
    known = router.decide(RankQuery("r", query="lamp", user_id="u1", user_known=True))
    assert known.experiment == "personal-v2" and known.arm in {"control", "treatment", "fresh"}
    assert known.shadow is not None and known.shadow.model == ModelRef("ranker-next", version=1)
    pinned = router.decide(RankQuery("r", query="x", model=ModelRef("", label="canary")))
    assert pinned.model == ModelRef("ranker", label="canary") and not pinned.experiment


def test_default_applies_when_no_rule_matches():
    router = parse_policy({"default": {"model": "ranker", "version": 4},
                           "rules": [{"when": {"devices": ["tv"]}, "model": "tv"}]})
    assert router.route(RankQuery("r", query="x", device="mobile")) == ModelRef("ranker", 4)
    assert router.route(RankQuery("r", query="x", device="tv")) == ModelRef("tv")


def test_split_matches_weights_over_10000_users_and_is_stable():
    router = load_policy(POLICY)
    exp = router.experiments["personal-v2"]
    users = [f"user-{i}" for i in range(10_000)]
    arms = [exp.assign(u).name for u in users]
    counts = Counter(arms)
    # Binomial sd at n=10,000 is at most 0.5 points; 1.5 points is three of them.
    for arm, weight in (("control", 0.70), ("treatment", 0.20), ("fresh", 0.10)):
        assert abs(counts[arm] / len(users) - weight) < 0.015, counts
    # The same user lands in the same arm every time, and through a fresh parse of the file.
    again = load_policy(POLICY).experiments["personal-v2"]
    assert [again.assign(u).name for u in users] == arms
    # A new salt reshuffles users but keeps the weights.
    resalted = parse_policy({"default": {"experiment": "e"}, "experiments": {"e": {
        "salt": "other", "arms": [{"name": a.name, "model": "m", "weight": a.weight}
                                  for a in exp.arms]}}}).experiments["e"]
    moved = sum(resalted.assign(u).name != a for u, a in zip(users, arms, strict=True))
    assert moved > 2000


def test_anonymous_traffic_gets_the_first_arm():
    exp = load_policy(POLICY).experiments["personal-v2"]
    assert exp.assign("").name == "control"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "missing key 'default'"),
        ({"default": {"model": "m", "version": 1, "label": "x"}}, "a version or a label, not both"),
        ({"default": {"model": "m"}, "rules": [{"when": {"user_knwn": True}, "model": "m"}]},
         "rules[0].when: unknown key 'user_knwn'"),
        ({"default": {"experiment": "nope"}}, "default.experiment: no experiment 'nope'"),
        ({"default": {"model": "m"}, "experiments": {"e": {"arms": [
            {"name": "a", "model": "m", "weight": -1}]}}}, "arms[0].weight: expected a number"),
        ({"default": {"model": "m"}, "experiments": {"e": {"arms": [
            {"name": "a", "model": "m", "weight": 0}]}}}, "arm weights sum to 0"),
        ({"default": {"model": "m", "version": 0}}, "version: expected an integer >= 1"),
    ],
)
def test_bad_policies_say_what_to_fix(data, message):
    with pytest.raises(RoutingConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_policy(data)


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_label_moves_by_reloading_the_file_and_a_broken_edit_keeps_the_last(tmp_path):
    path = tmp_path / "routing.yaml"
    _write(path, "default: {model: ranker, label: stable}\n")
    policy = RoutingPolicyFile(path, check_s=0.0)
    q = RankQuery("r", query="x")
    assert policy.current().route(q) == ModelRef("ranker", label="stable")
    _write(path, "default: {model: ranker, label: canary}\n")
    assert policy.current().route(q) == ModelRef("ranker", label="canary")
    _write(path, "default: {model: ranker, label: [oops\n")
    assert policy.current().route(q) == ModelRef("ranker", label="canary")
    assert "not valid YAML" in policy.last_error
    _write(path, '{"default": {"model": "ranker", "version": 2}}')
    assert policy.current().route(q) == ModelRef("ranker", version=2)
    assert policy.reloads == 2
