"""The shared error-mapping interceptor over a real socket."""

from __future__ import annotations

import grpc
import pytest

from rankserve.ranker.errors import NotFound, ScoringError
from rankserve.server.common import ErrorMappingInterceptor

SERVICE = "test.Errors"


class Boom(Exception):
    pass


def _raise(exc):
    async def unary(request, context):
        raise exc

    async def stream(request, context):
        yield b"first"
        raise exc

    async def writer(request, context):
        await context.write(b"first")
        raise exc

    return unary, stream, writer


def _handler(exc):
    unary, stream, writer = _raise(exc)
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Writer": grpc.unary_stream_rpc_method_handler(writer),
    })


@pytest.mark.parametrize(
    ("exc", "code", "details"),
    [
        (NotFound("model x is not served; check --model-name"), grpc.StatusCode.NOT_FOUND,
         "model x is not served; check --model-name"),
        (ScoringError("UNAVAILABLE", "no healthy upstream"), grpc.StatusCode.UNAVAILABLE,
         "no healthy upstream"),
        (Boom("secret detail /etc/passwd"), grpc.StatusCode.INTERNAL, "internal error"),
    ],
)
@pytest.mark.parametrize("method", ["Unary", "Stream", "Writer"])
async def test_exceptions_become_statuses(exc, code, details, method, caplog):
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
    server.add_generic_rpc_handlers((_handler(exc),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            if method == "Unary":
                call = channel.unary_unary(f"/{SERVICE}/Unary")(b"", timeout=5)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call
            else:
                call = channel.unary_stream(f"/{SERVICE}/{method}")(b"", timeout=5)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    assert await call.read() == b"first"
                    await call.read()
    finally:
        await server.stop(None)
    assert info.value.code() == code
    assert info.value.details() == details
    if isinstance(exc, Boom):
        assert "secret detail" in caplog.text
