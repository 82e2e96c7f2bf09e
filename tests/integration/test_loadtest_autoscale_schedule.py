"""`loadtest step` writing the model servers' autoscaling values, and `loadtest run` following
a rate schedule, against a real gRPC Predict server in its own process."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import yaml

from rankserve.loadtest.report.files import flatten
from rankserve.tools.cli import main as rankserve_main
from tests.support.catalog import make_catalog
from tests.support.processes import predict_process

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory):
    return make_catalog(tmp_path_factory.mktemp("catalog") / "c", num_items=3000)


def csv_rows(path) -> dict[str, str]:
    with open(path, newline="") as fh:
        return {k: v for k, v in list(csv.reader(fh))[1:]}


def test_step_writes_autoscaling_values_that_follow_from_the_measured_capacity(
        tmp_path, catalog_dir, capsys):
    """Two workers x 10 ms serve at most 200 req/s. Steps from 25 req/s, doubling, against a
    100 ms budget; the values file must follow from the report's own steps by the rule:
    target = floor(held / replicas x 0.7), in flight interpolated at the target between the
    held steps (to 0 at rate 0), min = max(ceil(base / target), 2), max = ceil(peak / target)."""
    out, values = tmp_path / "report", tmp_path / "autoscaling.yaml"
    with predict_process(tmp_path, "--service-ms", "10", "--workers", "2") as srv:
        code = rankserve_main([
            "loadtest", "step", "--target", srv["address"], "--catalog-dir", str(catalog_dir),
            "--requests-pool", "2", "--budget-p99-ms", "100", "--start-rate", "25",
            "--factor", "2", "--max-rate", "800", "--refine", "1", "--duration", "1.2",
            "--warmup", "0.3", "--timeout-ms", "3000", "--replicas", "1", "--headroom", "0.3",
            "--base-rps", "150", "--peak-rps", "1000", "--price-core-hour", "0.04",
            "--replica-cpu", "2", "--no-progress", "--out", str(out),
            "--chart-values-out", str(values)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    doc = json.loads((out / "report.json").read_text())
    step, auto = doc["step"], doc["autoscaling"]
    best = step["max_rate_held_rps"]
    assert best and 25 <= best < 200, step["steps"]

    # The rule, recomputed from the report's step data.
    per_replica = best / 1
    target = math.floor(per_replica * 0.7) if per_replica * 0.7 >= 10 else None
    assert target is not None, "a 10 ms model holds more than 15 req/s"
    held = sorted((s["rate_rps"], s["in_flight_mean"]) for s in step["steps"] if s["held"])
    xs, ys = [0.0] + [r for r, _ in held], [0.0] + [f for _, f in held]
    in_flight_at_target = float(np.interp(target, xs, ys))
    want = {"enabled": True, "metric": "auto",
            "minReplicas": max(math.ceil(150 / target), 2),
            "maxReplicas": max(math.ceil(1000 / target), max(math.ceil(150 / target), 2)),
            "targetInFlightPerPod": max(1, math.floor(in_flight_at_target + 1e-9)),
            "targetPredictsPerSecondPerPod": target}
    text = values.read_text()
    assert yaml.safe_load(text) == {"modelServer": {"autoscaling": want}}
    assert f"# target: {srv['address']} (Predict)" in text
    assert "# budget: p99 <= 100 ms" in text and "# headroom: 0.3" in text
    assert auto["chart_values"]["modelServer"]["autoscaling"] == want
    assert auto["in_flight_per_replica_at_target"] == pytest.approx(in_flight_at_target,
                                                                    abs=1e-3)
    assert auto["cost"]["min_replicas_per_hour"] == pytest.approx(want["minReplicas"] * 0.08)
    assert auto["cost"]["max_replicas_per_hour"] == pytest.approx(want["maxReplicas"] * 0.08)
    assert "targetPredictsPerSecondPerPod" in printed.out and "minReplicas" in printed.out
    # The measured in flight agrees with Little's law where there is something in flight.
    for s in step["steps"]:
        if s["held"] and s["in_flight_little"] > 0.5:
            assert s["in_flight_mean"] == pytest.approx(s["in_flight_little"], rel=0.25), s
    rows = csv_rows(out / "report.csv")
    assert rows["autoscaling.target_rps_per_pod"] == str(auto["target_rps_per_pod"])
    assert "Autoscaling targets of the model servers" in (out / "report.html").read_text()


def test_a_scheduled_run_follows_its_rate_window_by_window(tmp_path, catalog_dir, capsys):
    """30 req/s for 3 s, a ramp to 120 req/s over half a second, 120 req/s to 7 s, constant
    arrivals, windows of 1 s: each window's answers are within max(10%, 3) of the requests
    due, those within one of the rate's integral, and JSON, CSV and the windows table agree."""
    sched = tmp_path / "day.csv"
    sched.write_text("time_s,rate_rps\n0,30\n3,30\n3.5,120\n7,120\n")
    out = tmp_path / "report"
    with predict_process(tmp_path) as srv:
        code = rankserve_main([
            "loadtest", "run", "--target", srv["address"], "--catalog-dir", str(catalog_dir),
            "--requests-pool", "2", "--schedule", str(sched), "--warmup", "0.5",
            "--window", "1", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "(scheduled   120.0)" in printed.err  # the progress line's last draw
    doc = json.loads((out / "report.json").read_text())
    run = doc["runs"][0]
    sc = run["schedule"]
    assert run["load"]["duration_s"] == 7.0 and sc["duration_s"] == 7.0
    w = sc["windows"]
    assert [x["t_s"] for x in w] == [0, 1, 2, 3, 4, 5, 6]
    # The integral of the rate per window; 3 to 4 s: 0.5 s ramping 30 -> 120 (mean 75), then
    # 0.5 s at 120: 37.5 + 60 = 97.5.
    expected = [30.0, 30.0, 30.0, 97.5, 120.0, 120.0, 120.0]
    assert [x["scheduled_rps"] for x in w] == pytest.approx(expected)
    assert all(abs(x["due"] - e) <= 1 for x, e in zip(w, expected, strict=True)), w
    for x in w:
        assert abs(x["answered"] - x["due"]) <= max(0.1 * x["due"], 3), x
        assert x["within_tolerance"] and x["errors"] == 0, x
        assert x["p99_ms"] is not None
    assert sc["follows_schedule"] and sc["windows_outside_tolerance"] == []
    assert run["requests"]["counted"] == sum(x["due"] for x in w)
    assert run["offered_rps"] == pytest.approx(sum(expected) / 7, rel=1e-3)

    rows = csv_rows(out / "report.csv")
    assert rows.keys() == {k for k, _ in flatten(doc)}
    with open(out / "report.windows.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(w)
    for i, (row, x) in enumerate(zip(table, w, strict=True)):
        for key, value in x.items():
            assert row[key] == (json.dumps(value) if isinstance(value, bool) else
                                "" if value is None else str(value)), key
            flat = rows[f"runs.0.schedule.windows.{i}.{key}"]
            assert flat == row[key], key
    html = (out / "report.html").read_text()
    assert "Rate: scheduled against achieved" in html and "every window followed" in html
