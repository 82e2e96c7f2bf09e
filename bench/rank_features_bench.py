"""A whole Rank with item features from Redis beside the same Rank with the catalog's arrays.

Two local stacks (ranker -> Envoy -> 2 model servers each, tracing off) run at once on the
demo catalog and model; they differ only in the ranker's item feature store:

  catalog  the catalog's memory-mapped arrays (the demo default)
  Redis    ``--item-features unix:///...``: a local redis-server on a unix socket holding the
           catalog's ``item_features``, imported with ``rankserve features import``

User features come from the catalog in both. The same demo requests (1000 candidates, batch
25) go to both, in alternating rounds, so a busy machine weighs on both alike: sequential Ranks
for p50/p99 (and the ranker's own features-stage time from the response), then a closed loop
for Ranks/s and CPU. CPU per Rank: the ranker alone, and every process of the path (the stack,
redis-server for the Redis row, this client). Before measuring, both stacks must return the
same pages for the same requests (the same feature values).

    python -m bench.rank_features_bench [--latency-calls 200] [--throughput-s 20] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.features_bench import catalog_parquet, import_items, start_redis
from bench.measure import cpu_seconds, percentiles
from bench.rank_bench import rank_request
from rankserve.demo.build import ensure_demo
from rankserve.loadtest.cpu import self_cpu_s
from rankserve.ranking.v1 import ranking_pb2_grpc
from rankserve.tools.stack.local import LocalStack, StackInputs
from rankserve.tools.stack.settings import StackSettings

RESULTS = Path(__file__).parent / "results"


@dataclass
class Arm:
    """One item feature store under test and what was measured of it."""

    name: str
    stack: LocalStack
    extra_pids: list[int] = field(default_factory=list)  # redis-server for the Redis path
    latencies_s: list[float] = field(default_factory=list)
    features_ms: list[float] = field(default_factory=list)
    ranks: int = 0
    wall_s: float = 0.0
    ranker_cpu_s: float = 0.0
    extra_cpu_s: float = 0.0
    all_cpu_s: float = 0.0

    @property
    def target(self) -> str:
        assert self.stack.ranker is not None
        return self.stack.ranker.address

    def pids(self) -> list[int]:
        return [c.pid for c in self.stack.children] + self.extra_pids


async def _closed_loop(target: str, concurrency: int, seconds: float) -> int:
    """Ranks completed by `concurrency` callers in `seconds`; any failure aborts the bench."""
    done = 0
    stop_at = time.monotonic() + seconds
    async with grpc.aio.insecure_channel(target) as ch:
        stub = ranking_pb2_grpc.RankingServiceStub(ch)

        async def caller(k: int) -> None:
            nonlocal done
            i = k
            while time.monotonic() < stop_at:
                resp = await stub.Rank(rank_request(i), timeout=10)
                if resp.degradation.degraded:
                    raise RuntimeError(f"degraded Rank during the bench: {resp.degradation}")
                done += 1
                i += concurrency

        await asyncio.gather(*(caller(k) for k in range(concurrency)))
    return done


def _pages(target: str, n: int) -> list[list[str]]:
    with grpc.insecure_channel(target) as ch:
        stub = ranking_pb2_grpc.RankingServiceStub(ch)
        out = []
        for i in range(n):
            resp = stub.Rank(rank_request(i), timeout=30)
            if resp.degradation.degraded:
                raise RuntimeError(f"degraded Rank: {resp.degradation}")
            out.append([item.item_id for item in resp.items])
        return out


def _sequential(p: Arm, start: int, calls: int) -> None:
    with grpc.insecure_channel(p.target) as ch:
        stub = ranking_pb2_grpc.RankingServiceStub(ch)
        for i in range(start, start + calls):
            t = time.perf_counter()
            resp = stub.Rank(rank_request(i), timeout=10)
            p.latencies_s.append(time.perf_counter() - t)
            p.features_ms.append(resp.timings.features_ms)
            if resp.degradation.degraded or resp.degradation.missing_feature_values:
                raise RuntimeError(f"{p.name}: degraded Rank: {resp.degradation}")


def _loop(p: Arm, args: argparse.Namespace, seconds: float) -> None:
    assert p.stack.ranker is not None
    ranker = [p.stack.ranker.pid]
    r0, x0, a0, s0 = (cpu_seconds(ranker), cpu_seconds(p.extra_pids), cpu_seconds(p.pids()),
                      self_cpu_s())
    t0 = time.perf_counter()
    p.ranks += asyncio.run(_closed_loop(p.target, args.concurrency, seconds))
    p.wall_s += time.perf_counter() - t0
    p.ranker_cpu_s += cpu_seconds(ranker) - r0
    p.extra_cpu_s += cpu_seconds(p.extra_pids) - x0
    p.all_cpu_s += cpu_seconds(p.pids()) - a0 + self_cpu_s() - s0


def measure(paths: list[Arm], args: argparse.Namespace) -> None:
    for p in paths:
        _pages(p.target, 20)  # warm-up: channels, caches, the model servers' first calls
    per_round = max(args.latency_calls // args.rounds, 1)
    for r in range(args.rounds):
        for p in paths if r % 2 == 0 else reversed(paths):
            _sequential(p, r * per_round, per_round)
    for r in range(args.rounds):
        for p in paths if r % 2 == 0 else reversed(paths):
            print(f"  closed loop {p.name}, round {r + 1}/{args.rounds} ...", file=sys.stderr,
                  flush=True)
            _loop(p, args, args.throughput_s / args.rounds)


def report(paths: list[Arm], args: argparse.Namespace, load: str, redis_url: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    base = paths[0]
    b50, b99 = percentiles(base.latencies_s)
    rows = []
    for p in paths:
        p50, p99 = percentiles(p.latencies_s)
        f50, f99 = np.percentile(p.features_ms, [50, 99])
        rate = p.ranks / p.wall_s
        rows.append(
            f"| {p.name} | {p50:.2f} | {p99:.2f} | {f50:.2f} / {f99:.2f} | {rate:.1f} |"
            f" {p.ranker_cpu_s * 1000 / p.ranks:.1f} | {p.extra_cpu_s * 1000 / p.ranks:.2f} |"
            f" {p.all_cpu_s * 1000 / p.ranks:.1f} | {p50 / b50:.2f}x | {p99 / b99:.2f}x |"
            f" {rate / (base.ranks / base.wall_s):.2f}x |")
    redis = paths[-1]
    r50, r99 = percentiles(redis.latencies_s)
    worst = max(r50 / b50, r99 / b99)
    verdict = ("within" if worst <= 1.2 else "NOT within")
    cores = len(os.sched_getaffinity(0))
    return "\n".join([
        f"# A Rank with item features from Redis vs the catalog ({stamp}, {platform.machine()},"
        f" {cores} cores)",
        "",
        "`python -m bench.rank_features_bench` (also in `make bench`). Rank = a demo request,"
        " 1000 candidates x 300 item features, batch 25, through ranker -> Envoy -> 2 model"
        " servers; two such stacks at once, differing only in the ranker's"
        " `--item-features` (Redis: the catalog's `item_features` imported with `rankserve"
        " features import` into a local redis-server on a unix socket). User features come"
        " from the catalog in both. Both stacks returned the same pages for the same 20"
        " requests before measuring.",
        "",
        f"Latency: {len(base.latencies_s)} sequential Ranks per path; throughput and CPU:"
        f" {args.concurrency} callers in a closed loop, {args.throughput_s:g} s per path; both"
        f" in {args.rounds} alternating rounds. Ratios: to the catalog row of this run.",
        "",
        f"Machine load at the start: `{load}`",
        "",
        "| item features | p50 ms | p99 ms | features stage p50 / p99 ms | Ranks/s"
        " | ranker CPU ms/Rank | redis-server CPU ms/Rank | all CPU ms/Rank | p50 x catalog"
        " | p99 x catalog | Ranks/s x catalog |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Goal: a Rank with Redis within 1.2x of the embedded one. This run: p50"
        f" {r50 / b50:.3f}x, p99 {r99 / b99:.3f}x: {verdict} 1.2x.",
        "",
        "- features stage: the ranker's own `timings.features_ms` of each sequential Rank (item"
        " and user features, context vector, candidate matrix).",
        "- all CPU: user + system seconds of every process of the path (2 model servers, Envoy,"
        " the ranker, redis-server for the Redis row) and of this client, in the closed loop.",
        f"- Redis: `{redis_url.split('://')[0]}://` socket in a temporary directory, no TCP port.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--latency-calls", type=int, default=200,
                   help="Sequential Ranks per path.")
    p.add_argument("--throughput-s", type=float, default=20.0,
                   help="Closed-loop seconds per path (split over the rounds).")
    p.add_argument("--concurrency", type=int, default=4, help="Closed-loop callers.")
    p.add_argument("--rounds", type=int, default=4,
                   help="Alternating rounds the measurements are split into.")
    args = p.parse_args(argv)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    demo = ensure_demo()
    work = Path(tempfile.mkdtemp(prefix="rank-features-"))
    server: Any = None
    try:
        server = start_redis(work)
        if server is None:
            return 1
        print("importing the catalog's item features into Redis ...", file=sys.stderr,
              flush=True)
        import_items(catalog_parquet(demo.catalog_dir, work), server.url)
        inputs = StackInputs(demo.catalog_dir, demo.model_config_file)

        def stack(name: str, extra: tuple[str, ...]) -> LocalStack:
            settings = StackSettings(ranker_port=0, traces=False, run_dir=work / name)
            return LocalStack(settings, inputs, out=lambda _l: None, extra_ranker_args=extra)

        print("starting two stacks ...", file=sys.stderr, flush=True)
        with stack("catalog", ()) as on_catalog, \
                stack("redis", ("--item-features", server.url)) as on_redis:
            paths = [Arm("catalog arrays (mmap .npy)", on_catalog),
                     Arm("Redis, unix socket", on_redis, extra_pids=[server.pid])]
            if _pages(paths[0].target, 20) != _pages(paths[1].target, 20):
                raise RuntimeError("the two stacks ranked the same requests differently: the"
                                   " Redis import does not hold the catalog's features")
            measure(paths, args)
        text = report(paths, args, load, server.url)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rank_features_bench.md").write_text(text)
    print(f"wrote {RESULTS / 'rank_features_bench.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
