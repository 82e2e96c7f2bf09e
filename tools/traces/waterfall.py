"""A trace as a waterfall: each span indented under its parent, with its start offset,
duration and share of the whole trace. Phases a span marks with timed events (a Predict's queue
wait and inference, which the model server records as events, not spans) are drawn as rows
under it."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rankserve.server.modelserver.span_events import PHASES

BAR_WIDTH = 24


def phases(span: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows drawn from a span's phase events, shaped as spans (children of ``span``)."""
    at = {e["name"]: e["time_ns"] for e in span.get("events", ())}
    return [{**span, "span_id": f"{span['span_id']}:{row}", "parent_span_id": span["span_id"],
             "name": row, "start_ns": at[begin], "end_ns": at[end], "events": [],
             "status": "UNSET"}
            for row, begin, end in PHASES if begin in at and end in at]


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


def _fold(kids: list[dict], keep: int) -> tuple[list[dict], list[str]]:
    """Of each run of same-named siblings longer than ``keep``, the ``keep`` slowest (tail
    latency hides in them) in start order, and a summary of the rest per name."""
    by_name: dict[str, list[dict]] = defaultdict(list)
    for kid in kids:
        by_name[kid["name"]].append(kid)
    shown, notes = [], []
    dropped: set[int] = set()
    for name, same in by_name.items():
        if len(same) <= keep:
            continue
        durs = sorted((k["end_ns"] - k["start_ns"]) / 1e6 for k in same)
        slowest = sorted(same, key=lambda k: k["end_ns"] - k["start_ns"])[-keep:]
        dropped.update(id(k) for k in same if all(k is not t for t in slowest))
        notes.append(
            f"... {len(same) - keep} more {name} (of {len(same)}: duration p50"
            f" {durs[len(durs) // 2]:.2f} ms, max {durs[-1]:.2f} ms; the {keep} slowest shown)")
    shown = [k for k in kids if id(k) not in dropped]
    return shown, notes


def format_waterfall(spans: list[dict[str, Any]], max_siblings: int | None = None) -> str:
    """The whole trace, or with ``max_siblings`` each run of same-named siblings (a Rank's
    batches) folded to its slowest few plus one summary line."""
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
        kids = phases(span) + children.get(span["span_id"], [])
        notes: list[str] = []
        if max_siblings is not None:
            kids, notes = _fold(kids, max_siblings)
        for kid in kids:
            walk(kid, depth + 1)
        for note in notes:
            lines.append("  " * (depth + 1) + note)

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
