from rankserve.ranker.routing import Router, RouteRule
from rankserve.ranker.types import ModelRef, RankQuery

DEFAULT = ModelRef("ranker", label="stable")
GENERIC = ModelRef("generic")
MOBILE = ModelRef("ranker-mobile", version=7)
ROUTER = Router(DEFAULT, (RouteRule(GENERIC, user_known=False, has_query=False),
                          RouteRule(MOBILE, devices=("mobile",))))


def test_default_when_nothing_matches():
    assert ROUTER.route(RankQuery("r", query="shoes", device="desktop")) == DEFAULT


def test_first_matching_rule_wins():
    assert ROUTER.route(RankQuery("r", viewed_item_ids=("a",), device="mobile")) == GENERIC
    assert ROUTER.route(RankQuery("r", query="x", device="mobile")) == MOBILE


def test_known_user_needs_an_id():
    q = RankQuery("r", user_id="", user_known=True, viewed_item_ids=("a",))
    assert ROUTER.route(q) == GENERIC
    q = RankQuery("r", user_id="u1", user_known=True, device="desktop")
    assert ROUTER.route(q) == DEFAULT


def test_request_selector_bypasses_rules():
    q = RankQuery("r", device="mobile", model=ModelRef("other", version=2))
    assert ROUTER.route(q) == ModelRef("other", version=2)


def test_selector_without_name_means_default_model():
    q = RankQuery("r", query="x", model=ModelRef("", label="canary"))
    assert ROUTER.route(q) == ModelRef("ranker", label="canary")
    assert ROUTER.route(RankQuery("r", query="x", model=ModelRef(""))) == DEFAULT
