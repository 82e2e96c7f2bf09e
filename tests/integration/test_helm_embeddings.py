"""The chart's embedding refresh job and the rankers' embeddings and routing values.

Rendered by the real Helm engine and validated strictly; the job's command line is parsed by
the real `rankserve` parser and then run, with the pod's mounts mapped to local directories, and
the rankers' settings built from the rendered ConfigMap find what it published; the rendered
routing.yaml is loaded by the ranker's own routing loader.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest
import yaml

from rankserve.ranker.embedding_store import ITEMS, TOWER, USERS, EmbeddingStore
from rankserve.ranker.routing_config import RoutingPolicyFile, load_policy
from rankserve.server.embeddings import cli as embeddings_cli
from rankserve.server.ranking.settings import RankerSettings
from rankserve.tools.cli import build_parser
from tests.integration.test_helm_chart import merged
from tests.support.catalog import make_catalog
from tests.support.chart import CHART, CLAIMS, NAMESPACE, find, helm, objects, render, validate

SCENARIO = CHART / "ci" / "embeddings-values.yaml"
JOB_NAME = "rs-rankserve-embeddings-refresh"
ROUTING = {
    "default": {"model": "ranker", "label": "stable"},
    "rules": [{"name": "personal", "when": {"user_known": True}, "experiment": "ab"}],
    "experiments": {"ab": {"salt": "2026", "arms": [
        {"name": "control", "model": "ranker", "label": "stable", "weight": 80},
        {"name": "treatment", "model": "ranker", "label": "canary", "weight": 20}]}},
}
ENABLED = merged(CLAIMS, {"embeddings": {"enabled": True, "claimName": "rankserve-embeddings"}})
EMBEDDING_ENV = {"RANKSERVE_RANKER_EMBEDDINGS_ROOT", "RANKSERVE_RANKER_EMBEDDING_MODEL",
                 "RANKSERVE_RANKER_EMBEDDING_REFRESH_S"}


def scenario(**refresh: object) -> dict:
    values = yaml.safe_load(SCENARIO.read_text())
    return merged(values, {"embeddings": {"refresh": refresh}}) if refresh else values


def ranker_parts(objs: list[dict]) -> tuple[dict, dict, dict]:
    """The ranker's pod spec, its container and its settings ConfigMap's data."""
    (dep,) = find(objs, "Deployment", "ranker")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (cm,) = [c for c in find(objs, "ConfigMap", "ranker")
             if c["metadata"]["name"] == "rs-rankserve-ranker"]
    return pod, container, cm["data"]


def job_pod(objs: list[dict]) -> dict:
    """The refresh job's pod spec, from the CronJob's job template or the one-off Job."""
    cron = find(objs, "CronJob", "embeddings-refresh")
    jobs = find(objs, "Job", "embeddings-refresh")
    assert len(cron) + len(jobs) == 1, f"expected one refresh job, got {cron + jobs}"
    if cron:
        return cron[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return jobs[0]["spec"]["template"]["spec"]


def publish_flags() -> set[str]:
    """Every flag `rankserve embeddings publish --help` lists."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args(["embeddings", "publish", "--help"])
    return set(re.findall(r"--[a-z][a-z-]*", out.getvalue()))


def parse(args: list[str]):
    """The real `rankserve` parser; a misspelt or missing flag fails here, not in the cluster.
    argparse takes an unambiguous prefix of a flag, so flags must also match exactly."""
    loose = [a for a in args if a.startswith("--") and a not in publish_flags()]
    assert not loose, f"flags `rankserve embeddings publish` does not define: {loose}"
    try:
        return build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"`rankserve` rejects the rendered command line {args}")


def local(arg: str, mounts: dict[str, Path]) -> str:
    """A path in the pod mapped to the local directory standing in for its volume."""
    for mount, where in sorted(mounts.items(), key=lambda m: -len(m[0])):
        if arg == mount or arg.startswith(mount + "/"):
            return str(where) + arg[len(mount):]
    return arg


@pytest.mark.parametrize("kind", ["CronJob", "Job"])
def test_scenario_lints_and_validates_for_both_kinds(kind: str) -> None:
    values = scenario(kind=kind)
    report = helm().lint(str(CHART), values, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems
    objs = objects(render(values))
    validate(objs)
    pod = job_pod(objs)
    ranker_pod, ranker, _ = ranker_parts(objs)
    assert pod["securityContext"] == ranker_pod["securityContext"]
    assert pod["restartPolicy"] == "Never"
    (c,) = pod["containers"]
    assert c["image"] == ranker["image"] == "ghcr.io/rankserve/ranker:0.1.0"
    assert c["securityContext"] == ranker["securityContext"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    if kind == "CronJob":
        (cron,) = find(objs, "CronJob")
        assert cron["apiVersion"] == "batch/v1"
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        assert cron["spec"]["schedule"] == "*/30 * * * *"
        assert cron["spec"]["timeZone"] == "Europe/Berlin"
        assert cron["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 2
        assert cron["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 3600
    else:
        (job,) = find(objs, "Job")
        hooks = job["metadata"]["annotations"]
        assert hooks["helm.sh/hook"] == "post-install,post-upgrade"
        assert hooks["helm.sh/hook-delete-policy"] == "before-hook-creation"
        assert not find(objs, "CronJob")


def test_job_mounts_the_rankers_catalog_read_only_and_the_claim_read_write() -> None:
    objs = objects(render(scenario()))
    pod = job_pod(objs)
    ranker_pod, ranker, env = ranker_parts(objs)
    vols = {v["name"]: v for v in pod["volumes"]}
    ranker_vols = {v["name"]: v for v in ranker_pod["volumes"]}
    assert vols["catalog"] == ranker_vols["catalog"]
    assert vols["embeddings"]["persistentVolumeClaim"] == {"claimName": "rankserve-embeddings"}
    assert ranker_vols["embeddings"]["persistentVolumeClaim"] == {
        "claimName": "rankserve-embeddings", "readOnly": True}
    (c,) = pod["containers"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    ranker_mounts = {m["name"]: m for m in ranker["volumeMounts"]}
    assert mounts["catalog"] == ranker_mounts["catalog"]
    assert mounts["catalog"]["readOnly"] is True
    assert not mounts["embeddings"].get("readOnly", False)
    assert ranker_mounts["embeddings"]["readOnly"] is True
    assert mounts["embeddings"]["mountPath"] == ranker_mounts["embeddings"]["mountPath"] \
        == env["RANKSERVE_RANKER_EMBEDDINGS_ROOT"]


def test_catalog_from_object_store_is_copied_into_the_job_pod_too() -> None:
    values = merged(scenario(), {"ranker": {"catalog": {
        "source": "objectStore", "uri": "s3://rankserve-data/catalog"}}})
    objs = objects(render(values))
    pod = job_pod(objs)
    ranker_pod, _, _ = ranker_parts(objs)
    assert pod["initContainers"] == ranker_pod["initContainers"]
    validate(objs)


@pytest.mark.parametrize("mode", ["bulk", "delta"])
def test_rendered_command_is_one_rankserve_accepts(mode: str) -> None:
    values = scenario(mode=mode, version=3, keepUserVersions=4)
    objs = objects(render(values))
    (c,) = job_pod(objs)["containers"]
    assert "command" not in c, "the image's entrypoint is rankserve; the job passes args only"
    args = parse(c["args"])
    assert args.func is embeddings_cli.handle
    _, _, env = ranker_parts(objs)
    assert args.catalog_dir == env["RANKSERVE_RANKER_CATALOG_DIR"] == "/data/catalog/current"
    assert args.root == env["RANKSERVE_RANKER_EMBEDDINGS_ROOT"]
    assert args.model == env["RANKSERVE_RANKER_EMBEDDING_MODEL"] == "retrieval"
    assert (args.version, args.keep_user_versions, args.mode) == (3, 4, mode)
    if mode == "delta":
        assert args.changed_items == "/data/catalog/current/changed-items.txt"


def test_the_rendered_job_publishes_what_the_rankers_settings_find(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bulk then delta, as the cluster would run them: the pod's volumes are local directories,
    and the rankers' RankerSettings come from the rendered ConfigMap."""
    catalog_volume, claim = tmp_path / "catalog-volume", tmp_path / "claim"
    make_catalog(catalog_volume / "current", num_items=400)
    claim.mkdir()
    (claim / "changed.txt").write_text("item-00007\nitem-00011\n")

    def run(**refresh: object) -> dict[str, str]:
        objs = objects(render(scenario(**refresh)))
        (c,) = job_pod(objs)["containers"]
        mounts = {m["mountPath"]: {"catalog": catalog_volume, "embeddings": claim}[m["name"]]
                  for m in c["volumeMounts"] if m["name"] != "tmp"}
        args = parse([local(a, mounts) for a in c["args"]])
        assert args.func(args) == 0, f"rankserve {' '.join(c['args'])} failed"
        _, _, env = ranker_parts(objs)
        return {k: local(v, mounts) for k, v in env.items()}

    run(mode="bulk", version=2)
    env = run(mode="delta", version=2, changedItemsFile="/data/embeddings/changed.txt")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = RankerSettings()
    assert settings.embedding_refresh_s == 5.0
    store = EmbeddingStore(settings.embeddings_root, settings.embedding_model)
    assert [store.versions(part) for part in (ITEMS, TOWER, USERS)] == [[2], [2], [2]]
    assert len(store.load_items(2).ids) == 400


def test_delta_without_the_changed_items_file_names_it() -> None:
    with pytest.raises(helm().HelmValuesError) as err:
        render(scenario(mode="delta", changedItemsFile=""))
    assert "embeddings/refresh/changedItemsFile" in str(err.value)


def test_enabled_without_the_claim_names_it() -> None:
    h = helm()
    with pytest.raises((h.HelmValuesError, h.HelmRenderError)) as err:
        render(merged(CLAIMS, {"embeddings": {"enabled": True}}))
    assert "embeddings/claimName" in str(err.value)


def test_refresh_job_off_or_embeddings_off_render_no_job() -> None:
    off = objects(render(merged(ENABLED, {"embeddings": {"refresh": {"enabled": False}}})))
    assert not find(off, "CronJob") and not find(off, "Job")
    _, _, env = ranker_parts(off)
    assert EMBEDDING_ENV <= set(env)
    default = objects(render(CLAIMS))
    assert not find(default, "CronJob") and not find(default, "Job")


def test_ranker_settings_gain_exactly_the_embeddings_and_routing_when_enabled() -> None:
    before = objects(render(CLAIMS))
    after = objects(render(merged(ENABLED, {"ranker": {"routing": ROUTING}})))
    pod0, c0, env0 = ranker_parts(before)
    pod1, c1, env1 = ranker_parts(after)
    assert set(env1) - set(env0) == EMBEDDING_ENV | {"RANKSERVE_RANKER_ROUTING_CONFIG"}
    assert {k: env1[k] for k in env0} == env0
    assert [v["name"] for v in pod0["volumes"]] == ["catalog", "tmp"]
    assert [m["name"] for m in c0["volumeMounts"]] == ["catalog", "tmp"]
    assert [v["name"] for v in pod1["volumes"]] == ["catalog", "tmp", "embeddings", "routing"]
    assert c0["args"] == c1["args"] == ["ranker"]
    assert not any("EMBEDDING" in k or "ROUTING" in k for k in env0)


def test_routing_file_loads_with_the_rankers_loader(tmp_path: Path) -> None:
    objs = objects(render(scenario()))
    pod, c, env = ranker_parts(objs)
    (cm,) = [m for m in find(objs, "ConfigMap") if m["metadata"]["name"].endswith("-routing")]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "routing"]
    assert vol["configMap"]["name"] == cm["metadata"]["name"]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "routing"]
    assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates"
    assert env["RANKSERVE_RANKER_ROUTING_CONFIG"] == mount["mountPath"] + "/routing.yaml"
    path = tmp_path / "routing.yaml"
    path.write_text(cm["data"]["routing.yaml"])
    router = load_policy(path)
    assert router.default.label == "stable"
    exp = router.experiments["ranker-v2"]
    assert exp.salt == "2026-11"
    assert [(a.name, a.model.label, a.weight) for a in exp.arms] == [
        ("control", "stable", 90.0), ("treatment", "canary", 10.0)]
    assert exp.shadow is not None and exp.shadow.model.version == 3
    assert [r.name for r in router.rules] == ["new-users", "personal"]


def test_routing_edits_do_not_roll_the_rankers_but_settings_do() -> None:
    def ranker_template(values: dict) -> dict:
        (dep,) = find(objects(render(values)), "Deployment", "ranker")
        return dep["spec"]["template"]

    base = ranker_template(merged(ENABLED, {"ranker": {"routing": ROUTING}}))
    edited = merged(ROUTING, {"experiments": {"ab": {"salt": "2027"}}})
    assert ranker_template(merged(ENABLED, {"ranker": {"routing": edited}})) == base
    assert ranker_template(merged(ENABLED, {"ranker": {"routing": ROUTING},
                                            "embeddings": {"refreshSeconds": 60}})) != base


def test_the_ranker_rereads_a_configmap_volume_update(tmp_path: Path) -> None:
    """The kubelet's ConfigMap volume layout: routing.yaml -> ..data/routing.yaml, and an update
    swaps the ..data symlink to a new directory. The mounted path never changes."""
    def publish(stamp: str, routing: dict) -> None:
        d = tmp_path / stamp
        d.mkdir()
        (d / "routing.yaml").write_text(yaml.safe_dump(routing))
        tmp_link = tmp_path / "..data_tmp"
        tmp_link.symlink_to(stamp)
        os.replace(tmp_link, tmp_path / "..data")

    publish("..2026_11_22_01", ROUTING)
    (tmp_path / "routing.yaml").symlink_to("..data/routing.yaml")
    policy = RoutingPolicyFile(tmp_path / "routing.yaml", check_s=0.01)
    assert policy.router.experiments["ab"].salt == "2026"
    publish("..2026_11_22_02", merged(ROUTING, {"experiments": {"ab": {"salt": "2027"}}}))
    assert policy.check() is True
    assert policy.router.experiments["ab"].salt == "2027"


def test_notes_say_how_to_run_and_follow_the_job() -> None:
    cron = render(scenario())["rankserve/templates/NOTES.txt"]
    assert f"create job --from=cronjob/{JOB_NAME}" in cron
    assert "rs-rankserve-ranker-routing" in cron
    job = render(scenario(kind="Job"))["rankserve/templates/NOTES.txt"]
    assert f"logs job/{JOB_NAME}" in job
    assert "embeddings" not in render(CLAIMS)["rankserve/templates/NOTES.txt"].lower()
