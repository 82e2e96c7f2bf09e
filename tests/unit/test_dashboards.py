"""The Grafana dashboards the chart ships: plain dashboard JSON that Grafana imports as is.

Whether each panel's query returns data is proven against the real Prometheus in
tests/e2e/test_prometheus.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DASHBOARDS = sorted(
    (Path(__file__).resolve().parents[2] / "deploy/helm/rankserve/files/dashboards").glob("*.json"))


def test_the_five_dashboards_exist() -> None:
    assert [p.stem for p in DASHBOARDS] == ["envoy", "experiments", "fan-out", "model-servers",
                                            "ranking-overview"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_shape(path: Path) -> None:
    d = json.loads(path.read_text())
    assert d["uid"].startswith("rankserve-") and d["title"]
    [var] = [v for v in d["templating"]["list"] if v["name"] == "datasource"]
    assert var["type"] == "datasource" and var["query"] == "prometheus"
    assert d["panels"]
    ids = [p["id"] for p in d["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in d["panels"]:
        assert panel["title"] and panel["description"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert target["expr"].strip(), panel["title"]


def test_dashboard_uids_are_unique() -> None:
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)
