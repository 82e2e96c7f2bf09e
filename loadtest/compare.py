"""Two reports side by side (model v1 against v2): every figure, its change, and a mark where
B is worse than A by more than a threshold. When both carry an op profile, its ops are compared
too: each op's share of op time and its time per row, so an op that grew (or appeared) in B is
marked like any other regression."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# (label, path in a run summary, True when higher is better)
RUN_METRICS: list[tuple[str, tuple[str, ...], bool]] = [
    ("throughput (ok req/s)", ("throughput_rps",), True),
    ("latency p50 (ms)", ("latency_ms", "p50"), False),
    ("latency p90 (ms)", ("latency_ms", "p90"), False),
    ("latency p95 (ms)", ("latency_ms", "p95"), False),
    ("latency p99 (ms)", ("latency_ms", "p99"), False),
    ("latency p99.9 (ms)", ("latency_ms", "p99_9"), False),
    ("service p99 (ms)", ("service_ms", "p99"), False),
    ("error rate", ("error_rate",), False),
    ("request bytes per call", ("bytes", "request_per_call"), False),
    ("client CPU per request (ms)", ("cpu", "client_ms_per_request"), False),
    ("server CPU per request (ms)", ("cpu", "server_ms_per_request"), False),
]
DOC_METRICS: list[tuple[str, tuple[str, ...], bool]] = [
    ("step: max rate held (req/s)", ("step", "max_rate_held_rps"), True),
    ("cost per million requests", ("cost", "cost_per_million_requests"), False),
]


PROFILE_METRICS: list[tuple[str, tuple[str, ...], bool]] = [
    ("profile: op time per row (us)", ("profile", "op_us_per_row"), False),
    ("profile: op time per Predict (us)", ("profile", "op_us_per_predict"), False),
    ("profile: model call mean (ms)", ("profile", "model_call_ms_mean"), False),
    ("profile: outside the model call per Predict (ms)",
     ("profile", "time_split", "outside_model_ms_per_predict"), False),
    ("profile: model parameters", ("profile", "model_size", "parameters"), False),
    ("profile: SavedModel bytes", ("profile", "model_size", "saved_model_bytes"), False),
]
PROFILE_OPS = 10  # ops compared: the largest by share in either report


def load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable report ({exc})") from None
    if not str(doc.get("schema", "")).startswith("rankserve.loadtest.report/"):
        raise ValueError(f"{path}: not a rankserve loadtest report (no schema field)")
    return doc


def _get(node: Any, path: tuple[str, ...]) -> float | None:
    for p in path:
        if not isinstance(node, dict) or node.get(p) is None:
            return None
        node = node[p]
    return float(node) if isinstance(node, int | float) else None


def _row(label: str, a: float | None, b: float | None, higher_better: bool,
         threshold: float) -> dict[str, Any]:
    row: dict[str, Any] = {"metric": label, "a": a, "b": b, "change": None, "mark": ""}
    if a is None or b is None:
        return row
    if a == 0:
        change = 0.0 if b == 0 else float("inf")
    else:
        change = (b - a) / abs(a)
    row["change"] = change
    worse = change < -threshold if higher_better else change > threshold
    better = change > threshold if higher_better else change < -threshold
    # An error rate moving off zero is a regression whatever the threshold.
    if label == "error rate" and a == 0 and b > 0:
        worse = True
    row["mark"] = "REGRESSION" if worse else ("better" if better else "")
    return row


def _op_value(profile: dict[str, Any], key: tuple[str, str], field: str,
              group: str) -> float | None:
    """An op's (or op type's) figure; 0 when the report lists every op and not this one (it
    did not run), None when the list was cut short."""
    for o in profile.get(group, []):
        if (o.get("name", ""), o["type"]) == key:
            v = o.get(field)
            return float(v) if v is not None else None
    return None if profile.get("ops_truncated") else 0.0


def _profile_rows(a: dict[str, Any], b: dict[str, Any], threshold: float
                  ) -> list[dict[str, Any]]:
    pa, pb = a.get("profile") or {}, b.get("profile") or {}
    if not (pa.get("available") and pb.get("available")):
        return []
    rows = [_row(label, _get(a, p), _get(b, p), hb, threshold) for label, p, hb in PROFILE_METRICS]
    rows = [r for r in rows if r["a"] is not None or r["b"] is not None]
    for group, what in (("ops", "op"), ("op_types", "op type")):
        share: dict[tuple[str, str], float] = {}
        for o in (*pa.get(group, []), *pb.get(group, [])):
            key = (o.get("name", ""), o["type"])
            share[key] = max(share.get(key, 0.0), o.get("share") or 0.0)
        for key in sorted(share, key=lambda k: -share[k])[:PROFILE_OPS]:
            label = f"{key[0]} ({key[1]})" if key[0] else key[1]
            for field, unit in (("share", "share of op time"), ("us_per_row", "us per row")):
                rows.append(_row(f"{what} {unit}: {label}", _op_value(pa, key, field, group),
                                 _op_value(pb, key, field, group), False, threshold))
    return rows


def compare(a: dict[str, Any], b: dict[str, Any], threshold: float = 0.05
            ) -> list[dict[str, Any]]:
    """Rows of (metric, A, B, relative change, mark); runs are paired by name, else by order."""
    rows = [_row(label, _get(a, p), _get(b, p), hb, threshold) for label, p, hb in DOC_METRICS]
    rows = [r for r in rows if r["a"] is not None or r["b"] is not None]
    b_by_name = {r["name"]: r for r in b["runs"]}
    for i, ra in enumerate(a["runs"]):
        rb = b_by_name.get(ra["name"]) or (b["runs"][i] if i < len(b["runs"]) else None)
        if rb is None:
            continue
        prefix = f"[{ra['name']}] " if len(a["runs"]) > 1 else ""
        rows.extend(_row(prefix + label, _get(ra, p), _get(rb, p), hb, threshold)
                    for label, p, hb in RUN_METRICS)
    rows.extend(_profile_rows(a, b, threshold))
    return rows


def format_rows(rows: list[dict[str, Any]], a_name: str, b_name: str) -> str:
    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:,.4g}"

    w = max([len(r["metric"]) for r in rows] + [6])
    lines = [f"{'metric':<{w}}  {'A':>12}  {'B':>12}  {'change':>9}",
             f"{'':<{w}}  {a_name[-12:]:>12}  {b_name[-12:]:>12}"]
    for r in rows:
        ch = "" if r["change"] is None else f"{r['change']:+.1%}"
        mark = {"REGRESSION": "  <-- REGRESSION", "better": "  better"}.get(r["mark"], "")
        lines.append(f"{r['metric']:<{w}}  {num(r['a']):>12}  {num(r['b']):>12}  {ch:>9}{mark}")
    n = sum(r["mark"] == "REGRESSION" for r in rows)
    lines.append(f"{n} regression(s) beyond the threshold" if n else "no regression beyond the"
                 " threshold")
    return "\n".join(lines)


def render_html(rows: list[dict[str, Any]], a_name: str, b_name: str) -> str:
    from html import escape

    from rankserve.loadtest.report.html import CSS

    body = []
    for r in rows:
        cls = {"REGRESSION": "bad", "better": "good"}.get(r["mark"], "")
        ch = "" if r["change"] is None else f"{r['change']:+.1%}"
        body.append(f"<tr><td>{escape(r['metric'])}</td><td>{_fmt(r['a'])}</td>"
                    f"<td>{_fmt(r['b'])}</td><td class=\"{cls}\">{ch} {escape(r['mark'])}</td>"
                    "</tr>")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>compare"
            f"</title><style>{CSS}</style></head><body><h1>A: {escape(a_name)} / B: "
            f"{escape(b_name)}</h1><table><tr><th>metric</th><th>A</th><th>B</th><th>change"
            "</th></tr>" + "".join(body) + "</table></body></html>\n")


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.4g}"
