"""Writes the Helm chart's Envoy bootstrap template from ``tools/stack/envoy_config.render``.

The chart must deploy the Envoy configuration the local stack runs (docs/architecture.md,
decision 6), so the template is not written by hand: :func:`template` calls ``render()`` once
with a sentinel in every option, finds each sentinel in the output and puts a Helm expression
reading ``.Values.envoy.config.<optionInCamelCase>`` in its place. It knows no option by name except
the upstreams (a ``range`` over the model servers) and the fixed discovery type, so an option
added to ``EnvoyOptions`` flows into the chart with ``make chart-envoy``:

- an int, float or str option becomes a value; a millisecond option rendered as an Envoy
  duration ("0.25s") becomes ``printf "%gs" (divf value 1000)``;
- an option that defaults to None or False turns a part of the config on: whatever render()
  adds when it is set is wrapped in ``{{- if value }}``; a dataclass-valued option of that kind
  becomes a nested map of values.

An option rendered in a form none of these rules explain stops the generator with its name.
``--check`` fails when the committed template differs from what it would write.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any

from rankserve.tools.stack import envoy_config

CHART = Path(__file__).resolve().parent / "helm" / "rankserve"
OUT = CHART / "templates" / "_envoy-bootstrap.tpl"
DEFINE = "rankserve.envoy.bootstrap"
VALUES = "$.Values.envoy.config"
# Set by the chart itself, never by a value: the model servers are a headless Service name.
FIXED: dict[str, Any] = {"discovery": "STRICT_DNS", "extra_clusters": ()}
UPSTREAM_HOST = "@@upstream.host@@"
UPSTREAM_PORT = 654_321
UPSTREAMS_EXPR = '(include "rankserve.envoy.upstreams" $ | fromJsonArray)'
_MISSING = object()


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _optional_inner(hint: Any) -> Any | None:
    """T for ``T | None``, else None."""
    args = typing.get_args(hint)
    if type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return inner[0] if len(inner) == 1 else None
    return None


@dataclasses.dataclass
class _Plan:
    """Sentinel options plus how to turn each sentinel back into a Helm expression."""

    # sentinel -> (kind, Helm expression)
    subs: dict[Any, tuple[str, str]] = dataclasses.field(default_factory=dict)
    features: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # expr->path
    templated: list[str] = dataclasses.field(default_factory=list)  # value paths, dotted
    _next: int = 0

    def sentinel(self, hint: Any, expr: str, where: str) -> Any:
        self._next += 1
        self.templated.append(where)
        if hint is int:
            value = 700_001 + 1_000 * self._next
            self.subs[value] = ("int", expr)
            return value
        if hint is float:
            value = 0.000_013 * self._next + 3.25
            self.subs[value] = ("float", expr)
            return value
        if hint is str:
            value = f"@@{where}@@"
            self.subs[value] = ("str", expr)
            return value
        raise SystemExit(
            f"envoy_chart: option {where} has type {hint!r}, which the generator cannot turn "
            "into a chart value; give it an int, float, str, bool or dataclass type"
        )


def _build(cls: type, plan: _Plan, expr: str, where: str, top: bool) -> tuple[Any, dict]:
    """Sentinel keyword arguments for ``cls`` and, per optional part, the arguments that turn
    it off."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    offs: dict[str, dict] = {}
    for f in dataclasses.fields(cls):
        if top and f.name == "upstreams":
            kwargs[f.name] = (envoy_config.Upstream(UPSTREAM_HOST, UPSTREAM_PORT),)
            continue
        if top and f.name in FIXED:
            kwargs[f.name] = FIXED[f.name]
            continue
        hint = hints[f.name]
        sub_expr, sub_where = f"{expr}.{camel(f.name)}", f"{where}.{camel(f.name)}".lstrip(".")
        inner = _optional_inner(hint)
        if hint is bool:
            plan.templated.append(sub_where)
            plan.features[sub_expr] = ()
            kwargs[f.name] = True
            offs[sub_expr] = {f.name: False}
        elif inner is not None and dataclasses.is_dataclass(inner):
            nested, _ = _build(inner, plan, sub_expr, sub_where, top=False)
            plan.features[sub_expr] = ()
            kwargs[f.name] = inner(**nested)
            offs[sub_expr] = {f.name: None}
        elif inner is not None:
            kwargs[f.name] = plan.sentinel(inner, sub_expr, sub_where)
            plan.features[sub_expr] = ()
            offs[sub_expr] = {f.name: None}
        else:
            kwargs[f.name] = plan.sentinel(hint, sub_expr, sub_where)
    return kwargs, offs


def _scalar(value: Any, subs: dict[Any, tuple[str, str]]) -> str:
    """One YAML scalar: a Helm expression where a sentinel stands, JSON otherwise."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        if value in subs:
            kind, expr = subs[value]
            return "{{ " + expr + (" | int64 }}" if kind == "int" else " | float64 }}")
        return json.dumps(value)
    if value in subs and subs[value][0] == "str":
        return "{{ " + subs[value][1] + " | toJson }}"
    for sentinel, (kind, expr) in subs.items():
        if kind == "int" and value == f"{sentinel / 1000:g}s":
            return '{{ printf "%gs" (divf ' + expr + " 1000) | toJson }}"
    parts, rest = [], value
    for sentinel, (kind, expr) in subs.items():
        if kind == "str" and sentinel in rest:
            before, _, rest = rest.partition(sentinel)
            parts += [json.dumps(before), expr]
    if parts:
        return "{{ print " + " ".join(parts) + " " + json.dumps(rest) + " | toJson }}"
    return json.dumps(value)


def _leftover(text: str, subs: dict[Any, tuple[str, str]]) -> list[str]:
    """Sentinels still visible in a rendered line: an option rendered in an unknown form."""
    found = []
    for sentinel, (_, expr) in subs.items():
        token = str(sentinel)
        if token in text and "{{" not in text:
            found.append(expr)
    if "@@" in text and "{{" not in text:
        found.append(text.strip())
    return found


def _nested_upstream(node: Any) -> bool:
    """Whether a list below ``node`` has an item naming the upstream."""
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        if isinstance(child, list) and any(UPSTREAM_HOST in json.dumps(c) for c in child):
            return True
        if isinstance(child, dict | list) and _nested_upstream(child):
            return True
    return False


class _Emitter:
    def __init__(self, subs: dict[Any, tuple[str, str]]) -> None:
        self.subs = subs
        self.lines: list[str] = []

    def _conds(self, offs: dict[str, Any], present) -> tuple[list[str], dict[str, Any]]:
        conds, child = [], {}
        for expr, off in offs.items():
            if off is _MISSING:
                child[expr] = _MISSING
            elif present(off):
                child[expr] = present(off)[1]
            else:
                conds.append(expr)
                child[expr] = _MISSING
        return conds, child

    def node(self, value: Any, offs: dict[str, Any], indent: int, subs: dict) -> None:
        pad = " " * indent
        if isinstance(value, dict):
            for key, item in value.items():
                conds, child = self._conds(
                    offs,
                    lambda off, k=key: (True, off[k]) if isinstance(off, dict) and k in off
                    else None,
                )
                self._open(conds, pad)
                self._entry(f"{pad}{json.dumps(key)}:", item, child, indent, subs)
                self._close(conds, pad)
        else:
            for item in value:
                blob = json.dumps(item)

                def present(off, blob=blob, item=item):
                    if not isinstance(off, list):
                        return None
                    for candidate in off:
                        if json.dumps(candidate) == blob:
                            return True, candidate
                    # Same list item with a different body (a part switched on inside it).
                    same = [c for c in off if isinstance(c, dict) and isinstance(item, dict)
                            and c.get("name", c.keys()) == item.get("name", item.keys())]
                    return (True, same[0]) if len(same) == 1 else None

                conds, child = self._conds(offs, present)
                item_subs = subs
                # The innermost list item that names the upstream repeats once per upstream.
                ranged = UPSTREAM_HOST in blob and not _nested_upstream(item)
                self._open(conds, pad)
                if ranged:
                    self.lines.append(f"{pad}{{{{- range $u := {UPSTREAMS_EXPR} }}}}")
                    item_subs = {**subs, UPSTREAM_HOST: ("str", "$u.host"),
                                 UPSTREAM_PORT: ("int", "$u.port")}
                self._entry(f"{pad}-", item, child, indent, item_subs)
                if ranged:
                    self.lines.append(f"{pad}{{{{- end }}}}")
                self._close(conds, pad)

    def _entry(self, head: str, item: Any, offs: dict, indent: int, subs: dict) -> None:
        if isinstance(item, dict | list | tuple) and item:
            self.lines.append(head)
            self.node(item, offs, indent + 2, subs)
        elif isinstance(item, dict | list | tuple):
            self.lines.append(f"{head} {'{}' if isinstance(item, dict) else '[]'}")
        else:
            line = f"{head} {_scalar(item, subs)}"
            bad = _leftover(line, subs)
            if bad:
                raise SystemExit(
                    f"envoy_chart: render() wrote {line.strip()!r}: the option behind {bad} is "
                    "rendered in a form this generator cannot template; teach _scalar() the form"
                )
            self.lines.append(line)

    def _open(self, conds: list[str], pad: str) -> None:
        for expr in conds:
            self.lines.append(f"{pad}{{{{- if {expr} }}}}")

    def _close(self, conds: list[str], pad: str) -> None:
        for _ in conds:
            self.lines.append(f"{pad}{{{{- end }}}}")


def templated_values() -> list[str]:
    """Dotted paths under ``envoy.config`` that the template reads, in option order."""
    plan = _Plan()
    _build(envoy_config.EnvoyOptions, plan, VALUES, "", top=True)
    return plan.templated


def templated_options() -> dict[str, str]:
    """Top-level EnvoyOptions fields the chart reads from values: field name -> value key."""
    keys = set(templated_values())
    return {f.name: camel(f.name) for f in dataclasses.fields(envoy_config.EnvoyOptions)
            if camel(f.name) in keys}


def template() -> str:
    plan = _Plan()
    kwargs, offs = _build(envoy_config.EnvoyOptions, plan, VALUES, "", top=True)
    full = envoy_config.render(envoy_config.EnvoyOptions(**kwargs))
    off_trees = {
        expr: envoy_config.render(envoy_config.EnvoyOptions(**{**kwargs, **off}))
        for expr, off in offs.items()
    }
    emitter = _Emitter(plan.subs)
    emitter.node(full, off_trees, 0, plan.subs)
    body = "\n".join(emitter.lines)
    return (
        "{{- /*\n"
        "Envoy bootstrap of the model-server tier. GENERATED by `make chart-envoy` from\n"
        "tools/stack/envoy_config.render(), the config the local stack runs; do not edit.\n"
        "Options are read from .Values.envoy.config; upstreams from rankserve.envoy.upstreams.\n"
        "*/}}\n"
        f'{{{{- define "{DEFINE}" -}}}}\n'
        f"{body}\n"
        "{{- end }}\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.envoy_chart",
        description="Write the Helm chart's Envoy bootstrap template "
        f"({OUT.relative_to(CHART.parents[2])}) from tools/stack/envoy_config.render().",
    )
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the committed template is stale")
    args = parser.parse_args(argv)
    text = template()
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is stale: run 'make chart-envoy' and commit", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
