"""A slow replica: Rank latency when one of two model servers answers 10x slower, with and
without least-request balancing and hedging, beside two healthy replicas, in one run.

The slow replica runs bench/slow_modelserver.py: each of its model calls takes --slowdown times
as long, so its capacity falls as a degraded node's does and calls queue on it.
Rows:
  healthy           two healthy replicas, least request and hedging (--hedge-quantile 0.1)
  slow, hedging     one slow replica, least request + the ranker's adaptive hedge delay
  slow, least req.  one slow replica, least request, no hedging
  slow, neither     one slow replica, round robin, no hedging (what ran before)

Load: open loop at --rate Ranks/s for --duration s (a rate the healthy stack holds easily), so
latency is measured at the same offered load everywhere. Hedges: Envoy's upstream_rq_retry.

    python -m bench.slow_replica_bench [--rate 8] [--duration 30]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.measure import environment, envoy_counter, pin_tiers
from rankserve.demo.build import ensure_demo
from rankserve.loadtest.runner import LoadSpec, run
from rankserve.loadtest.sources import synthesize
from rankserve.loadtest.stats import summarize
from rankserve.loadtest.targets import Target
from rankserve.server.ranking.app import RANKS_PER_CPU
from rankserve.tools.stack import envoy_config
from rankserve.tools.stack.local import LocalStack, StackInputs
from rankserve.tools.stack.settings import StackSettings

RESULTS = Path(__file__).parent / "results"
RETRIES = "cluster.model_servers.upstream_rq_retry"
# The rows that hedge use this quantile (the measured choice; hedging is off by default), or
# one given to this bench.
_HEDGE_QUANTILE = os.environ.get("RANKSERVE_RANKER_HEDGE_QUANTILE", "0.1")


class _SlowReplicaStack(LocalStack):
    """The local stack with its first model server run by bench/slow_modelserver.py."""

    slow: bool = False
    lb_policy: str = "LEAST_REQUEST"

    def _py(self, module: str) -> list[str]:
        if self.slow and module == "rankserve.server.modelserver":
            self.slow = False  # the first replica only
            return [sys.executable, "-m", "bench.slow_modelserver"]
        return super()._py(module)

    def _start_envoy(self) -> None:
        real_write = envoy_config.write

        def write(opts: envoy_config.EnvoyOptions, path: Path) -> Path:
            return real_write(dataclasses.replace(opts, lb_policy=self.lb_policy), path)

        envoy_config.write = write
        try:
            super()._start_envoy()
        finally:
            envoy_config.write = real_write


def _stack(paths, label: str, slow: bool, lb_policy: str) -> LocalStack:
    settings = StackSettings(ranker_port=0, traces=False,
                             run_dir=Path(tempfile.mkdtemp(prefix=f"slow-{label}-")))
    stack = _SlowReplicaStack(settings, StackInputs(paths.catalog_dir, paths.model_config_file),
                              out=lambda _l: None)
    stack.slow, stack.lb_policy = slow, lb_policy
    return stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=8.0,
                        help="Offered Ranks per second (about half the stack's capacity).")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="Measured seconds per row.")
    parser.add_argument("--slowdown", type=float, default=10.0,
                        help="How many times slower the slow replica answers.")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="Leave every process free to run on any core.")
    args = parser.parse_args(argv)
    paths = ensure_demo()
    payloads = synthesize("rank", paths.catalog_dir, requests=32, seed=3)
    spec = LoadSpec(mode="open", rate=args.rate, duration_s=args.duration, warmup_s=3.0,
                    timeout_s=2.0, seed=5)
    common = {"RANKSERVE_BENCH_SLOWDOWN": f"{args.slowdown:g}"}
    if args.pin:
        # Pinned, the ranker has one core: the limit its automatic rule gives one CPU.
        common["RANKSERVE_RANKER_MAX_CONCURRENT_RANKS"] = str(RANKS_PER_CPU)
    rows, placement = [], "not pinned"
    configs = [("healthy", False, "LEAST_REQUEST", True),
               ("slow, least request + hedging", True, "LEAST_REQUEST", True),
               ("slow, least request only", True, "LEAST_REQUEST", False),
               ("slow, neither (round robin)", True, "ROUND_ROBIN", False)]
    for label, slow, lb, hedge in configs:
        print(f"  {label} ...", file=sys.stderr, flush=True)
        hedging = {"RANKSERVE_RANKER_HEDGE_QUANTILE": _HEDGE_QUANTILE if hedge else "0"}
        with environment(common | hedging), _stack(paths, label.split(",")[0], slow,
                                                   lb) as stack:
            assert stack.ranker is not None and stack.envoy_admin
            if args.pin:
                placement = pin_tiers(stack)
            before = envoy_counter(stack.envoy_admin, RETRIES)
            outcome = asyncio.run(run(Target("rank", stack.ranker.address), payloads, spec))
            s = summarize(outcome, label)
            rows.append({"row": label, "p50_ms": s["latency_ok_ms"]["p50"],
                         "p99_ms": s["latency_ok_ms"]["p99"],
                         "status_codes": s["status_codes"],
                         "errors": s["requests"]["errors"], "ranks": s["requests"]["counted"],
                         "hedges_and_retries": envoy_counter(stack.envoy_admin, RETRIES)
                         - before})

    ref = rows[0]["p99_ms"]
    lines = [f"# One of two replicas {args.slowdown:g}x slower (every model call)",
             "",
             f"Open loop {args.rate:g} Ranks/s for {args.duration:g} s per row, one run,"
             f" {os.cpu_count()} cores; {placement}.",
             "",
             "| row | answered p50 ms | answered p99 ms (x healthy) | not answered OK"
             " | Envoy hedges + retries |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['row']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f}"
                     f" ({r['p99_ms'] / ref:.2f}x) | {r['errors']}/{r['ranks']}"
                     f" | {r['hedges_and_retries']} |")
    lines += ["", "`python -m bench.slow_replica_bench` (part of `make bench`)."]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "slow_replica_bench.json").write_text(json.dumps(
        {"rate_rps": args.rate, "duration_s": args.duration, "slowdown": args.slowdown,
         "placement": placement, "rows": rows,
         "p99_ratio_to_healthy": [round(r["p99_ms"] / ref, 3) for r in rows],
         "healthy_p99_ms": float(np.round(ref, 1))}, indent=2) + "\n")
    (RESULTS / "slow_replica_bench.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
