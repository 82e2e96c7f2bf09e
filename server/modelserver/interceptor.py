"""The one place where errors become gRPC statuses.

Domain errors carry the status code name they map to; anything else is a bug or an environment
failure, so the caller gets INTERNAL "internal error" and the detail goes to the log. A stack
trace never reaches a client.
"""

from __future__ import annotations

import logging

import grpc

from .errors import ModelServerError

log = logging.getLogger(__name__)


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps unary-unary handlers; health and reflection pass through untouched."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        behavior = handler.unary_unary

        async def mapped(request, context: grpc.aio.ServicerContext):
            try:
                return await behavior(request, context)
            except ModelServerError as exc:
                await context.abort(_code(exc.status), exc.message)
            except (grpc.aio.AbortError, grpc.aio.UsageError):
                raise
            except Exception:
                log.exception("unexpected error in %s", method)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")

        return grpc.unary_unary_rpc_method_handler(
            mapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _code(status: str) -> grpc.StatusCode:
    try:
        return grpc.StatusCode[status]
    except KeyError:
        return grpc.StatusCode.INTERNAL
