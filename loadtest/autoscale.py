"""Autoscaling targets of the model servers, from a step search against a Predict target.

The step search measures the highest rate the tested replicas held within the latency budget.
From it, by this rule:

- capacity per replica = highest rate that held / replicas tested;
- targetPredictsPerSecondPerPod = capacity per replica x (1 - headroom), rounded down (to a
  whole number from 10 up, to two significant digits below 10);
- targetInFlightPerPod = the requests in flight measured at that target rate, per replica,
  rounded down, at least 1. In flight is not linear in the rate (queues grow near
  saturation), so it is interpolated linearly between the two measured steps whose rates
  bracket the target, not scaled from the capacity; below the lowest step it falls linearly
  to 0 at rate 0;
- minReplicas = max(ceil(base rate / target per pod), the floor);
- maxReplicas = max(ceil(peak rate / target per pod), minReplicas).

The headroom is what a pod keeps free while the autoscaler reacts: a new pod takes time to
start and load its model, and the traffic keeps rising meanwhile.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

METRICS = ("auto", "inFlight", "predictsPerSecond", "cpu")

RULE = (
    "capacity per replica = highest rate that held / replicas tested;"
    " targetPredictsPerSecondPerPod = capacity per replica x (1 - headroom), rounded down"
    " (whole number from 10 up, two significant digits below);"
    " targetInFlightPerPod = in flight measured at the target rate per replica (interpolated"
    " linearly between the measured steps that bracket it, to 0 at rate 0 below the lowest),"
    " rounded down, at least 1;"
    " minReplicas = max(ceil(base rate / target per pod), floor);"
    " maxReplicas = max(ceil(peak rate / target per pod), minReplicas)"
)


@dataclass(frozen=True)
class Inputs:
    """What the targets follow from, besides the measurement."""

    replicas: int  # model-server replicas that served the test
    headroom: float = 0.3  # fraction of a pod's capacity kept free
    base_rps: float | None = None  # lowest traffic of the day (night)
    peak_rps: float | None = None  # highest traffic to serve
    min_replicas_floor: int = 2  # fewest pods whatever the base rate (one can fail)
    metric: str = "auto"

    def validate(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"--replicas must be >= 1, got {self.replicas}")
        if not 0.0 <= self.headroom < 1.0:
            raise ValueError(f"--headroom is a fraction of a pod's capacity kept free, 0 <= h <"
                             f" 1 (0.3 keeps 30% free), got {self.headroom}")
        if self.min_replicas_floor < 1:
            raise ValueError(f"--min-replicas-floor must be >= 1, got {self.min_replicas_floor}")
        for flag, v in (("--base-rps", self.base_rps), ("--peak-rps", self.peak_rps)):
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{flag} must be a rate > 0 requests per second, got {v}")
        if self.base_rps and self.peak_rps and self.base_rps > self.peak_rps:
            raise ValueError(f"--base-rps {self.base_rps:g} is above --peak-rps"
                             f" {self.peak_rps:g}: the base is the day's lowest traffic")
        if self.metric not in METRICS:
            raise ValueError(f"--autoscale-metric must be one of {', '.join(METRICS)}")


@dataclass(frozen=True)
class Targets:
    """The computed values; ``None`` where an input was not given."""

    capacity_rps: float  # highest rate that held, all tested replicas together
    capacity_per_replica_rps: float
    in_flight_per_replica_at_capacity: float
    target_rps_per_pod: float
    target_rps_per_pod_exact: float
    in_flight_per_replica_at_target: float
    target_in_flight_per_pod: int
    min_replicas: int
    max_replicas: int | None


def round_rps_down(x: float) -> float:
    """A whole number from 10 up, two significant digits below: 283.9 -> 283, 7.46 -> 7.4."""
    if x >= 10.0:
        return float(math.floor(x + 1e-9))
    if x <= 0.0:
        return 0.0
    scale = 10.0 ** (1 - math.floor(math.log10(x)))
    return math.floor(x * scale + 1e-9) / scale


def interpolate(points: list[tuple[float, float]], rate: float) -> float:
    """Value at ``rate`` from measured (rate, value) points: linear between the two that
    bracket it, linear to (0, 0) below the lowest, the highest point's value above it
    (never extrapolated upwards)."""
    pts = sorted(points)
    if not pts:
        raise ValueError("no measured steps to interpolate")
    if rate <= pts[0][0]:
        return pts[0][1] * rate / pts[0][0] if pts[0][0] > 0 else pts[0][1]
    for (r0, v0), (r1, v1) in zip(pts, pts[1:], strict=False):
        if r0 <= rate <= r1:
            return v0 if r1 == r0 else v0 + (v1 - v0) * (rate - r0) / (r1 - r0)
    return pts[-1][1]


def compute(capacity_rps: float, in_flight_by_rate: list[tuple[float, float]],
            inputs: Inputs) -> Targets:
    """The targets by the module's rule. ``in_flight_by_rate``: (offered rate, mean requests
    in flight over all tested replicas) of the steps that held the budget."""
    inputs.validate()
    if capacity_rps <= 0:
        raise ValueError("no rate held the budget: nothing to scale on")
    n = inputs.replicas
    per_replica = capacity_rps / n
    exact = per_replica * (1.0 - inputs.headroom)
    target = round_rps_down(exact)
    if target <= 0:
        raise ValueError(f"a pod's target rate rounds to 0 ({exact:g} req/s): lower --headroom")
    in_flight_target = interpolate(in_flight_by_rate, target * n) / n
    min_r = inputs.min_replicas_floor
    if inputs.base_rps:
        min_r = max(math.ceil(inputs.base_rps / target - 1e-9), min_r)
    max_r = None
    if inputs.peak_rps:
        max_r = max(math.ceil(inputs.peak_rps / target - 1e-9), min_r)
    return Targets(
        capacity_rps=round(capacity_rps, 3),
        capacity_per_replica_rps=round(per_replica, 3),
        in_flight_per_replica_at_capacity=round(
            interpolate(in_flight_by_rate, capacity_rps) / n, 3),
        target_rps_per_pod=target,
        target_rps_per_pod_exact=round(exact, 3),
        in_flight_per_replica_at_target=round(in_flight_target, 3),
        target_in_flight_per_pod=max(1, math.floor(in_flight_target + 1e-9)),
        min_replicas=min_r,
        max_replicas=max_r,
    )


def rounding_notes(targets: Targets) -> list[str]:
    """What rounding down cost, when it is a lot: a few requests in flight per pod round
    coarsely."""
    exact = targets.in_flight_per_replica_at_target
    cut = 1.0 - targets.target_in_flight_per_pod / exact if exact > 0 else 0.0
    if cut <= 0.15:
        return []
    return [f"targetInFlightPerPod rounds {exact:g} down to {targets.target_in_flight_per_pod}"
            f" ({cut:.0%} below the level measured at the target rate): on inFlight the"
            " autoscaler keeps more pods than the rate target asks; predictsPerSecond follows"
            " this model more finely"]


def hourly_cost(replicas: int | None, cpu: float, gpu: float, core_hour: float,
                gpu_hour: float) -> float | None:
    """What ``replicas`` model-server pods reserve per hour (requests, not usage)."""
    if replicas is None:
        return None
    return round(replicas * (cpu * core_hour + gpu * gpu_hour), 6)


def section(targets: Targets, inputs: Inputs, *, in_flight_method: str,
            cost: dict[str, Any] | None, notes: list[str]) -> dict[str, Any]:
    """The report's ``autoscaling`` section (plain JSON types)."""
    return {
        "available": True,
        "inputs": asdict(inputs),
        "rule": RULE,
        "in_flight_method": in_flight_method,
        **asdict(targets),
        "cost": cost,
        "notes": notes,
        "chart_values": chart_values(targets, inputs),
    }


def chart_values(targets: Targets, inputs: Inputs) -> dict[str, Any]:
    """``modelServer.autoscaling`` of the rankserve chart."""
    rps = targets.target_rps_per_pod
    return {"modelServer": {"autoscaling": {
        "enabled": True,
        "metric": inputs.metric,
        "minReplicas": targets.min_replicas,
        "maxReplicas": targets.max_replicas,
        "targetInFlightPerPod": targets.target_in_flight_per_pod,
        "targetPredictsPerSecondPerPod": int(rps) if rps == int(rps) else rps,
    }}}


def values_yaml(values: dict[str, Any], header: list[str]) -> str:
    """The Helm values file: ``header`` as comment lines, then the values."""
    a = values["modelServer"]["autoscaling"]
    lines = [f"# {h}".rstrip() for text in header for h in text.splitlines()]
    lines += ["modelServer:", "  autoscaling:"]
    for key in ("enabled", "metric", "minReplicas", "maxReplicas", "targetInFlightPerPod",
                "targetPredictsPerSecondPerPod"):
        v = a[key]
        lines.append(f"    {key}: {str(v).lower() if isinstance(v, bool) else v}")
    return "\n".join(lines) + "\n"


def unavailable(reason: str, inputs: Inputs) -> dict[str, Any]:
    return {"available": False, "reason": reason, "inputs": asdict(inputs), "rule": RULE}


def describe(sec: dict[str, Any]) -> list[str]:
    """The section as the terminal shows it."""
    if not sec.get("available"):
        return [f"autoscaling: {sec['reason']}"]
    i = sec["inputs"]
    n = i["replicas"]
    lines = [
        "autoscaling of the model servers:",
        f"  measured: {sec['capacity_rps']:g} req/s held over {n} replica(s) ="
        f" {sec['capacity_per_replica_rps']:g} req/s per replica, with"
        f" {sec['in_flight_per_replica_at_capacity']:g} requests in flight per replica",
        f"  targets per pod with headroom {i['headroom']:g}: targetPredictsPerSecondPerPod"
        f" {_num(sec['target_rps_per_pod'])} ({sec['target_rps_per_pod_exact']:g} before"
        f" rounding), targetInFlightPerPod {sec['target_in_flight_per_pod']}"
        f" ({sec['in_flight_per_replica_at_target']:g} measured at that rate)",
        f"  minReplicas {sec['min_replicas']} ("
        + (f"base {i['base_rps']:g} req/s" if i["base_rps"] else "no --base-rps")
        + f", floor {i['min_replicas_floor']}), maxReplicas "
        + (f"{sec['max_replicas']} (peak {i['peak_rps']:g} req/s)" if sec["max_replicas"]
           else "not set: pass --peak-rps"),
    ]
    c = sec["cost"]
    if c and c.get("available"):
        lines.append(f"  cost per hour: {c['min_replicas_per_hour']:g} at minReplicas"
                     + (f", {c['max_replicas_per_hour']:g} at maxReplicas"
                        if c["max_replicas_per_hour"] is not None else "")
                     + f" ({c['per_replica_hour']:g} per replica)")
    else:
        lines.append(f"  cost: {c['reason'] if c else 'not estimated'}")
    lines += [f"  note: {n}" for n in sec["notes"]]
    return lines


def header(sec: dict[str, Any], *, target: str, budget_p99_ms: float, max_error_rate: float,
           created: str) -> list[str]:
    """Comment lines of the values file: which run the values come from, and the rule."""
    import textwrap

    i = sec["inputs"]
    lines = [
        f"modelServer.autoscaling from `rankserve loadtest step`, {created}",
        f"target: {target}",
        f"budget: p99 <= {budget_p99_ms:g} ms, errors <= {max_error_rate:g}",
        f"measured capacity: {sec['capacity_rps']:g} req/s over {i['replicas']} replica(s) ="
        f" {sec['capacity_per_replica_rps']:g} req/s and"
        f" {sec['in_flight_per_replica_at_capacity']:g} in flight per replica",
        f"headroom: {i['headroom']:g}; base rate: "
        + (f"{i['base_rps']:g} req/s" if i["base_rps"] else "not given")
        + f"; peak rate: {i['peak_rps']:g} req/s; floor of minReplicas:"
        f" {i['min_replicas_floor']}",
    ]
    lines += textwrap.wrap("rule: " + RULE, 94)
    return [" ".join(x.split()) for x in lines]


def _num(x: float) -> str:
    return f"{int(x)}" if x == int(x) else f"{x:g}"
