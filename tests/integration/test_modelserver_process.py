"""The model server as a real process (``python -m rankserve.server.modelserver``): versions swapped
under load with zero failed calls, a broken version that leaves the old one serving, labels
moved by editing TF Serving's config file, and SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from tests.integration import modelserver_support as support

pytestmark = pytest.mark.timeout(150)
CTX = np.full((1, support.C), 0.25, np.float32)
CANDS = np.linspace(0, 1, 3 * support.F, dtype=np.float32).reshape(3, support.F)
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END


@pytest.fixture(scope="session")
def library(tmp_path_factory) -> Path:
    return support.model_library(tmp_path_factory)


@pytest.fixture
def start_server(tmp_path: Path):
    servers: list[support.ServerProcess] = []

    def start(*args: str) -> support.ServerProcess:
        server = support.ServerProcess(tmp_path, *args)
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for server in servers:
        server.kill()


async def statuses(channel, name: str) -> dict:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest(model_spec={"name": name})
    response = await stub.GetModelStatus(request, timeout=10)
    return {s.version: s for s in response.model_version_status}


async def eventually(check, timeout: float = 60.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Load:
    """A bounded stream of concurrent Predict calls that records versions seen and failures."""

    def __init__(self, channel, workers: int = 6, max_calls: int = 20_000) -> None:
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        self.workers = workers
        self.max_calls = max_calls
        self.calls = 0
        self.failures: list[str] = []
        self.versions: list[int] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def _worker(self) -> None:
        request = support.predict_request("m", CTX, CANDS)
        while not self._stop.is_set() and self.calls < self.max_calls:
            self.calls += 1
            try:
                response = await self.stub.Predict(request, timeout=10)
            except grpc.aio.AioRpcError as exc:
                self.failures.append(f"{exc.code().name}: {exc.details()}")
                continue
            version = response.model_spec.version.value
            expected = support.expected_scores(CTX, CANDS, version)
            if not np.allclose(support.scores_of(response), expected, rtol=1e-5):
                self.failures.append(f"wrong scores from version {version}")
            self.versions.append(version)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def seen(self, version: int, after: int) -> bool:
        await asyncio.sleep(0.05)
        return version in self.versions[after:]


def test_help_explains_every_flag() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rankserve.server.modelserver", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=support.REPO,
    )
    assert out.returncode == 0, out.stderr
    for flag in (
        "--host", "--port", "--metrics-port", "--model-name", "--model-base-path",
        "--model-config-file", "--version-policy", "--poll-interval-s", "--batch-max-rows",
        "--batch-max-wait-ms",
        "--max-message-mb", "--grace-s", "--ready-file",
    ):  # fmt: skip
        assert flag in out.stdout


async def test_versions_swap_under_load_with_zero_failed_calls(
    tmp_path: Path, library: Path, start_server
) -> None:
    base = tmp_path / "m"
    support.install(library, base, 1)
    server = start_server("--model-name", "m", "--model-base-path", str(base),
                          "--poll-interval-s", "0.2")  # fmt: skip
    async with grpc.aio.insecure_channel(server.address) as channel:
        load = Load(channel)
        load.start()
        try:
            await eventually(lambda: load.seen(1, 0), what="answers from version 1")
            # A new version is loaded and warmed, then takes over; version 1 is retired.
            mark = len(load.versions)
            support.install(library, base, 2)
            await eventually(lambda: load.seen(2, mark), what="answers from version 2")

            async def retired(version: int):
                return (await statuses(channel, "m"))[version].state == END

            await eventually(lambda: retired(1), what="version 1 unloaded")
            # Version 2 goes away: version 1 comes back before version 2 is unloaded.
            mark = len(load.versions)
            support.remove(base, 2)
            await eventually(lambda: load.seen(1, mark), what="answers from version 1 again")
            await eventually(lambda: retired(2), what="version 2 unloaded")
            # A broken version 3 fails to load; version 1 keeps serving.
            support.install_garbage(base, 3)

            broken = await eventually(
                lambda: _state_is(channel, 3, END), what="version 3 load failure"
            )
            assert broken.status.error_code != 0
            assert "saved_model.pb" in broken.status.error_message
            mark = len(load.versions)
            await eventually(lambda: load.seen(1, mark), what="version 1 still serving")
        finally:
            await load.stop()
        assert load.failures == []
        assert set(load.versions[mark:]) == {1}
        current = await statuses(channel, "m")
        assert current[1].state == AVAILABLE
        print(f"{load.calls} calls, versions seen {sorted(set(load.versions))}")
    assert server.terminate() == 0


async def _state_is(channel, version: int, state: int):
    status = (await statuses(channel, "m")).get(version)
    return status if status is not None and status.state == state else None


def _write_config(path: Path, base: Path, labels: dict[str, int]) -> None:
    label_text = "".join(
        f'    version_labels {{ key: "{k}" value: {v} }}\n' for k, v in labels.items()
    )
    text = (
        "model_config_list {\n  config {\n"
        f'    name: "m"\n    base_path: "{base}"\n    model_platform: "tensorflow"\n'
        "    model_version_policy { specific { versions: 1 versions: 2 } }\n"
        f"{label_text}  }}\n}}\n"
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def test_labels_from_the_config_file_move_when_it_is_edited(
    tmp_path: Path, library: Path, start_server
) -> None:
    base = tmp_path / "m"
    for version in (1, 2, 3):
        support.install(library, base, version)
    config = tmp_path / "models.config"
    _write_config(config, base, {"stable": 1, "canary": 2})
    server = start_server("--model-config-file", str(config), "--poll-interval-s", "0.2")
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        async def by_label(label: str) -> int:
            request = support.predict_request("m", CTX, CANDS, label=label)
            response = await stub.Predict(request, timeout=10)
            version = response.model_spec.version.value
            np.testing.assert_allclose(
                support.scores_of(response), support.expected_scores(CTX, CANDS, version), 1e-5
            )
            return version

        assert await by_label("stable") == 1
        assert await by_label("canary") == 2
        # Version 3 is on disk but outside the specific policy: the latest served is 2.
        latest = await stub.Predict(support.predict_request("m", CTX, CANDS), timeout=10)
        assert latest.model_spec.version.value == 2

        _write_config(config, base, {"stable": 2, "old": 3})

        async def moved():
            return await by_label("stable") == 2

        await eventually(moved, what="label 'stable' moved to version 2")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Predict(support.predict_request("m", CTX, CANDS, label="old"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "version 3" in info.value.details()
        assert "available versions: 1, 2" in info.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Predict(
                support.predict_request("m", CTX, CANDS, label="canary"), timeout=10
            )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "'old' -> 3" in info.value.details()
    assert server.terminate() == 0


async def test_sigterm_drains_health_not_serving_while_predicts_still_answer_then_exits_0(
    tmp_path: Path, library: Path, start_server
) -> None:
    base = tmp_path / "m"
    support.install(library, base, 1)
    server = start_server("--model-name", "m", "--model-base-path", str(base), "--grace-s", "1",
                          "--drain-s", "2")
    assert f"listening on {server.address}" in server.log()
    request = support.predict_request("m", CTX, CANDS)
    async with grpc.aio.insecure_channel(server.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="tensorflow.serving.PredictionService"),
            timeout=30,
        )
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        os.kill(server.proc.pid, signal.SIGTERM)
        second = await watch.read()
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        # Still serving while load balancers move away.
        response = await prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=5)
        assert np.allclose(support.scores_of(response), support.expected_scores(CTX, CANDS, 1),
                           rtol=1e-5)
        assert server.proc.poll() is None
    assert await asyncio.to_thread(server.proc.wait, 30) == 0
    log = server.log()
    assert "draining: health NOT_SERVING" in log
    # The Predict above arrived in the drain's first quarter: no warning about late calls.
    assert "drained: no call arrived in the last" in log, log[-2000:]


async def test_sigint_stops_at_once_without_draining(
    tmp_path: Path, library: Path, start_server
) -> None:
    base = tmp_path / "m"
    support.install(library, base, 1)
    server = start_server("--model-name", "m", "--model-base-path", str(base), "--grace-s", "1",
                          "--drain-s", "60")
    began = time.monotonic()
    os.kill(server.proc.pid, signal.SIGINT)
    assert await asyncio.to_thread(server.proc.wait, 30) == 0
    assert time.monotonic() - began < 30
    assert "draining" not in server.log()
