"""The HTML report: one self-contained page (inline CSS and SVG, no scripts, no links out)."""

from __future__ import annotations

from html import escape
from typing import Any

from rankserve.loadtest.report import svg

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
color:#222;max-width:1340px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;
margin-top:32px}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:right;font-size:13px}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:12px}.note{color:#666;font-size:12px}
.bad{color:#b00020;font-weight:bold}.good{color:#0a7d32;font-weight:bold}
.kv td:first-child{font-weight:600}
"""


def _v(x: Any, digits: int = 2) -> str:
    if x is None or x == "":
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return escape(str(x))


def table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, _Raw) else _v(c)}</td>"
                                    for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


class _Raw(str):
    """Markup that tables insert as is."""


def _run_section(run: dict[str, Any]) -> str:
    lat, svc, q = run["latency_ms"], run["service_ms"], run["queueing_ms"]
    t, load = run["target"], run["load"]
    load_text = (f"open loop, {load['rate_rps']:g} req/s {load['arrivals']}"
                 if load["mode"] == "open" else f"closed loop, concurrency {load['concurrency']}")
    if load.get("schedule"):
        load_text = (f"open loop following the schedule {load['schedule']} (mean"
                     f" {load['rate_rps']:g} req/s, {load['arrivals']} arrivals)")
    parts = [f"<h2>{escape(run['name'])}</h2>",
             f"<p>{escape(t['kind'])} calls to <b>{escape(t['address'])}</b>"
             f"{' (' + escape(t['description']) + ')' if t['description'] else ''}; {load_text};"
             f" {load['duration_s']:g} s measured after {load['warmup_s']:g} s warm-up;"
             f" compression {escape(load['compression'])}; timeout {load['timeout_ms']:g} ms."
             f" Traffic: {escape(run['source']['description'])}.</p>"]
    parts += [f'<p class="note">{escape(n)}</p>' for n in run["source"].get("notes", [])]
    r = run["requests"]
    parts.append(table(["requests counted", "ok", "errors", "error rate", "throughput (ok/s)",
                        "offered (req/s)", "warm-up requests (not counted)"],
                       [[r["counted"], r["ok"], r["errors"], f"{run['error_rate']:.4%}",
                         run["throughput_rps"], run["offered_rps"], r["warmup_excluded"]]]))
    names = ["min", "mean", "p50", "p90", "p95", "p99", "p99_9", "max"]
    parts.append("<h3>Latency (ms)</h3>" + table(
        ["", *[n.replace("_", ".") for n in names]],
        [["latency (from due time)", *[lat[n] for n in names]],
         ["service (from send)", *[svc[n] for n in names]],
         ["queueing (beyond the fastest answer)", *[q[n] for n in names]],
         ["send delay (due to sent)", *[run["send_lag_ms"][n] for n in names]]]))
    parts.append('<p class="note">Latency counts from the time each request was due by the'
                 " schedule, so waiting caused by a slow server is part of it; service time"
                 " counts from the actual send; send delay is this generator's own lag.</p>")
    hist = run["histogram"]
    tl = run["timeline"]
    charts = []
    if hist:
        charts.append(svg.bar_chart("Latency histogram", [f"{b['le_ms']:g}" for b in hist],
                                    [b["count"] for b in hist], ylabel="requests",
                                    xlabel="latency bucket upper bound (ms)"))
    if tl:
        xs = [p["t_s"] for p in tl]
        charts.append(svg.line_chart("Latency over time", xs,
                                     {"p50": [p["p50_ms"] for p in tl],
                                      "p99": [p["p99_ms"] for p in tl]},
                                     ylabel="ms", xlabel="seconds after warm-up (by due time)"))
        charts.append(svg.line_chart("Throughput over time", xs,
                                     {"completed/s": [p["completed_per_s"] for p in tl],
                                      "errors/s": [float(p["errors"]) for p in tl]},
                                     ylabel="requests per second", xlabel="seconds after warm-up"))
    codes = run["status_codes"]
    if codes:
        charts.append(svg.bar_chart("Requests by status code", list(codes), list(codes.values()),
                                    ylabel="requests", colours=[
                                        "#2ca02c" if c == "OK" else "#d62728" for c in codes]))
    parts.append('<div class="charts">' + "".join(charts) + "</div>")
    if run.get("schedule"):
        parts.append(_schedule_part(run["schedule"]))
    parts.append("<h3>Status codes</h3>" + table(
        ["status", "requests", "share"],
        [[c, n, f"{n / max(r['counted'], 1):.4%}"] for c, n in codes.items()]))
    if hist:
        parts.append("<details><summary>Latency buckets</summary>" + table(
            ["le (ms)", "requests"], [[b["le_ms"], b["count"]] for b in hist]) + "</details>")
    b, cpu = run["bytes"], run["cpu"]
    parts.append("<h3>Bytes and CPU</h3>" + table(["", "value"], [
        ["request bytes per call", b["request_per_call"]],
        ["response bytes per call", b["response_per_call"]],
        ["request bytes in all", b["request_total"]],
        ["response bytes in all", b["response_total"]],
        ["client CPU per request (ms)", cpu["client_ms_per_request"]],
        ["server CPU per request (ms)", cpu["server_ms_per_request"]],
    ], "kv") + f'<p class="note">{escape(b["note"])}. Server CPU: {escape(cpu["server_note"])}.'
                 "</p>")
    return "".join(parts)


def _step_section(step: dict[str, Any]) -> str:
    rows = sorted(step["steps"], key=lambda s: s["rate_rps"])
    chart = svg.line_chart("p99 latency against offered rate", [s["rate_rps"] for s in rows],
                           {"p99": [s["p99_ms"] for s in rows], "p50": [s["p50_ms"] for s in rows]},
                           ylabel="ms", xlabel="offered rate (req/s)",
                           hline=(f"budget {step['budget_p99_ms']:g} ms", step["budget_p99_ms"]),
                           markers=True)
    mark = {True: _Raw('<span class="good">held</span>'),
            False: _Raw('<span class="bad">broke</span>')}
    return ("<h2>Step: highest rate within the budget</h2>"
            f"<p><b>{escape(step['verdict'])}</b> (max error rate {step['max_error_rate']:g}).</p>"
            + f'<div class="charts">{chart}</div>'
            + table(["rate (req/s)", "p50 (ms)", "p99 (ms)", "error rate", "throughput",
                     "in flight (measured)", "in flight (Little)", "budget"],
                    [[s["rate_rps"], s["p50_ms"], s["p99_ms"], s["error_rate"],
                      s["throughput_rps"], s.get("in_flight_mean"), s.get("in_flight_little"),
                      mark[s["held"]]] for s in rows]))


def _autoscaling_section(a: dict[str, Any]) -> str:
    head = "<h2>Autoscaling targets of the model servers</h2>"
    if not a.get("available"):
        return head + f"<p>{escape(a.get('reason', 'not computed'))}</p>"
    i, c = a["inputs"], a.get("cost") or {}
    values = a["chart_values"]["modelServer"]["autoscaling"]
    rows = [["replicas tested", i["replicas"]],
            ["capacity held (req/s, all replicas)", a["capacity_rps"]],
            ["capacity per replica (req/s)", a["capacity_per_replica_rps"]],
            ["in flight per replica at capacity", a["in_flight_per_replica_at_capacity"]],
            ["headroom", i["headroom"]],
            ["target per pod before rounding (req/s)", a["target_rps_per_pod_exact"]],
            ["in flight per replica at the target", a["in_flight_per_replica_at_target"]],
            ["base rate (req/s)", i["base_rps"]], ["peak rate (req/s)", i["peak_rps"]],
            ["floor of minReplicas", i["min_replicas_floor"]]]
    if c.get("available"):
        rows += [["cost per replica per hour", c["per_replica_hour"]],
                 ["cost per hour at minReplicas", c["min_replicas_per_hour"]],
                 ["cost per hour at maxReplicas", c["max_replicas_per_hour"]]]
    else:
        rows.append(["cost", c.get("reason", "not estimated")])
    return (head + "<h3>modelServer.autoscaling</h3>"
            + table(["value", ""], [[k, _Raw(f"<b>{_v(v)}</b>")] for k, v in values.items()],
                    "kv")
            + table(["input or intermediate", "value"], rows, "kv")
            + f'<p class="note">Rule: {escape(a["rule"])}.</p>'
            + f'<p class="note">In flight: {escape(a["in_flight_method"])}.</p>'
            + "".join(f'<p class="note">{escape(n)}</p>' for n in a["notes"]))


def _schedule_part(sc: dict[str, Any]) -> str:
    w = sc["windows"]
    xs = [x["t_s"] for x in w]
    charts = [
        svg.line_chart("Rate: scheduled against achieved", xs,
                       {"scheduled": [x["scheduled_rps"] for x in w],
                        "achieved": [x["achieved_rps"] for x in w],
                        "due": [x["due_rps"] for x in w]},
                       ylabel="requests per second", xlabel="seconds after warm-up (window start)"),
        svg.line_chart("Latency per window", xs,
                       {"p50": [x["p50_ms"] for x in w], "p99": [x["p99_ms"] for x in w]},
                       ylabel="ms", xlabel="seconds after warm-up (by due time)"),
        svg.line_chart("Errors per window", xs, {"errors": [float(x["errors"]) for x in w]},
                       ylabel="requests", xlabel="seconds after warm-up (by due time)"),
    ]
    mark = {True: _Raw('<span class="good">yes</span>'),
            False: _Raw('<span class="bad">no</span>')}
    verdict = ("every window followed the schedule" if sc["follows_schedule"] else
               f"{len(sc['windows_outside_tolerance'])} window(s) off the schedule, starting at"
               f" {', '.join(f'{t:g}' for t in sc['windows_outside_tolerance'][:10])} s")
    return ("<h3>Rate schedule</h3>"
            f"<p>{escape(str(sc['description']))}: {sc['duration_s']:g} s, mean"
            f" {sc['mean_rps']:g} req/s ({sc['min_rps']:g} to {sc['max_rps']:g}),"
            f" {sc['points']} points; windows of {sc['window_s']:g} s."
            f" <b>{escape(verdict)}</b>.</p>"
            f'<p class="note">Scheduled: the mean of the rate curve over the window; due: the'
            " requests the fixed schedule put in it (Poisson arrivals scatter around the curve);"
            f' achieved: the answers in it. Tolerance: {escape(sc["tolerance"])}.</p>'
            + '<div class="charts">' + "".join(charts) + "</div>"
            + "<details><summary>Windows</summary>" + table(
                ["t (s)", "scheduled req/s", "due", "sent", "answered", "achieved req/s",
                 "ok req/s", "errors", "p50 ms", "p99 ms", "within tolerance"],
                [[x["t_s"], x["scheduled_rps"], x["due"], x["sent"], x["answered"],
                  x["achieved_rps"], x["ok_rps"], x["errors"], x["p50_ms"], x["p99_ms"],
                  mark[x["within_tolerance"]]] for x in w]) + "</details>")


def _sweep_section(sweep: dict[str, Any]) -> str:
    rows = sweep["rows"]
    labels = [f"{r['batch_size']}/{r['compression']}" for r in rows]
    charts = [
        svg.bar_chart("p99 latency by batch size / compression", labels,
                      [r["p99_ms"] or 0.0 for r in rows], ylabel="ms"),
        svg.bar_chart("Candidates scored per second", labels,
                      [r["candidates_per_s"] for r in rows], ylabel="candidates/s"),
    ]
    return ("<h2>Sweep</h2>" + '<div class="charts">' + "".join(charts) + "</div>"
            + table(["batch", "compression", "req/s", "candidates/s", "p50 ms", "p99 ms",
                     "error rate", "bytes/call", "client CPU ms", "server CPU ms"],
                    [[r["batch_size"], r["compression"], r["throughput_rps"],
                      r["candidates_per_s"], r["p50_ms"], r["p99_ms"], r["error_rate"],
                      r["request_bytes_per_call"], r["client_cpu_ms_per_request"],
                      r["server_cpu_ms_per_request"]] for r in rows]))


def _cost_section(cost: dict[str, Any]) -> str:
    if not cost.get("available"):
        return f"<h2>Cost</h2><p>{escape(cost.get('reason', 'not estimated'))}</p>"
    p = cost["prices"]
    rows = [["capacity of the tested deployment (req/s)", cost["capacity_rps"]],
            ["basis", cost["basis"]],
            ["price per core-hour", p["core_hour"]], ["price per GPU-hour", p["gpu_hour"]],
            ["tested deployment cost per hour", cost["tested_cost_per_hour"]],
            ["cost per million requests", _Raw(f"<b>{cost['cost_per_million_requests']:,.4f}</b>")]]
    if "peak_rps" in cost:
        rows.append(["target peak (req/s)", cost["peak_rps"]])
        rows.extend([f"replicas of {k} for the peak", v]
                    for k, v in cost["replicas_for_peak"].items())
        rows.append(["cost per hour at the peak", cost["cost_per_hour_at_peak"]])
    tiers = table(["tier", "replicas tested", "CPU request", "GPU request"],
                  [[t["name"], t["replicas"], t["cpu"], t["gpu"]] for t in cost["tiers"]])
    return "<h2>Cost estimate</h2>" + table(["", "value"], rows, "kv") + tiers


def render_html(doc: dict[str, Any]) -> str:
    body = [f"<h1>{escape(doc['title'])}</h1>",
            f'<p class="note">{escape(doc["created"])} on {escape(doc["host"]["node"])};'
            f" command: <code>{escape(' '.join(doc['command']))}</code></p>"]
    if doc.get("cost"):
        body.append(_cost_section(doc["cost"]))
    if doc.get("autoscaling"):
        body.append(_autoscaling_section(doc["autoscaling"]))
    if doc.get("step"):
        body.append(_step_section(doc["step"]))
    if doc.get("sweep"):
        body.append(_sweep_section(doc["sweep"]))
    if doc.get("profile"):
        from rankserve.loadtest.report.profile_html import profile_section

        body.append(profile_section(doc["profile"]))
    body.extend(_run_section(r) for r in doc["runs"])
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(doc['title'])}</title><style>{CSS}</style></head><body>"
            + "".join(body) + "</body></html>\n")
