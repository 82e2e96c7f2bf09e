"""Score-health alert rules: promtool's own unit tests, and the series they read exist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from ranker.version_metrics import VersionMetrics

RULES = Path(__file__).parents[1] / "promtool_versions"


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("promtool not found: CI must install Debian's prometheus package")
    pytest.skip("promtool not found: `apt-get install --no-install-recommends prometheus`")


def test_rules_pass_promtool_check_and_unit_tests():
    tool = promtool()
    for args in (["check", "rules", "version-rules.yaml"],
                 ["test", "rules", "version-rules-test.yaml"]):
        out = subprocess.run([tool, *args], cwd=RULES, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "SUCCESS" in out.stdout


def test_every_series_the_rules_read_is_exported():
    registry = CollectorRegistry()
    metrics = VersionMetrics(registry)
    metrics.observe_scores("ranker", 2, np.full(25, 0.5, np.float32))
    metrics.observe_scores("ranker", 3, np.array([np.nan, 1.0, 2.0], np.float32))
    text = generate_latest(registry).decode()
    rules = (RULES / "version-rules.yaml").read_text()
    names = set(re.findall(r"\b(rankserve_[a-z_]+)\b", rules))
    assert names == {"rankserve_model_score_spread_bucket", "rankserve_model_score_spread_count",
                     "rankserve_model_nonfinite_scores_total"}
    for name in names:
        assert re.search(rf"^{name}\{{", text, re.M), name
    assert ('rankserve_model_score_spread_bucket{le="1e-06",model="ranker",version="2"} 1.0'
            in text)
