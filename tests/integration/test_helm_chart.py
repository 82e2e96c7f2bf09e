"""The Helm chart, rendered by the real Helm engine and validated as a cluster would.

Every ci/*-values.yaml scenario (and the kind dev values) renders, lints clean in strict mode
and passes strict Kubernetes schemas of the oldest and newest supported versions; bad values
fail with a message that names the value.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from deploy import envoy_chart
from rankserve.tools.stack import envoy_config
from rankserve.tools.stack.local import find_envoy
from tests.support.chart import (
    CHART,
    CLAIMS,
    K8S,
    NAMESPACE,
    RELEASE,
    REPO,
    find,
    helm,
    objects,
    render,
    validate,
)

SCENARIOS = sorted(CHART.glob("ci/*-values.yaml")) + [K8S / "kind" / "values-kind.yaml"]
DASHBOARDS = sorted(CHART.glob("files/dashboards/*.json"))
RULES = CHART / "files" / "alerts" / "rankserve-rules.yaml"


def merged(*layers: dict) -> dict:
    out: dict = {}
    for layer in layers:
        stack = [(out, layer)]
        while stack:
            dst, src = stack.pop()
            for k, v in src.items():
                if isinstance(v, dict) and isinstance(dst.get(k), dict):
                    stack.append((dst[k], v))
                else:
                    dst[k] = copy.deepcopy(v)
    return out


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.name)
def test_scenario_renders_lints_and_validates(scenario: Path) -> None:
    values = yaml.safe_load(scenario.read_text())
    report = helm().lint(str(CHART), values, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems
    objs = objects(render(values))
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount"} <= kinds
    validate(objs)
    for deploy in find(objs, "Deployment"):
        pod = deploy["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
            assert ":" in c["image"] and not c["image"].endswith(":latest"), c["image"]


def test_supported_versions_and_app_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    assert chart["kubeVersion"] == ">=1.27.0-0"


def test_envoy_template_is_fresh() -> None:
    done = subprocess.run([sys.executable, "-m", "deploy.envoy_chart", "--check"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _envoy_yaml(values: dict) -> dict:
    objs = objects(render(values))
    (cm,) = find(objs, "ConfigMap", "envoy")
    return yaml.safe_load(cm["data"]["envoy.yaml"])


def test_envoy_config_is_render_of_the_chart_values() -> None:
    """What the chart deploys is render() of its values: same retries, breakers, stats tags."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    cfg = values["envoy"]["config"]
    host = f"{RELEASE}-rankserve-model-server-headless.{NAMESPACE}.svc.cluster.local"
    opts = envoy_config.EnvoyOptions(
        upstreams=(envoy_config.Upstream(host, values["modelServer"]["grpcPort"]),),
        discovery="STRICT_DNS",
        **{name: cfg[envoy_chart.camel(name)] for name in _scalar_options()},
    )
    assert _envoy_yaml(CLAIMS) == envoy_config.render(opts)


@pytest.mark.parametrize(("endpoint", "host", "port", "discovery"), [
    ("http://jaeger-collector.observability:4317", "jaeger-collector.observability", 4317,
     "STRICT_DNS"),
    ("http://127.0.0.3:4999/", "127.0.0.3", 4999, "STATIC"),
    ("https://otel.example", "otel.example", 4317, "STRICT_DNS"),
])
def test_envoy_traces_to_the_chart_collector(tmp_path, endpoint, host, port, discovery) -> None:
    """tracing.enabled turns Envoy's tracer on with the ranker's collector, following the
    ranker's sampling decision (100%, whatever samplerArg): the same config render() gives for
    that endpoint, and the real Envoy accepts it."""
    values = merged(CLAIMS, {"tracing": {"enabled": True, "otlpEndpoint": endpoint,
                                         "samplerArg": 0.25}})
    got = _envoy_yaml(values)
    tracing = envoy_config.Tracing.from_endpoint(endpoint, 100.0)
    assert (tracing.collector_host, tracing.collector_port, tracing.discovery) == (
        host, port, discovery)
    base = yaml.safe_load((CHART / "values.yaml").read_text())
    svc = f"{RELEASE}-rankserve-model-server-headless.{NAMESPACE}.svc.cluster.local"
    want = envoy_config.render(envoy_config.EnvoyOptions(
        upstreams=(envoy_config.Upstream(svc, base["modelServer"]["grpcPort"]),),
        discovery="STRICT_DNS", tracing=tracing,
        **{name: base["envoy"]["config"][envoy_chart.camel(name)] for name in _scalar_options()},
    ))
    assert got == want
    cfg_path = tmp_path / "envoy.yaml"
    cfg_path.write_text(yaml.safe_dump(got))
    check = subprocess.run([find_envoy(), "--mode", "validate", "-c", str(cfg_path)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_envoy_tracing_off_by_default_and_explicit_collector_wins() -> None:
    assert "tracing" not in str(_envoy_yaml(CLAIMS))
    own = {"collectorHost": "spans.elsewhere", "collectorPort": 4318, "serviceName": "edge",
           "samplingPercent": 1.0, "discovery": "STRICT_DNS"}
    got = _envoy_yaml(merged(CLAIMS, {
        "tracing": {"enabled": True, "otlpEndpoint": "http://jaeger:4317"},
        "envoy": {"config": {"tracing": own}}}))
    (collector,) = [c for c in got["static_resources"]["clusters"]
                    if c["name"] == envoy_config.TRACE_CLUSTER]
    addr = collector["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert addr["socket_address"] == {"address": "spans.elsewhere", "port_value": 4318}


def _scalar_options() -> list[str]:
    """EnvoyOptions fields the chart templates as plain values."""
    return list(envoy_chart.templated_options())


def test_envoy_values_default_to_the_local_stack() -> None:
    """envoy.config holds exactly the templated options, each defaulting to the local stack's
    value except the bind addresses and ports."""
    cfg = yaml.safe_load((CHART / "values.yaml").read_text())["envoy"]["config"]
    # Options of a dataclass type (tracing) are one map, empty by default (off).
    assert sorted(cfg) == sorted({v.split(".")[0] for v in envoy_chart.templated_values()})
    assert cfg["tracing"] == {}
    defaults = envoy_config.EnvoyOptions(upstreams=())
    chart_own = {"listenHost", "listenPort", "adminHost", "adminPort"}
    for name in _scalar_options():
        key = envoy_chart.camel(name)
        if key not in chart_own:
            assert cfg[key] == getattr(defaults, name), key


def test_envoy_upstreams_from_values_and_tuned_numbers() -> None:
    values = merged(CLAIMS, {"envoy": {
        "upstreams": [{"host": "127.0.0.7", "port": 8500}, {"host": "127.0.0.8", "port": 8510}],
        "config": {"numRetries": 4, "maxRetries": 77, "connectTimeoutMs": 1500}}})
    cfg = _envoy_yaml(values)
    (cluster,) = cfg["static_resources"]["clusters"]
    addrs = [e["endpoint"]["address"]["socket_address"]
             for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert addrs == [{"address": "127.0.0.7", "port_value": 8500},
                     {"address": "127.0.0.8", "port_value": 8510}]
    assert cluster["type"] == "STRICT_DNS"
    assert cluster["connect_timeout"] == "1.5s"
    assert cluster["circuit_breakers"]["thresholds"][0]["max_retries"] == 77
    route = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    assert route["retry_policy"]["num_retries"] == 4


def _comment_keys(text: str) -> set[str]:
    return set(re.findall(r"^\s*# ([A-Za-z0-9_.]+) -- ", text, flags=re.M))


def test_every_value_is_documented() -> None:
    """Each leaf value (or a map/list value as a whole) has a comment starting with its key."""
    text = (CHART / "values.yaml").read_text()
    documented = _comment_keys(text)
    values = yaml.safe_load(text)

    def leaves(node: dict, prefix: str = ""):
        for k, v in node.items():
            path = f"{prefix}{k}"
            if path in documented:
                continue
            if isinstance(v, dict) and v:
                yield from leaves(v, path + ".")
            else:
                yield path

    missing = list(leaves(values))
    assert not missing, f"values without a '# <key> -- ' comment: {missing}"


def test_config_changes_roll_the_pods() -> None:
    def checksums(values: dict) -> dict[str, str]:
        objs = objects(render(values))
        return {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]
                for d in find(objs, "Deployment")}

    before = checksums(CLAIMS)
    after = checksums(merged(CLAIMS, {"ranker": {"config": {"batchSize": 10}},
                                      "envoy": {"config": {"numRetries": 1}},
                                      "modelServer": {"batching": {"maxBatchSize": 500}}}))
    for name in before:
        assert before[name] != after[name], f"{name} would not roll on a config change"


def test_gpu_model_servers_and_cpu_switch() -> None:
    gpu = objects(render(merged(CLAIMS, {"modelServer": {"gpu": {"count": 2}}})))
    (dep,) = find(gpu, "Deployment", "model-server")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "tensorflow/serving:2.21.0-gpu"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert "--monitoring_config_file=/etc/rankserve/serving/monitoring.config" in c["args"]
    assert "--enable_batching=true" in c["args"]
    (serving,) = [o for o in find(gpu, "ConfigMap", "model-server")
                  if "monitoring.config" in o["data"]]
    assert 'path: "/monitoring/prometheus/metrics"' in serving["data"]["monitoring.config"]

    cpu = objects(render(merged(CLAIMS, {"modelServer": {"runtime": "rankserve"}})))
    (dep,) = find(cpu, "Deployment", "model-server")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "ghcr.io/rankserve/model-server:0.1.0"
    assert c["args"][0] == "model-server"
    assert "--model-config-file=/etc/rankserve/models/models.config" in c["args"]
    assert "nvidia.com/gpu" not in str(c["resources"]) and "nodeSelector" not in pod


def test_profiler_value_gives_rankserve_its_port_and_leaves_tf_serving_alone() -> None:
    def container(values: dict) -> dict:
        (dep,) = find(objects(render(merged(CLAIMS, values))), "Deployment", "model-server")
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        return c

    on = {"enabled": True, "port": 8504}
    c = container({"modelServer": {"runtime": "rankserve", "profiler": on}})
    assert "--profiler-port=8504" in c["args"]
    assert {"name": "profiler", "containerPort": 8504, "protocol": "TCP"} in c["ports"]
    off = container({"modelServer": {"runtime": "rankserve"}})
    assert not [a for a in off["args"] if a.startswith("--profiler-port")]
    assert "profiler" not in [p["name"] for p in off["ports"]]
    # TF Serving serves the profiler on its gRPC port already: nothing changes.
    tfs = container({"modelServer": {"profiler": on}})
    assert tfs["args"] == container({})["args"]
    assert "profiler" not in [p["name"] for p in tfs["ports"]]


def test_models_from_object_store_copy_in_an_init_container() -> None:
    objs = objects(render(merged(CLAIMS, {"modelServer": {"modelStore": {
        "source": "objectStore", "uri": "gs://bucket/models"}}})))
    (dep,) = find(objs, "Deployment", "model-server")
    pod = dep["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    env = {e["name"]: e["value"] for e in init["env"]}
    assert env["SOURCE_URI"] == "gs://bucket/models"
    (vol,) = [v for v in pod["volumes"] if v["name"] == "models"]
    assert "emptyDir" in vol


def test_tracing_env_of_the_ranker() -> None:
    objs = objects(render(merged(CLAIMS, {"tracing": {
        "enabled": True, "otlpEndpoint": "http://otel:4317", "samplerArg": 0.25,
        "keepSlowerThanMs": 250}})))
    (cm,) = find(objs, "ConfigMap", "ranker")
    assert cm["data"]["RANKSERVE_RANKER_TRACE_KEEP_SLOWER_THAN_MS"] == "250"
    assert cm["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel:4317"
    assert cm["data"]["OTEL_SERVICE_NAME"] == "ranker"
    assert cm["data"]["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert cm["data"]["OTEL_TRACES_SAMPLER_ARG"] == "0.25"


def test_rankserve_model_servers_trace_with_the_ranker_and_hold_for_the_keep_policy() -> None:
    def env(tracing: dict, runtime: str = "rankserve") -> dict[str, str]:
        objs = objects(render(merged(CLAIMS, {"modelServer": {"runtime": runtime},
                                              "tracing": tracing})))
        (deployment,) = find(objs, "Deployment", "model-server")
        (c,) = deployment["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e["value"] for e in c.get("env", [])}

    on = {"enabled": True, "otlpEndpoint": "http://otel:4317", "samplerArg": 0.05}
    traced = env(on)
    assert traced["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel:4317"
    assert traced["OTEL_SERVICE_NAME"] == "model-server"
    assert traced["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert traced["OTEL_TRACES_SAMPLER_ARG"] == "0.05"
    assert "RANKSERVE_MODELSERVER_TRACE_HOLD_S" not in traced
    assert env({**on, "keepSlowerThanMs": 250})["RANKSERVE_MODELSERVER_TRACE_HOLD_S"] == "10"
    assert not any(k.startswith("OTEL_") for k in env({"enabled": False}))
    assert not any(k.startswith("OTEL_") for k in env(on, runtime="tfServing"))


def test_rankserve_model_servers_run_the_named_models_on_onnx_runtime() -> None:
    def pod(rankserve: dict) -> dict:
        objs = objects(render(merged(CLAIMS, {"modelServer": {"runtime": "rankserve",
                                                              "rankserve": rankserve}})))
        (deployment,) = find(objs, "Deployment", "model-server")
        return deployment["spec"]["template"]["spec"]

    named = pod({"onnxModels": ["ranker", "tower"]})
    (c,) = named["containers"]
    assert "--onnx-models=ranker,tower" in c["args"]
    # Conversions are kept on a volume of the pod: a restarted container does not convert.
    assert "--onnx-cache-dir=/var/cache/rankserve/onnx" in c["args"]
    assert {"name": "onnx-cache", "mountPath": "/var/cache/rankserve/onnx"} in c["volumeMounts"]
    assert {"name": "onnx-cache", "emptyDir": {}} in named["volumes"]
    plain = pod({})
    assert not any(a.startswith("--onnx") for a in plain["containers"][0]["args"])
    assert not any(v["name"] == "onnx-cache" for v in plain["volumes"])


def test_one_dashboard_configmap_per_file() -> None:
    objs = objects(render(merged(CLAIMS, {"dashboards": {
        "enabled": True, "label": "grafana_dashboard", "labelValue": "yes"}})))
    maps = find(objs, "ConfigMap", "dashboards")
    assert len(maps) == len(DASHBOARDS)
    shipped = {name: body for m in maps for name, body in m["data"].items()}
    for path in DASHBOARDS:
        assert shipped[path.name] == path.read_text().rstrip("\n")
    for m in maps:
        assert m["metadata"]["labels"]["grafana_dashboard"] == "yes"


def test_prometheus_rule_carries_the_rule_file_groups() -> None:
    values = merged(CLAIMS, {"metrics": {"prometheusRule": {"enabled": True}}})
    if not RULES.is_file():
        with pytest.raises(helm().HelmRenderError, match="files/alerts/rankserve-rules.yaml"):
            render(values)
        return
    objs = objects(render(values))
    (rule,) = find(objs, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    validate([rule])


def test_network_policies_chain_frontend_ranker_envoy_model_servers() -> None:
    objs = objects(render(merged(CLAIMS, {"networkPolicy": {"enabled": True}})))
    pols = {p["metadata"]["labels"]["app.kubernetes.io/component"]: p["spec"]
            for p in find(objs, "NetworkPolicy")}
    assert set(pols) == {"ranker", "envoy", "model-server"}

    def sources(spec: dict) -> list:
        return [f.get("podSelector", {}).get("matchLabels", {}).get(
            "app.kubernetes.io/component", f.get("podSelector", {}).get("matchLabels"))
            for rule in spec["ingress"] for f in rule["from"] if "podSelector" in f]

    assert sources(pols["ranker"]) == [{"app.kubernetes.io/name": "search-frontend"}]
    assert sources(pols["envoy"]) == ["ranker"]
    assert sources(pols["model-server"]) == ["envoy"]


BAD_VALUES = [
    ({"ranker": {"grpcPort": "eighty"}}, "grpcPort"),
    ({"ranker": {"replicas": 3}}, "replicas"),
    ({"modelServer": {"gpu": {"count": -1}}}, "count"),
    ({"modelServer": {"runtime": "triton"}}, "runtime"),
    ({"envoy": {"image": {"tag": "latest"}}}, "tag"),
    ({"modelServer": {"autoscaling": {"metric": "latency"}}}, "/modelServer/autoscaling/metric"),
    ({"modelServer": {"autoscaling": {"targetInFlightPerPod": 0}}}, "targetInFlightPerPod"),
    ({"modelServer": {"autoscaling": {"behavior": {"scaleUp": {"selectPolicy": "Fastest"}}}}},
     "selectPolicy"),
    ({"ranker": {"autoscaling": {"behavior": {"scaleDown": {"policies": [
        {"type": "Pods", "value": 0, "periodSeconds": 60}]}}}}}, "/policies/0/value"),
    ({"ranker": {"autoscaling": {"behavior": {"scaleDown": {"policies": [
        {"type": "Replicas", "value": 1, "periodSeconds": 60}]}}}}}, "/policies/0/type"),
    ({"modelServer": {"podDisruptionBudget": {"minAvailable": "50%"}}}, "minAvailable"),
    ({"modelServer": {"drainSeconds": -1}}, "/modelServer/drainSeconds"),
    ({"modelServer": {"graceSeconds": "ten"}}, "/modelServer/graceSeconds"),
    ({"ranker": {"config": {"drainSeconds": -5}}}, "/ranker/config/drainSeconds"),
]


@pytest.mark.parametrize(("bad", "named"), BAD_VALUES, ids=[b[1] for b in BAD_VALUES])
def test_schema_rejects_bad_values(bad: dict, named: str) -> None:
    with pytest.raises(helm().HelmValuesError) as err:
        render(merged(CLAIMS, bad))
    assert named in str(err.value)


MISSING = [
    ({"ranker": {"catalog": {"claimName": ""}}}, "claimName"),
    ({"modelServer": {"modelStore": {"source": "objectStore"}}}, "uri"),
    ({"tracing": {"enabled": True}}, "otlpEndpoint"),
]


@pytest.mark.parametrize(("values", "named"), MISSING, ids=[m[1] for m in MISSING])
def test_missing_required_values_are_named(values: dict, named: str) -> None:
    h = helm()
    with pytest.raises((h.HelmValuesError, h.HelmRenderError)) as err:
        render(merged(CLAIMS, values))
    assert named in str(err.value)
