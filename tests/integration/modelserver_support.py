"""Helpers of the model server tests: tiny SavedModels, a server process, TF Serving clients.

Each test model scores ``candidates @ W + sum(context) * version``, so a response tells which
version computed it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

C, F = 4, 6
W = (np.arange(F, dtype=np.float32) + 1.0) / 10.0
REPO = Path(__file__).resolve().parents[2]


def build_model(path: Path, version: int) -> Path:
    """SavedModel with signature serving_default: context [1, C], candidates [?, F] -> scores."""
    import tensorflow as tf

    class Scorer(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(W)
            self.k = tf.Variable(float(version))

        @tf.function(
            input_signature=[
                tf.TensorSpec([1, C], tf.float32, name="context"),
                tf.TensorSpec([None, F], tf.float32, name="candidates"),
            ]
        )
        def serve(self, context, candidates):
            scores = tf.linalg.matvec(candidates, self.w) + tf.reduce_sum(context) * self.k
            return {"scores": scores}

    scorer = Scorer()
    tf.saved_model.save(scorer, str(path), signatures={"serving_default": scorer.serve})
    return path


def expected_scores(context: np.ndarray, candidates: np.ndarray, version: int) -> np.ndarray:
    return candidates @ W + float(context.sum()) * version


def install(library: Path, base: Path, version: int) -> None:
    """Copy a built version into ``base`` atomically (copy aside, then rename)."""
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".incoming-{version}"
    shutil.copytree(library / str(version), tmp)
    os.replace(tmp, base / str(version))


def remove(base: Path, version: int) -> None:
    """Take a version away atomically (rename aside, then delete)."""
    gone = base / f".removed-{version}"
    os.replace(base / str(version), gone)
    shutil.rmtree(gone)


def install_garbage(base: Path, version: int) -> None:
    tmp = base / f".incoming-{version}"
    tmp.mkdir(parents=True)
    (tmp / "saved_model.pb").write_bytes(b"\x0a\xff\xffthis is not a SavedModel")
    os.replace(tmp, base / str(version))


def predict_request(
    name: str,
    context: np.ndarray,
    candidates: np.ndarray,
    version: int | None = None,
    label: str | None = None,
):
    """An official ``tensorflow_serving`` PredictRequest, as a TF Serving client builds it."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs["context"].CopyFrom(official_tensor(context, use_tensor_content=True))
    request.inputs["candidates"].CopyFrom(official_tensor(candidates, use_tensor_content=True))
    return request


def official_tensor(array: np.ndarray, use_tensor_content: bool = False):
    """TensorFlow's own TensorProto of ``array``, carried over from the server's encoder by bytes
    (the server encodes into its slim TensorProto, a different message class)."""
    from tensorflow.core.framework import tensor_pb2

    from rankserve.server.modelserver.tensors import from_numpy

    return tensor_pb2.TensorProto.FromString(
        from_numpy(array, use_tensor_content=use_tensor_content).SerializeToString()
    )


def scores_of(response) -> np.ndarray:
    from rankserve.server.modelserver.tensors import to_numpy

    return to_numpy("scores", response.outputs["scores"], 1 << 30)


class ServerProcess:
    """``python -m rankserve.server.modelserver`` on 127.0.0.1:0; the port comes from the ready
    file."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.ready_file = tmp / f"ready-{time.monotonic_ns()}.json"
        self.log_path = tmp / f"server-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        cmd = [sys.executable, "-m", "rankserve.server.modelserver", "--host", "127.0.0.1",
               "--port", "0"]
        # No drain on SIGTERM unless a test asks for one (its --drain-s comes later and wins).
        cmd += ["--metrics-port", "0", "--ready-file", str(self.ready_file), "--drain-s", "0",
                *args]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._log, stderr=self._log, env=env)
        self.address = ""

    def wait_ready(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log()}")
            if self.ready_file.exists():
                info = json.loads(self.ready_file.read_text())
                assert info["pid"] == self.proc.pid
                self.address = info["address"]
                return self.address
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()


@contextlib.contextmanager
def serving_test_model(tmp_path_factory, name: str = "m") -> Iterator[ServerProcess]:
    """A model server process serving version 1 of the test model as ``name``; killed after."""
    tmp = tmp_path_factory.mktemp(f"model-server-{name}")
    install(model_library(tmp_path_factory), tmp / name, 1)
    proc = ServerProcess(tmp, "--model-name", name, "--model-base-path", str(tmp / name))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.kill()


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def model_library(tmp_path_factory) -> Path:
    """Versions 1, 2 and 3 of the test model, built once per session (shared by modules)."""
    root = tmp_path_factory.getbasetemp() / "modelserver-library"
    done = root / "done"
    if not done.exists():
        root.mkdir(exist_ok=True)
        for version in (1, 2, 3):
            build_model(root / str(version), version)
        done.touch()
    return root
