"""The chart's prometheus-adapter rules, run against the real Prometheus scraping the real
local stack under load, return one value per model-server replica: what the model servers'
autoscaler would see.

The queries are the shipped file's (deploy/helm/rankserve/files/prometheus-adapter-rules.yaml),
with the adapter's template variables filled in as the adapter fills them for an HPA's pods.
"""

from __future__ import annotations

import math
import time

from tests.e2e.test_prometheus import Load, Prometheus, prometheus  # noqa: F401 - a fixture
from tests.integration.test_helm_autoscaling import adapter_rules, series_names, substitute

# In a cluster a ServiceMonitor labels every series with namespace and pod, and the adapter
# asks for `namespace="<ns>",pod=~"<pod>|<pod>..."` grouped by pod. The local Prometheus
# scrapes static targets: each model-server process is its own instance (host:port), which is
# what a pod is there, and there is no namespace label. So <<.LabelMatchers>> becomes
# instance=~"<each model server's address>" and <<.GroupBy>> becomes instance.
GROUP_BY = "instance"
DEADLINE_S = 60.0


def adapter_query(rule: dict, instances: list[str]) -> str:
    """The PromQL the adapter would send for these replicas, per the comment above."""
    (series, *_) = sorted(series_names(rule["seriesQuery"]))
    matchers = f'{GROUP_BY}=~"{"|".join(instances)}"'
    return substitute(rule["metricsQuery"], series, matchers, GROUP_BY)


def per_replica(prom: Prometheus, expr: str) -> dict[str, float]:
    out = {}
    for sample in prom.query(expr):
        assert set(sample["metric"]) == {GROUP_BY}, sample["metric"]
        out[sample["metric"][GROUP_BY]] = float(sample["value"][1])
    return out


def test_adapter_rules_give_each_model_server_a_value(stack, prometheus) -> None:  # noqa: F811
    replicas = sorted(address for job, address in stack.metrics_targets().items()
                      if job.startswith("model-server"))
    assert len(replicas) >= 2, stack.metrics_targets()
    rules = {r["name"]["as"]: r for r in adapter_rules()}
    in_flight = adapter_query(rules["rankserve_model_server_predicts_in_flight"], replicas)
    per_second = adapter_query(rules["rankserve_model_server_predicts_per_second"], replicas)
    # The gauge samples an instant: under this load it is often 0 at a scrape, so also ask
    # whether each replica's value rose above 0 during the last minute of 1 s scrapes.
    in_flight_peak = f"max_over_time(({in_flight})[1m:1s])"
    with Load(stack.ranker.address) as load:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            now_in_flight = per_replica(prometheus, in_flight)
            peaks = per_replica(prometheus, in_flight_peak)
            rates = per_replica(prometheus, per_second)
            done = (set(now_in_flight) == set(replicas)
                    and all(peaks.get(r, 0) > 0 for r in replicas)
                    and all(rates.get(r, 0) > 0 for r in replicas))
            if done or time.monotonic() > deadline:
                break
            time.sleep(1.0)
    assert not load.errors, load.errors[:3]
    assert load.calls > 0
    assert set(now_in_flight) == set(replicas), (in_flight, now_in_flight)
    assert all(v >= 0 and math.isfinite(v) for v in now_in_flight.values()), now_in_flight
    assert all(peaks.get(r, 0) > 0 for r in replicas), (in_flight_peak, peaks)
    assert set(rates) == set(replicas), (per_second, rates)
    assert all(v > 0 and math.isfinite(v) for v in rates.values()), rates
