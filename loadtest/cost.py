"""What serving costs: per million requests, and the replicas a peak rate needs.

The test measures a capacity: requests per second that the tested deployment (its replicas of
each tier) served, ideally the highest rate that held the latency budget (``step``). Scaling that
deployment linearly, each tier needs ``ceil(replicas * peak / capacity)`` replicas for a peak
rate, and the price of its resource requests per hour, divided by the requests it serves in an
hour at capacity, is the cost of a request. Requests, not usage: a cluster bills what a pod
reserves.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Where --chart-values finds each tier's resources (dotted keys of the Helm values file).
CHART_KEYS = {
    "model-server": {"cpu": "modelServer.resources.requests.cpu",
                     "gpu": 'modelServer.resources.limits["nvidia.com/gpu"]'},
    "ranker": {"cpu": "ranker.resources.requests.cpu"},
}


class CostInputError(ValueError):
    """A price, a resource request or the values file is missing or malformed."""


@dataclass(frozen=True)
class Tier:
    """One deployment on the request path: ``replicas`` during the test, each requesting
    ``cpu`` cores and ``gpu`` GPUs."""

    name: str
    replicas: int
    cpu: float
    gpu: float = 0.0


@dataclass(frozen=True)
class Prices:
    core_hour: float
    gpu_hour: float = 0.0


def parse_quantity(value: Any, what: str) -> float:
    """A Kubernetes CPU/GPU quantity: 2, "1.5", "500m"."""
    text = str(value).strip()
    try:
        return float(text[:-1]) / 1000.0 if text.endswith("m") else float(text)
    except ValueError:
        raise CostInputError(f"{what}: {value!r} is not a quantity (e.g. 2, 1.5 or 500m)"
                             ) from None


def _lookup(values: dict, dotted: str, path: Path) -> Any:
    node: Any = values
    parts: list[str] = []
    for quoted, plain in re.findall(r'\["([^"]+)"\]|([^.\[\]]+)', dotted):
        raw = quoted or plain
        parts.append(raw)
        if not isinstance(node, dict) or raw not in node:
            raise CostInputError(
                f"{path}: no value at {dotted} (missing at {'.'.join(parts)}): set it in the"
                " values file or pass the resources as flags")
        node = node[raw]
    return node


def tier_from_values(path: Path, tier: str, replicas: int, *, gpu_optional: bool = True) -> Tier:
    """A tier's resources from a Helm values file (keys in CHART_KEYS)."""
    import yaml
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CostInputError(f"cannot read values file {path}: {exc}") from None
    keys = CHART_KEYS[tier]
    cpu = parse_quantity(_lookup(values, keys["cpu"], path), keys["cpu"])
    gpu = 0.0
    if "gpu" in keys:
        try:
            gpu = parse_quantity(_lookup(values, keys["gpu"], path), keys["gpu"])
        except CostInputError:
            if not gpu_optional:
                raise
    return Tier(tier, replicas, cpu, gpu)


def estimate(capacity_rps: float, basis: str, tiers: list[Tier], prices: Prices,
             peak_rps: float | None) -> dict[str, Any]:
    """Cost per million requests at the measured capacity, and replicas for ``peak_rps``."""
    if capacity_rps <= 0:
        return {"available": False, "reason": "no successful requests: no capacity measured"}
    hourly = sum(t.replicas * (t.cpu * prices.core_hour + t.gpu * prices.gpu_hour)
                 for t in tiers)
    out: dict[str, Any] = {
        "available": True,
        "capacity_rps": round(capacity_rps, 3),
        "basis": basis,
        "prices": asdict(prices),
        "tiers": [asdict(t) for t in tiers],
        "tested_cost_per_hour": round(hourly, 6),
        "cost_per_million_requests": round(hourly / (capacity_rps * 3600.0) * 1e6, 6),
    }
    if peak_rps:
        scale = peak_rps / capacity_rps
        need = {t.name: max(1, math.ceil(t.replicas * scale - 1e-9)) for t in tiers}
        out["peak_rps"] = peak_rps
        out["replicas_for_peak"] = need
        out["cost_per_hour_at_peak"] = round(
            sum(need[t.name] * (t.cpu * prices.core_hour + t.gpu * prices.gpu_hour)
                for t in tiers), 6)
    return out
