"""An echo model server for the transport floor: TF Serving's Predict without a model.

It parses each PredictRequest (as any server must), answers one float score per row of its
batched input, and says SERVING on gRPC health so Envoy's active checks admit it. Everything a
Rank pays on top of calls to this server is rankserve's own work, not the fan-out's.

    python -m bench.echo_predict --ready-file F
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from rankserve.server.common.readyfile import write_ready_file
from rankserve.server.common.shutdown import run_until_signal
from rankserve.tfserving.v1 import predict_pb2, prediction_service_pb2_grpc, tensor_pb2


class EchoPrediction(prediction_service_pb2_grpc.PredictionServiceServicer):
    async def Predict(self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext
                      ) -> predict_pb2.PredictResponse:  # noqa: N802
        # Rows of the batched input: the first input whose leading dim is not 1 (else 1).
        rows = 1
        for tensor in request.inputs.values():
            dims = tensor.tensor_shape.dim
            if dims and dims[0].size != 1:
                rows = dims[0].size
                break
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = 1
        scores = response.outputs["scores"]
        scores.dtype = tensor_pb2.DT_FLOAT
        scores.tensor_shape.dim.add(size=rows)
        scores.float_val.extend([0.5] * rows)
        return response


async def serve(ready_file: str) -> None:
    server = grpc.aio.server()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(EchoPrediction(), server)
    health_servicer = health.aio.HealthServicer()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")

    async def start() -> None:
        await server.start()
        write_ready_file(ready_file, f"127.0.0.1:{port}", metrics_address="")

    # SIGTERM or SIGINT stops it at once (no drain: the local stack stops it with SIGINT).
    await run_until_signal(start, lambda: server.stop(0.5), drain_on=())


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.echo_predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ready-file", required=True, help="Where to write the bound address.")
    asyncio.run(serve(p.parse_args().ready_file))


if __name__ == "__main__":
    main()
