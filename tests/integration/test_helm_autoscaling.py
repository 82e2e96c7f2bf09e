"""Model-server autoscaling, disruption budgets and drain in the Helm chart.

What a user checks before trusting the autoscaler with GPU pods: the HPA scales the model-server
Deployment on the metric they chose, at their target and behavior; the Deployment leaves the
replica count to it; the budget and the autoscaler's floor agree; a stopping pod drains before
it stops; and the prometheus-adapter rules the chart ships serve exactly the metric names the
HPA asks for, from the series the model servers export.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client import CollectorRegistry

from rankserve.server.modelserver.metrics import ModelServerMetrics
from tests.integration.test_helm_chart import merged
from tests.support.chart import CHART, CLAIMS, find, helm, objects, render, validate

ADAPTER_RULES = CHART / "files" / "prometheus-adapter-rules.yaml"
METRIC_NAMES = {
    "inFlight": "rankserve_model_server_predicts_in_flight",
    "predictsPerSecond": "rankserve_model_server_predicts_per_second",
}
MODEL_SERVER = "rs-rankserve-model-server"


def _render(values: dict) -> list[dict]:
    return objects(render(merged(CLAIMS, values)))


def _hpa(objs: list[dict], component: str) -> dict:
    (hpa,) = find(objs, "HorizontalPodAutoscaler", component)
    return hpa


def _pod(objs: list[dict], component: str) -> dict:
    (dep,) = find(objs, "Deployment", component)
    return dep["spec"]["template"]["spec"]


def _autoscaled(runtime: str, **autoscaling: object) -> dict:
    return {"modelServer": {"runtime": runtime,
                            "autoscaling": {"enabled": True, **autoscaling}}}


@pytest.mark.parametrize(("runtime", "metric", "target_key", "target"), [
    ("rankserve", "inFlight", "targetInFlightPerPod", 24),
    ("rankserve", "predictsPerSecond", "targetPredictsPerSecondPerPod", 300),
    ("tfServing", "predictsPerSecond", "targetPredictsPerSecondPerPod", 250),
])
def test_model_server_hpa_scales_the_deployment_on_the_chosen_pod_metric(
        runtime, metric, target_key, target) -> None:
    objs = _render(_autoscaled(runtime, metric=metric, minReplicas=3, maxReplicas=9,
                               **{target_key: target}))
    hpa = _hpa(objs, "model-server")
    validate([hpa])
    (dep,) = find(objs, "Deployment", "model-server")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 9)
    assert hpa["spec"]["metrics"] == [{"type": "Pods", "pods": {
        "metric": {"name": METRIC_NAMES[metric]},
        "target": {"type": "AverageValue", "averageValue": str(target)}}}]


@pytest.mark.parametrize(("runtime", "metric"), [("rankserve", "inFlight"),
                                               ("tfServing", "predictsPerSecond")])
def test_default_metric_follows_the_runtime(runtime, metric) -> None:
    """Autoscaling on with no metric chosen renders for either runtime: the in-flight gauge
    where the model server exports it, the Predict rate for TF Serving."""
    rendered = render(merged(CLAIMS, _autoscaled(runtime)))
    hpa = _hpa(objects(rendered), "model-server")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == METRIC_NAMES[metric]
    assert f"(autoscaled on {metric})" in rendered["rankserve/templates/NOTES.txt"]


def test_model_server_hpa_on_cpu() -> None:
    objs = _render(_autoscaled("rankserve", metric="cpu", targetCPUUtilizationPercentage=60))
    assert _hpa(objs, "model-server")["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}]


def test_default_behavior_scales_up_fast_and_down_slowly_on_both_hpas() -> None:
    objs = _render(_autoscaled("rankserve"))
    for component in ("model-server", "ranker"):
        behavior = _hpa(objs, component)["spec"]["behavior"]
        up, down = behavior["scaleUp"], behavior["scaleDown"]
        assert up["stabilizationWindowSeconds"] == 0 and up["selectPolicy"] == "Max"
        assert {(p["type"], p["value"], p["periodSeconds"]) for p in up["policies"]} == {
            ("Percent", 100, 30), ("Pods", 4, 30)}
        assert down["stabilizationWindowSeconds"] == 300
        assert down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]


def test_behavior_values_pass_through_to_each_hpa() -> None:
    up = {"stabilizationWindowSeconds": 15, "selectPolicy": "Min",
          "policies": [{"type": "Pods", "value": 6, "periodSeconds": 15}]}
    down = {"stabilizationWindowSeconds": 900, "selectPolicy": "Disabled",
            "policies": [{"type": "Percent", "value": 10, "periodSeconds": 120}]}
    objs = _render(merged(_autoscaled("rankserve"), {
        "modelServer": {"autoscaling": {"behavior": {"scaleUp": up, "scaleDown": down}}},
        "ranker": {"autoscaling": {"behavior": {"scaleUp": down, "scaleDown": up}}}}))
    assert _hpa(objs, "model-server")["spec"]["behavior"] == {"scaleUp": up, "scaleDown": down}
    assert _hpa(objs, "ranker")["spec"]["behavior"] == {"scaleUp": down, "scaleDown": up}
    validate(find(objs, "HorizontalPodAutoscaler"))


def test_behavior_left_empty_renders_none() -> None:
    empty = {"behavior": {"scaleUp": None, "scaleDown": None}}
    objs = _render(merged(_autoscaled("rankserve"), {"modelServer": {"autoscaling": empty},
                                                      "ranker": {"autoscaling": empty}}))
    for hpa in find(objs, "HorizontalPodAutoscaler"):
        assert "behavior" not in hpa["spec"], hpa["metadata"]["name"]


def test_deployments_leave_replicas_to_their_autoscalers() -> None:
    on = _render(_autoscaled("rankserve"))
    for component in ("model-server", "ranker"):
        (dep,) = find(on, "Deployment", component)
        assert "replicas" not in dep["spec"], component
    off = _render({"modelServer": {"replicaCount": 3},
                   "ranker": {"autoscaling": {"enabled": False}, "replicaCount": 4}})
    assert not find(off, "HorizontalPodAutoscaler")
    replicas = {c: find(off, "Deployment", c)[0]["spec"]["replicas"]
                for c in ("model-server", "ranker")}
    assert replicas == {"model-server": 3, "ranker": 4}


def test_model_server_budget_selects_the_model_server_pods() -> None:
    objs = _render({"modelServer": {"podDisruptionBudget": {"minAvailable": 2},
                                    "replicaCount": 3}})
    (pdb,) = find(objs, "PodDisruptionBudget", "model-server")
    validate([pdb])
    (dep,) = find(objs, "Deployment", "model-server")
    assert pdb["spec"] == {"minAvailable": 2, "selector": dep["spec"]["selector"]}
    off = _render({"modelServer": {"podDisruptionBudget": {"enabled": False}}})
    assert not find(off, "PodDisruptionBudget", "model-server")


@pytest.mark.parametrize(("values", "named"), [
    (merged(_autoscaled("rankserve", minReplicas=1),
            {"modelServer": {"podDisruptionBudget": {"minAvailable": 2}}}),
     ["modelServer.autoscaling.minReplicas (1)",
      "modelServer.podDisruptionBudget.minAvailable (2)"]),
    ({"modelServer": {"replicaCount": 1, "podDisruptionBudget": {"minAvailable": 2}}},
     ["modelServer.replicaCount (1)", "modelServer.podDisruptionBudget.minAvailable (2)"]),
    (_autoscaled("tfServing", metric="inFlight"),
     ["modelServer.autoscaling.metric inFlight", "modelServer.runtime",
      "predictsPerSecond"]),
    (_autoscaled("rankserve", minReplicas=5, maxReplicas=4),
     ["modelServer.autoscaling.minReplicas (5)", "maxReplicas (4)"]),
], ids=["min-replicas-below-budget", "replicas-below-budget", "in-flight-on-tf-serving",
        "min-above-max"])
def test_render_fails_naming_the_values_that_disagree(values: dict, named: list[str]) -> None:
    with pytest.raises(helm().HelmRenderError) as err:
        render(merged(CLAIMS, values))
    for text in named:
        assert text in str(err.value)


def test_budget_equal_to_the_floor_renders_and_notes_warn() -> None:
    values = merged(CLAIMS, _autoscaled("rankserve", minReplicas=2),
                    {"modelServer": {"podDisruptionBudget": {"minAvailable": 2}}})
    rendered = render(values)
    (notes,) = [text for path, text in rendered.items() if path.endswith("NOTES.txt")]
    assert "node drains wait" in notes and "modelServer.autoscaling.minReplicas" in notes
    assert find(objects(rendered), "PodDisruptionBudget", "model-server")


def test_notes_say_how_to_serve_the_custom_metric() -> None:
    rendered = render(merged(CLAIMS, _autoscaled("tfServing", metric="predictsPerSecond")))
    (notes,) = [text for path, text in rendered.items() if path.endswith("NOTES.txt")]
    assert "prometheus-community/prometheus-adapter" in notes
    assert "files/prometheus-adapter-rules.yaml" in notes
    assert "rankserve_model_server_predicts_per_second" in notes


def test_rankserve_model_server_drains_itself() -> None:
    objs = _render({"modelServer": {"runtime": "rankserve", "drainSeconds": 12,
                                    "graceSeconds": 7}})
    pod = _pod(objs, "model-server")
    (c,) = pod["containers"]
    assert "--drain-s=12" in c["args"] and "--grace-s=7" in c["args"]
    assert "lifecycle" not in c
    assert pod["terminationGracePeriodSeconds"] == 12 + 7 + 10


def test_tf_serving_gets_a_pre_stop_sleep_instead() -> None:
    objs = _render({"modelServer": {"runtime": "tfServing", "drainSeconds": 12,
                                    "graceSeconds": 7.5}})
    validate(find(objs, "Deployment", "model-server"))
    pod = _pod(objs, "model-server")
    (c,) = pod["containers"]
    assert c["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "12"]}}}
    assert not [a for a in c["args"] if a.startswith(("--drain-s", "--grace-s"))]
    # Fractions round up: the kubelet takes whole seconds.
    assert pod["terminationGracePeriodSeconds"] == 30
    c0 = _pod(_render({"modelServer": {"drainSeconds": 0}}), "model-server")["containers"][0]
    assert "lifecycle" not in c0


def test_ranker_drain_in_its_config_and_grace_period() -> None:
    objs = _render({"ranker": {"config": {"drainSeconds": 6, "graceSeconds": 4}}})
    (cm,) = find(objs, "ConfigMap", "ranker")
    assert cm["data"]["RANKSERVE_RANKER_DRAIN_S"] == "6"
    assert cm["data"]["RANKSERVE_RANKER_GRACE_S"] == "4"
    assert _pod(objs, "ranker")["terminationGracePeriodSeconds"] == 6 + 4 + 10
    defaults = _render({})
    (cm,) = find(defaults, "ConfigMap", "ranker")
    assert cm["data"]["RANKSERVE_RANKER_DRAIN_S"] == "5"
    assert _pod(defaults, "ranker")["terminationGracePeriodSeconds"] == 5 + 5 + 10
    assert _pod(defaults, "model-server")["terminationGracePeriodSeconds"] == 10 + 10 + 10


# -- the prometheus-adapter rules the chart ships ----------------------------------------------

def adapter_rules() -> list[dict]:
    return yaml.safe_load(ADAPTER_RULES.read_text())["rules"]["custom"]


def series_names(series_query: str) -> set[str]:
    """Metric names a rule's seriesQuery selects: a leading name, or __name__=~"a|b"."""
    m = re.search(r'__name__=~"([^"]+)"', series_query)
    if m:
        return set(m.group(1).split("|"))
    return {re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", series_query).group(0)}


def substitute(query: str, series: str, matchers: str, group_by: str) -> str:
    """What the adapter sends Prometheus for one rule's metricsQuery."""
    return (query.replace("<<.Series>>", series).replace("<<.LabelMatchers>>", matchers)
            .replace("<<.GroupBy>>", group_by))


def test_adapter_rules_serve_exactly_the_hpa_metric_names() -> None:
    rules = adapter_rules()
    served = [r["name"]["as"] for r in rules]
    assert sorted(served) == sorted(set(served)), "one rule per metric name (the adapter " \
        "keeps only the last rule naming a metric)"
    hpa_names = set()
    for runtime, metric in [("rankserve", "inFlight"), ("rankserve", "predictsPerSecond"),
                            ("tfServing", "predictsPerSecond")]:
        hpa = _hpa(_render(_autoscaled(runtime, metric=metric)), "model-server")
        hpa_names.add(hpa["spec"]["metrics"][0]["pods"]["metric"]["name"])
    assert set(served) == hpa_names == set(METRIC_NAMES.values())


@pytest.mark.parametrize("rule", adapter_rules(), ids=lambda r: r["name"]["as"])
def test_adapter_rule_is_well_formed(rule: dict) -> None:
    assert set(rule) == {"seriesQuery", "resources", "name", "metricsQuery"}
    # Per pod, in the pod's namespace: the labels a ServiceMonitor scrape carries.
    assert rule["resources"] == {"overrides": {"namespace": {"resource": "namespace"},
                                               "pod": {"resource": "pod"}}}
    assert 'namespace!=""' in rule["seriesQuery"] and 'pod!=""' in rule["seriesQuery"]
    names = series_names(rule["seriesQuery"])
    for name in names:
        assert re.fullmatch(rule["name"]["matches"], name), (name, rule["name"]["matches"])
    query = rule["metricsQuery"]
    assert "<<.LabelMatchers>>" in query and "<<.GroupBy>>" in query
    # Every counter or gauge the query reads is one the seriesQuery discovers.
    read = set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", query.replace("<<.Series>>{", "")))
    assert read <= names, read - names
    assert "<<.Series>>" in query or read == names


def test_adapter_rules_read_what_the_model_server_exports() -> None:
    """The rankserve series and labels the rules name exist in the model server's registry."""
    registry = CollectorRegistry()
    metrics = ModelServerMetrics(registry)
    metrics.requests.labels("Predict", "ranker", "1", "OK").inc()
    metrics.in_flight.labels("Predict").inc()
    exported = {(s.name, tuple(sorted(s.labels))) for family in registry.collect()
                for s in family.samples}
    assert ("rankserve_modelserver_requests_in_flight", ("method",)) in exported
    assert ("rankserve_modelserver_requests_total",
            ("method", "model", "status", "version")) in exported
    rankserve_series = {n for r in adapter_rules() for n in series_names(r["seriesQuery"])
                        if n.startswith("rankserve_")}
    assert rankserve_series <= {name for name, _ in exported}


def test_adapter_queries_are_valid_promql(tmp_path) -> None:
    """Substituted as the adapter would, each query parses (promtool, when installed)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian/Ubuntu: apt-get install prometheus)")
    groups = [{"name": "adapter", "rules": [
        {"record": f"check:{r['name']['as']}",
         "expr": substitute(r["metricsQuery"], sorted(series_names(r["seriesQuery"]))[0],
                            'namespace="ranking",pod=~"rs-a|rs-b"', "pod")}
        for r in adapter_rules()]}]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
