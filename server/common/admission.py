"""Admission control: a bounded amount of work runs, the excess is refused at once.

Past capacity, a server that accepts everything makes every call wait until deadlines expire,
so goodput falls to zero. Here at most ``limit`` calls run at once; up to ``queue`` more may
wait up to ``max_wait_s`` for a slot (a burst near capacity is absorbed, not refused), and only
while the expected wait, from the recent duration of admitted calls, is within it; anything
beyond is answered RESOURCE_EXHAUSTED at once, before its request is parsed, with a retry hint
in ``grpc-retry-pushback-ms`` (gRPC's retry pushback): the time a slot takes to free.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

PUSHBACK_KEY = "grpc-retry-pushback-ms"


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float:
    """CPUs this process may use: its cgroup's CPU quota when one is set (a Kubernetes CPU
    limit; cgroup v2 or v1), else the cores of its CPU affinity."""
    cores = float(len(os.sched_getaffinity(0)))
    quota = None
    try:
        text = (cgroup_root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            quota = int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        try:
            us = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
            period = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
            if us > 0 and period > 0:
                quota = us / period
        except (OSError, ValueError):
            pass
    return min(cores, quota) if quota else cores


def auto_limit(per_cpu: float, cpus: float | None = None) -> int:
    """``per_cpu`` calls per available CPU, at least 1."""
    return max(1, math.ceil(per_cpu * (available_cpus() if cpus is None else cpus)))


class Overloaded(Exception):
    """The server is past what it admits. ``retry_after_ms`` becomes the pushback trailer."""

    status = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_ms = retry_after_ms


def pushback_metadata(exc: BaseException) -> tuple[tuple[str, str], ...]:
    """The trailer an error's ``retry_after_ms`` asks for; empty when it names none."""
    ms = getattr(exc, "retry_after_ms", None)
    return ((PUSHBACK_KEY, str(int(ms))),) if isinstance(ms, int) and ms >= 0 else ()


class Admission:
    """Slots for ``limit`` calls at once and a queue of ``queue`` waiting at most ``max_wait_s``.

    ``on_shed(reason)`` hears of every refusal: "full" (no slot, and no room to wait or a wait
    likely longer than ``max_wait_s``) or "queue_timeout" (waited ``max_wait_s`` without a
    slot). Single event loop; no locks.
    """

    def __init__(
        self, limit: int, *, queue: int = 0, max_wait_s: float = 0.0, what: str = "calls",
        on_shed: Callable[[str], None] | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"admission limit must be at least 1, got {limit}")
        self.limit = limit
        self.queue = max(0, queue)
        self.max_wait_s = max(0.0, max_wait_s)
        self.what = what
        self._on_shed = on_shed
        self.running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._mean_s = 0.0  # moving mean of an admitted call's duration

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def full(self) -> bool:
        """No slot free and no room to wait, or a wait longer than ``max_wait_s`` likely: a
        call arriving now would be refused. Refusing at once what would only time out in the
        queue keeps every refusal immediate."""
        return self.running >= self.limit and (
            self.waiting >= self.queue or self.max_wait_s == 0
            or self._mean_s * (self.waiting + 1) / self.limit > self.max_wait_s)

    def retry_after_ms(self) -> int:
        """How long until a slot is likely free: the calls ahead, over the slots, times the
        mean duration of one; at least 1 ms."""
        ahead = self.waiting + 1
        return max(1, round(self._mean_s * 1e3 * ahead / self.limit))

    def refusal(self, reason: str) -> Overloaded:
        """The error for a call refused now (``reason`` as ``on_shed`` hears it), counted."""
        if self._on_shed is not None:
            self._on_shed(reason)
        if reason == "queue_timeout":
            detail = f"no slot within {self.max_wait_s * 1e3:g} ms"
        elif self.waiting >= self.queue or self.max_wait_s == 0:
            detail = "all busy and no room to wait"
        else:
            detail = (f"all busy and a slot about {self.retry_after_ms()} ms away, over the"
                      f" {self.max_wait_s * 1e3:g} ms a call may wait")
        return Overloaded(
            f"overloaded: {self.running} {self.what} running, {self.waiting} waiting"
            f" ({detail}); retry after the pushback or on another replica",
            self.retry_after_ms())

    async def acquire(self) -> None:
        """Takes a slot, waiting in the queue if there is room; raises Overloaded otherwise."""
        if self.running < self.limit and not self._waiters:
            self.running += 1
            return
        if self.full():
            raise self.refusal("full")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.max_wait_s)
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return  # the slot was handed over just as the wait ran out: keep it
            waiter.cancel()
            raise self.refusal("queue_timeout") from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(None)  # handed a slot, but the caller went away: pass it on
            waiter.cancel()
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def release(self, duration_s: float | None) -> None:
        """Frees a slot (handing it to the first live waiter) and learns from ``duration_s``."""
        if duration_s is not None:
            self._mean_s += 0.1 * (duration_s - self._mean_s)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on; running stays the same
                return
        self.running -= 1


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """Admits the unary ``methods`` (full method names) through ``admission``.

    A call refused while the server is full never has its request parsed: its handler gets a
    deserializer that keeps nothing. Sits inside the metrics interceptor (a refusal is counted
    with its status) and outside error mapping.
    """

    def __init__(self, admission: Admission, methods: Iterable[str]) -> None:
        self._admission = admission
        self._methods = frozenset(methods)

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None or details.method not in self._methods:
            return handler
        admission = self._admission
        inner = handler.unary_unary

        async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> Any:
            exc = admission.refusal("full")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.message,
                                trailing_metadata=pushback_metadata(exc))

        if admission.full():
            return grpc.unary_unary_rpc_method_handler(
                refuse, request_deserializer=_discard,
                response_serializer=handler.response_serializer)

        async def admitted(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                await admission.acquire()
            except Overloaded as exc:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.message,
                                    trailing_metadata=pushback_metadata(exc))
            started = time.perf_counter()
            try:
                return await inner(request, context)
            finally:
                admission.release(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            admitted, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def _discard(_data: bytes) -> None:
    return None
