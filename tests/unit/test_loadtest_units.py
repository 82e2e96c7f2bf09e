"""Load-test pieces without sockets: arrivals, statistics, cost, report files, compare."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from rankserve.loadtest.arrivals import schedule
from rankserve.loadtest.compare import compare, format_rows
from rankserve.loadtest.cost import (
    CostInputError,
    Prices,
    Tier,
    estimate,
    parse_quantity,
    tier_from_values,
)
from rankserve.loadtest.report import build_document, flatten, render_html, write_all
from rankserve.loadtest.runner import LoadSpec, RunOutcome
from rankserve.loadtest.samples import Samples
from rankserve.loadtest.sources import Payloads
from rankserve.loadtest.stats import histogram, summarize
from rankserve.loadtest.targets import Target


def test_constant_arrivals_are_evenly_spaced():
    s = schedule(100, 2.0)
    assert len(s) == 200
    np.testing.assert_allclose(np.diff(s), 0.01)


def test_poisson_arrivals_have_the_rate_and_random_gaps():
    s = schedule(200, 50.0, "poisson", seed=3)
    assert abs(len(s) / 50.0 - 200) < 200 * 0.05
    gaps = np.diff(s)
    assert np.all(gaps >= 0) and s[-1] < 50.0
    # Exponential gaps: standard deviation close to the mean.
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.1


def test_schedule_rejects_a_rate_of_zero():
    with pytest.raises(ValueError, match="rate must be > 0"):
        schedule(0, 1.0)


def test_histogram_counts_every_sample_once():
    lat = np.array([0.3, 1.0, 1.1, 5.0, 5.0, 70.0, 1e6])
    h = histogram(lat)
    assert sum(b["count"] for b in h) == len(lat)
    assert h[0]["le_ms"] >= 0.3 and h[-1]["le_ms"] == 100000.0


def fake_outcome(latencies_ms: list[float], codes: list[str], warmup: int = 0) -> RunOutcome:
    s = Samples()
    for i, (lat, code) in enumerate(zip(latencies_ms, codes, strict=True)):
        due = 10.0 + i * 0.01
        s.add(due, due + 0.0005, due + lat / 1e3, code, 1000, 50, i >= warmup)
    spec = LoadSpec(rate=100, duration_s=len(codes) / 100, warmup_s=warmup / 100)
    return RunOutcome(spec, Target("predict", "127.0.0.1:1"), Payloads("predict", [b"x"], "t"),
                      s, 10.0 + warmup * 0.01, client_cpu_s=0.5, server_cpu_s=None,
                      requests_sent=len(codes))


def test_summary_percentiles_errors_and_warmup():
    lat = list(np.linspace(1.0, 100.0, 100))
    codes = ["OK"] * 90 + ["UNAVAILABLE"] * 7 + ["DEADLINE_EXCEEDED"] * 3
    s = summarize(fake_outcome([5.0] * 10 + lat, ["OK"] * 10 + codes, warmup=10))
    assert s["requests"] == {"counted": 100, "warmup_excluded": 10, "ok": 90, "errors": 10}
    assert s["status_codes"] == {"OK": 90, "UNAVAILABLE": 7, "DEADLINE_EXCEEDED": 3}
    assert s["error_rate"] == 0.1
    assert s["latency_ms"]["p50"] == pytest.approx(np.percentile(lat, 50), abs=1e-3)
    assert s["latency_ms"]["p99"] == pytest.approx(np.percentile(lat, 99), abs=1e-3)
    assert s["cpu"]["server_ms_per_request"] is None
    assert "not measured" in s["cpu"]["server_note"]
    assert sum(p["requests"] for p in s["timeline"]) == 100


def test_cost_per_million_and_replicas_for_peak():
    tiers = [Tier("model-server", 2, cpu=4, gpu=1), Tier("ranker", 1, cpu=2)]
    c = estimate(500.0, "step", tiers, Prices(core_hour=0.05, gpu_hour=2.0), peak_rps=3000)
    hourly = 2 * (4 * 0.05 + 2.0) + 2 * 0.05
    assert c["tested_cost_per_hour"] == pytest.approx(hourly)
    assert c["cost_per_million_requests"] == pytest.approx(hourly / (500 * 3600) * 1e6, rel=1e-5)
    assert c["replicas_for_peak"] == {"model-server": 12, "ranker": 6}


def test_quantities_and_chart_values(tmp_path):
    assert parse_quantity("500m", "cpu") == 0.5 and parse_quantity(2, "cpu") == 2.0
    values = tmp_path / "values.yaml"
    values.write_text("modelServer:\n  resources:\n    requests: {cpu: 1500m}\n"
                      "    limits: {nvidia.com/gpu: 1}\nranker:\n  resources: {}\n")
    t = tier_from_values(values, "model-server", 3)
    assert (t.cpu, t.gpu, t.replicas) == (1.5, 1.0, 3)
    with pytest.raises(CostInputError, match=r"ranker\.resources\.requests\.cpu"):
        tier_from_values(values, "ranker", 1)


def doc_of(latencies: list[float], codes: list[str]) -> dict:
    s = summarize(fake_outcome(latencies, codes))
    return build_document("run", [s], command=["rankserve", "loadtest", "run"])


def test_json_and_csv_hold_the_same_values(tmp_path):
    doc = doc_of([2.0, 3.0, 50.0, 4.0], ["OK", "OK", "UNAVAILABLE", "OK"])
    paths = write_all(doc, tmp_path)
    loaded = json.loads(paths["json"].read_text())
    with open(paths["csv"], newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["key", "value"]
    from_csv = {k: v for k, v in rows[1:]}
    expect = {k: ("" if v == "" else (json.dumps(v) if isinstance(v, bool) else str(v)))
              for k, v in flatten(loaded)}
    assert from_csv == expect
    assert float(from_csv["runs.0.latency_ms.p99"]) == loaded["runs"][0]["latency_ms"]["p99"]
    assert from_csv["runs.0.status_codes.UNAVAILABLE"] == "1"


def test_html_is_self_contained():
    html = render_html(doc_of([1.0, 2.0, 3.0], ["OK", "OK", "INTERNAL"]))
    assert "<svg" in html and "Latency histogram" in html
    assert not re.search(r"(?i)https?:|//[a-z0-9]|<script|<link|@import|url\(", html)


def test_compare_marks_a_latency_regression_and_an_improvement():
    a = doc_of([10.0] * 100, ["OK"] * 100)
    b = doc_of([10.0] * 90 + [40.0] * 10, ["OK"] * 99 + ["UNAVAILABLE"])
    rows = {r["metric"]: r for r in compare(a, b, threshold=0.05)}
    assert rows["latency p99 (ms)"]["mark"] == "REGRESSION"
    assert rows["latency p50 (ms)"]["mark"] == ""
    assert rows["error rate"]["mark"] == "REGRESSION"
    back = {r["metric"]: r for r in compare(b, a, threshold=0.05)}
    assert back["latency p99 (ms)"]["mark"] == "better"
    text = format_rows(list(rows.values()), "a.json", "b.json")
    assert "<-- REGRESSION" in text and "regression(s) beyond the threshold" in text


def test_replay_rebatches_any_spec_s_inputs():
    """Captured batches of a spec'd model (no 'candidates' input): rows and re-splitting come
    from the inputs themselves; an input sent once per batch stays as it is."""
    import numpy as np

    from rankserve.loadtest.sources import _rebatch, _rows
    from rankserve.ranker.scoring import build_request
    from rankserve.ranker.tensors import from_tensor_proto
    from rankserve.ranker.types import ModelRef

    def batch(start: int, n: int):
        rows = np.arange(start, start + n)
        return build_request(ModelRef("m"), {
            "price": rows.astype(np.float32),
            "category": np.array([f"c{i}".encode() for i in rows], dtype=object),
            "segment": np.full(n, 7, np.int64),  # tiled per row
            "user": np.ones((1, 4), np.float32),  # sent once per batch
        })

    reqs = [batch(0, 25), batch(25, 25), batch(50, 7)]
    assert [_rows(r) for r in reqs] == [25, 25, 7]
    again = _rebatch(reqs, 10)
    assert [_rows(r) for r in again] == [10, 10, 10, 9, 9, 9]  # as the planner splits 57
    prices = np.concatenate([from_tensor_proto(r.inputs["price"]) for r in again])
    assert prices.tolist() == list(range(57))
    assert from_tensor_proto(again[-1].inputs["category"]).tolist()[-1] == b"c56"
    assert all(from_tensor_proto(r.inputs["user"]).shape == (1, 4) for r in again)
