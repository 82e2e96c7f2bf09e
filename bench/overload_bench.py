"""Overload: the local stack offered 2x and 4x the highest rate that holds its p99 budget, with
admission control on (the defaults) and off, side by side in one run.

1. `rankserve loadtest step`'s search (the same code) finds the capacity R: the highest
   open-loop Rank rate whose p99 stays within --budget-p99-ms, admission on.
2. Open loop at 2R and 4R for --duration s each, every call with a --timeout-ms deadline, on a
   stack with admission on and on one with it off (ranker --no-admission-control, model
   servers --max-queued-rows 0).

Reported per run: goodput (answered OK per second) against R, p99 of the answered calls
against the p99 at R, and how fast refused calls (RESOURCE_EXHAUSTED) were answered.

    python -m bench.overload_bench [--budget-p99-ms 300] [--duration 15]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.measure import environment, pin_tiers
from rankserve.demo.build import ensure_demo
from rankserve.loadtest.runner import LoadSpec, run
from rankserve.loadtest.sources import synthesize
from rankserve.loadtest.stats import summarize
from rankserve.loadtest.step import step_search
from rankserve.loadtest.targets import Target
from rankserve.server.ranking.app import RANKS_PER_CPU
from rankserve.tools.stack.local import LocalStack, StackInputs
from rankserve.tools.stack.settings import StackSettings

RESULTS = Path(__file__).parent / "results"
NO_ADMISSION = {"RANKSERVE_RANKER_ADMISSION_CONTROL": "false",
                "RANKSERVE_MODELSERVER_MAX_QUEUED_ROWS": "0"}


def _stack(paths, label: str) -> LocalStack:
    settings = StackSettings(ranker_port=0, traces=False,
                             run_dir=Path(tempfile.mkdtemp(prefix=f"overload-{label}-")))
    return LocalStack(settings, StackInputs(paths.catalog_dir, paths.model_config_file),
                      out=lambda _l: None)


def _codes_ms(outcome, since: str = "due") -> dict[str, np.ndarray]:
    """Latency by status: from the due time (queueing in this generator included) or from the
    moment the call went out (``since="sent"``)."""
    a = outcome.samples.arrays()
    lat = (a["done"] - a[since]) * 1e3
    return {str(code): lat[a["code"] == code] for code in set(a["code"].tolist())}


def _pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values.size else None


async def _one(target: Target, payloads, spec: LoadSpec) -> dict:
    outcome = await run(target, payloads, spec)
    s = summarize(outcome)
    by_code = _codes_ms(outcome)
    ok = by_code.get("OK", np.empty(0))
    shed = by_code.get("RESOURCE_EXHAUSTED", np.empty(0))
    shed_sent = _codes_ms(outcome, "sent").get("RESOURCE_EXHAUSTED", np.empty(0))
    return {
        "offered_rps": spec.rate,
        "goodput_rps": s["throughput_rps"],
        "ok_p50_ms": _pct(ok, 50), "ok_p99_ms": _pct(ok, 99),
        "shed": int(shed.size), "shed_p50_ms": _pct(shed, 50), "shed_p99_ms": _pct(shed, 99),
        "shed_sent_p50_ms": _pct(shed_sent, 50), "shed_sent_p99_ms": _pct(shed_sent, 99),
        "send_lag_p99_ms": s["send_lag_ms"]["p99"],
        "status_codes": s["status_codes"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-p99-ms", type=float, default=300.0,
                        help="p99 the capacity must hold (the step search's budget).")
    parser.add_argument("--duration", type=float, default=15.0,
                        help="Measured seconds of each overload run.")
    parser.add_argument("--step-duration", type=float, default=8.0,
                        help="Measured seconds of each step of the capacity search.")
    parser.add_argument("--timeout-ms", type=float, default=1000.0,
                        help="Deadline of every Rank call.")
    parser.add_argument("--start-rate", type=float, default=4.0,
                        help="First rate of the capacity search, Ranks/s (it grows 1.5x a step).")
    parser.add_argument("--capacity", type=float, default=None,
                        help="Skip the step search: use this rate as the capacity (its p99 is"
                        " then measured in one run).")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="Leave every process free to run on any core.")
    parser.add_argument("--only-on", action="store_true",
                        help="Skip the runs without admission control.")
    args = parser.parse_args(argv)

    paths = ensure_demo()
    payloads = synthesize("rank", paths.catalog_dir, requests=32, seed=3)
    base = LoadSpec(mode="open", duration_s=args.step_duration, warmup_s=2.0,
                    timeout_s=args.timeout_ms / 1e3, seed=5)
    started = time.time()
    result: dict = {"budget_p99_ms": args.budget_p99_ms, "timeout_ms": args.timeout_ms,
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}

    # Pinned, the ranker has one core: the limit its automatic rule gives one CPU (it sees both
    # cores when it starts, before it is pinned).
    on_env = {"RANKSERVE_RANKER_MAX_CONCURRENT_RANKS": str(RANKS_PER_CPU)} if args.pin else {}
    with environment(on_env), _stack(paths, "on") as stack:
        assert stack.ranker is not None
        if args.pin:
            result["placement"] = pin_tiers(stack)
        target = Target("rank", stack.ranker.address,
                        tuple(c.pid for c in stack.children))

        async def step_one(spec: LoadSpec, name: str):
            print(f"  step {name} ...", file=sys.stderr, flush=True)
            return await run(target, payloads, spec)

        if args.capacity:
            at = asyncio.run(_one(target, payloads, dataclasses.replace(base,
                                                                         rate=args.capacity)))
            capacity, held = args.capacity, {"p99_ms": at["ok_p99_ms"]}
            result["capacity"] = {"rate_rps": capacity, "p99_ms": at["ok_p99_ms"],
                                  "given": True, "run": at}
        else:
            summary, _ = asyncio.run(step_search(
                step_one, base, start_rps=args.start_rate, factor=1.5, max_rps=200.0,
                budget_p99_ms=args.budget_p99_ms, refine=2))
            capacity = summary["max_rate_held_rps"]
            if not capacity:
                print(f"no rate held p99 <= {args.budget_p99_ms:g} ms: {summary['verdict']}",
                      file=sys.stderr)
                return 1
            held = next(s for s in summary["steps"] if s["rate_rps"] == capacity)
            result["capacity"] = {"rate_rps": capacity, "p99_ms": held["p99_ms"],
                                  "steps": summary["steps"]}
        print(f"capacity: {capacity:g} Ranks/s at p99 {held['p99_ms']:.0f} ms", file=sys.stderr)
        over = dataclasses.replace(base, duration_s=args.duration)
        runs = {}
        for k in (2, 4):
            spec = dataclasses.replace(over, rate=capacity * k)
            print(f"  admission on, {k}x ...", file=sys.stderr, flush=True)
            runs[f"on_{k}x"] = asyncio.run(_one(target, payloads, spec))

    with environment(NO_ADMISSION), _stack(paths, "off") as stack:
        assert stack.ranker is not None
        if args.pin:
            pin_tiers(stack)
        if args.only_on:
            k_values: tuple[int, ...] = ()
        else:
            k_values = (2, 4)
        target = Target("rank", stack.ranker.address)
        for k in k_values:
            spec = dataclasses.replace(over, rate=capacity * k)
            print(f"  admission off, {k}x ...", file=sys.stderr, flush=True)
            runs[f"off_{k}x"] = asyncio.run(_one(target, payloads, spec))
    result["runs"] = runs
    result["wall_s"] = round(time.time() - started, 1)

    cap_p99 = held["p99_ms"]
    lines = [
        f"# Overload: 2x and 4x capacity, admission control on and off"
        f" ({os.cpu_count()} cores, one run)",
        "",
        f"Capacity (loadtest step, p99 budget {args.budget_p99_ms:g} ms): **{capacity:g} Ranks/s**"
        f" at p99 {cap_p99:.0f} ms. Deadline per call {args.timeout_ms:g} ms, open loop,"
        f" {args.duration:g} s per run.",
        "",
        "| admission | offered | goodput (x capacity) | answered p50 / p99 ms (x capacity p99)"
        " | refused | refused p50 / p99 ms (from send) | generator lag p99 ms | other errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, r in runs.items():
        mode, k = key.split("_")
        other = {c: n for c, n in r["status_codes"].items()
                 if c not in ("OK", "RESOURCE_EXHAUSTED")}
        p99 = r["ok_p99_ms"]
        ratio = f" ({p99 / cap_p99:.2f}x)" if p99 is not None else ""
        lines.append(
            f"| {mode} | {k} = {r['offered_rps']:g}/s | {r['goodput_rps']:g}/s"
            f" ({r['goodput_rps'] / capacity:.2f}x) | {r['ok_p50_ms']} / {p99}{ratio}"
            f" | {r['shed']} | {r['shed_p50_ms']} / {r['shed_p99_ms']}"
            f" ({r['shed_sent_p50_ms']} / {r['shed_sent_p99_ms']}) | {r['send_lag_p99_ms']}"
            f" | {other or 'none'} |")
    lines += ["", "`python -m bench.overload_bench` (part of `make bench`)."]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "overload_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "overload_bench.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
