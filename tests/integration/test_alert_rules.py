"""The alert rules the chart ships: valid for Prometheus, and firing when (only when) they
should, checked by promtool on the unit tests in tests/promtool/."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.tools import require_program

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy/helm/rankserve/files/alerts/rankserve-rules.yaml"
RULE_TESTS = sorted((REPO / "tests/promtool").glob("*.test.yaml"))
ALERTS = {"RankLatencyP99AboveSLO", "RankErrorRatioHigh", "RankDegradedRatioHigh",
          "EnvoyUpstreamEjected", "ModelNoVersionLoaded", "RankserveModelVersionFlatScores",
          "RankserveModelVersionNonFiniteScores"}
RECORDS = {"rankserve:model_flat_score_ratio:rate5m"}


def test_promtool_check_rules() -> None:
    promtool = require_program("promtool")
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(ALERTS) + len(RECORDS)} rules found" in out.stdout


def test_promtool_test_rules() -> None:
    promtool = require_program("promtool")
    assert RULE_TESTS, "no promtool rule tests under tests/promtool/"
    out = subprocess.run([promtool, "test", "rules", *map(str, RULE_TESTS)], capture_output=True,
                         text=True, timeout=60, cwd=REPO / "tests/promtool")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_has_a_firing_case() -> None:
    text = "".join(p.read_text() for p in RULE_TESTS)
    rules = RULES.read_text()
    for alert in ALERTS:
        assert f"alert: {alert}" in rules
        assert f"alertname: {alert}\n        exp_alerts:\n          - exp_labels" in text, alert
