"""`rankserve loadtest run --deploy-model`: the objects it would create, and the cluster path
without a cluster.

The chart is rendered by the real Helm engine and every object is checked with strict
Kubernetes schemas of the oldest and newest supported versions. No test here contacts a
cluster: the CLI tests run with HOME and KUBECONFIG pointing into a temporary directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.chart import helm, validate

pytestmark = pytest.mark.timeout(120)

RANKSERVE_CPU = {"modelServer": {"runtime": "rankserve",
                                 "modelStore": {"claimName": "models"}}}
GPU_WITH_POLICIES = {"modelServer": {"modelStore": {"claimName": "models"}},
                     "networkPolicy": {"enabled": True},
                     "metrics": {"serviceMonitor": {"enabled": True}},
                     "dashboards": {"enabled": True}}


def _plan(values: dict, tmp_path: Path, **kw):
    helm()  # fails under CI=true, skips elsewhere, when the Helm engine is missing
    from rankserve.loadtest.k8s import ModelVersion, plan

    f = tmp_path / "values.yaml"
    f.write_text(yaml.safe_dump(values))
    return plan(ModelVersion.parse(kw.pop("model", "ranker@2")), "ml", values_file=f, **kw)


@pytest.mark.parametrize("values", [RANKSERVE_CPU, GPU_WITH_POLICIES], ids=["cpu", "gpu"])
def test_objects_validate_strictly_and_carry_the_run_label(tmp_path, values):
    from rankserve.loadtest.k8s import RUN_LABEL

    p = _plan(values, tmp_path, replicas=3)
    validate(p.objects)
    kinds = sorted({o["kind"] for o in p.objects})
    assert set(kinds) <= {"ServiceAccount", "ConfigMap", "Service", "Deployment",
                          "NetworkPolicy"}, kinds
    components = {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in p.objects}
    assert "ranker" not in components and {"model-server", "envoy"} <= components
    for o in p.objects:
        meta = o["metadata"]
        assert meta["labels"][RUN_LABEL] == p.run_id, meta["name"]
        assert meta["namespace"] == "ml"
        assert meta["name"].startswith(p.release) and len(meta["name"]) <= 63, meta["name"]
        if o["kind"] == "Deployment":
            assert o["spec"]["template"]["metadata"]["labels"][RUN_LABEL] == p.run_id
    (ms,) = [o for o in p.objects if o["kind"] == "Deployment"
             and o["metadata"]["labels"]["app.kubernetes.io/component"] == "model-server"]
    assert ms["spec"]["replicas"] == 3
    (models,) = [o for o in p.objects if o["metadata"]["name"].endswith("-models")]
    config = models["data"]["models.config"]
    assert 'name: "ranker"' in config and "specific {" in config and "versions: 2" in config
    assert config.count("config {") == 1 and "version_labels" not in config
    assert p.entry == ("envoy", 10000)


def test_every_run_has_its_own_names(tmp_path):
    a, b = (_plan(RANKSERVE_CPU, tmp_path) for _ in range(2))
    assert a.run_id != b.run_id and a.release != b.release
    assert not {o["metadata"]["name"] for o in a.objects} & {
        o["metadata"]["name"] for o in b.objects}
    long = _plan(RANKSERVE_CPU, tmp_path, model="Very_Long.Model-Name-For-Ranking@12345")
    assert long.release.startswith("lt-very-long-model-na-v12345-")
    validate(long.objects)
    assert all(len(o["metadata"]["name"]) <= 63 for o in long.objects)


def test_without_envoy_only_model_servers_are_created(tmp_path):
    p = _plan(RANKSERVE_CPU, tmp_path, envoy=False)
    validate(p.objects)
    assert {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in p.objects} == {
        "model-server", "rankserve"}  # the ServiceAccount is the release's
    assert p.entry == ("model-server", 8500)


def test_the_chart_refuses_a_ranker_without_envoy():
    from tests.support.chart import render

    with pytest.raises(Exception, match="ranker.enabled needs envoy.enabled"):
        render({"envoy": {"enabled": False},
                "ranker": {"catalog": {"claimName": "c"}},
                "modelServer": {"modelStore": {"claimName": "m"}}})


def _cli(tmp_path: Path, *argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    base.update({"HOME": str(home)}, **(env or {}))
    rankserve = Path(sys.executable).with_name("rankserve")
    return subprocess.run([str(rankserve), "loadtest", "run", *argv], env=base, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


def _values_file(tmp_path: Path) -> str:
    f = tmp_path / "prod.yaml"
    f.write_text(yaml.safe_dump(RANKSERVE_CPU))
    return str(f)


def test_dry_run_prints_valid_objects_without_a_cluster(tmp_path):
    helm()
    done = _cli(tmp_path, "--deploy-model", "ranker@4", "--chart-values",
                _values_file(tmp_path), "--namespace", "ml", "--dry-run")
    assert done.returncode == 0, done.stderr
    objs = [o for o in yaml.safe_load_all(done.stdout) if o]
    assert {o["kind"] for o in objs} == {"ServiceAccount", "ConfigMap", "Service", "Deployment"}
    assert all(o["metadata"]["name"].startswith("lt-ranker-v4-") for o in objs)
    validate(objs)


def test_without_a_kubeconfig_it_says_so_and_exits_2(tmp_path):
    done = _cli(tmp_path, "--deploy-model", "ranker@4", "--chart-values",
                _values_file(tmp_path))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "no kubeconfig was found" in lines[0] and "--kubeconfig PATH" in lines[0]
    assert str(tmp_path / "home" / ".kube" / "config") in lines[0]


@pytest.mark.parametrize(("text", "says"), [
    ("clusters: [unclosed\n", "is not valid YAML"),
    ("- just\n- a list\n", "is not a kubeconfig"),
    ("apiVersion: v1\nkind: Config\nclusters: []\n", "cannot be used"),
])
def test_a_malformed_kubeconfig_gets_a_clear_error(tmp_path, text, says):
    kc = tmp_path / "kubeconfig"
    kc.write_text(text)
    done = _cli(tmp_path, "--deploy-model", "ranker@4", "--chart-values",
                _values_file(tmp_path), env={"KUBECONFIG": str(kc)})
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert str(kc) in done.stderr and says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_bad_model_reference_and_target_conflicts(tmp_path):
    done = _cli(tmp_path, "--deploy-model", "ranker", "--dry-run")
    assert done.returncode == 2 and "NAME@VERSION" in done.stderr, done.stderr
    done = _cli(tmp_path, "--deploy-model", "ranker@1", "--target", "127.0.0.1:1", "--dry-run")
    assert done.returncode == 2 and "exclude each other" in done.stderr, done.stderr
    done = _cli(tmp_path)
    assert done.returncode == 2 and "--deploy-model" in done.stderr, done.stderr


def test_values_file_missing_the_model_store_names_the_value(tmp_path):
    helm()
    done = _cli(tmp_path, "--deploy-model", "ranker@1", "--dry-run")
    assert done.returncode == 2
    assert "modelStore" in done.stderr and "claimName" in done.stderr, done.stderr

