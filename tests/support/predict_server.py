"""A real grpc.aio PredictionService that scores with numpy, for tests without TensorFlow.

Scores are ``candidates @ weights + context.sum()``. Hooks let a test fail or delay chosen
batches; ``fail`` sees the candidate matrix, so a test can fail batches by their content and get
exact, order-independent counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np

from rankserve.ranker.tensors import from_tensor_proto, to_tensor_proto
from rankserve.tfserving.v1 import predict_pb2, prediction_service_pb2_grpc


def reference_scores(weights: np.ndarray, context: np.ndarray, candidates: np.ndarray
                     ) -> np.ndarray:
    return (candidates @ weights + context.sum()).astype(np.float32)


@dataclass
class NumpyModel:
    name: str = "ranker"
    versions: tuple[int, ...] = (1,)
    labels: dict[str, int] = field(default_factory=dict)
    weights: np.ndarray | None = None
    # (context [1, C], candidates [B, F]) -> a status code to fail with, or None.
    fail: Callable[[np.ndarray, np.ndarray], grpc.StatusCode | None] | None = None
    # (candidates) -> seconds to sleep before answering.
    delay: Callable[[np.ndarray], float] | None = None
    # Version answering a "latest" request; defaults to the highest.
    version_for: Callable[[np.ndarray], int] | None = None
    requests: int = 0
    # The traceparent each Predict arrived with ("" without one).
    traceparents: list[str] = field(default_factory=list)


class NumpyPredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, model: NumpyModel) -> None:
        self.model = model

    async def Predict(self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext
                      ) -> predict_pb2.PredictResponse:
        m = self.model
        m.requests += 1
        m.traceparents.append(dict(context.invocation_metadata() or ()).get("traceparent", ""))
        spec = request.model_spec
        if spec.name != m.name:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"Servable not found for request: Latest({spec.name})")
        if spec.HasField("version"):
            version = spec.version.value
            if version not in m.versions:
                await context.abort(grpc.StatusCode.NOT_FOUND,
                                    f"Servable not found for request: Specific({spec.name},"
                                    f" {version})")
        elif spec.version_label:
            if spec.version_label not in m.labels:
                await context.abort(grpc.StatusCode.NOT_FOUND,
                                    f"Unrecognized servable version label: {spec.version_label}")
            version = m.labels[spec.version_label]
        else:
            version = max(m.versions)
        try:
            ctx = from_tensor_proto(request.inputs["context"])
            cands = from_tensor_proto(request.inputs["candidates"])
        except (KeyError, ValueError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad inputs: {exc}")
        weights = m.weights if m.weights is not None else np.ones(cands.shape[1], np.float32)
        if ctx.ndim != 2 or cands.ndim != 2 or cands.shape[1] != weights.shape[0]:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"candidates must be [B, {weights.shape[0]}], got {cands.shape}")
        if m.delay is not None:
            await asyncio.sleep(m.delay(cands))
        if m.fail is not None and (code := m.fail(ctx, cands)) is not None:
            await context.abort(code, "injected failure")
        if m.version_for is not None and not spec.HasField("version"):
            version = m.version_for(cands)
        resp = predict_pb2.PredictResponse()
        resp.outputs["scores"].CopyFrom(to_tensor_proto(reference_scores(weights, ctx, cands)))
        resp.model_spec.name = m.name
        resp.model_spec.version.value = version
        return resp


class PredictServer:
    """``async with PredictServer(model) as srv:`` serves on ``srv.target`` (127.0.0.1:port)."""

    def __init__(self, model: NumpyModel) -> None:
        self.model = model
        self.target = ""
        self._server: grpc.aio.Server | None = None

    async def __aenter__(self) -> PredictServer:
        self._server = grpc.aio.server()
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            NumpyPredictionService(self.model), self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        self.target = f"127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        await self._server.stop(None)
