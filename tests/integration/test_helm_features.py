"""The chart deploying a team's own model: its feature spec, its feature stores (tables or
Redis) and the optional in-cluster Redis.

Rendered by the real Helm engine and validated strictly; the rendered spec is loaded by the
ranker's own loader, the ranker's environment is built as the kubelet builds it (ConfigMap,
then env with $(VAR) expanded) and read by RankerSettings, and the Redis URLs are parsed by
redis-py the way the ranker's client parses them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from redis.connection import parse_url

from rankserve.ranker.redis_features import redis_address
from rankserve.ranker.spec import load_spec
from rankserve.server.ranking.settings import RankerSettings
from tests.integration.test_helm_chart import merged
from tests.support.chart import (
    CHART,
    CLAIMS,
    NAMESPACE,
    container_env,
    find,
    helm,
    objects,
    render,
    validate,
)

REDIS_SCENARIO = CHART / "ci" / "byo-redis-values.yaml"
TABLES_SCENARIO = CHART / "ci" / "byo-tables-values.yaml"
CHART_REDIS = f"rs-rankserve-redis.{NAMESPACE}.svc.cluster.local"
SPEC = yaml.safe_load(REDIS_SCENARIO.read_text())["ranker"]["spec"]
MANAGED = {"source": "redis", "address": "rediss://features.redis.example:6380/2",
           "username": "ranker", "passwordSecret": {"name": "managed-redis", "key": "token"}}


def scenario(path: Path, *overrides: dict) -> dict:
    return merged(yaml.safe_load(path.read_text()), *overrides)


def ranker(objs: list[dict]) -> tuple[dict, dict, dict[str, str]]:
    """The ranker's pod spec, its container and its environment as the kubelet builds it."""
    (dep,) = find(objs, "Deployment", "ranker")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    maps = {c["metadata"]["name"]: c["data"] for c in find(objs, "ConfigMap")}
    return pod, container, container_env(container, maps)


def settings_of(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> RankerSettings:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return RankerSettings()


@pytest.mark.parametrize("path", [REDIS_SCENARIO, TABLES_SCENARIO], ids=lambda p: p.name)
def test_scenario_lints_and_validates(path: Path) -> None:
    values = scenario(path)
    report = helm().lint(str(CHART), values, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems
    validate(objects(render(values)))


@pytest.mark.parametrize("path", [REDIS_SCENARIO, TABLES_SCENARIO], ids=lambda p: p.name)
def test_spec_configmap_is_the_value_mounted_where_the_ranker_reads_it(
        path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = scenario(path)
    objs = objects(render(values))
    pod, c, env = ranker(objs)
    (cm,) = [m for m in find(objs, "ConfigMap", "ranker")
             if m["metadata"]["name"] == "rs-rankserve-ranker-spec"]
    assert yaml.safe_load(cm["data"]["spec.yaml"]) == values["ranker"]["spec"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "spec"]
    assert vol["configMap"]["name"] == cm["metadata"]["name"]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "spec"]
    assert mount["readOnly"] is True and "subPath" not in mount
    assert settings_of(env, monkeypatch).spec == mount["mountPath"] + "/spec.yaml"
    (tmp_path / "spec.yaml").write_text(cm["data"]["spec.yaml"])
    spec = load_spec(tmp_path / "spec.yaml")
    assert [i.name for i in spec.inputs] == [i["name"] for i in values["ranker"]["spec"]["inputs"]]


def test_spec_edits_roll_the_rankers_and_no_spec_is_todays_render() -> None:
    def annotations(values: dict) -> dict:
        (dep,) = find(objects(render(values)), "Deployment", "ranker")
        return dep["spec"]["template"]["metadata"]["annotations"]

    base = annotations(scenario(REDIS_SCENARIO))
    edited = annotations(scenario(REDIS_SCENARIO, {"ranker": {"spec": {"output": "logits"}}}))
    assert base["checksum/spec"] != edited["checksum/spec"]
    assert base["checksum/config"] == edited["checksum/config"]

    objs = objects(render(CLAIMS))
    pod, c, env = ranker(objs)
    assert "checksum/spec" not in annotations(CLAIMS)
    assert not [k for k in env if k.endswith(("_SPEC", "_FEATURES"))]
    assert "env" not in c
    assert [v["name"] for v in pod["volumes"]] == ["catalog", "tmp"]
    assert not find(objs, "ConfigMap", "redis") and not find(objs, "Deployment", "redis")


def test_redis_stores_get_the_chart_redis_with_the_secret_password(
        monkeypatch: pytest.MonkeyPatch) -> None:
    objs = objects(render(scenario(REDIS_SCENARIO)))
    pod, c, env = ranker(objs)
    settings = settings_of(env, monkeypatch)
    assert settings.catalog_dir == "" and "catalog" not in [v["name"] for v in pod["volumes"]]
    for url in (settings.item_features, settings.user_features):
        assert parse_url(url) == {"host": CHART_REDIS, "port": 6379, "db": 0,
                                  "password": "secret.rankserve-redis.password"}
        assert redis_address(url) == f"redis://{CHART_REDIS}:6379/0"


def test_a_managed_redis_address_user_and_password(monkeypatch: pytest.MonkeyPatch) -> None:
    values = scenario(REDIS_SCENARIO, {"ranker": {"itemFeatures": MANAGED,
                                                  "userFeatures": MANAGED},
                                       "redis": {"enabled": False}})
    objs = objects(render(values))
    validate(objs)
    assert not find(objs, "Deployment", "redis") and not find(objs, "Service", "redis")
    _, _, env = ranker(objs)
    settings = settings_of(env, monkeypatch)
    parsed = parse_url(settings.item_features)
    assert parsed["connection_class"].__name__ == "SSLConnection"
    assert {k: parsed[k] for k in ("host", "port", "db", "username", "password")} == {
        "host": "features.redis.example", "port": 6380, "db": 2, "username": "ranker",
        "password": "secret.managed-redis.token"}
    (policy,) = find(objs, "NetworkPolicy", "ranker")
    assert {"ports": [{"port": 6380, "protocol": "TCP"}]} in policy["spec"]["egress"]


def test_redis_without_a_password_goes_through_the_configmap() -> None:
    values = scenario(REDIS_SCENARIO, {"redis": {"passwordSecret": {"name": ""}}})
    objs = objects(render(values))
    _, c, _ = ranker(objs)
    assert "env" not in c
    (cm,) = [m for m in find(objs, "ConfigMap", "ranker")
             if m["metadata"]["name"] == "rs-rankserve-ranker"]
    assert cm["data"]["RANKSERVE_RANKER_ITEM_FEATURES"] == f"redis://{CHART_REDIS}:6379/0"
    (dep,) = find(objs, "Deployment", "redis")
    (redis,) = dep["spec"]["template"]["spec"]["containers"]
    assert "--protected-mode" in redis["args"] and "--requirepass" not in redis["args"]


@pytest.mark.parametrize("stores", [
    {"redis": {"enabled": True}},
    {"ranker": {"itemFeatures": MANAGED}},
    {"ranker": {"userFeatures": MANAGED}},
], ids=["chart-redis", "managed-item", "managed-user"])
def test_the_password_is_never_written_into_a_configmap_or_the_pod_spec(stores: dict) -> None:
    objs = objects(render(scenario(REDIS_SCENARIO, stores)))
    credentials = re.compile(r"rediss?://[^/\s\"]*@")
    for cm in find(objs, "ConfigMap"):
        for key, value in cm["data"].items():
            assert not credentials.search(value), f"{cm['metadata']['name']}/{key}: {value}"
            assert "PASSWORD" not in key
    for dep in find(objs, "Deployment"):
        for c in dep["spec"]["template"]["spec"]["containers"]:
            for var in c.get("env", []):
                if "PASSWORD" in var["name"] or var["name"] == "REDISCLI_AUTH":
                    assert set(var) == {"name", "valueFrom"}
                    assert set(var["valueFrom"]) == {"secretKeyRef"}
                for url in credentials.findall(var.get("value", "")):
                    assert re.fullmatch(r"rediss?://[a-z]*:\$\([A-Z_]+\)@", url), url
            for arg in c.get("args", []):
                assert "PASSWORD" not in arg or arg == "$(REDIS_PASSWORD)"


def test_tables_stores_share_one_read_only_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    objs = objects(render(scenario(TABLES_SCENARIO)))
    pod, c, env = ranker(objs)
    (vol,) = [v for v in pod["volumes"] if v["name"] == "feature-tables"]
    assert vol["persistentVolumeClaim"] == {"claimName": "rankserve-features", "readOnly": True}
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "feature-tables"]
    assert mount["readOnly"] is True
    settings = settings_of(env, monkeypatch)
    assert settings.item_features == settings.user_features == mount["mountPath"] + "/current"
    assert settings.catalog_dir == "/data/catalog"


def test_tables_on_two_claims_and_catalog_user_features(monkeypatch: pytest.MonkeyPatch) -> None:
    two = objects(render(scenario(TABLES_SCENARIO, {"ranker": {"userFeatures": {
        "claimName": "user-features", "subPath": ""}}})))
    validate(two)
    pod, _, env = ranker(two)
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims == {"catalog": "rankserve-catalog", "feature-tables": "rankserve-features",
                      "user-feature-tables": "user-features"}
    settings = settings_of(env, monkeypatch)
    assert settings.user_features == "/data/user-feature-tables"
    mixed = objects(render(scenario(TABLES_SCENARIO, {"ranker": {"userFeatures": {
        "source": "catalog"}}})))
    _, _, env = ranker(mixed)
    assert "RANKSERVE_RANKER_USER_FEATURES" not in env
    assert env["RANKSERVE_RANKER_ITEM_FEATURES"] == "/data/feature-tables/current"


def test_chart_redis_pod_volume_probes_and_network_policies() -> None:
    objs = objects(render(scenario(REDIS_SCENARIO)))
    (dep,) = find(objs, "Deployment", "redis")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+(-alpine)?", c["image"])
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["args"][:5] == ["redis-server", "--port", "6379", "--dir", "/data"]
    assert "--appendonly" in c["args"] and c["args"][c["args"].index("--appendonly") + 1] == "yes"
    assert {"readinessProbe", "livenessProbe"} <= set(c)
    assert c["resources"]["limits"]["memory"]
    (data,) = [v for v in pod["volumes"] if v["name"] == "data"]
    (pvc,) = find(objs, "PersistentVolumeClaim", "redis")
    assert data["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "20Gi"
    (svc,) = find(objs, "Service", "redis")
    assert svc["spec"]["ports"][0]["port"] == 6379

    pols = {p["metadata"]["labels"]["app.kubernetes.io/component"]: p["spec"]
            for p in find(objs, "NetworkPolicy")}
    (rule,) = pols["redis"]["ingress"]
    assert sorted(f["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                  for f in rule["from"]) == ["features-import", "ranker"]
    assert pols["redis"]["egress"] == []
    to_redis = [r for r in pols["ranker"]["egress"] if any(
        t.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
        == "redis" for t in r.get("to", []))]
    assert to_redis and to_redis[0]["ports"] == [{"port": 6379, "protocol": "TCP"}]

    ephemeral = objects(render(scenario(REDIS_SCENARIO, {"redis": {"persistence": {
        "enabled": False}}})))
    validate(ephemeral)
    assert not find(ephemeral, "PersistentVolumeClaim")
    (dep,) = find(ephemeral, "Deployment", "redis")
    (data,) = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "data"]
    assert data["emptyDir"] == {"sizeLimit": "20Gi"}


BAD = [
    ({"ranker": {"itemFeatures": {"source": "feast"}}}, "itemFeatures/source"),
    ({"ranker": {"userFeatures": {"source": "tables", "claimName": ""}}},
     "userFeatures/claimName"),
    ({"redis": {"enabled": False}}, "ranker.itemFeatures.address"),
    ({"ranker": {"userFeatures": {"address": "redis://:pw@host:6379/0"}}},
     "userFeatures/address"),
    ({"ranker": {"spec": None}}, "ranker.spec"),
    ({"ranker": {"itemFeatures": {"source": "catalog"}}}, "ranker.itemFeatures.source"),
    ({"embeddings": {"enabled": True, "claimName": "emb"}}, "embeddings.enabled"),
    ({"redis": {"image": {"tag": "latest"}}}, "tag"),
]


@pytest.mark.parametrize(("bad", "named"), BAD, ids=[b[1] for b in BAD])
def test_bad_values_fail_naming_the_value(bad: dict, named: str) -> None:
    h = helm()
    with pytest.raises((h.HelmValuesError, h.HelmRenderError)) as err:
        render(scenario(REDIS_SCENARIO, bad))
    assert named in str(err.value)
