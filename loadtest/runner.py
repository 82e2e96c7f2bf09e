"""Sends the load: open loop at a target rate, or closed loop at a concurrency.

Open loop: every request has a due time fixed in advance; latency counts from that due time,
so when the server (or this generator) falls behind, the wait shows up in the latency instead of
silently stretching the schedule (coordinated omission). Closed loop: ``concurrency`` callers,
each sending its next request when the previous one answers; latency counts from the send.
Requests due during the warm-up are sent but not counted.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from rankserve.loadtest.arrivals import Arrivals, schedule
from rankserve.loadtest.cpu import pids_cpu_s, self_cpu_s
from rankserve.loadtest.progress import Live
from rankserve.loadtest.samples import Samples
from rankserve.loadtest.schedule import RateSchedule
from rankserve.loadtest.sources import Payloads
from rankserve.loadtest.targets import Caller, Target

Mode = Literal["open", "closed"]


@dataclass(frozen=True)
class LoadSpec:
    """How to load a target; every field is reported with the run."""

    mode: Mode = "open"
    rate: float = 50.0  # open loop: requests per second
    arrivals: Arrivals = "constant"
    concurrency: int = 8  # closed loop: requests in flight
    duration_s: float = 10.0  # measured part, after the warm-up
    warmup_s: float = 2.0
    max_requests: int | None = None  # stop after this many requests in all (warm-up included)
    timeout_s: float = 1.0
    compression: Literal["none", "gzip"] = "none"
    max_in_flight: int = 1000  # open loop: beyond this, due requests wait (and it shows)
    seed: int = 0
    # Open loop: a rate that changes over the measured part (the warm-up runs at its first
    # rate); replaces ``rate``, and ``duration_s`` is the schedule's length.
    rate_schedule: RateSchedule | None = None
    window_s: float | None = None  # report windows of a scheduled run (None: automatic)

    def validate(self) -> None:
        if self.mode not in ("open", "closed"):
            raise ValueError(f"mode must be 'open' or 'closed', got {self.mode!r}")
        if self.rate_schedule is not None:
            if self.mode != "open":
                raise ValueError("a rate schedule needs the open loop: drop --mode closed")
            if abs(self.rate_schedule.duration_s - self.duration_s) > 1e-6:
                raise ValueError("duration_s must be the rate schedule's length")
            if self.window_s is not None and self.window_s <= 0:
                raise ValueError("--window must be > 0 seconds")
        if self.mode == "open" and self.rate <= 0:
            raise ValueError("open loop needs --rate > 0")
        if self.mode == "closed" and self.concurrency < 1:
            raise ValueError("closed loop needs --concurrency >= 1")
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError("--duration must be > 0 and --warmup >= 0")
        if self.timeout_s <= 0:
            raise ValueError("--timeout-ms must be > 0")


@dataclass
class RunOutcome:
    spec: LoadSpec
    target: Target
    payloads: Payloads
    samples: Samples
    measured_from: float  # loop time where counting started (end of warm-up)
    client_cpu_s: float  # over the whole run, warm-up included
    server_cpu_s: float | None
    requests_sent: int  # warm-up included, for the CPU per request
    alongside: Any = None  # what the ``alongside`` task returned (e.g. a profile capture)


async def run(target: Target, payloads: Payloads, spec: LoadSpec, *, live: Live | None = None,
              connect_timeout_s: float = 10.0,
              alongside: Callable[[float], Awaitable[Any]] | None = None) -> RunOutcome:
    """One run against ``target``; returns raw samples and CPU figures. ``alongside``, given
    the loop time the measured part starts at, runs as a task beside the load (the run waits
    for it) and its result comes back in ``RunOutcome.alongside``."""
    spec.validate()
    if not len(payloads):
        raise ValueError("no requests to send")
    if payloads.kind != target.kind:
        raise ValueError(f"{payloads.kind} requests cannot be sent to a {target.kind} target")
    live = live or Live()
    async with Caller(target) as caller:
        await caller.wait_ready(connect_timeout_s)
        cpu0, srv0 = self_cpu_s(), pids_cpu_s(target.server_pids)
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.02
        samples = Samples()
        measured_from = start + spec.warmup_s
        live.begin(start, measured_from, _full_schedule(spec))
        beside = asyncio.create_task(alongside(measured_from)) if alongside else None
        try:
            if spec.mode == "open":
                await _open_loop(caller, payloads, spec, samples, start, measured_from, live)
            else:
                await _closed_loop(caller, payloads, spec, samples, start, measured_from, live)
            cpu1, srv1 = self_cpu_s(), pids_cpu_s(target.server_pids)
            extra = await beside if beside is not None else None
        finally:
            if beside is not None and not beside.done():
                beside.cancel()
    server = srv1 - srv0 if srv0 is not None and srv1 is not None else None
    return RunOutcome(spec, target, payloads, samples, measured_from, cpu1 - cpu0, server,
                      len(samples), extra)


async def _one(caller: Caller, payloads: Payloads, i: int, due: float, spec: LoadSpec,
               samples: Samples, measured_from: float, live: Live) -> None:
    loop = asyncio.get_running_loop()
    gzip = spec.compression == "gzip"
    payload = payloads[i]
    sent = loop.time()
    code, resp = await caller.call(payload, spec.timeout_s, gzip)
    done = loop.time()
    wire = payloads.gzip_size(i) if gzip else len(payload)
    counted = due >= measured_from
    samples.add(due, sent, done, code, wire, resp, counted)
    live.record(done, done - due, code == "OK", counted)


async def _open_loop(caller: Caller, payloads: Payloads, spec: LoadSpec, samples: Samples,
                     start: float, measured_from: float, live: Live) -> None:
    loop = asyncio.get_running_loop()
    full = _full_schedule(spec)
    if full is not None:
        offsets = full.arrivals(spec.arrivals, seed=spec.seed, limit=spec.max_requests)
    else:
        offsets = schedule(spec.rate, spec.warmup_s + spec.duration_s, spec.arrivals,
                           seed=spec.seed, limit=spec.max_requests)
    slots = asyncio.Semaphore(spec.max_in_flight)
    pending: set[asyncio.Task[None]] = set()

    async def send(i: int, due: float) -> None:
        try:
            await _one(caller, payloads, i, due, spec, samples, measured_from, live)
        finally:
            slots.release()

    for i, off in enumerate(offsets):
        due = start + float(off)
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        # Past max_in_flight the send waits for a slot; its latency still counts from `due`.
        await slots.acquire()
        task = asyncio.create_task(send(i, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)


def _full_schedule(spec: LoadSpec) -> RateSchedule | None:
    """The rate schedule with the warm-up in front (at the schedule's first rate)."""
    if spec.rate_schedule is None:
        return None
    return spec.rate_schedule.with_warmup(spec.warmup_s)


async def _closed_loop(caller: Caller, payloads: Payloads, spec: LoadSpec, samples: Samples,
                       start: float, measured_from: float, live: Live) -> None:
    loop = asyncio.get_running_loop()
    end = measured_from + spec.duration_s
    counter = itertools.count()
    limit = spec.max_requests

    async def worker() -> None:
        delay = start - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        while True:
            now = loop.time()
            if now >= end:
                return
            i = next(counter)
            if limit is not None and i >= limit:
                return
            await _one(caller, payloads, i, now, spec, samples, measured_from, live)

    await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
