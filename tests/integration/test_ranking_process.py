"""``python -m rankserve.server.ranking`` as a real process: ready file, health, SIGTERM exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.catalog import make_catalog

pytestmark = pytest.mark.timeout(90)


def wait_for_file(path, proc, timeout_s=30.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if path.exists():
            return json.loads(path.read_text())
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("no ready file")


def test_sigterm_drains_and_exits_zero(tmp_path):
    catalog = make_catalog(tmp_path / "c", num_items=200, num_features=8)
    ready = tmp_path / "ready.json"
    env = {**os.environ, "RANKSERVE_RANKER_MODEL_TARGET": "127.0.0.1:9", "RANKSERVE_RANKER_PORT":
           "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rankserve.server.ranking", "--catalog-dir", str(catalog),
         "--port", "0",
         "--metrics-port", "0", "--ready-file", str(ready), "--grace-s", "1",
         "--drain-s", "1.5"],
        env=env, stderr=subprocess.PIPE, text=True)
    try:
        info = wait_for_file(ready, proc)
        assert info["pid"] == proc.pid and info["address"].startswith("127.0.0.1:")
        service = health_pb2.HealthCheckRequest(service="rankserve.ranking.v1.RankingService")
        with grpc.insecure_channel(info["address"]) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(service, timeout=5).status == health_pb2.HealthCheckResponse.SERVING
            proc.send_signal(signal.SIGTERM)
            # Draining: NOT_SERVING for load balancers, the port still answers.
            deadline = time.monotonic() + 1.0
            while health.Check(service, timeout=5).status == health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() < deadline, "still SERVING 1 s after SIGTERM"
                time.sleep(0.02)
            assert proc.poll() is None
        assert proc.wait(timeout=20) == 0
        err = proc.stderr.read()
        assert f"serving on {info['address']}" in err
        assert "draining: health NOT_SERVING" in err and "drained" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_bad_settings_exit_nonzero_with_a_message(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "rankserve.server.ranking", "--catalog-dir", str(tmp_path),
         "--port", "0"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "holds no catalog" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "rankserve.server.ranking", "--batch-size", "30"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "batch_size" in out.stderr


def test_missing_spec_and_empty_feature_tables_exit_2_with_a_message(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "rankserve.server.ranking", "--port", "0"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no feature spec: set --spec FILE" in out.stderr
    spec = tmp_path / "spec.yaml"
    spec.write_text("inputs:\n  - {name: x, per: candidate, shape: [], features: [item.price]}\n")
    out = subprocess.run(
        [sys.executable, "-m", "rankserve.server.ranking", "--port", "0", "--spec", str(spec),
         "--item-features", str(tmp_path / "tables")],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and str(tmp_path / "tables") in out.stderr
