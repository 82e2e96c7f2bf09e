"""A Predict server process for load tests: fixed service time, limited concurrency, injected
failures. Real gRPC on a loopback port it picks itself, reported in a ready file.

    python -m tests.support.predict_process --ready-file F [--service-ms 20] [--workers 1]
        [--fail-every 5 --fail-code UNAVAILABLE]

With ``--workers 1 --service-ms 20`` the server completes at most 50 requests a second, like a
model server with one inference thread: arrivals beyond that queue up.
"""

from __future__ import annotations

import argparse
import asyncio

import grpc

from rankserve.server.common.readyfile import write_ready_file
from rankserve.server.common.shutdown import run_until_signal
from rankserve.tfserving.v1 import predict_pb2, prediction_service_pb2_grpc
from tests.support.predict_server import NumpyModel, NumpyPredictionService


class PacedService(NumpyPredictionService):
    def __init__(self, model: NumpyModel, service_s: float, workers: int, fail_every: int,
                 fail_code: grpc.StatusCode) -> None:
        super().__init__(model)
        self._service_s = service_s
        self._workers = asyncio.Semaphore(workers)
        self._fail_every = fail_every
        self._fail_code = fail_code
        self.calls = 0

    async def Predict(self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext
                      ) -> predict_pb2.PredictResponse:
        self.calls += 1
        if self._fail_every and self.calls % self._fail_every == 0:
            await context.abort(self._fail_code, f"injected failure on call {self.calls}")
        async with self._workers:
            if self._service_s:
                await asyncio.sleep(self._service_s)
            return await super().Predict(request, context)


async def serve(args: argparse.Namespace) -> None:
    server = grpc.aio.server()
    service = PacedService(NumpyModel(name=args.model_name), args.service_ms / 1e3, args.workers,
                           args.fail_every, grpc.StatusCode[args.fail_code])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")

    async def start() -> None:
        await server.start()
        write_ready_file(args.ready_file, f"127.0.0.1:{port}")

    # SIGTERM or SIGINT stops it at once (no drain).
    await run_until_signal(start, lambda: server.stop(0.5), drain_on=())


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tests.support.predict_process")
    p.add_argument("--ready-file", required=True)
    p.add_argument("--model-name", default="ranker")
    p.add_argument("--service-ms", type=float, default=0.0)
    p.add_argument("--workers", type=int, default=64)
    p.add_argument("--fail-every", type=int, default=0)
    p.add_argument("--fail-code", default="UNAVAILABLE")
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
