"""Score-health alert rules read series the ranker exports (promtool runs their unit tests in
test_alert_rules.py)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest

from rankserve.ranker.version_metrics import VersionMetrics

RULES = Path(__file__).parents[2] / "deploy/helm/rankserve/files/alerts/rankserve-rules.yaml"


def test_every_series_the_rules_read_is_exported():
    registry = CollectorRegistry()
    metrics = VersionMetrics(registry)
    metrics.observe_scores("ranker", 2, np.full(25, 0.5, np.float32))
    metrics.observe_scores("ranker", 3, np.array([np.nan, 1.0, 2.0], np.float32))
    text = generate_latest(registry).decode()
    rules = RULES.read_text()
    group = rules[rules.index("name: rankserve-model-versions"):]
    names = set(re.findall(r"\b(rankserve_[a-z_]+)\b", group))
    assert names == {"rankserve_model_score_spread_bucket", "rankserve_model_score_spread_count",
                     "rankserve_model_nonfinite_scores_total"}
    for name in names:
        assert re.search(rf"^{name}\{{", text, re.M), name
    assert ('rankserve_model_score_spread_bucket{le="1e-06",model="ranker",version="2"} 1.0'
            in text)
