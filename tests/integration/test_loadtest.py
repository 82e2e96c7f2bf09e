"""The load generator against real gRPC Predict servers in their own processes: schedule
keeping, coordinated omission, step search, exact error counts, sweeps, report rendering."""

from __future__ import annotations

import asyncio
import csv
import json
import re

import numpy as np
import pytest

from rankserve.loadtest.report.files import flatten
from rankserve.loadtest.runner import LoadSpec, run
from rankserve.loadtest.sources import Payloads
from rankserve.loadtest.stats import summarize
from rankserve.loadtest.step import step_search
from rankserve.loadtest.targets import Target
from rankserve.tools.cli import main as rankserve_main
from tests.support.catalog import make_catalog
from tests.support.chromium import screenshot
from tests.support.processes import predict_process

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory):
    return make_catalog(tmp_path_factory.mktemp("catalog") / "c", num_items=3000)


@pytest.fixture(scope="module")
def payloads(catalog_dir) -> Payloads:
    from rankserve.loadtest.sources import synthesize

    return synthesize("predict", catalog_dir, requests=2, batch_size=25)


def test_open_loop_keeps_its_schedule(tmp_path, payloads):
    """200 req/s for 3 s against a fast server: sends stay within a few ms of their due time
    and the offered rate is met. Tolerance (the machine is shared, so a rare stall of the whole
    process is allowed): mean lag <= 5 ms, 90% within 10 ms, none later than 250 ms, throughput
    within 5% of the rate, count exact."""
    with predict_process(tmp_path) as srv:
        target = Target("predict", srv["address"], (srv["pid"],))
        out = asyncio.run(run(target, payloads, LoadSpec(rate=200, duration_s=3, warmup_s=0.5)))
    s = summarize(out)
    assert s["requests"]["counted"] == 600 and s["requests"]["warmup_excluded"] == 100
    assert s["status_codes"] == {"OK": 600}
    assert s["send_lag_ms"]["mean"] <= 5.0, s["send_lag_ms"]
    assert s["send_lag_ms"]["p90"] <= 10.0, s["send_lag_ms"]
    assert s["send_lag_ms"]["max"] <= 250.0, s["send_lag_ms"]
    assert abs(s["throughput_rps"] - 200) <= 200 * 0.05
    assert s["cpu"]["server_ms_per_request"] is not None and s["cpu"]["server_ms_per_request"] > 0
    assert s["cpu"]["client_ms_per_request"] > 0


def test_a_server_slower_than_the_arrivals_shows_its_queueing(tmp_path, payloads):
    """One worker x 20 ms = 50 req/s at most; 100 req/s arrive for 2 s. Measured from due
    times the backlog grows to about a second; a closed loop on the same server would report
    only the 20 ms service time (coordinated omission)."""
    with predict_process(tmp_path, "--service-ms", "20", "--workers", "1") as srv:
        target = Target("predict", srv["address"])
        spec = LoadSpec(rate=100, duration_s=2, warmup_s=0, timeout_s=10)
        opened = summarize(asyncio.run(run(target, payloads, spec)))
        closed = summarize(asyncio.run(run(target, payloads, LoadSpec(
            mode="closed", concurrency=1, duration_s=1, warmup_s=0, timeout_s=10))))
    assert opened["status_codes"] == {"OK": 200}
    # The generator sent on time; the wait happened in the server's queue.
    assert opened["send_lag_ms"]["p90"] < 10.0, opened["send_lag_ms"]
    assert opened["latency_ms"]["p99"] > 700.0, opened["latency_ms"]
    assert opened["queueing_ms"]["p99"] > 600.0, opened["queueing_ms"]
    # Latency rises through the run as the backlog grows.
    tl = opened["timeline"]
    assert tl[-1]["p50_ms"] > tl[0]["p50_ms"] + 300
    assert closed["latency_ms"]["p99"] < 60.0, closed["latency_ms"]
    assert 35 <= closed["throughput_rps"] <= 52


def test_step_mode_finds_where_a_slow_server_breaks_the_budget(tmp_path, payloads):
    """One worker x 40 ms serves at most 25 req/s. Steps of 4, 8, 16, 32 req/s against a
    200 ms budget (loose enough for a shared machine's stalls): the search must break at or
    before 32 and the rate it reports as held must be below the server's capacity."""
    with predict_process(tmp_path, "--service-ms", "40", "--workers", "1") as srv:
        target = Target("predict", srv["address"])

        async def one(spec, _name):
            return await run(target, payloads, spec)

        summary, runs = asyncio.run(step_search(
            one, LoadSpec(duration_s=1.5, warmup_s=0.3, timeout_s=5), start_rps=4, factor=2,
            max_rps=200, budget_p99_ms=200, refine=1))
    steps = summary["steps"]
    assert steps[0]["held"] and steps[0]["p99_ms"] < 200, steps
    assert summary["lowest_rate_broken_rps"] is not None, steps
    assert summary["lowest_rate_broken_rps"] <= 32, steps
    assert 4 <= summary["max_rate_held_rps"] < 25, steps
    # Past capacity (when the search got there) the backlog shows: p99 far over the budget.
    for s in steps:
        if s["rate_rps"] >= 32:
            assert s["p99_ms"] > 300, steps
    assert len(runs) == len(steps)


def run_cli(*argv: str) -> int:
    return rankserve_main(["loadtest", *argv])


def test_errors_are_counted_exactly_and_json_csv_html_agree(tmp_path, catalog_dir, capsys):
    """Every 5th call fails with UNAVAILABLE: 200 calls give exactly 160 OK and 40 errors."""
    out_dir = tmp_path / "report"
    with predict_process(tmp_path, "--fail-every", "5", "--fail-code", "UNAVAILABLE") as srv:
        code = run_cli("run", "--target", srv["address"], "--catalog-dir", str(catalog_dir),
                       "--requests-pool", "2", "--mode", "closed", "--concurrency", "4",
                       "--max-requests", "200", "--duration", "30", "--warmup", "0",
                       "--server-pid", str(srv["pid"]), "--price-core-hour", "0.05",
                       "--replica-cpu", "2", "--peak-rps", "1000", "--no-progress",
                       "--out", str(out_dir))
    assert code == 0, capsys.readouterr().err
    doc = json.loads((out_dir / "report.json").read_text())
    run_ = doc["runs"][0]
    assert run_["status_codes"] == {"OK": 160, "UNAVAILABLE": 40}
    assert run_["error_rate"] == 0.2
    assert run_["requests"] == {"counted": 200, "warmup_excluded": 0, "ok": 160, "errors": 40}
    assert doc["cost"]["available"] and doc["cost"]["replicas_for_peak"]["model-server"] >= 1
    with open(out_dir / "report.csv", newline="") as fh:
        rows = {k: v for k, v in list(csv.reader(fh))[1:]}
    assert rows["runs.0.status_codes.UNAVAILABLE"] == "40"
    assert rows.keys() == {k for k, _ in flatten(doc)}
    for key, value in flatten(doc):
        if isinstance(value, float):
            assert float(rows[key]) == value, key

    html = (out_dir / "report.html").read_text()
    assert not re.search(r"(?i)https?:|//[a-z0-9]|<script|<link|@import|url\(", html)
    png = screenshot(out_dir / "report.html", tmp_path / "report.png", tmp_path / "profile")
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB")).astype(np.int16)
    assert img.shape[0] >= 2000 and img.shape[1] >= 1200
    non_white = (img.min(axis=2) < 235).mean()
    assert non_white > 0.02, f"screenshot nearly blank: {non_white:.3%} non-white"
    # The charts' colours are on the page: histogram/line blue and the OK-bar green.
    blue = ((abs(img[..., 0] - 31) < 12) & (abs(img[..., 1] - 119) < 12)
            & (abs(img[..., 2] - 180) < 12)).sum()
    green = ((abs(img[..., 0] - 44) < 12) & (abs(img[..., 1] - 160) < 12)
             & (abs(img[..., 2] - 44) < 12)).sum()
    assert blue > 2000 and green > 2000, (blue, green)


def test_sweep_over_batch_size_and_compression(tmp_path, catalog_dir, capsys):
    out_dir = tmp_path / "sweep"
    with predict_process(tmp_path) as srv:
        code = run_cli("sweep", "--target", srv["address"], "--catalog-dir", str(catalog_dir),
                       "--requests-pool", "1", "--batch-sizes", "5,25",
                       "--compressions", "none,gzip", "--rate", "40", "--duration", "0.75",
                       "--warmup", "0.25", "--no-progress", "--out", str(out_dir))
    assert code == 0, capsys.readouterr().err
    doc = json.loads((out_dir / "report.json").read_text())
    rows = {(r["batch_size"], r["compression"]): r for r in doc["sweep"]["rows"]}
    assert set(rows) == {(5, "none"), (5, "gzip"), (25, "none"), (25, "gzip")}
    assert all(r["error_rate"] == 0 for r in rows.values())
    # gzip shrinks the requests; bigger batches carry more bytes.
    assert rows[(25, "gzip")]["request_bytes_per_call"] < rows[(25, "none")][
        "request_bytes_per_call"]
    assert rows[(25, "none")]["request_bytes_per_call"] > 4 * rows[(5, "none")][
        "request_bytes_per_call"]
    assert rows[(25, "none")]["candidates_per_s"] > rows[(5, "none")]["candidates_per_s"]


def test_compare_cli_flags_a_regression(tmp_path, capsys):
    def write(name, p99):
        doc = {"schema": "rankserve.loadtest.report/v1", "runs": [{
            "name": "run", "throughput_rps": 100.0, "error_rate": 0.0,
            "latency_ms": {"p50": 10.0, "p90": 12.0, "p95": 13.0, "p99": p99, "p99_9": p99},
            "service_ms": {"p99": p99}, "bytes": {"request_per_call": 30000.0},
            "cpu": {"client_ms_per_request": 1.0, "server_ms_per_request": 2.0}}]}
        path = tmp_path / name
        path.write_text(json.dumps(doc))
        return str(path)

    a, b = write("a.json", 20.0), write("b.json", 30.0)
    assert run_cli("compare", a, b, "--fail-on-regression", "--html",
                   str(tmp_path / "c.html")) == 1
    out = capsys.readouterr().out
    assert re.search(r"latency p99 \(ms\)\s+20\s+30\s+\+50\.0%  <-- REGRESSION", out), out
    assert "REGRESSION" in (tmp_path / "c.html").read_text()
    assert run_cli("compare", a, a, "--fail-on-regression") == 0
