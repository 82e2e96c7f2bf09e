"""Autoscaling targets from a step search, against numbers worked out by hand."""

from __future__ import annotations

import pytest
import yaml

from rankserve.loadtest.autoscale import (
    Inputs,
    chart_values,
    compute,
    header,
    hourly_cost,
    interpolate,
    round_rps_down,
    section,
    values_yaml,
)
from rankserve.tools.cli import main as rankserve_main

# Two replicas held 800 req/s; mean requests in flight over both, per offered rate.
STEPS = [(200.0, 2.0), (300.0, 3.2), (450.0, 6.0), (675.0, 14.0), (800.0, 30.0)]


def test_rounding_of_the_rate_target_is_down():
    assert round_rps_down(283.9) == 283.0
    assert round_rps_down(10.0) == 10.0
    assert round_rps_down(9.99) == 9.9
    assert round_rps_down(7.46) == 7.4
    assert round_rps_down(0.347) == 0.34


def test_interpolation_between_below_and_above_the_steps():
    assert interpolate(STEPS, 560.0) == pytest.approx(6.0 + 8.0 * 110.0 / 225.0)
    assert interpolate(STEPS, 100.0) == pytest.approx(1.0)  # to 0 at rate 0
    assert interpolate(STEPS, 900.0) == 30.0  # never extrapolated upwards
    assert interpolate(list(reversed(STEPS)), 300.0) == 3.2


def test_targets_follow_the_rule():
    t = compute(800.0, STEPS, Inputs(replicas=2, headroom=0.3, base_rps=300, peak_rps=5000))
    assert t.capacity_per_replica_rps == 400.0
    assert t.in_flight_per_replica_at_capacity == 15.0
    assert t.target_rps_per_pod_exact == 280.0 and t.target_rps_per_pod == 280.0
    # 560 req/s over both replicas: 6 + 8 x 110/225 = 9.911 in flight, 4.956 per replica.
    assert t.in_flight_per_replica_at_target == pytest.approx(4.956, abs=1e-3)
    assert t.target_in_flight_per_pod == 4
    assert t.min_replicas == 2  # ceil(300/280) = 2, the floor is 2
    assert t.max_replicas == 18  # ceil(5000/280) = ceil(17.86)


def test_base_rate_above_the_floor_and_no_peak():
    t = compute(800.0, STEPS, Inputs(replicas=2, base_rps=700, min_replicas_floor=2))
    assert t.min_replicas == 3 and t.max_replicas is None  # ceil(700/280) = 3
    t = compute(800.0, STEPS, Inputs(replicas=2, min_replicas_floor=4, peak_rps=500))
    assert (t.min_replicas, t.max_replicas) == (4, 4)  # max never below min


def test_in_flight_target_is_at_least_one():
    t = compute(100.0, [(50.0, 0.1), (100.0, 0.2)], Inputs(replicas=1))
    assert t.target_rps_per_pod == 70.0 and t.target_in_flight_per_pod == 1


@pytest.mark.parametrize(("inputs", "match"), [
    (Inputs(replicas=1, headroom=1.0), "--headroom"),
    (Inputs(replicas=0), "--replicas"),
    (Inputs(replicas=1, base_rps=900, peak_rps=100), "--base-rps 900 is above --peak-rps"),
    (Inputs(replicas=1, min_replicas_floor=0), "--min-replicas-floor"),
    (Inputs(replicas=1, metric="memory"), "--autoscale-metric"),
])
def test_inputs_are_checked(inputs, match):
    with pytest.raises(ValueError, match=match):
        compute(100.0, STEPS, inputs)


def test_hourly_cost_and_values_file():
    assert hourly_cost(18, 2.0, 0.0, 0.04, 0.0) == pytest.approx(1.44)
    assert hourly_cost(2, 4.0, 1.0, 0.05, 2.0) == pytest.approx(4.4)
    assert hourly_cost(None, 2.0, 0.0, 0.04, 0.0) is None
    inputs = Inputs(replicas=2, base_rps=300, peak_rps=5000)
    t = compute(800.0, STEPS, inputs)
    sec = section(t, inputs, in_flight_method="measured", cost=None, notes=[])
    text = values_yaml(chart_values(t, inputs), header(
        sec, target="127.0.0.1:1 (Predict)\nsecond line", budget_p99_ms=75,
        max_error_rate=0.001, created="2025-01-01T00:00:00+00:00"))
    assert text.startswith("# modelServer.autoscaling from `rankserve loadtest step`")
    assert "# rule: capacity per replica" in text
    assert yaml.safe_load(text) == {"modelServer": {"autoscaling": {
        "enabled": True, "metric": "auto", "minReplicas": 2, "maxReplicas": 18,
        "targetInFlightPerPod": 4, "targetPredictsPerSecondPerPod": 280}}}
    body = [line for line in text.splitlines() if not line.startswith("#")]
    assert body[:3] == ["modelServer:", "  autoscaling:", "    enabled: true"]


def test_a_rank_target_gives_no_autoscaling_values(tmp_path, capsys):
    code = rankserve_main(["loadtest", "step", "--kind", "rank", "--target", "127.0.0.1:1",
                           "--budget-p99-ms", "50", "--chart-values-out",
                           str(tmp_path / "v.yaml")])
    assert code == 2
    assert "autoscaling values come from a Predict target" in capsys.readouterr().err
    assert not (tmp_path / "v.yaml").exists()


def test_values_out_needs_a_peak(capsys):
    code = rankserve_main(["loadtest", "step", "--target", "127.0.0.1:1", "--budget-p99-ms",
                           "50", "--chart-values-out", "v.yaml"])
    assert code == 2 and "needs --peak-rps" in capsys.readouterr().err


def test_a_coarse_in_flight_rounding_is_noted():
    from rankserve.loadtest.autoscale import rounding_notes

    t = compute(800.0, STEPS, Inputs(replicas=2))  # 4.956 -> 4: 19% below
    assert "rounds 4.956 down to 4 (19% below" in rounding_notes(t)[0]
    t = compute(800.0, [(560.0, 20.2), (800.0, 30.0)], Inputs(replicas=2))  # 10.1 -> 10
    assert rounding_notes(t) == []
