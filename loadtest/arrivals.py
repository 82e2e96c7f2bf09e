"""Arrival schedules of an open-loop test: when each request is due, as offsets in seconds.

The schedule is fixed before the first request is sent, so a slow server cannot push it back:
a request's latency counts from the time it was due, not from when it finally went out.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Arrivals = Literal["constant", "poisson"]


def schedule(rate: float, duration_s: float, arrivals: Arrivals = "constant", *,
             seed: int = 0, limit: int | None = None) -> np.ndarray:
    """Offsets (seconds from the start, ascending) of the requests due in ``[0, duration_s)``.

    ``constant``: one request every ``1/rate`` s. ``poisson``: exponential gaps with mean
    ``1/rate`` (independent users). ``limit`` keeps only the first so many.
    """
    if rate <= 0:
        raise ValueError(f"rate must be > 0 requests per second, got {rate}")
    if duration_s <= 0:
        raise ValueError(f"duration must be > 0 s, got {duration_s}")
    expected = int(np.ceil(rate * duration_s))
    if arrivals == "constant":
        out = np.arange(expected, dtype=np.float64) / rate
    elif arrivals == "poisson":
        rng = np.random.default_rng(seed)
        # Enough gaps to pass the end with overwhelming probability, then cut.
        n = expected + 10 * int(np.sqrt(expected)) + 10
        out = np.cumsum(rng.exponential(1.0 / rate, n)) - 0.0
        out = np.concatenate([[0.0], out[:-1]])
        while out[-1] < duration_s:  # astronomically rare: extend
            more = out[-1] + np.cumsum(rng.exponential(1.0 / rate, n))
            out = np.concatenate([out, more])
    else:
        raise ValueError(f"arrivals must be 'constant' or 'poisson', got {arrivals!r}")
    out = out[out < duration_s]
    return out[:limit] if limit is not None else out
