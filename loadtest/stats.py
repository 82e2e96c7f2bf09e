"""Statistics of one run: latency percentiles and buckets, timeline, errors, bytes, CPU.

Percentiles are exact (computed from every counted request, not from a sketch): a run holds at
most a few hundred thousand samples.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rankserve.loadtest.runner import RunOutcome
from rankserve.loadtest.schedule import RateSchedule

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


def in_flight(sent: np.ndarray, done: np.ndarray, start: float, end: float
              ) -> dict[str, float | None]:
    """Requests between send and answer during ``[start, end)``: the time-weighted mean (each
    request counts for the part of its interval inside the window, divided by the window's
    length) and the most at any instant. Measured from the intervals themselves, not from
    Little's law; requests sent during the warm-up count for the part they overlap."""
    if end <= start:
        return {"mean": None, "max": None}
    s, d = np.maximum(sent, start), np.minimum(done, end)
    keep = d > s
    s, d = s[keep], d[keep]
    if s.size == 0:
        return {"mean": 0.0, "max": 0.0}
    times = np.concatenate([s, d])
    deltas = np.concatenate([np.ones(s.size), -np.ones(d.size)])
    order = np.lexsort((deltas, times))  # at equal times answers leave before sends enter
    level = np.cumsum(deltas[order])
    return {"mean": round(float((d - s).sum()) / (end - start), 4), "max": float(level.max())}


TOLERANCE = ("a window follows the schedule when the requests answered in it (by answer time)"
             " differ from the requests the schedule made due in it by at most max(10%, 3)")


def window_length(duration_s: float) -> float:
    """Report windows of a scheduled run: 1 s, or about 60 windows in a longer run."""
    return float(max(1, math.ceil(duration_s / 60.0)))


def within_tolerance(answered: int, due: int) -> bool:
    return abs(answered - due) <= max(0.1 * due, 3)


def schedule_windows(sched: RateSchedule, due: np.ndarray, sent: np.ndarray, done: np.ndarray,
                     lat_ms: np.ndarray, ok: np.ndarray, window_s: float
                     ) -> list[dict[str, Any]]:
    """Per window of the measured part (times in seconds from its start; requests counted
    only if due in it): the scheduled rate (the curve's mean over the window), the requests
    the fixed schedule made due, the requests sent, answered and answered OK (by their time;
    answers after the end count in the last window), errors and latency (by due time)."""
    edges = np.arange(0.0, sched.duration_s, window_s)
    if len(edges) > 1 and sched.duration_s - edges[-1] < 0.01 * window_s:
        edges = edges[:-1]  # a sliver at the end joins the window before it
    edges = np.append(edges, sched.duration_s)
    last = len(edges) - 2

    def slot(x: np.ndarray) -> np.ndarray:
        return np.clip(np.searchsorted(edges, x, side="right") - 1, 0, last)

    due_w, sent_w, done_w = slot(due), slot(sent), slot(done)
    expected = np.diff(sched.cumulative(edges))
    out = []
    for k in range(last + 1):
        width = float(edges[k + 1] - edges[k])
        m = due_w == k
        n_due, answered = int(m.sum()), int((done_w == k).sum())
        lat = lat_ms[m]
        out.append({
            "t_s": round(float(edges[k]), 6),
            "width_s": round(width, 6),
            "scheduled_rps": round(float(expected[k]) / width, 4),
            "due": n_due,
            "due_rps": round(n_due / width, 4),
            "sent": int((sent_w == k).sum()),
            "answered": answered,
            "achieved_rps": round(answered / width, 4),
            "ok_rps": round(int(((done_w == k) & ok).sum()) / width, 4),
            "errors": int((~ok[m]).sum()),
            "p50_ms": round(float(np.percentile(lat, 50)), 4) if lat.size else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 4) if lat.size else None,
            "within_tolerance": within_tolerance(answered, n_due),
        })
    return out


def _schedule_section(outcome: RunOutcome, a: dict[str, np.ndarray], lat_ms: np.ndarray,
                      ok: np.ndarray) -> dict[str, Any] | None:
    spec = outcome.spec
    sched = spec.rate_schedule
    if sched is None:
        return None
    window_s = spec.window_s or window_length(sched.duration_s)
    t0 = outcome.measured_from
    windows = schedule_windows(sched, a["due"] - t0, a["sent"] - t0, a["done"] - t0, lat_ms,
                               ok, window_s)
    outside = [w["t_s"] for w in windows if not w["within_tolerance"]]
    return {**sched.describe(), "times_s": list(sched.times_s), "rates_rps": list(sched.rates_rps),
            "window_s": window_s, "tolerance": TOLERANCE, "windows": windows,
            "windows_outside_tolerance": outside, "follows_schedule": not outside}


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
    if spec.rate_schedule is not None:
        offered = round(spec.rate_schedule.mean_rate(), 4)
    all_sent = np.asarray(outcome.samples.sent, dtype=np.float64)
    all_done = np.asarray(outcome.samples.done, dtype=np.float64)
    end = outcome.measured_from + spec.duration_s
    if all_done.size and spec.max_requests is not None:
        end = min(end, float(all_done.max()))  # the run stopped at its request limit
    flight = in_flight(all_sent, all_done, outcome.measured_from, end)
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
                 "compression": spec.compression, "seed": spec.seed,
                 "schedule": (spec.rate_schedule.description
                              if spec.rate_schedule is not None else None)},
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
        "in_flight": {
            **flight,
            # Little's law on the same run, as a check: throughput x mean service time.
            "little": (round(float(ok.sum()) / window * float(service_ms.mean()) / 1e3, 4)
                       if n else None),
            "note": ("requests between send and answer as this generator saw them,"
                     " time-weighted over the measured seconds (warm-up excluded); the"
                     " servers hold slightly fewer (network time is included)"),
        },
        "histogram": histogram(lat_ms),
        "timeline": timeline(a["due"], a["done"], lat_ms, ok, outcome.measured_from),
        "schedule": _schedule_section(outcome, a, lat_ms, ok),
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
