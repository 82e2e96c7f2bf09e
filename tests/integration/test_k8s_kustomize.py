"""Every kustomize base under k8s/ builds offline and passes strict Kubernetes schemas."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.chart import K8S, kubectl, validate

BASES = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def test_bases_exist() -> None:
    names = {str(b.relative_to(K8S)) for b in BASES}
    assert {"namespace", "observability", "gpu", "kind/data"} <= names


@pytest.mark.parametrize("base", BASES, ids=lambda p: str(p.relative_to(K8S)))
def test_base_builds_and_validates(base: Path) -> None:
    done = subprocess.run([kubectl(), "kustomize", str(base)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    objs = [o for o in yaml.safe_load_all(done.stdout) if o]
    assert objs, f"{base} builds no object"
    validate(objs)


def test_observability_wires_jaeger_and_prometheus_into_grafana() -> None:
    out = subprocess.run([kubectl(), "kustomize", str(K8S / "observability")],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    objs = [o for o in yaml.safe_load_all(out) if o]
    (ds,) = [o for o in objs if o["kind"] == "ConfigMap"
             and o["metadata"]["name"].startswith("grafana-datasources")]
    sources = yaml.safe_load(ds["data"]["datasources.yaml"])["datasources"]
    assert {s["type"] for s in sources} == {"prometheus", "jaeger"}
    (jaeger,) = [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "jaeger"]
    (container,) = jaeger["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["COLLECTOR_OTLP_ENABLED"] == "true"
    assert all(o["metadata"].get("namespace") == "observability"
               for o in objs if o["kind"] not in ("ClusterRole", "ClusterRoleBinding"))
