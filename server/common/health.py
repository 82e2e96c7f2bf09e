"""The standard grpc.health.v1 service, flipped for all of a server's services at once."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


class HealthState:
    """Registers health on ``server`` for ``""`` (the whole server) and each named service."""

    def __init__(self, server: grpc.aio.Server, services: list[str]) -> None:
        self.servicer = health.aio.HealthServicer()
        self.services = ["", *services]
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    async def set(self, serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in self.services:
            await self.servicer.set(name, status)


async def serve_health_only(state: HealthState, host: str, port: int) -> tuple[grpc.aio.Server,
                                                                               int]:
    """A plaintext server with nothing but ``state``'s health service on ``host:port`` (0 picks
    a free port): for probes that cannot speak TLS, such as the kubelet's gRPC probes, beside a
    TLS port. Returns the started server and its bound port."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(state.servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind the health port {host}:{port}")
    await server.start()
    return server, bound
