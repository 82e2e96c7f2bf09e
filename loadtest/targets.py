"""What a load test sends to: one model (Predict) or the whole ranker (Rank).

A ``Target`` is an address plus what is known about the processes behind it. Anything that can
produce one (a running local server, a temporary deployment) is a ``TargetProvider``: a context
manager that yields the target ready for traffic and tears down what it set up when the test
ends, interrupted or not.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

import grpc

from rankserve.server.common.tls import TlsFiles

Kind = Literal["predict", "rank"]

METHODS: dict[str, str] = {
    # TF Serving's wire name: the same call reaches TF Serving, our model server or Envoy.
    "predict": "/tensorflow.serving.PredictionService/Predict",
    "rank": "/rankserve.ranking.v1.RankingService/Rank",
}


@dataclass(frozen=True)
class Target:
    """``kind`` of call sent to ``address`` (host:port); ``server_pids``: local processes that
    serve it, whose CPU time the report divides by the requests (empty: not known). ``tls``:
    call over TLS (a TLS ranker); ``metadata``: sent with every call (a bearer token)."""

    kind: Kind
    address: str
    server_pids: tuple[int, ...] = ()
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    tls: TlsFiles | None = None
    metadata: tuple[tuple[str, str], ...] = ()

    @property
    def method(self) -> str:
        return METHODS[self.kind]


class TargetProvider(Protocol):
    def __call__(self) -> contextlib.AbstractContextManager[Target]: ...


def static(target: Target) -> TargetProvider:
    """A provider for a target that is already running and stays running."""

    @contextlib.contextmanager
    def provide() -> Iterator[Target]:
        yield target

    return provide


class Caller:
    """One long-lived channel to the target; sends pre-serialised requests.

    Requests go out as bytes (no per-call serialisation in the load generator, and the bytes
    sent are known exactly); responses come back as bytes and are only measured.
    """

    def __init__(self, target: Target, max_message_bytes: int = 64 * 1024 * 1024) -> None:
        self.target = target
        options = [("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.max_receive_message_length", max_message_bytes)]
        tls = target.tls
        if tls is not None and tls.enabled:
            self._channel = grpc.aio.secure_channel(
                target.address, tls.channel_credentials(), options=options + tls.channel_options())
        else:
            self._channel = grpc.aio.insecure_channel(target.address, options=options)
        self._metadata = target.metadata or None
        self._call = self._channel.unary_unary(target.method)

    async def __aenter__(self) -> Caller:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._channel.close()

    async def wait_ready(self, timeout_s: float) -> None:
        """Connects before the clock starts; fails with a message naming the address."""
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout_s)
        except TimeoutError:
            raise ConnectionError(
                f"no gRPC server answered at {self.target.address} within {timeout_s:.0f} s:"
                " check --target and that the server is running") from None

    async def call(self, payload: bytes, timeout_s: float, gzip: bool) -> tuple[str, int]:
        """(status code name, response bytes); never raises for an RPC error."""
        try:
            resp = await self._call(
                payload, timeout=timeout_s, metadata=self._metadata,
                compression=grpc.Compression.Gzip if gzip else None)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, 0
        return "OK", len(resp)

