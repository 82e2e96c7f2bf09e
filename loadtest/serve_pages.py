"""The pages of `rankserve loadtest serve`: the runs, a run started from the page, a comparison.

Plain HTML with the reports' own CSS and inline SVG charts; no scripts. Every value that came
from a file or a form is escaped.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from rankserve.loadtest.report import svg
from rankserve.loadtest.report.html import CSS
from rankserve.loadtest.runs import Listing, RunRow
from rankserve.loadtest.serve_jobs import FIELDS, MAX_SECONDS, Job

PAGE_CSS = CSS + """
form.grid{display:grid;grid-template-columns:max-content 420px auto;gap:4px 10px;
align-items:center}form.grid input,form.grid select{font-size:13px;padding:2px 4px}
.msg{border:1px solid #b00020;background:#fdecee;padding:8px 12px;white-space:pre-wrap;
font-family:monospace;font-size:13px}
pre.log{background:#f7f7f7;border:1px solid #ddd;padding:8px;font-size:12px;max-height:640px;
overflow:auto;white-space:pre-wrap}nav{margin-bottom:12px}
"""


def page(title: str, body: str, refresh_s: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">' + meta
            + f"<title>{escape(title)}</title><style>{PAGE_CSS}</style></head><body>"
            + body + "</body></html>\n")


def file_url(rel: str) -> str:
    return "/files/" + quote(rel)


def _num(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def _when(row: RunRow) -> str:
    return row.when.strftime("%Y-%m-%d %H:%M:%S UTC") if row.when.year > 1 else row.created


def _errors(row: RunRow) -> str:
    rate = row.error_rate
    text = f"{row.errors:,}" + ("" if rate is None else f" ({rate:.2%})")
    return f'<span class="bad">{text}</span>' if row.errors else text


def chart(rows: tuple[RunRow, ...], limit: int = 50) -> str:
    """p50 and p99 of the newest ``limit`` runs, oldest to newest, numbered as in the table."""
    shown = [(len(rows) - i, r) for i, r in enumerate(rows[:limit])][::-1]
    if not shown:
        return ""
    return svg.line_chart("Latency per run, oldest to newest", [float(n) for n, _ in shown],
                          {"p50": [r.p50_ms for _, r in shown],
                           "p99": [r.p99_ms for _, r in shown]},
                          ylabel="ms", xlabel="run # (as in the table)", markers=True)


def runs_table(rows: tuple[RunRow, ...]) -> str:
    head = ["#", "date", "title", "kind", "model", "version", "rate (req/s)", "p50 (ms)",
            "p99 (ms)", "latency of", "errors", "cost per million", "files", ""]
    out = ['<table class="runs"><tr>' + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for i, r in enumerate(rows):
        title = escape(r.title)
        if r.html:
            title = f'<a href="{escape(file_url(r.html))}">{title}</a>'
        files = [f'<a href="{escape(file_url(r.path))}">json</a>']
        if r.csv:
            files.append(f'<a href="{escape(file_url(r.csv))}">csv</a>')
        older = rows[i + 1] if i + 1 < len(rows) else None
        vs = ("" if older is None else
              f'<a href="/compare?{escape(urlencode({"a": older.path, "b": r.path}))}">'
              f"vs. #{len(rows) - i - 1}</a>")
        cells = [str(len(rows) - i), escape(_when(r)), title, escape(r.kind), escape(r.model),
                 escape(r.version), _num(r.rate_rps, 1), _num(r.p50_ms), _num(r.p99_ms),
                 escape(r.basis), _errors(r), _num(r.cost_per_million, 4), " ".join(files), vs]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "".join(out) + "</table>"


def _options(rows: tuple[RunRow, ...], selected: str) -> str:
    return "".join(
        f'<option value="{escape(r.path)}"{" selected" if r.path == selected else ""}>'
        f"#{len(rows) - i} {escape(r.title)} ({escape(r.kind)}, {escape(_when(r))},"
        f" {escape(r.path)})</option>" for i, r in enumerate(rows))


def compare_form(rows: tuple[RunRow, ...], threshold: float) -> str:
    if len(rows) < 2:
        return "<p>Two reports are needed for a comparison.</p>"
    return ('<form class="grid" method="get" action="/compare">'
            f'<label for="a">A (baseline)</label><select id="a" name="a">'
            f"{_options(rows, rows[1].path)}</select><span></span>"
            f'<label for="b">B (candidate)</label><select id="b" name="b">'
            f"{_options(rows, rows[0].path)}</select><span></span>"
            '<label for="threshold">threshold (%)</label><input id="threshold" name="threshold"'
            f' value="{threshold:g}"><span class="note">changes smaller than this are not'
            " marked</span><span></span><button>compare</button></form>")


_HINTS = {
    "target": "HOST:PORT of a model server or Envoy (predict) or the ranker (rank); required",
    "kind": "",
    "replay": "a capture file or directory (`rankserve ranker --capture-dir`); without it,"
              " synthetic traffic",
    "catalog_dir": "catalog for synthetic traffic (default: the demo catalog)",
    "model": "NAME[@VERSION|@LABEL]; re-addresses replayed traffic",
    "rate": "requests per second, open loop (default 50)",
    "schedule": "FILE.csv or diurnal: replaces the rate",
    "duration": f"measured seconds (default 10); warm-up + duration at most {MAX_SECONDS:g} s",
    "warmup": "seconds before measuring (default 2)",
    "name": "base name of the report files (default report)",
    "title": "title of the report",
    "extra": "more flags of `rankserve loadtest run`, as in a shell, e.g. --arrivals poisson"
             " --server-pid 123 --price-core-hour 0.04 --replica-cpu 2",
}


def run_form(values: dict[str, str], message: str = "") -> str:
    rows = []
    for name, flag in [*FIELDS, ("extra", "more arguments")]:
        value = values.get(name, "")
        if name == "kind":
            field = ('<select id="kind" name="kind">' + "".join(
                f'<option{" selected" if value == k else ""}>{k}</option>'
                for k in ("predict", "rank")) + "</select>")
        else:
            field = f'<input id="{name}" name="{name}" value="{escape(value)}" size="50">'
        rows.append(f'<label for="{name}">{escape(flag)}</label>{field}'
                    f'<span class="note">{escape(_HINTS[name])}</span>')
    msg = f'<div class="msg" id="form-message">{escape(message)}</div>' if message else ""
    return (msg + '<form class="grid" method="post" action="/runs">' + "".join(rows)
            + "<span></span><button>start the run</button></form>"
            + '<p class="note">The values are checked as `rankserve loadtest run` checks them'
            " before anything starts. The run goes on in a child process of this server and"
            f" writes its report into a new directory here; it lasts at most {MAX_SECONDS:g} s"
            " (warm-up included) and is stopped when the server stops. Paths are on the machine"
            " that serves this page.</p>")


def jobs_table(jobs: list[Job]) -> str:
    if not jobs:
        return "<p>None yet.</p>"
    rows = [f'<tr><td><a href="/jobs/{j.id}">#{j.id}</a></td><td>{escape(j.title)}</td>'
            f"<td>{escape(j.state)}</td><td>{j.elapsed():.0f} s</td></tr>"
            for j in reversed(jobs)]
    return ("<table><tr><th>run</th><th>title</th><th>state</th><th>time</th></tr>"
            + "".join(rows) + "</table>")


def list_page(root: str, listing: Listing, jobs: list[Job], *, threshold: float,
              form: dict[str, str] | None = None, message: str = "") -> str:
    rows = listing.rows
    body = [f"<h1>Load-test runs under {escape(root)}</h1>",
            f'<p class="note">{len(rows)} report(s), newest first: every report JSON of'
            " `rankserve loadtest run|step|sweep` under the directory. Latency is from each"
            " request's due time.</p>"]
    if rows:
        body += [f'<div class="charts">{chart(rows)}</div>', runs_table(rows)]
    else:
        body.append("<p>No reports here yet: start a run below, or point `rankserve loadtest"
                    " ... --out` into this directory.</p>")
    if listing.skipped:
        body.append(f'<details open><summary class="bad">{len(listing.skipped)} file(s)'
                    " skipped</summary><table><tr><th>file</th><th>why</th></tr>"
                    + "".join(f"<tr><td>{escape(s.path)}</td><td>{escape(s.reason)}</td></tr>"
                              for s in listing.skipped) + "</table></details>")
    body += ["<h2>Compare two runs</h2>", compare_form(rows, threshold),
             '<h2 id="new-run">Start a run</h2>', run_form(form or {}, message),
             "<h2>Runs started here</h2>", jobs_table(jobs)]
    return page("load-test runs", "".join(body))


def job_page(job: Job, log: str, report_html: str | None) -> str:
    running = job.running
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(job.started))
    body = ['<nav><a href="/">all runs</a></nav>',
            f"<h1>Run #{job.id}: {escape(job.title)}</h1>",
            f'<p>State: <b id="state">{escape(job.state)}</b>; started {started}, '
            f"{job.elapsed():.0f} s ago{'' if running else ' (ended)'}; pid {job.proc.pid};"
            f" at most {MAX_SECONDS:g} s of load.</p>",
            f"<p>Command: <code>{escape(' '.join(job.command))}</code></p>"]
    if report_html:
        body.append(f'<p>Report: <a id="report" href="{escape(report_html)}">'
                    f"{escape(job.name)}.html</a> (now in the list of runs).</p>")
    elif running:
        body.append('<p class="note">This page reloads every 2 s until the run ends.</p>')
    else:
        body.append('<p class="bad">No report was written: the log says why.</p>')
    body.append(f'<h2>Log</h2><pre class="log">{escape(log)}</pre>')
    return page(f"run #{job.id}", "".join(body), refresh_s=2 if running else None)


def compare_page(compared_html: str, rows: list[dict[str, Any]], a: RunRow, b: RunRow,
                 threshold: float) -> str:
    """The page of loadtest/compare.py's ``render_html`` with a way back, the count of
    regressions as the CLI prints it, and p50/p99 of A and B as bars."""
    n = sum(r["mark"] == "REGRESSION" for r in rows)
    verdict = (f'<span class="bad">{n} regression(s) beyond the threshold</span>' if n
               else "no regression beyond the threshold")
    bars = svg.bar_chart("p50 and p99: A against B", ["A p50", "B p50", "A p99", "B p99"],
                         [a.p50_ms or 0.0, b.p50_ms or 0.0, a.p99_ms or 0.0, b.p99_ms or 0.0],
                         ylabel="ms", colours=[svg.COLOURS[0], svg.COLOURS[3]] * 2)
    head = (f'<nav><a href="/">all runs</a></nav><p>{verdict} ({threshold:g}%). A:'
            f" {escape(a.title)} ({escape(_when(a))}); B: {escape(b.title)}"
            f" ({escape(_when(b))}).</p>" + f'<div class="charts">{bars}</div>')
    if "<body>" in compared_html:
        return compared_html.replace("<body>", "<body>" + head, 1)
    return page("compare", head + compared_html)


def message_page(code: int, text: str) -> str:
    return page(f"{code}", f'<nav><a href="/">all runs</a></nav><h1>{code}</h1>'
                f'<div class="msg">{escape(text)}</div>')
