"""Statistics of one run: latency percentiles and buckets, timeline, errors, bytes, CPU.

Percentiles are exact (computed from every counted request, not from a sketch): a run holds at
most a few hundred thousand samples.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rankserve.loadtest.runner import RunOutcome

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p99_9": 99.9}


def bucket_bounds_ms() -> list[float]:
    """Upper bounds of the latency buckets: ten per decade (R10 series) from 0.1 ms to 100 s."""
    steps = (1.0, 1.25, 1.6, 2.0, 2.5, 3.15, 4.0, 5.0, 6.3, 8.0)
    return [round(s * 10.0 ** e, 4) for e in range(-1, 5) for s in steps] + [100000.0]


def _dist(values_ms: np.ndarray) -> dict[str, float | None]:
    if values_ms.size == 0:
        return {k: None for k in ("min", "mean", *PERCENTILES, "max")}
    out: dict[str, float | None] = {"min": float(values_ms.min()), "mean": float(values_ms.mean())}
    for name, q in PERCENTILES.items():
        out[name] = float(np.percentile(values_ms, q))
    out["max"] = float(values_ms.max())
    return {k: round(v, 4) for k, v in out.items()}


def histogram(values_ms: np.ndarray) -> list[dict[str, float]]:
    """Count per bucket ``(previous bound, le_ms]``, trimmed to the buckets that hold data."""
    bounds = bucket_bounds_ms()
    if values_ms.size == 0:
        return []
    idx = np.searchsorted(bounds, values_ms, side="left")
    counts = np.bincount(np.minimum(idx, len(bounds) - 1), minlength=len(bounds))
    nz = np.nonzero(counts)[0]
    lo, hi = int(nz[0]), int(nz[-1])
    return [{"le_ms": bounds[i], "count": int(counts[i])} for i in range(lo, hi + 1)]


def timeline(due: np.ndarray, done: np.ndarray, lat_ms: np.ndarray, ok: np.ndarray,
             origin: float, step_s: float = 1.0) -> list[dict[str, float | None]]:
    """Per ``step_s`` window (by due time): requests, errors, p50 and p99 latency, and the
    answers completed in that window (throughput)."""
    if due.size == 0:
        return []
    slot = np.floor((due - origin) / step_s).astype(np.int64)
    done_slot = np.floor((done - origin) / step_s).astype(np.int64)
    out = []
    for s in range(int(slot.max()) + 1):
        m = slot == s
        lat = lat_ms[m]
        out.append({
            "t_s": round(s * step_s, 3),
            "requests": int(m.sum()),
            "errors": int((~ok[m]).sum()),
            "completed_per_s": round(float((done_slot == s).sum()) / step_s, 3),
            "p50_ms": round(float(np.percentile(lat, 50)), 4) if lat.size else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 4) if lat.size else None,
        })
    return out


def summarize(outcome: RunOutcome, name: str = "run") -> dict[str, Any]:
    """The run as the reports show it (plain JSON types only)."""
    a = outcome.samples.arrays()
    spec = outcome.spec
    n = int(a["due"].size)
    lat_ms = (a["done"] - a["due"]) * 1e3
    service_ms = (a["done"] - a["sent"]) * 1e3
    lag_ms = (a["sent"] - a["due"]) * 1e3
    ok = a["code"] == "OK"
    codes, counts = np.unique(a["code"].astype(str), return_counts=True) if n else ([], [])
    status = {str(c): int(k) for c, k in zip(codes, counts, strict=True)}
    window = float(a["done"].max() - outcome.measured_from) if n else 0.0
    window = max(window, spec.duration_s if spec.mode == "closed" else 0.0, 1e-9)
    sent_all = max(outcome.requests_sent, 1)
    server_ms = (None if outcome.server_cpu_s is None
                 else round(outcome.server_cpu_s * 1e3 / sent_all, 4))
    offered = (spec.rate if spec.mode == "open" else None)
    return {
        "name": name,
        "target": {"kind": outcome.target.kind, "address": outcome.target.address,
                   "description": outcome.target.description,
                   "server_pids": list(outcome.target.server_pids),
                   **({"labels": outcome.target.labels} if outcome.target.labels else {})},
        "load": {"mode": spec.mode, "rate_rps": offered, "arrivals": spec.arrivals,
                 "concurrency": spec.concurrency if spec.mode == "closed" else None,
                 "duration_s": spec.duration_s, "warmup_s": spec.warmup_s,
                 "max_requests": spec.max_requests, "timeout_ms": spec.timeout_s * 1e3,
                 "compression": spec.compression, "seed": spec.seed},
        "source": {"description": outcome.payloads.description,
                   "distinct_requests": len(outcome.payloads),
                   "batch_size_mean": (round(float(np.mean(outcome.payloads.batch_sizes)), 3)
                                       if outcome.payloads.batch_sizes else None),
                   "notes": list(outcome.payloads.notes)},
        "requests": {"counted": n, "warmup_excluded": len(outcome.samples) - n,
                     "ok": int(ok.sum()), "errors": int(n - ok.sum())},
        "error_rate": round(float(n - ok.sum()) / n, 6) if n else 0.0,
        "status_codes": status,
        "throughput_rps": round(float(ok.sum()) / window, 3),
        "offered_rps": offered,
        "latency_ms": _dist(lat_ms),
        "latency_ok_ms": _dist(lat_ms[ok]),
        "service_ms": _dist(service_ms),
        # Time waited beyond the fastest answer of the run: queueing in the server or in this
        # generator. A closed loop hides it; an open loop measured from due times shows it.
        "queueing_ms": _dist(np.maximum(lat_ms - (service_ms.min() if n else 0.0), 0.0)),
        "send_lag_ms": _dist(lag_ms),
        "histogram": histogram(lat_ms),
        "timeline": timeline(a["due"], a["done"], lat_ms, ok, outcome.measured_from),
        "bytes": {
            "request_total": int(a["request_bytes"].sum()),
            "response_total": int(a["response_bytes"].sum()),
            "request_per_call": round(float(a["request_bytes"].mean()), 1) if n else 0.0,
            "response_per_call": (round(float(a["response_bytes"][ok].mean()), 1)
                                  if ok.any() else 0.0),
            "note": ("request bytes are the serialised messages"
                     + (" after gzip" if spec.compression == "gzip" else "")
                     + "; gRPC and HTTP/2 framing (about 14 bytes a call) not included"),
        },
        "cpu": {
            "client_ms_per_request": round(outcome.client_cpu_s * 1e3 / sent_all, 4),
            "server_ms_per_request": server_ms,
            "server_note": (f"summed over pids {list(outcome.target.server_pids)}"
                            if server_ms is not None else
                            "not measured: the server processes are not known (pass"
                            " --server-pid for local servers)"),
            "requests_measured": outcome.requests_sent,
        },
    }


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)
