"""TLS in the Helm chart: Secrets mounted where each component reads them, Envoy's TLS from the
same render() the local stack runs, cert-manager Certificates validated against their CRD, and
values that cannot work together refused by name."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from deploy import envoy_chart
from rankserve.tools.stack import envoy_config
from rankserve.tools.stack.certs import make_local_pki
from rankserve.tools.stack.local import find_envoy
from tests.integration.test_helm_chart import merged
from tests.support.chart import (
    CHART,
    CLAIMS,
    NAMESPACE,
    RELEASE,
    find,
    helm,
    objects,
    render,
    validate,
)

TLS = yaml.safe_load((CHART / "ci" / "tls-values.yaml").read_text())
HEADLESS = f"{RELEASE}-rankserve-model-server-headless.{NAMESPACE}.svc.cluster.local"
DIR = "/etc/rankserve/tls"


def _envoy(objs: list[dict]) -> dict:
    (cm,) = find(objs, "ConfigMap", "envoy")
    return yaml.safe_load(cm["data"]["envoy.yaml"])


def _container(objs: list[dict], component: str) -> tuple[dict, dict]:
    (dep,) = find(objs, "Deployment", component)
    pod = dep["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def test_tls_is_off_by_default() -> None:
    objs = objects(render(CLAIMS))
    assert not find(objs, "Certificate")
    assert "transport_socket" not in str(_envoy(objs))
    (cm,) = find(objs, "ConfigMap", "ranker")
    assert not [k for k in cm["data"] if "TLS" in k or "AUTH" in k]
    _, ranker = _container(objs, "ranker")
    assert ranker["readinessProbe"]["grpc"]["port"] == 8080


def test_envoy_tls_is_render_of_the_mounted_secret_paths() -> None:
    objs = objects(render(TLS))
    base = yaml.safe_load((CHART / "values.yaml").read_text())["envoy"]["config"]
    pair = {"cert": f"{DIR}/tls.crt", "key": f"{DIR}/tls.key"}
    want = envoy_config.render(envoy_config.EnvoyOptions(
        upstreams=(envoy_config.Upstream(HEADLESS, 8500),), discovery="STRICT_DNS",
        tracing=envoy_config.Tracing.from_endpoint(TLS["tracing"]["otlpEndpoint"], 100.0),
        downstream_tls=envoy_config.DownstreamTls(client_ca=f"{DIR}/ca.crt", **pair),
        upstream_tls=envoy_config.UpstreamTls(f"{DIR}/ca.crt", HEADLESS, **pair),
        tracing_tls=envoy_config.UpstreamTls(f"{DIR}/ca.crt", "otel-collector.observability",
                                             **pair),
        **{name: base[envoy_chart.camel(name)] for name in envoy_chart.templated_options()},
    ))
    assert _envoy(objs) == want
    pod, envoy = _container(objs, "envoy")
    assert {"name": "tls", "mountPath": DIR, "readOnly": True} in envoy["volumeMounts"]
    assert {"name": "tls", "secret": {"secretName": f"{RELEASE}-rankserve-envoy-tls"}} in (
        pod["volumes"])


def test_real_envoy_accepts_the_chart_tls_config(tmp_path: Path) -> None:
    """Explicit envoy.config TLS values win over the Secret paths; Envoy validates the result
    with real certificate files."""
    pki = make_local_pki(tmp_path / "pki", ["envoy"], days=1)
    own = pki.pair("envoy")
    pair = {"cert": str(own.cert), "key": str(own.key)}
    values = merged(TLS, {"envoy": {"config": {
        "downstreamTls": {"clientCa": str(pki.ca), **pair},
        "upstreamTls": {"ca": str(pki.ca), "serverName": "localhost", **pair},
        "tracingTls": {"ca": str(pki.ca), "serverName": "localhost", **pair}}}})
    cfg = _envoy(objects(render(values)))
    socket = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]
    assert socket["typed_config"]["common_tls_context"]["validation_context"] == {
        "trusted_ca": {"filename": str(pki.ca)}}
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    check = subprocess.run([find_envoy(), "--mode", "validate", "-c", str(path)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_ranker_and_model_servers_read_their_secrets_and_probe_in_plaintext() -> None:
    objs = objects(render(TLS))
    (cm,) = find(objs, "ConfigMap", "ranker")
    env = cm["data"]
    assert env["RANKSERVE_RANKER_TLS_CERT"] == f"{DIR}/tls.crt"
    assert env["RANKSERVE_RANKER_MODEL_TLS_CA"] == f"{DIR}/ca.crt"
    assert env["RANKSERVE_RANKER_TLS_CLIENT_CA"] == "/etc/rankserve/callers-ca/ca.crt"
    assert env["RANKSERVE_RANKER_AUTH_TOKENS_FILE"] == "/etc/rankserve/tokens/tokens.txt"
    assert env["RANKSERVE_RANKER_AUTH_ALLOWED_CALLERS"] == "search-frontend,batch-ranker"
    assert env["RANKSERVE_RANKER_HEALTH_PORT"] == "8086"
    assert env["OTEL_EXPORTER_OTLP_CLIENT_KEY"] == f"{DIR}/tls.key"
    # The ranker calls Envoy by its Service name: Envoy's certificate must carry it.
    envoy_host = env["RANKSERVE_RANKER_MODEL_TARGET"].rsplit(":", 1)[0]
    certs = {c["metadata"]["labels"]["app.kubernetes.io/component"]: c["spec"]
             for c in find(objs, "Certificate")}
    assert envoy_host in certs["envoy"]["dnsNames"]
    assert HEADLESS in certs["model-server"]["dnsNames"]
    assert f"{RELEASE}-rankserve-ranker.{NAMESPACE}.svc" in certs["ranker"]["dnsNames"]
    assert {c["secretName"] for c in certs.values()} == {
        f"{RELEASE}-rankserve-{c}-tls" for c in ("ranker", "envoy", "model-server")}

    pod, ranker = _container(objs, "ranker")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert ranker[probe]["grpc"]["port"] == 8086
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["callers-ca"]["secret"]["secretName"] == "search-frontend-ca"
    assert volumes["tokens"]["secret"]["secretName"] == "rankserve-caller-tokens"

    pod, ms = _container(objs, "model-server")
    assert {f"--tls-cert={DIR}/tls.crt", f"--tls-client-ca={DIR}/ca.crt",
            "--health-port=8086"} <= set(ms["args"])
    assert ms["readinessProbe"]["grpc"]["port"] == 8086
    validate(find(objs, "Certificate") + find(objs, "Deployment"))


def test_tf_serving_takes_its_ssl_config_from_a_secret() -> None:
    values = merged(CLAIMS, {"tls": {"enabled": True, "tfServingSslConfigSecret": "tfs-ssl"}})
    objs = objects(render(values))
    pod, ms = _container(objs, "model-server")
    assert "--ssl_config_file=/etc/rankserve/tfs-ssl/ssl.config" in ms["args"]
    assert {"name": "tfs-ssl", "secret": {"secretName": "tfs-ssl"}} in pod["volumes"]
    validate(find(objs, "Deployment"))


MISSING = [
    ({"tls": {"enabled": True}}, "tfServingSslConfigSecret"),
    ({"tls": {"enabled": True, "tfServingSslConfigSecret": "s"},
      "certManager": {"enabled": True}}, "issuerRef.name"),
    ({"certManager": {"enabled": True, "issuerRef": {"name": "ca"}}}, "needs tls.enabled"),
    # Tokens without TLS would be read on the wire, and were silently not checked at all.
    ({"tls": {"callers": {"tokensSecret": "tokens"}}}, "tls.callers.* needs tls.enabled"),
    ({"tracing": {"enabled": True, "otlpEndpoint": "http://otel:4317", "tls": {"enabled": True}},
      "tls": {"enabled": True, "tfServingSslConfigSecret": "s"}}, "https://"),
]


@pytest.mark.parametrize(("values", "named"), MISSING, ids=[m[1] for m in MISSING])
def test_tls_values_that_cannot_work_are_named(values: dict, named: str) -> None:
    h = helm()
    with pytest.raises((h.HelmValuesError, h.HelmRenderError)) as err:
        render(merged(CLAIMS, values))
    assert named in str(err.value)


@pytest.mark.parametrize("bad", [
    {"tls": {"callers": {"allowed": ["a,b"]}}},
    {"certManager": {"issuerRef": {"kind": "Secret"}}},
    {"envoy": {"config": {"upstreamTls": {"ca": "/x"}}}},
], ids=["comma-in-caller", "issuer-kind", "partial-upstream-tls"])
def test_schema_rejects_bad_tls_values(bad: dict) -> None:
    with pytest.raises(helm().HelmValuesError):
        render(merged(CLAIMS, bad))
