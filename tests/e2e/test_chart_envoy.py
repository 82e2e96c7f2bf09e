"""The Envoy config the chart deploys, run by the real Envoy in front of real model servers.

The chart is rendered with values that point Envoy's upstreams at two local model servers
(which read the chart's own models.config), the config is checked with `envoy --mode
validate`, then run, and Predict calls go through it to both replicas.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml

from rankserve.tools.stack.local import find_envoy
from tests.integration.modelserver_support import (
    C,
    F,
    ServerProcess,
    expected_scores,
    model_library,
    predict_request,
    scores_of,
    wait_until,
)
from tests.support.chart import CLAIMS, find, objects, render

pytestmark = pytest.mark.slow
PREDICT = "/tensorflow.serving.PredictionService/Predict"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback admin
        return resp.read().decode()


def _host_stat(clusters: str, stat: str) -> dict[str, int]:
    """Per-upstream counter from Envoy's /clusters text."""
    out = {}
    for line in clusters.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == "model_servers" and parts[2] == stat:
            out[parts[1]] = int(parts[3])
    return out


def test_chart_envoy_config_carries_predict_calls(tmp_path: Path, tmp_path_factory) -> None:
    library = model_library(tmp_path_factory)
    base = tmp_path / "models" / "ranker"
    base.mkdir(parents=True)
    subprocess.run(["cp", "-r", str(library / "1"), str(base / "1")], check=True)

    def rendered(values: dict) -> list[dict]:
        return objects(render({**CLAIMS, **values}))

    # The model servers read the chart's models.config, pointed at the local base path.
    models_cm = [o for o in find(rendered({"modelServer": {**CLAIMS["modelServer"], "models": [
        {"name": "ranker", "basePath": str(base), "versionPolicy": {"latest": 1},
         "versionLabels": {"stable": 1}}]}}), "ConfigMap", "model-server")
        if "models.config" in o["data"]]
    config_file = tmp_path / "models.config"
    config_file.write_text(models_cm[0]["data"]["models.config"])
    servers = [ServerProcess(tmp_path, "--model-config-file", str(config_file))
               for _ in range(2)]
    envoy, log = None, None
    try:
        addresses = [s.wait_ready(120) for s in servers]
        upstreams = [{"host": a.rsplit(":", 1)[0], "port": int(a.rsplit(":", 1)[1])}
                     for a in addresses]
        objs = rendered({"envoy": {"upstreams": upstreams, "config": {
            "listenHost": "127.0.0.1", "listenPort": 0,
            "adminHost": "127.0.0.1", "adminPort": 0}}})
        (envoy_cm,) = find(objs, "ConfigMap", "envoy")
        cfg_path = tmp_path / "envoy.yaml"
        cfg_path.write_text(envoy_cm["data"]["envoy.yaml"])
        assert yaml.safe_load(cfg_path.read_text())["static_resources"]["clusters"][0][
            "type"] == "STRICT_DNS"

        binary = find_envoy()
        check = subprocess.run([binary, "--mode", "validate", "-c", str(cfg_path)],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr

        admin_file = tmp_path / "envoy-admin.address"
        log = open(tmp_path / "envoy.log", "wb")  # noqa: SIM115 - closed in finally
        envoy = subprocess.Popen(
            [binary, "-c", str(cfg_path), "--admin-address-path", str(admin_file),
             "--disable-hot-restart", "--concurrency", "1", "--log-level", "warn"],
            stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: admin_file.is_file() and admin_file.read_text().strip(), 30,
                   what="envoy admin address")
        admin = admin_file.read_text().strip()
        listeners = json.loads(_get(f"http://{admin}/listeners?format=json"))
        sock = listeners["listener_statuses"][0]["local_address"]["socket_address"]
        target = f"{sock['address']}:{sock['port_value']}"
        wait_until(lambda: sum(1 for line in _get(f"http://{admin}/clusters").splitlines()
                               if line.startswith("model_servers::")
                               and line.endswith("::health_flags::healthy")) == 2,
                   30, what="both model servers healthy in Envoy")

        rng = np.random.default_rng(7)
        with grpc.insecure_channel(target) as channel:
            predict = channel.unary_unary(
                PREDICT, request_serializer=lambda r: r.SerializeToString(),
                response_deserializer=lambda b: b)
            from tensorflow_serving.apis import predict_pb2

            for _ in range(20):
                context = rng.standard_normal((1, C)).astype(np.float32)
                cands = rng.standard_normal((7, F)).astype(np.float32)
                raw = predict(predict_request("ranker", context, cands, label="stable"),
                              timeout=10)
                resp = predict_pb2.PredictResponse.FromString(raw)
                np.testing.assert_allclose(scores_of(resp), expected_scores(context, cands, 1),
                                           rtol=1e-5)
                assert resp.model_spec.version.value == 1
        served = _host_stat(_get(f"http://{admin}/clusters"), "rq_success")
        assert sum(served.values()) == 20
        assert len(served) == 2 and all(n > 0 for n in served.values()), served
    finally:
        if envoy is not None:
            envoy.terminate()
            envoy.wait(10)
        if log is not None:
            log.close()
        for s in servers:
            s.terminate()
