"""When a slow batch gets a second copy: a delay taken from the batch latency the ranker sees.

Envoy does the hedging (one retry layer, docs/architecture.md decision 5): a call unanswered
after its per-try timeout gets a copy on another replica and the first answer wins. The ranker
only says how long that is, per call, in ``x-envoy-upstream-rq-per-try-timeout-ms``, because it
sees every batch's latency and a fixed number suits no model for long.

The delay is ``factor`` times a low quantile (the p10 by default) of recent successful calls.
A low quantile, not the p95 of "tail at scale": when one of two replicas is slow, half the
calls may be slow, and a p95 (or even the median) would then describe the slow replica and
never hedge it. A Rank's batches go out together and queue on the replicas, so even healthy
calls spread widely (measured on the local stack: p10 about 30 ms, p90 about 100 ms); with 3x
the p10, Envoy's hedges and retries were 1.3% of a healthy stack's Predicts
(bench/results/slow_replica_bench.md).
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

HEADER = "x-envoy-upstream-rq-per-try-timeout-ms"


class HedgeDelay:
    """A ring of recent call latencies and the hedge delay they imply.

    ``observe`` is called once per successful call (a few hundred ns); the quantile is
    recomputed every ``refresh`` observations, so ``delay_ms`` is a field read. The window is
    short (five Ranks of 40 batches) so the delay follows a machine that slows down as a whole
    within a few Ranks, instead of hedging every call meanwhile. No delay is
    given until ``min_samples`` calls have been seen: a cold ranker does not hedge on a guess.
    """

    def __init__(
        self, *, quantile: float = 0.1, factor: float = 3.0, min_ms: float = 5.0,
        window: int = 200, min_samples: int = 50, refresh: int = 10,
    ) -> None:
        if not 0 < quantile < 1:
            raise ValueError(f"hedge quantile must be within (0, 1), got {quantile}")
        if factor < 1:
            raise ValueError(f"hedge factor must be at least 1, got {factor}")
        self.quantile = quantile
        self.factor = factor
        self.min_ms = min_ms
        self._ring = np.zeros(max(window, min_samples), dtype=np.float64)
        self._seen = 0
        self._min_samples = min_samples
        self._refresh = max(1, refresh)
        #: The current delay in whole ms, or None while too few calls were seen.
        self.delay_ms: int | None = None

    def observe(self, seconds: float) -> None:
        self._ring[self._seen % len(self._ring)] = seconds
        self._seen += 1
        if self._seen >= self._min_samples and self._seen % self._refresh == 0:
            recent = self._ring[: min(self._seen, len(self._ring))]
            base_ms = float(np.quantile(recent, self.quantile)) * 1e3
            self.delay_ms = max(1, round(max(self.min_ms, self.factor * base_ms)))

    def metadata(self, timeout_s: float) -> tuple[str, str] | None:
        """The header for a call with ``timeout_s`` left, or None: no delay yet, or one that
        would not leave the copy time to answer."""
        delay = self.delay_ms
        if delay is None or delay >= timeout_s * 1e3 / 2:
            return None
        return (HEADER, str(delay))


class HedgeDelays:
    """One :class:`HedgeDelay` per model (name and version or label), made on first use: a fast
    model's latencies must not set the delay of a slow one, which would then be hedged on
    nearly every call, nor the other way round."""

    def __init__(self, **options: float) -> None:
        self._options = options
        self._by_model: dict[Hashable, HedgeDelay] = {}

    def of(self, model: Hashable) -> HedgeDelay:
        delay = self._by_model.get(model)
        if delay is None:
            delay = self._by_model[model] = HedgeDelay(**self._options)  # type: ignore[arg-type]
        return delay
