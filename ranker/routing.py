"""Model routing: which model (name + version or label) scores a request.

Routing is data: an ordered list of rules, the first that matches wins, then a default. A rule
(or the default) names either a model or an experiment, whose arms name models. A request that
names a model itself bypasses the rules and experiments (debugging needs that).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from rankserve.ranker.experiments import Arm, Experiment
from rankserve.ranker.types import ModelRef, RankQuery


@dataclass(frozen=True)
class RouteRule:
    """Send matching requests to ``model`` (or to ``experiment`` when set). Unset conditions
    match anything."""

    model: ModelRef | None
    # True: only known users; False: only unknown or anonymous users.
    user_known: bool | None = None
    devices: tuple[str, ...] = ()
    locales: tuple[str, ...] = ()
    # True: only requests with query text; False: only requests without.
    has_query: bool | None = None
    # True: only requests with items being viewed; False: only requests without.
    has_viewed_items: bool | None = None
    experiment: str = ""
    # A name for metrics and logs; the rule's position when empty.
    name: str = ""

    def matches(self, query: RankQuery) -> bool:
        known = bool(query.user_known and query.user_id)
        if self.user_known is not None and self.user_known != known:
            return False
        if self.devices and query.device not in self.devices:
            return False
        if self.locales and query.locale not in self.locales:
            return False
        if self.has_query is not None and self.has_query != bool(query.query.strip()):
            return False
        if (self.has_viewed_items is not None
                and self.has_viewed_items != bool(query.viewed_item_ids)):
            return False
        return True


@dataclass(frozen=True)
class Decision:
    """Where one request goes: the model, and the experiment arm that chose it if any."""

    model: ModelRef
    experiment: str = ""
    arm: str = ""
    shadow: Arm | None = None


@dataclass(frozen=True)
class Router:
    default: ModelRef
    rules: tuple[RouteRule, ...] = ()
    experiments: Mapping[str, Experiment] = field(default_factory=dict)
    # When set, requests no rule matches go to this experiment instead of ``default``.
    default_experiment: str = ""

    def route(self, query: RankQuery) -> ModelRef:
        return self.decide(query).model

    def decide(self, query: RankQuery) -> Decision:
        """The request's own selector, else the first matching rule, else the default."""
        sel = query.model
        if sel is not None and (sel.name or sel.version is not None or sel.label):
            return Decision(ModelRef(sel.name or self.default.name, sel.version,
                                     sel.label or None))
        for rule in self.rules:
            if rule.matches(query):
                if rule.experiment:
                    return self._experiment(rule.experiment, query)
                if rule.model is not None:
                    return Decision(rule.model)
        if self.default_experiment:
            return self._experiment(self.default_experiment, query)
        return Decision(self.default)

    def _experiment(self, name: str, query: RankQuery) -> Decision:
        exp = self.experiments[name]
        arm = exp.assign(query.user_id)
        return Decision(arm.model, exp.name, arm.name, exp.shadow)


def route(query: RankQuery, default: ModelRef, rules: tuple[RouteRule, ...] = ()) -> ModelRef:
    """The request's own selector, else the first matching rule, else ``default``.

    A selector with a version or label but no name means "this version of the default model".
    """
    return Router(default, rules).route(query)
