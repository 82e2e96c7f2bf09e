"""Server-side metrics of Rank calls: latency by final status, and calls in flight.

Sits between the tracing and the error-mapping interceptors, so it sees the status the caller
gets (error mapping has already turned exceptions into statuses), and inside the call's span: a
latency observation carries the trace id as an exemplar when that trace is exported.
"""

from __future__ import annotations

import time
from typing import Any

import grpc

from rankserve.ranker.metrics import RankerMetrics
from rankserve.server.telemetry.exemplars import exemplar
from rankserve.server.telemetry.interceptors import call_status, observed, with_unary
from rankserve.server.telemetry.keep import HeldSpans


class RankMetricsInterceptor(grpc.aio.ServerInterceptor):
    """``held``: the keep policy's spans, which say whether a slow Rank's trace is kept."""

    def __init__(self, metrics: RankerMetrics, held: HeldSpans | None = None) -> None:
        self._metrics = metrics
        self._held = held
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
                seconds = time.perf_counter() - started
                status = call_status(error, context)
                kept = self._held is not None and self._held.would_keep(seconds, status != "OK")
                metrics.rank_duration.labels(status).observe(seconds, exemplar(kept))

        return with_unary(handler, measured)
