"""Scoring through TF Serving's Predict API over long-lived grpc.aio channels.

One channel per target lives as long as the scorer: HTTP/2 connection setup per call would
cost more than a 25-row inference. There are no retries here: Envoy retries model calls
(one retry layer, so a failure never multiplies into retries of retries).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import grpc
import numpy as np
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from rankserve.ranker.errors import ScoringError
from rankserve.ranker.hedging import HedgeDelays
from rankserve.ranker.metrics import RankerMetrics
from rankserve.ranker.predict_telemetry import PREDICT_METHOD, batch_index, request_sent
from rankserve.ranker.tensors import TensorFormatError, fill_tensor_proto, from_tensor_proto
from rankserve.ranker.types import ModelRef, ScoredBatch
from rankserve.tfserving.v1 import predict_pb2

log = logging.getLogger(__name__)

SCORES_OUTPUT = "scores"
PREDICT_PATH = "/" + PREDICT_METHOD
# A model whose outputs do not match the scoring signature is a deployment error, not a
# transient one: the pipeline fails the request instead of hiding it behind fallback scores.
SIGNATURE_MISMATCH = "FAILED_PRECONDITION"
_PROPAGATOR = TraceContextTextMapPropagator()
#: The codecs gRPC offers per call. Its compression "levels" only pick among these, and zlib's
#: own level is fixed in gRPC core; bench/results/rank_bench.md has each one's cost.
CODECS: dict[str, grpc.Compression | None] = {
    "none": None, "gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}


@dataclass(frozen=True)
class Call:
    """How a model is called: its signature and the output that holds the scores (from the
    model's feature spec)."""

    signature: str = ""
    output: str = SCORES_OUTPUT


class Scorer(Protocol):
    async def score(
        self, model: ModelRef, inputs: Mapping[str, np.ndarray], rows: int, timeout_s: float,
        call: Call = Call(),
    ) -> ScoredBatch: ...


def build_request(
    model: ModelRef, inputs: Mapping[str, np.ndarray], signature_name: str = ""
) -> predict_pb2.PredictRequest:
    """A PredictRequest carrying ``inputs`` (numbers as tensor_content, strings as string_val).

    Every field is written in place: a ModelSpec built apart and copied in costs a second
    message per batch.
    """
    req = predict_pb2.PredictRequest()
    spec = req.model_spec
    spec.name = model.name
    if signature_name:
        spec.signature_name = signature_name
    if model.version is not None:
        spec.version.value = model.version
    elif model.label:
        spec.version_label = model.label
    entries = req.inputs
    for name, values in inputs.items():
        fill_tensor_proto(entries[name], values)
    return req


def parse_response(
    model: ModelRef, resp: predict_pb2.PredictResponse, rows: int, output: str = SCORES_OUTPUT
) -> ScoredBatch:
    outputs = resp.outputs
    if output not in outputs:
        raise ScoringError(
            SIGNATURE_MISMATCH,
            f"model {model} returned outputs {sorted(outputs)}, expected '{output}': set"
            " the spec's output to the one that holds the scores",
        )
    try:
        # One score per row, 8 bytes at most: a reply declaring more is refused undecoded.
        scores = from_tensor_proto(outputs[output], max_bytes=rows * 8)
    except TensorFormatError as exc:
        raise ScoringError(SIGNATURE_MISMATCH, f"model {model}: output '{output}': {exc}"
                           ) from None
    if scores.shape != (rows,):
        if scores.size != rows:
            raise ScoringError(
                SIGNATURE_MISMATCH,
                f"model {model} returned scores of shape {scores.shape} for {rows} candidates;"
                f" expected [{rows}]",
            )
        scores = scores.reshape(-1)
    spec = resp.model_spec
    version = spec.version.value if spec.HasField("version") else (model.version or 0)
    if scores.dtype != np.float32:
        scores = scores.astype(np.float32)
    return ScoredBatch(scores, int(version))


class PredictScorer:
    """A ``Scorer`` that sends one Predict call per batch to ``target`` (Envoy or a server).

    ``gzip_min_bytes``: requests at least this large are sent compressed when ``compression``
    is "gzip" or "deflate"; smaller ones are not worth the CPU. ``on_request`` sees every
    request before it is sent, with the index of its batch within the Rank (-1 outside one),
    for request capture; it must return at once and never raise. ``credentials`` (with
    ``channel_options``, e.g. the server name to check) makes the channel TLS. ``hedge``, when
    given, learns from every answered call of a model how long to wait before Envoy sends a
    copy of that model's call to another replica. ``extra_metadata``, asked before each
    call, may add one metadata entry to it (the keep header of slow traces).
    """

    def __init__(
        self,
        target: str,
        *,
        compression: str = "none",
        gzip_min_bytes: int = 16384,
        max_message_bytes: int = 64 * 1024 * 1024,
        on_request: Callable[[predict_pb2.PredictRequest, int], None] | None = None,
        metrics: RankerMetrics | None = None,
        hedge: HedgeDelays | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: tuple[tuple[str, str], ...] = (),
        extra_metadata: Callable[[], tuple[str, str] | None] | None = None,
    ) -> None:
        if compression not in CODECS:
            raise ValueError(f"compression must be one of {', '.join(CODECS)}, got"
                             f" {compression!r}")
        self.target = target
        self._codec = CODECS[compression]
        self._codec_name = compression
        self._gzip_min = gzip_min_bytes
        self._on_request = on_request
        self._metrics = metrics
        self._hedge = hedge
        self._extra_metadata = extra_metadata
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            *channel_options,
        ]
        if credentials is not None:
            self._channel = grpc.aio.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        # Requests go as bytes the scorer serialised itself: their length is the size the gzip
        # threshold, the metric and the span read, so a request is encoded once, not twice.
        self._predict = self._channel.unary_unary(
            PREDICT_PATH, request_serializer=None,
            response_deserializer=predict_pb2.PredictResponse.FromString)
        self._closed = False

    async def __aenter__(self) -> PredictScorer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        await self._channel.close()

    async def score(
        self, model: ModelRef, inputs: Mapping[str, np.ndarray], rows: int, timeout_s: float,
        call: Call = Call(),
    ) -> ScoredBatch:
        req = build_request(model, inputs, call.signature)
        if self._on_request is not None:
            self._on_request(req, batch_index())
        payload = req.SerializeToString()
        request_bytes = len(payload)
        compression = (self._codec if self._codec is not None and request_bytes >= self._gzip_min
                       else None)
        request_sent(request_bytes, self._codec_name if compression is not None else "none",
                     self._metrics)
        # The caller's batch span (if any) is current: it becomes the model server's parent.
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        metadata = list(carrier.items())
        delay = self._hedge.of(model) if self._hedge is not None else None
        hedge = delay.metadata(timeout_s) if delay is not None else None
        if hedge is not None:
            metadata.append(hedge)
        if self._extra_metadata is not None and (extra := self._extra_metadata()) is not None:
            metadata.append(extra)
        started = time.perf_counter()
        try:
            resp = await self._predict(payload, timeout=timeout_s, compression=compression,
                                       metadata=tuple(metadata) or None)
        except grpc.aio.AioRpcError as exc:
            raise ScoringError(exc.code().name, exc.details() or exc.code().name) from None
        if delay is not None:
            delay.observe(time.perf_counter() - started)
        return parse_response(model, resp, rows, call.output)
