"""Model routing: which model (name + version or label) scores a request.

Routing is data: an ordered list of rules, the first that matches wins, then a default. A
request that names a model itself bypasses the rules (experiments and debugging need that).
"""

from __future__ import annotations

from dataclasses import dataclass

from ranker.types import ModelRef, RankQuery


@dataclass(frozen=True)
class RouteRule:
    """Send matching requests to ``model``. Unset conditions match anything."""

    model: ModelRef
    # True: only known users; False: only unknown or anonymous users.
    user_known: bool | None = None
    devices: tuple[str, ...] = ()
    locales: tuple[str, ...] = ()
    # True: only requests with query text; False: only requests without.
    has_query: bool | None = None

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
        return True


@dataclass(frozen=True)
class Router:
    default: ModelRef
    rules: tuple[RouteRule, ...] = ()

    def route(self, query: RankQuery) -> ModelRef:
        return route(query, self.default, self.rules)


def route(query: RankQuery, default: ModelRef, rules: tuple[RouteRule, ...] = ()) -> ModelRef:
    """The request's own selector, else the first matching rule, else ``default``.

    A selector with a version or label but no name means "this version of the default model".
    """
    sel = query.model
    if sel is not None and (sel.name or sel.version is not None or sel.label):
        return ModelRef(sel.name or default.name, sel.version, sel.label or None)
    for rule in rules:
        if rule.matches(query):
            return rule.model
    return default
