"""The objects of a temporary model deployment: the chart, rendered with the real Helm engine.

Only what a model test needs is rendered (model servers for one name and version, their
Services and ConfigMaps, and Envoy unless left out); the ranker is switched off. The release
name is new for every run and every object and pod carries the run label, so a load test can
neither collide with nor delete anything of a real release.
"""

from __future__ import annotations

import copy
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Beside the loadtest package in a source checkout; `--chart` points elsewhere.
DEFAULT_CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "rankserve"
RUN_LABEL = "rankserve.dev/loadtest-run"
MODEL_LABEL = "rankserve.dev/loadtest-model"
# Kinds a temporary release may hold, in the order they are created (config before pods).
KIND_ORDER = ("ServiceAccount", "ConfigMap", "NetworkPolicy", "Service", "Deployment")


class ManifestError(ValueError):
    """The chart cannot produce a temporary deployment from these inputs."""


@dataclass(frozen=True)
class ModelVersion:
    """One model version to deploy: ``name`` as in the model store, numeric ``version``."""

    name: str
    version: int

    @classmethod
    def parse(cls, text: str) -> ModelVersion:
        name, sep, version = text.partition("@")
        if not sep or not name or not version.isdigit() or int(version) < 1:
            raise ManifestError(f"--deploy-model wants NAME@VERSION with a numeric version"
                                f" (e.g. ranker@2), got {text!r}")
        return cls(name, int(version))

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class Plan:
    """What one run deploys: the release, its run id, the values and the rendered objects."""

    model: ModelVersion
    run_id: str
    release: str
    namespace: str
    values: dict[str, Any]
    objects: list[dict[str, Any]] = field(default_factory=list)

    @property
    def selector(self) -> str:
        """Label selector of every object of this run."""
        return f"{RUN_LABEL}={self.run_id}"

    @property
    def entry(self) -> tuple[str, int]:
        """(component, port) that load goes to: Envoy when deployed, else a model server."""
        if self.values["envoy"]["enabled"]:
            return "envoy", int(self.values["envoy"]["config"]["listenPort"])
        return "model-server", int(self.values["modelServer"]["grpcPort"])

    def deployments(self) -> list[str]:
        return [o["metadata"]["name"] for o in self.objects if o["kind"] == "Deployment"]

    def to_yaml(self) -> str:
        return yaml.dump_all(self.objects, Dumper=_BlockDumper, sort_keys=False)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the Envoy and model configs) as readable ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_BlockDumper.add_representer(str, _str)


def new_run_id() -> str:
    """Six characters, a letter first, so no YAML reader takes the label value for a number."""
    first = secrets.choice("abcdefghjkmnpqrstuvwxyz")
    return first + "".join(secrets.choice("abcdefghjkmnpqrstuvwxyz23456789") for _ in range(5))


def release_name(model: ModelVersion, run_id: str) -> str:
    """``lt-<model>-v<version>-<run id>``: a DNS label short enough for every derived name
    (the longest is ``<release>-model-server-headless``, at most 63 characters)."""
    slug = re.sub(r"[^a-z0-9]+", "-", model.name.lower()).strip("-")[:18].strip("-") or "model"
    return f"lt-{slug}-v{model.version}-{run_id}"


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``, nested dicts merged, lists and scalars replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def run_values(model: ModelVersion, run_id: str, release: str, *, replicas: int,
               envoy: bool) -> dict[str, Any]:
    """The values this tool sets on top of the user's: they win over the values file."""
    return {
        "fullnameOverride": release,
        "commonLabels": {RUN_LABEL: run_id, MODEL_LABEL: f"{model.name}-v{model.version}"},
        "ranker": {"enabled": False},
        "envoy": {"enabled": envoy, "replicaCount": 1,
                  "podDisruptionBudget": {"enabled": False}},
        "modelServer": {
            "replicaCount": replicas,
            # The test runs exactly --replicas pods: no autoscaler, and no disruption budget
            # (a minAvailable above --replicas would fail the render or block node drains).
            "autoscaling": {"enabled": False},
            "podDisruptionBudget": {"enabled": False},
            "models": [{"name": model.name, "basePath": "",
                        "versionPolicy": {"specific": [model.version]}, "versionLabels": {}}],
        },
        # Cluster-wide side effects a short test must not have: custom resources that
        # Prometheus or Grafana would pick up and keep alerting on.
        "metrics": {"serviceMonitor": {"enabled": False}, "prometheusRule": {"enabled": False}},
        "dashboards": {"enabled": False},
    }


def _load_values(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ManifestError(f"--chart-values: no such file {path}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"--chart-values {path} is not YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"--chart-values {path} must hold a mapping of chart values")
    return data


def plan(model: ModelVersion, namespace: str, *, values_file: Path | None = None,
         chart: Path = DEFAULT_CHART, replicas: int = 1, envoy: bool = True,
         run_id: str | None = None) -> Plan:
    """Renders the chart for one temporary run; no cluster is contacted."""
    helm_python = _helm()
    if not (chart / "Chart.yaml").is_file():
        raise ManifestError(f"no Helm chart at {chart}: pass --chart DIR (the rankserve chart,"
                            " deploy/helm/rankserve in the source tree)")
    run_id = run_id or new_run_id()
    release = release_name(model, run_id)
    user = _load_values(values_file)
    values = merge(user, run_values(model, run_id, release, replicas=replicas, envoy=envoy))
    loaded = helm_python.Chart.load(str(chart))
    try:
        rendered = loaded.render(values, name=release, namespace=namespace)
    except (helm_python.HelmValuesError, helm_python.HelmRenderError) as exc:
        raise ManifestError(f"the chart refused these values: {exc}") from None
    finally:
        loaded.close()
    defaults = yaml.safe_load((chart / "values.yaml").read_text()) or {}
    objs = _objects(rendered)
    for obj in objs:
        if obj["kind"] not in KIND_ORDER:
            raise ManifestError(f"the values make the chart render a {obj['kind']}, which a"
                                " temporary deployment does not create; switch it off in"
                                " --chart-values")
        obj["metadata"]["namespace"] = namespace
    objs.sort(key=lambda o: KIND_ORDER.index(o["kind"]))
    return Plan(model, run_id, release, namespace, merge(defaults, values), objs)


def _objects(rendered: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        out.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return out


def _helm() -> Any:
    try:
        import helm_python
    except ImportError:
        raise ManifestError("rendering the chart needs the Helm engine: pip install"
                            " 'rankserve[cluster]' (or the chart extra, PyPI helm-python-sdk)"
                            ) from None
    return helm_python
