"""The runs under a directory as `rankserve loadtest serve` lists them, and the run form's
checks, without sockets: reports found in a tree (a broken file skipped and shown), the row of
each kind, paths that leave the directory, the CLI's messages for bad form values."""

from __future__ import annotations

import json
import os

import pytest

from rankserve.loadtest.report import build_document
from rankserve.loadtest.runner import LoadSpec, RunOutcome
from rankserve.loadtest.runs import find_runs, model_of, resolve_under
from rankserve.loadtest.samples import Samples
from rankserve.loadtest.serve_jobs import MAX_SECONDS, FormError, check, form_argv
from rankserve.loadtest.serve_pages import list_page
from rankserve.loadtest.sources import Payloads
from rankserve.loadtest.stats import summarize
from rankserve.loadtest.targets import Target


def summary(latency_ms: float, errors: int = 0, n: int = 100, source: str = "synthetic: t"
            ) -> dict:
    s = Samples()
    for i in range(n):
        due = 10.0 + i * 0.01
        s.add(due, due + 0.0005, due + latency_ms / 1e3, "UNAVAILABLE" if i < errors else "OK",
              1000, 50, True)
    out = RunOutcome(LoadSpec(rate=100, duration_s=n / 100, warmup_s=0),
                     Target("predict", "127.0.0.1:1"), Payloads("predict", [b"x"], source), s,
                     10.0, client_cpu_s=0.5, server_cpu_s=None, requests_sent=n)
    return summarize(out)


def write(root, rel: str, doc: dict, created: str) -> None:
    """The report's JSON, with an HTML and a CSV file beside it as the CLI writes them."""
    doc["created"] = created
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    for ext in ("html", "csv"):
        path.with_suffix(f".{ext}").write_text(f"the {ext} report")


@pytest.fixture
def tree(tmp_path):
    """Three reports (run, step, sweep), a broken JSON, a report missing its runs, and a JSON
    that is not a report."""
    root = tmp_path / "runs"
    cost = {"available": True, "cost_per_million_requests": 0.125}
    write(root, "v1/report.json", build_document(
        "run", [summary(10.0)], cost=cost, title="ranker v1",
        command=["rankserve", "loadtest", "run", "--model", "ranker@1"]),
        "2025-03-01T10:00:00+00:00")
    step = {"steps": [{"rate_rps": 20.0, "p50_ms": 5.0, "p99_ms": 9.0, "held": True},
                      {"rate_rps": 40.0, "p50_ms": 6.0, "p99_ms": 30.0, "held": True},
                      {"rate_rps": 80.0, "p50_ms": 90.0, "p99_ms": 400.0, "held": False}],
            "max_rate_held_rps": 40.0, "budget_p99_ms": 50.0, "max_error_rate": 0.001,
            "verdict": "40 req/s held"}
    write(root, "deep/er/v2/step.json", build_document(
        "step", [summary(6.0, errors=3), summary(90.0)], step=step, title="v2 step",
        command=["rankserve", "loadtest", "step", "--deploy-model", "ranker@2"]),
        "2025-03-02T10:00:00+00:00")
    sweep = {"rows": [
        {"batch_size": 5, "compression": "none", "candidates_per_s": 900.0, "p50_ms": 2.0,
         "p99_ms": 4.0, "throughput_rps": 180.0, "error_rate": 0.0},
        {"batch_size": 25, "compression": "gzip", "candidates_per_s": 2500.0, "p50_ms": 7.0,
         "p99_ms": 12.0, "throughput_rps": 100.0, "error_rate": 0.0}]}
    write(root, "sweep/report.json", build_document(
        "sweep", [summary(2.0, source="replay of 1 capture file(s) under /c")], sweep=sweep),
        "2025-03-03T10:00:00+00:00")
    (root / "broken").mkdir()
    (root / "broken" / "report.json").write_text('{"schema": "rankserve.loadtest.report/v1",')
    (root / "hollow.json").write_text(json.dumps(
        {"schema": "rankserve.loadtest.report/v1", "kind": "run", "created": "2025-03-04"}))
    (root / "values.json").write_text('{"modelServer": {}}')
    return root


def test_every_report_in_the_tree_is_found_newest_first_and_broken_files_are_shown(tree):
    listing = find_runs(tree)
    assert [r.path for r in listing.rows] == [
        "sweep/report.json", "deep/er/v2/step.json", "v1/report.json"]
    skipped = {s.path: s.reason for s in listing.skipped}
    assert set(skipped) == {"broken/report.json", "hollow.json"}
    assert "not readable JSON" in skipped["broken/report.json"]
    assert "runs" in skipped["hollow.json"]
    html = list_page(str(tree), listing, [], threshold=5.0)
    assert "2 file(s) skipped" in html and "broken/report.json" in html


def test_the_row_of_a_run(tree):
    row = {r.path: r for r in find_runs(tree).rows}["v1/report.json"]
    assert (row.kind, row.title, row.model, row.version) == ("run", "ranker v1", "ranker", "1")
    assert row.html == "v1/report.html" and row.csv == "v1/report.csv"
    assert row.p50_ms == pytest.approx(10.0, abs=0.01)
    assert row.p99_ms == pytest.approx(10.0, abs=0.01)
    assert (row.requests, row.errors, row.error_rate) == (100, 0, 0.0)
    assert row.rate_rps == 100.0 and row.cost_per_million == 0.125
    assert row.when.isoformat() == "2025-03-01T10:00:00+00:00"


def test_the_rows_of_a_step_and_a_sweep(tree):
    rows = {r.path: r for r in find_runs(tree).rows}
    step = rows["deep/er/v2/step.json"]
    # The capacity the step reports: its highest rate that held, not its last step.
    assert (step.rate_rps, step.p50_ms, step.p99_ms) == (40.0, 6.0, 30.0)
    assert (step.model, step.version) == ("ranker", "2")
    assert (step.requests, step.errors, step.cost_per_million) == (200, 3, None)
    sweep = rows["sweep/report.json"]
    assert (sweep.p50_ms, sweep.p99_ms) == (7.0, 12.0) and "batch 25, gzip" in sweep.basis
    assert (sweep.model, sweep.version) == ("as captured", "")


def test_the_model_comes_from_the_command():
    doc = {"command": ["rankserve", "loadtest", "run", "--deploy-model", "ranker@3",
                       "--model=ranker@canary"], "runs": []}
    assert model_of(doc) == ("ranker", "canary")
    assert model_of({"command": [], "runs": [{"source": {"description": "synthetic"}}]}) == (
        "ranker", "latest")


def test_paths_outside_the_directory_name_nothing(tree, tmp_path):
    (tmp_path / "secret.json").write_text("{}")
    os.symlink(tmp_path / "secret.json", tree / "link.json")
    assert resolve_under(tree, "v1/report.html") == (tree / "v1" / "report.html").resolve()
    for rel in ("../secret.json", "v1/../../secret.json", str(tmp_path / "secret.json"),
                "link.json", "v1", "", "v1/report.html\x00.png"):
        assert resolve_under(tree, rel) is None, rel


def test_a_page_escapes_what_the_reports_say(tree):
    write(tree, "x/report.json", build_document("run", [summary(1.0)],
                                                title="<script>alert(1)</script>"),
          "2025-03-05T10:00:00+00:00")
    html = list_page(str(tree), find_runs(tree), [], threshold=5.0)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<table" in html and "<svg" in html


def form(**values: str) -> list[str]:
    return form_argv({"target": "127.0.0.1:9", "rate": "20", "duration": "2", **values})


@pytest.mark.parametrize(("values", "message"), [
    ({"rate": "-1"}, "rankserve loadtest: open loop needs --rate > 0"),
    ({"target": ""}, "rankserve loadtest: pass --target HOST:PORT"),
    ({"kind": "grpc"}, "rankserve loadtest run: error: argument --kind: invalid choice: 'grpc'"),
    ({"rate": "fast"}, "rankserve loadtest run: error: argument --rate: invalid float value"),
    ({"extra": "--no-such-flag"}, "unrecognized arguments: --no-such-flag"),
    ({"duration": "700"}, f"lasts at most {MAX_SECONDS:g} s"),
    ({"extra": "--deploy-model ranker@2"}, "--deploy-model deploys into a cluster"),
    ({"name": "../../etc/x"}, "letters, digits"),
    ({"replay": "/no/such/capture"}, "no capture file or directory at /no/such/capture"),
    ({"extra": "--price-core-hour 0.04"}, "needs the CPU request of a model-server replica"),
])
def test_a_bad_form_value_gets_the_cli_s_own_message(tmp_path, values, message):
    with pytest.raises(FormError) as err:
        check(form(**values), tmp_path)
    assert message in str(err.value)


def test_a_good_form_parses_as_the_cli_would(tmp_path):
    args = check(form(title="v2 at 20/s", extra="--arrivals poisson --out /elsewhere"),
                 tmp_path / "out")
    assert (args.target, args.rate, args.duration, args.arrivals) == (
        "127.0.0.1:9", 20.0, 2.0, "poisson")
    assert args.title == "v2 at 20/s" and args.no_progress
    assert str(args.out) == str(tmp_path / "out")  # the page chooses where reports go
