"""One interceptor turns exceptions into gRPC statuses, for every server of rankserve.

An exception with a ``status`` attribute naming a gRPC code (``"NOT_FOUND"``) and a ``message``
meant for the caller becomes that status; one with ``retry_after_ms`` (an overloaded server)
also gets gRPC's ``grpc-retry-pushback-ms`` trailer. Anything else is a bug: the caller gets
INTERNAL
"internal error" and the traceback goes to the log, never into the status.

A request that does not parse never reaches a handler: gRPC would answer UNKNOWN with the
parser's exception text. The interceptor wraps each handler's deserializer so such a request
gets INVALID_ARGUMENT naming the message type it should have been.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from rankserve.server.common.admission import pushback_metadata

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error"


def status_code_for(exc: BaseException) -> grpc.StatusCode | None:
    """The gRPC code an exception declares through ``status``, or None."""
    name = getattr(exc, "status", None)
    if not isinstance(name, str):
        return None
    code = getattr(grpc.StatusCode, name, None)
    return code if isinstance(code, grpc.StatusCode) and code != grpc.StatusCode.OK else None


async def _abort_for(exc: Exception, context: grpc.aio.ServicerContext, method: str) -> None:
    code = status_code_for(exc)
    if code is None:
        log.exception("unexpected error in %s", method, exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
    message = getattr(exc, "message", None) or str(exc) or code.name
    if code == grpc.StatusCode.INTERNAL:
        log.error("%s failed: %s", method, message)
    await context.abort(code, message, trailing_metadata=pushback_metadata(exc))


class _Unparsable:
    """Stands in for a request whose bytes did not parse; the handler is never called."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # protobuf's DecodeError, or any parser's equivalent
            return _Unparsable(len(data))

    return deserialize


def _message_type(deserializer: Callable[[bytes], Any] | None, method: str) -> str:
    """The request type as the service's protocol names it.

    A wire-compatible copy of another protocol's messages (TF Serving's, in
    ``rankserve.tfserving.v1``) lives in a package of its own while its service keeps the
    protocol's package; a TF Serving client knows the type as ``tensorflow.serving.X``.
    """
    owner = getattr(deserializer, "__self__", None)  # Message.FromString is a bound classmethod
    descriptor = getattr(owner, "DESCRIPTOR", None)
    if descriptor is None:
        return "request"
    package = method.lstrip("/").partition("/")[0].rpartition(".")[0]
    return f"{package}.{descriptor.name}" if package else descriptor.full_name


async def _abort_unparsable(request: _Unparsable, context, method: str, expected: str) -> None:
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the {request.size}-byte request to {method} is not a valid {expected} message;"
        " send a serialized message of that type",
    )


def _passthrough(exc: BaseException) -> bool:
    # AbortError is a status already set by the handler; cancellation must keep unwinding.
    return isinstance(exc, grpc.aio.AbortError | asyncio.CancelledError)


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Maps domain errors to statuses for unary and streaming handlers alike."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        expected = _message_type(handler.request_deserializer, method)
        deserializer = _tolerant(handler.request_deserializer)
        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def unary_response(request_or_iter: Any, context: grpc.aio.ServicerContext):
                if isinstance(request_or_iter, _Unparsable):
                    await _abort_unparsable(request_or_iter, context, method, expected)
                try:
                    return await inner(request_or_iter, context)
                except Exception as exc:
                    if _passthrough(exc):
                        raise
                    await _abort_for(exc, context, method)

            factory = (grpc.unary_unary_rpc_method_handler if handler.unary_unary
                       else grpc.stream_unary_rpc_method_handler)
            return factory(unary_response, deserializer, handler.response_serializer)

        inner_stream = handler.unary_stream or handler.stream_stream

        # A streaming handler is either an async generator or a coroutine that calls
        # context.write(); writing from a coroutine here serves both styles.
        async def stream_response(request_or_iter: Any, context: grpc.aio.ServicerContext):
            if isinstance(request_or_iter, _Unparsable):
                await _abort_unparsable(request_or_iter, context, method, expected)
            try:
                result = inner_stream(request_or_iter, context)
                if inspect.isasyncgen(result):
                    async for item in result:
                        await context.write(item)
                else:
                    await result
            except Exception as exc:
                if _passthrough(exc):
                    raise
                await _abort_for(exc, context, method)

        factory = (grpc.unary_stream_rpc_method_handler if handler.unary_stream
                   else grpc.stream_stream_rpc_method_handler)
        return factory(stream_response, deserializer, handler.response_serializer)
