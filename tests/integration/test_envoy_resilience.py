"""The real Envoy, with the configuration the stack and the chart deploy, in front of two Predict
servers: a slow replica is hedged (the ranker's scorer sends the delay), a call one replica
sheds is retried on the other, a call refused for its size is not retried, and a caller Envoy
does not trust cannot set its x-envoy headers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2_grpc

from rankserve.ranker.hedging import HEADER, HedgeDelays
from rankserve.ranker.scoring import PredictScorer
from rankserve.ranker.tensors import to_tensor_proto
from rankserve.ranker.types import ModelRef
from rankserve.server.common.admission import PUSHBACK_KEY
from rankserve.tfserving.v1 import predict_pb2, prediction_service_pb2_grpc
from rankserve.tools.stack import envoy_config
from rankserve.tools.stack.local import find_envoy

ROWS = 5
INPUTS = {"context": np.ones((1, 3), np.float32), "candidates": np.ones((ROWS, 2), np.float32)}


class Replica(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Answers after ``delay_s``, or refuses: ``shed`` with a pushback trailer (overloaded),
    ``too_large`` without one (the request itself is the problem)."""

    def __init__(self, delay_s: float = 0.0, *, shed: bool = False, too_large: bool = False):
        self.delay_s, self.shed, self.too_large = delay_s, shed, too_large
        self.calls = 0
        self.answered = 0  # calls that ran to the end (a hedged loser is cancelled first)
        self.target = ""

    async def Predict(self, request, context):
        self.calls += 1
        if self.shed:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full",
                                trailing_metadata=((PUSHBACK_KEY, "5"),))
        if self.too_large:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "request too large")
        await asyncio.sleep(self.delay_s)
        self.answered += 1
        resp = predict_pb2.PredictResponse()
        resp.outputs["scores"].CopyFrom(to_tensor_proto(np.zeros(ROWS, np.float32)))
        resp.model_spec.name = request.model_spec.name
        resp.model_spec.version.value = 1
        return resp

    async def start(self) -> grpc.aio.Server:
        server = grpc.aio.server()
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(self, server)
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        self.target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        await server.start()
        return server


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


class Envoy:
    def __init__(self, tmp: Path, replicas: list[Replica], **options) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        upstreams = tuple(envoy_config.Upstream(host, int(port))
                          for host, port in (r.target.rsplit(":", 1) for r in replicas))
        self.config = envoy_config.write(
            envoy_config.EnvoyOptions(upstreams=upstreams, health_check_interval_ms=200,
                                      **options), tmp / "envoy.json")
        self.admin_file = tmp / "admin.address"
        self.log = tmp / "envoy.log"
        self.proc: subprocess.Popen | None = None

    async def __aenter__(self) -> Envoy:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [find_envoy(), "-c", str(self.config), "--admin-address-path",
                 str(self.admin_file), "--disable-hot-restart", "--concurrency", "1",
                 "--log-level", "warn"], stdout=log, stderr=subprocess.STDOUT)
        await self._until(lambda: self.admin_file.is_file() and self.admin_file.read_text())
        self.admin = self.admin_file.read_text().strip()
        listeners = json.loads(_get(f"http://{self.admin}/listeners?format=json"))
        sock = listeners["listener_statuses"][0]["local_address"]["socket_address"]
        self.target = f"{sock['address']}:{sock['port_value']}"
        await self._until(lambda: _get(f"http://{self.admin}/clusters").count(
            "::health_flags::healthy") == 2)
        return self

    async def _until(self, check, timeout_s: float = 30.0) -> None:
        for _ in range(int(timeout_s / 0.05)):
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            if check():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"Envoy not ready: {self.log.read_text()[-2000:]}")

    def stat(self, name: str) -> int:
        text = _get(f"http://{self.admin}/stats?filter=^cluster.model_servers.{name}$")
        return int(text.split(":")[1]) if ":" in text else 0

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def _waves(scorer: PredictScorer, waves: int, width: int = 8) -> list[float]:
    """``waves`` rounds of ``width`` concurrent calls, as a Rank's batches go out."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []

    async def one() -> None:
        start = loop.time()
        await scorer.score(ModelRef("ranker"), INPUTS, ROWS, timeout_s=5.0)
        latencies.append(loop.time() - start)

    for _ in range(waves):
        await asyncio.gather(*(one() for _ in range(width)))
    return latencies


async def _hedging_run(tmp: Path, hedge: HedgeDelays | None) -> tuple[Replica, Envoy, list]:
    fast, slow = Replica(0.002), Replica(0.080)
    servers = [await fast.start(), await slow.start()]
    try:
        async with Envoy(tmp, [fast, slow],
                         trusted_callers=envoy_config.Cidr("127.0.0.1", 32)) as envoy:
            async with PredictScorer(envoy.target, hedge=hedge) as scorer:
                await _waves(scorer, 10)  # the delay learns from these
                slow.answered = fast.answered = 0
                latencies = await _waves(scorer, 30)
            envoy.retries = envoy.stat("upstream_rq_retry")
    finally:
        for server in servers:
            await server.stop(0)
    return slow, envoy, latencies


async def test_a_slow_replica_is_hedged_from_the_observed_latency(tmp_path: Path) -> None:
    hedged_slow, hedged_envoy, hedged = await _hedging_run(
        tmp_path / "hedged", HedgeDelays(min_samples=20, refresh=5, min_ms=5.0))
    plain_slow, plain_envoy, plain = await _hedging_run(tmp_path / "plain", None)
    calls = len(hedged)
    print(f"\nslow replica answered {plain_slow.answered}/{calls} calls without hedging"
          f" (p90 {np.percentile(plain, 90) * 1e3:.1f} ms), {hedged_slow.answered}/{calls} with"
          f" it (p90 {np.percentile(hedged, 90) * 1e3:.1f} ms); Envoy hedges sent:"
          f" {hedged_envoy.retries}")
    assert plain_envoy.retries == 0
    assert plain_slow.answered >= calls // 5  # without hedging the slow replica answers a share
    assert hedged_envoy.retries > 0
    # Hedged: a slow call's copy on the fast replica wins; the slow one rarely gets to answer.
    assert hedged_slow.answered <= calls // 20


async def test_a_shed_call_is_retried_on_the_other_replica_and_a_too_large_one_is_not(
        tmp_path: Path) -> None:
    ok, shedding = Replica(), Replica(shed=True)
    servers = [await ok.start(), await shedding.start()]
    try:
        async with Envoy(tmp_path / "shed", [ok, shedding]) as envoy:
            async with PredictScorer(envoy.target) as scorer:
                await _waves(scorer, 10)  # every call answered
            assert ok.answered == 80 and shedding.calls > 0
            # Every refusal was retried (a call may be refused twice before it lands on the
            # other replica), and every call ended answered.
            assert envoy.stat("upstream_rq_retry") == shedding.calls
            assert 0 < envoy.stat("upstream_rq_retry_success") <= shedding.calls
    finally:
        for server in servers:
            await server.stop(0)

    big, also_big = Replica(too_large=True), Replica(too_large=True)
    servers = [await big.start(), await also_big.start()]
    try:
        async with Envoy(tmp_path / "large", [big, also_big]) as envoy:
            async with grpc.aio.insecure_channel(envoy.target) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                for _ in range(5):
                    try:
                        await stub.Predict(predict_pb2.PredictRequest(), timeout=5)
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    else:
                        raise AssertionError("a too-large call was answered")
            assert big.calls + also_big.calls == 5  # one attempt each: no retry
            assert envoy.stat("upstream_rq_retry") == 0
    finally:
        for server in servers:
            await server.stop(0)


async def test_an_untrusted_caller_cannot_set_the_hedge_delay(tmp_path: Path) -> None:
    fast, slow = Replica(0.002), Replica(0.080)
    servers = [await fast.start(), await slow.start()]
    try:
        async with Envoy(tmp_path / "untrusted", [fast, slow]) as envoy:  # no trusted_callers
            async with grpc.aio.insecure_channel(envoy.target) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                req = predict_pb2.PredictRequest()
                req.model_spec.name = "ranker"
                await asyncio.gather(*(stub.Predict(req, timeout=5, metadata=((HEADER, "5"),))
                                       for _ in range(20)))
            assert envoy.stat("upstream_rq_retry") == 0
            assert slow.answered > 0
    finally:
        for server in servers:
            await server.stop(0)
