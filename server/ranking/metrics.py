"""Server-side metrics of Rank calls: latency by final status, and calls in flight.

Sits between the tracing and the error-mapping interceptors, so it sees the status the caller
gets (error mapping has already turned exceptions into statuses).
"""

from __future__ import annotations

import time
from typing import Any

import grpc

from rankserve.ranker.metrics import RankerMetrics
from rankserve.server.telemetry.interceptors import call_status, observed, with_unary


class RankMetricsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: RankerMetrics) -> None:
        self._metrics = metrics
        # time.monotonic() of the last Rank that arrived: a drain checks that traffic stopped.
        self.last_arrival = 0.0

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if not observed(handler, details):
            return handler
        inner = handler.unary_unary
        metrics = self._metrics

        async def measured(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            self.last_arrival = time.monotonic()
            metrics.in_flight.inc()
            error: BaseException | None = None
            try:
                return await inner(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                metrics.in_flight.dec()
                metrics.rank_duration.labels(call_status(error, context)).observe(
                    time.perf_counter() - started)

        return with_unary(handler, measured)
