"""Routing policies and experiments as a config file (YAML or JSON), reloaded when it changes.

Format (every key but ``default`` optional)::

    default: {model: ranker, label: stable}      # or {experiment: NAME}
    rules:                                        # first match wins
      - name: new-users
        when: {user_known: false}                 # user_known, has_query, has_viewed_items,
        model: ranker-generic                     #   devices: [..], locales: [..]
        version: 1                                # version or label, or neither for latest
      - name: item-page
        when: {has_viewed_items: true}
        model: item2item
        label: stable
      - name: personalized
        when: {user_known: true}
        experiment: ranker-v2                     # a rule names a model or an experiment
    experiments:
      ranker-v2:
        salt: "2026-11"                           # change it to reshuffle users
        arms:                                     # weights are relative
          - {name: control, model: ranker, label: stable, weight: 90}
          - {name: treatment, model: ranker, label: canary, weight: 10}
        shadow: {name: next, model: ranker, version: 3}   # scores a copy, never answers

A file that fails to parse or validate is reported and the previous policy stays in force, so a
typo during a label move cannot take routing down.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Set
from pathlib import Path
from typing import Any

import yaml

from rankserve.ranker.experiments import Arm, Experiment
from rankserve.ranker.routing import Router, RouteRule
from rankserve.ranker.types import ModelRef

log = logging.getLogger(__name__)

_MODEL_KEYS = {"model", "version", "label"}
_WHEN_KEYS = {"user_known", "has_query", "has_viewed_items", "devices", "locales"}


class RoutingConfigError(ValueError):
    """The routing file is not a valid policy; the message names the key to fix."""


def _keys(obj: Any, where: str, allowed: Set[str], required: Set[str] = frozenset()
          ) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise RoutingConfigError(f"{where}: expected a mapping, got {type(obj).__name__}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise RoutingConfigError(
            f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
    missing = sorted(required - set(obj))
    if missing:
        raise RoutingConfigError(f"{where}: missing key {missing[0]!r}")
    return obj


def _model(obj: dict[str, Any], where: str) -> ModelRef:
    name = obj.get("model")
    if not isinstance(name, str) or not name:
        raise RoutingConfigError(f"{where}.model: expected a model name")
    version, label = obj.get("version"), obj.get("label")
    if version is not None and label is not None:
        raise RoutingConfigError(f"{where}: give a version or a label, not both")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)
                                or version < 1):
        raise RoutingConfigError(f"{where}.version: expected an integer >= 1, got {version!r}")
    if label is not None and (not isinstance(label, str) or not label):
        raise RoutingConfigError(f"{where}.label: expected a non-empty string")
    return ModelRef(name, version, label)


def _bool(obj: dict[str, Any], key: str, where: str) -> bool | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, bool):
        raise RoutingConfigError(f"{where}.{key}: expected true or false, got {value!r}")
    return value


def _strings(obj: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RoutingConfigError(f"{where}.{key}: expected a list of strings")
    return tuple(value)


def _arm(obj: Any, where: str, weighted: bool) -> Arm:
    allowed = {"name", *_MODEL_KEYS} | ({"weight"} if weighted else set())
    obj = _keys(obj, where, allowed, {"name", "model"})
    weight = obj.get("weight", 1.0)
    if not isinstance(weight, int | float) or isinstance(weight, bool) or weight < 0:
        raise RoutingConfigError(f"{where}.weight: expected a number >= 0, got {weight!r}")
    return Arm(str(obj["name"]), _model(obj, where), float(weight))


def _experiment(name: str, obj: Any, where: str) -> Experiment:
    obj = _keys(obj, where, {"arms", "salt", "shadow"}, {"arms"})
    arms = obj["arms"]
    if not isinstance(arms, list) or not arms:
        raise RoutingConfigError(f"{where}.arms: expected a non-empty list of arms")
    parsed = tuple(_arm(a, f"{where}.arms[{i}]", True) for i, a in enumerate(arms))
    shadow = _arm(obj["shadow"], f"{where}.shadow", False) if obj.get("shadow") else None
    try:
        return Experiment(name, parsed, str(obj.get("salt", "")), shadow)
    except ValueError as exc:
        raise RoutingConfigError(f"{where}: {exc}") from None


def _target(obj: dict[str, Any], where: str, experiments: dict[str, Experiment]
            ) -> tuple[ModelRef | None, str]:
    exp = obj.get("experiment")
    if exp is not None:
        if set(obj) & _MODEL_KEYS:
            raise RoutingConfigError(f"{where}: give a model or an experiment, not both")
        if exp not in experiments:
            known = ", ".join(sorted(experiments)) or "none"
            raise RoutingConfigError(f"{where}.experiment: no experiment {exp!r}; defined: {known}")
        return None, exp
    return _model(obj, where), ""


def parse_policy(data: Any, source: str = "routing config") -> Router:
    """A Router from the parsed file contents; RoutingConfigError says what to fix."""
    top = _keys(data, source, {"default", "rules", "experiments"}, {"default"})
    experiments: dict[str, Experiment] = {}
    raw_exps = top.get("experiments") or {}
    if not isinstance(raw_exps, dict):
        raise RoutingConfigError(f"{source}: experiments: expected a mapping of name -> experiment")
    for name, exp in raw_exps.items():
        experiments[str(name)] = _experiment(str(name), exp, f"{source}: experiments.{name}")
    default_obj = _keys(top["default"], f"{source}: default", _MODEL_KEYS | {"experiment"})
    default_model, default_exp = _target(default_obj, f"{source}: default", experiments)
    if default_model is None:
        # The name requests with a bare version/label selector fall back to.
        default_model = experiments[default_exp].arms[0].model
    rules = []
    raw_rules = top.get("rules") or []
    if not isinstance(raw_rules, list):
        raise RoutingConfigError(f"{source}: rules: expected a list")
    for i, raw in enumerate(raw_rules):
        where = f"{source}: rules[{i}]"
        obj = _keys(raw, where, {"name", "when", "experiment", *_MODEL_KEYS})
        when = _keys(obj.get("when") or {}, f"{where}.when", _WHEN_KEYS)
        model, exp = _target(obj, where, experiments)
        rules.append(RouteRule(
            model, user_known=_bool(when, "user_known", f"{where}.when"),
            devices=_strings(when, "devices", f"{where}.when"),
            locales=_strings(when, "locales", f"{where}.when"),
            has_query=_bool(when, "has_query", f"{where}.when"),
            has_viewed_items=_bool(when, "has_viewed_items", f"{where}.when"),
            experiment=exp, name=str(obj.get("name", f"rule-{i}"))))
    return Router(default_model, tuple(rules), experiments, default_exp)


def load_policy(path: str | os.PathLike[str]) -> Router:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise RoutingConfigError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise RoutingConfigError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}:"
                                 f" {exc}") from None
    return parse_policy(data, str(p))


class RoutingPolicyFile:
    """The policy in a file, re-read when the file changes (checked at most every
    ``check_s``); a broken edit keeps the previous policy and is logged once."""

    def __init__(self, path: str | os.PathLike[str], check_s: float = 1.0) -> None:
        self.path = Path(path)
        self._check_s = check_s
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self.router = load_policy(self.path)  # a bad file at start-up is fatal
        self.reloads = 0
        self.last_error: str | None = None
        self._checked = time.monotonic()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def current(self) -> Router:
        now = time.monotonic()
        if now - self._checked >= self._check_s:
            self.check()
        return self.router

    def check(self) -> bool:
        """Reloads if the file changed; True when a new policy took effect."""
        with self._lock:
            self._checked = time.monotonic()
            stamp = self._stat()
            if stamp is None or stamp == self._stamp:
                return False
            self._stamp = stamp
            try:
                router = load_policy(self.path)
            except RoutingConfigError as exc:
                if str(exc) != self.last_error:
                    log.error("keeping the previous routing policy: %s", exc)
                self.last_error = str(exc)
                return False
            self.router = router
            self.reloads += 1
            self.last_error = None
            log.info("routing policy reloaded from %s", self.path)
            return True
