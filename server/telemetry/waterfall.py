"""A trace as a waterfall: each span indented under its parent, with its start offset,
duration and share of the whole trace."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

BAR_WIDTH = 24


def span_tree(spans: list[dict[str, Any]]) -> tuple[list[dict], dict[str, list[dict]]]:
    """(roots, children by parent id). A root has no parent or a parent this trace lacks."""
    ids = {s["span_id"] for s in spans}
    children: dict[str, list[dict]] = defaultdict(list)
    roots = []
    for s in spans:
        parent = s.get("parent_span_id") or ""
        if parent and parent in ids:
            children[parent].append(s)
        else:
            roots.append(s)
    for kids in children.values():
        kids.sort(key=lambda s: (s["start_ns"], s["name"]))
    roots.sort(key=lambda s: (s["start_ns"], s["name"]))
    return roots, children


def orphans(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Spans naming a parent that is not in the trace."""
    ids = {s["span_id"] for s in spans}
    return [s for s in spans if s.get("parent_span_id") and s["parent_span_id"] not in ids]


def format_waterfall(spans: list[dict[str, Any]]) -> str:
    if not spans:
        return "(no spans)"
    t0 = min(s["start_ns"] for s in spans)
    t1 = max(s["end_ns"] for s in spans)
    whole = max(t1 - t0, 1)
    roots, children = span_tree(spans)
    missing = {id(s) for s in orphans(spans)}
    width = max(len(s["name"]) + 2 * _depth_of(s, spans) for s in spans)
    width = min(max(width, 20), 60)
    lines = [
        f"trace {spans[0]['trace_id']}: {len(spans)} spans, {whole / 1e6:.2f} ms",
        f"{'span':<{width}}  {'service':<24} {'start ms':>9} {'dur ms':>8} {'share':>6}",
    ]

    def walk(span: dict, depth: int) -> None:
        start = span["start_ns"] - t0
        dur = span["end_ns"] - span["start_ns"]
        a = int(BAR_WIDTH * start / whole)
        b = max(a + 1, int(round(BAR_WIDTH * (start + dur) / whole)))
        bar = " " * a + "#" * (b - a)
        name = ("  " * depth + span["name"])[:width]
        flag = "  (parent missing)" if id(span) in missing else ""
        flag += "  ERROR" if span.get("status") == "ERROR" else ""
        lines.append(
            f"{name:<{width}}  {span.get('service', ''):<24} {start / 1e6:9.2f}"
            f" {dur / 1e6:8.2f} {100 * dur / whole:5.1f}%  |{bar:<{BAR_WIDTH}}|{flag}")
        for kid in children.get(span["span_id"], ()):
            walk(kid, depth + 1)

    for root in roots:
        walk(root, 0)
    return "\n".join(lines)


def _depth_of(span: dict, spans: list[dict]) -> int:
    by_id = {s["span_id"]: s for s in spans}
    depth, seen = 0, set()
    while span.get("parent_span_id") in by_id and span["span_id"] not in seen:
        seen.add(span["span_id"])
        span = by_id[span["parent_span_id"]]
        depth += 1
    return depth
