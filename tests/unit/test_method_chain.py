"""PerMethodChain: a server's interceptors build each method's handler once, and what they wrap
still runs on every call, over a real gRPC server on loopback."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from rankserve.server.common.errors import ErrorMappingInterceptor
from rankserve.server.common.method_chain import PerMethodChain
from rankserve.server.telemetry.interceptors import with_unary

pytestmark = pytest.mark.timeout(30)
CHECK = "/grpc.health.v1.Health/Check"


class Counting(grpc.aio.ServerInterceptor):
    """Counts handler builds per method and calls per method; tags responses with its name."""

    def __init__(self, name: str, order: list[str]) -> None:
        self.name = name
        self.order = order
        self.builds: dict[str, int] = {}
        self.calls = 0

    async def intercept_service(self, continuation, details):
        self.builds[details.method] = self.builds.get(details.method, 0) + 1
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def counted(request, context):
            self.calls += 1
            self.order.append(self.name)
            return await inner(request, context)

        return with_unary(handler, counted)


async def serve(interceptors):
    server = grpc.aio.server(interceptors=interceptors)
    servicer = health.aio.HealthServicer()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def test_handlers_are_built_once_per_method_and_wrap_every_call():
    order: list[str] = []
    outer, inner = Counting("outer", order), Counting("inner", order)
    server, port = await serve([PerMethodChain([outer, inner, ErrorMappingInterceptor()])])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(5):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            # Unknown service: the error still comes from the servicer, through the chain.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await server.stop(0)
    assert outer.builds == inner.builds == {CHECK: 1}
    assert outer.calls == inner.calls == 6
    assert order[:4] == ["outer", "inner", "outer", "inner"]


async def test_a_method_no_servicer_has_is_unimplemented_and_never_kept():
    counting = Counting("only", [])
    chain = PerMethodChain([counting])
    server, port = await serve([chain])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            missing = channel.unary_unary("/no.Such/Method")
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await missing(b"", timeout=5)
                assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(0)
    assert counting.builds == {"/no.Such/Method": 3}  # asked each time: nothing was kept

