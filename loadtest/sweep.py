"""Sweeps: one run per batch size x compression, with the same load and the same traffic."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from rankserve.loadtest.runner import LoadSpec, RunOutcome
from rankserve.loadtest.sources import Payloads
from rankserve.loadtest.stats import summarize

RunWith = Callable[[Payloads, LoadSpec, str], Awaitable[RunOutcome]]


async def sweep(run_with: RunWith, payloads_for: Callable[[int], Payloads], base: LoadSpec, *,
                batch_sizes: list[int], compressions: list[str]
                ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Returns (the sweep table, one run summary per combination)."""
    runs, rows = [], []
    for b in batch_sizes:
        payloads = payloads_for(b)
        for comp in compressions:
            name = f"batch {b}, {comp}"
            spec = dataclasses.replace(base, compression=comp)
            s = summarize(await run_with(payloads, spec, name), name)
            s["sweep"] = {"batch_size": b, "compression": comp}
            runs.append(s)
            rows.append({
                "batch_size": b, "compression": comp,
                "throughput_rps": s["throughput_rps"],
                "candidates_per_s": round(s["throughput_rps"] * b, 1),
                "p50_ms": s["latency_ms"]["p50"], "p99_ms": s["latency_ms"]["p99"],
                "error_rate": s["error_rate"],
                "request_bytes_per_call": s["bytes"]["request_per_call"],
                "client_cpu_ms_per_request": s["cpu"]["client_ms_per_request"],
                "server_cpu_ms_per_request": s["cpu"]["server_ms_per_request"],
            })
    return {"batch_sizes": batch_sizes, "compressions": compressions, "rows": rows}, runs
