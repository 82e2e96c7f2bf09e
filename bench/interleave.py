"""Rows measured in turns: every subject runs a short slice, then the next, round after round.

These machines are shared, and their speed drifts by 20-40% over minutes. Measured one after
another, two rows of one run differed by more than the changes they were meant to show (the same
stack at 27 and 40 Ranks/s four minutes apart). Taking turns in slices of a second or two, every
row sees the same drift, so their ratios hold. Each subject's processes stay up for the whole
run; only the CPU of the subject in its slice is counted, so the idle ones add nothing to it.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from bench.measure import TIERS, Row, cpu_seconds, envoy_counter, percentiles, tier_cpu
from rankserve.loadtest.cpu import self_cpu_s
from rankserve.ranking.v1 import ranking_pb2, ranking_pb2_grpc
from rankserve.tools.stack.local import LocalStack

ENVOY_RX = "http.model_ingress.downstream_cx_rx_bytes_total"


@dataclass
class Tally:
    """What one subject's slices added up to."""

    latencies_s: list[float] = field(default_factory=list)
    ranks: int = 0  # completed in the closed-loop slices
    wall_s: float = 0.0
    aside_cpu_s: float = 0.0
    rx_bytes: int = 0  # what the subject's Envoy received in the closed-loop slices
    tiers: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIERS, 0.0))
    last_trace_id: str = ""

    @property
    def cpu_s(self) -> float:
        """The subject's processes (but those set aside) and this client."""
        return sum(self.tiers.values())

    def row(self, label: str, note: str) -> Row:
        p50, p99 = percentiles(self.latencies_s)
        return Row(label, p50, p99, self.ranks / self.wall_s, self.cpu_s / self.ranks,
                   self.rx_bytes / self.ranks, note,
                   {t: v / self.ranks * 1e3 for t, v in self.tiers.items()})


@dataclass
class Subject:
    """One row: a stack and how a Rank is sent to it.

    ``client_tier`` is the tier this process's own CPU counts in (the bare client stands in
    for the ranker); ``aside`` are pids whose CPU is shown apart (a trace receiver standing in
    for a collector elsewhere).
    """

    stack: LocalStack
    rank: Calls
    client_tier: str = TIERS[3]
    aside: tuple[int, ...] = ()
    latency_share: float = 1.0  # of the sequential calls the other subjects make
    tally: Tally = field(default_factory=Tally)

    @property
    def pids(self) -> list[int]:
        return [c.pid for c in self.stack.children if c.pid not in self.aside]


class Calls:
    """Sends one Rank to a subject (``await calls(i)``, ``i`` picks the request) on a channel of
    the running event loop, opened at the first call; returns the trace id the Rank got."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._channel: grpc.aio.Channel | None = None

    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target)
        return self._channel

    async def __call__(self, i: int) -> str:
        raise NotImplementedError

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


class RankerCalls(Calls):
    """Ranks through the stack's ranker; a degraded answer fails the bench."""

    def __init__(self, stack: LocalStack,
                 request: Callable[[int], ranking_pb2.RankRequest]) -> None:
        assert stack.ranker is not None
        super().__init__(stack.ranker.address)
        self._request = request
        self._stub: ranking_pb2_grpc.RankingServiceStub | None = None

    async def __call__(self, i: int) -> str:
        if self._stub is None:
            self._stub = ranking_pb2_grpc.RankingServiceStub(self.channel())
        resp = await self._stub.Rank(self._request(i), timeout=10)
        if resp.degradation.degraded:
            raise RuntimeError(f"degraded Rank during the bench: {resp.degradation}")
        return str(resp.trace_id)

    async def aclose(self) -> None:
        self._stub = None
        await super().aclose()


async def _slice(subject: Subject, calls: int, seconds: float, concurrency: int, first: int
                 ) -> None:
    """Sequential calls (latency), then a closed loop of ``concurrency`` callers."""
    t = subject.tally
    for i in range(calls):
        began = time.perf_counter()
        trace_id = await subject.rank(first + i)
        t.latencies_s.append(time.perf_counter() - began)
        t.last_trace_id = str(trace_id or t.last_trace_id)
    pids = subject.pids
    tiers0, self0 = tier_cpu(subject.stack, pids), self_cpu_s()
    aside0 = cpu_seconds(list(subject.aside))
    rx0 = envoy_counter(subject.stack.envoy_admin, ENVOY_RX)
    done = 0
    began = time.perf_counter()
    stop_at = time.monotonic() + seconds

    async def caller(k: int) -> None:
        nonlocal done
        i = first + k
        while time.monotonic() < stop_at:
            await subject.rank(i)
            done += 1
            i += concurrency

    await asyncio.gather(*(caller(k) for k in range(concurrency)))
    t.wall_s += time.perf_counter() - began
    t.ranks += done
    own = self_cpu_s() - self0
    t.aside_cpu_s += cpu_seconds(list(subject.aside)) - aside0
    t.rx_bytes += envoy_counter(subject.stack.envoy_admin, ENVOY_RX) - rx0
    for tier, value in tier_cpu(subject.stack, pids).items():
        t.tiers[tier] += value - tiers0[tier]
    t.tiers[subject.client_tier] += own


def measure(subjects: list[Subject], *, rounds: int, latency_calls: int, seconds: float,
            concurrency: int, warm_up: int = 20, names: list[str] | None = None) -> None:
    """Warms every subject up, then runs ``rounds`` rounds in which each subject in turn makes
    its share of ``latency_calls`` sequential calls (times its ``latency_share``) and a closed
    loop of its share of ``seconds``; the totals land in each subject's ``tally``."""

    async def run() -> None:
        for subject in subjects:
            for i in range(warm_up):
                await subject.rank(i)
        for r in range(rounds):
            print(f"round {r + 1} of {rounds}"
                  + (f": {', '.join(names)}" if names and r == 0 else ""),
                  file=sys.stderr, flush=True)
            for subject in subjects:
                calls = math.ceil(latency_calls * subject.latency_share / rounds)
                await _slice(subject, calls, seconds / rounds, concurrency, r * 1000)
        for subject in subjects:
            await subject.rank.aclose()

    asyncio.run(run())
