"""Step mode: raise the open-loop rate until the latency budget breaks.

Rates grow by ``factor`` from ``start_rps``; after the first step that breaks the budget (p99
above it, or too many errors), ``refine`` bisection steps between the last rate that held and
the one that broke narrow the answer. The result is the highest rate measured to hold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from rankserve.loadtest.runner import LoadSpec, RunOutcome
from rankserve.loadtest.stats import summarize

RunOne = Callable[[LoadSpec, str], Awaitable[RunOutcome]]


def held(summary: dict[str, Any], budget_p99_ms: float, max_error_rate: float) -> bool:
    p99 = summary["latency_ms"]["p99"]
    return (p99 is not None and p99 <= budget_p99_ms
            and summary["error_rate"] <= max_error_rate)


async def step_search(run_one: RunOne, base: LoadSpec, *, start_rps: float, factor: float,
                      max_rps: float, budget_p99_ms: float, max_error_rate: float = 0.001,
                      refine: int = 2) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Returns (the step summary, one run summary per step)."""
    if start_rps <= 0 or factor <= 1.0 or max_rps < start_rps:
        raise ValueError("step needs --start-rate > 0, --factor > 1 and --max-rate >= --start-rate")
    runs: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    best: float | None = None
    broke: float | None = None

    async def measure(rate: float) -> bool:
        name = f"{rate:g} rps"
        outcome = await run_one(dataclasses.replace(base, mode="open", rate=rate), name)
        s = summarize(outcome, name)
        ok = held(s, budget_p99_ms, max_error_rate)
        runs.append(s)
        steps.append({"rate_rps": rate, "p99_ms": s["latency_ms"]["p99"],
                      "p50_ms": s["latency_ms"]["p50"], "error_rate": s["error_rate"],
                      "throughput_rps": s["throughput_rps"],
                      "in_flight_mean": s["in_flight"]["mean"],
                      "in_flight_little": s["in_flight"]["little"], "held": ok})
        return ok

    rate = start_rps
    while rate <= max_rps * (1 + 1e-9):
        if await measure(round(rate, 3)):
            best = round(rate, 3)
            rate *= factor
        else:
            broke = round(rate, 3)
            break
    if broke is not None and best is not None:
        lo, hi = best, broke
        for _ in range(refine):
            mid = round((lo + hi) / 2, 3)
            if mid in (lo, hi):
                break
            if await measure(mid):
                lo = best = mid
            else:
                hi = broke = mid
    summary = {
        "budget_p99_ms": budget_p99_ms,
        "max_error_rate": max_error_rate,
        "max_rate_held_rps": best,
        "lowest_rate_broken_rps": broke,
        "steps": steps,
        "verdict": (f"held p99 <= {budget_p99_ms:g} ms up to {best:g} rps"
                    + (f"; broke at {broke:g} rps" if broke is not None else
                       f"; never broke up to --max-rate {max_rps:g}")
                    if best is not None else
                    f"the budget broke at the first step ({broke:g} rps): lower --start-rate"),
    }
    return summary, runs
