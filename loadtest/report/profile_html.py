"""The op profile section of the HTML report: where a model's time goes, op by op."""

from __future__ import annotations

from html import escape
from typing import Any

from rankserve.loadtest.report import svg

SHOWN = 15


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def profile_section(p: dict[str, Any]) -> str:
    from rankserve.loadtest.report.html import table

    head = "<h2>Op profile: where the model's time goes</h2>"
    replicas = table(["profiler address", "metrics address", "trace", "error"],
                     [[r["address"], r.get("metrics_address") or "", r.get("trace") or "",
                       r.get("error") or ""] for r in p.get("replicas", [])])
    if not p.get("available"):
        return (head + f'<p class="bad">Profile missing: {escape(p.get("reason", ""))}</p>'
                + replicas)
    load = p.get("load")
    intro = (f"<p>TensorFlow's profiler traced {len(p['replicas'])} replica(s) for"
             f" {p['requested_seconds']:g} s, from {p['started_after_warmup_s']:g} s after the"
             " warm-up" + (f", in {escape(load['why'])} ({load['rate_rps']:g} req/s)"
                           if load else "") + ".</p>")
    summary = table(["", "value"], [
        ["Predicts in the trace", p["predicts"]],
        ["rows (candidates) in the trace", p["rows"]],
        ["model calls traced", p["model_calls"]],
        ["model call, mean wall time (ms)", p["model_call_ms_mean"]],
        ["op self time in all (ms)", p["op_ms"]],
        ["op time per Predict (us)", p["op_us_per_predict"]],
        ["op time per row (us)", p["op_us_per_row"]],
        ["distinct ops", p["ops_seen"]],
    ], "kv") + f'<p class="note">Counted by {escape(p["counted_by"])}.</p>'
    ops = p["ops"][:SHOWN]
    chart = svg.bar_chart("Share of op time, top ops", [f"#{i + 1} {o['type']}"
                                                        for i, o in enumerate(ops)],
                          [round((o["share"] or 0.0) * 100, 3) for o in ops],
                          ylabel="% of op self time")
    top = table(["#", "op", "type", "self (ms)", "share", "runs", "us per Predict",
                 "us per row"],
                [[i + 1, o["name"], o["type"], o["self_ms"], _pct(o["share"]),
                  o["occurrences"], o["us_per_predict"], o["us_per_row"]]
                 for i, o in enumerate(ops)])
    types = table(["op type", "self (ms)", "share", "runs", "us per Predict", "us per row"],
                  [[t["type"], t["self_ms"], _pct(t["share"]), t["occurrences"],
                    t["us_per_predict"], t["us_per_row"]] for t in p["op_types"][:SHOWN]])
    parts = [head, intro, summary, f'<div class="charts">{chart}</div>',
             "<h3>Top ops by self time</h3>", top, "<h3>By op type</h3>", types]
    split = p["time_split"]
    parts.append("<h3>Inside and outside the model call (per Predict, mean)</h3>")
    if split.get("available"):
        parts.append(table(["", "ms"], [
            ["time in the model server", split["server_ms_per_predict"]],
            ["waiting for the model call (queue)", split["queue_wait_ms_per_predict"]],
            ["the model call it rode on (merged batch)", split["model_call_ms_per_predict"]],
            ["outside both (decode, validation, encode, gRPC)",
             split["outside_model_ms_per_predict"]],
            ["share inside the model call", _pct(split["inside_model_share"])],
        ], "kv") + f'<p class="note">From {escape(split["source"])}: {split["predicts"]}'
            f' Predicts, {split["model_calls"]} model calls, {split["rows"]} rows.</p>')
    else:
        parts.append(f"<p>{escape(split.get('reason', 'not measured'))}</p>")
    size = p["model_size"]
    parts.append("<h3>Model size</h3>")
    if size.get("available"):
        parts.append(table(["", "value"], [["parameters", size["parameters"]],
                                           ["SavedModel bytes", size["saved_model_bytes"]]],
                           "kv"))
    else:
        parts.append(f"<p>{escape(size.get('reason', 'not known'))}</p>")
    parts.append("<h3>Raw traces</h3>" + replicas
                 + f'<p class="note">Open them with <code>{escape(p["tensorboard"])}</code>'
                 " (profile plugin).</p>")
    parts += [f'<p class="note">{escape(n)}</p>' for n in p.get("notes", [])]
    return "".join(parts)
