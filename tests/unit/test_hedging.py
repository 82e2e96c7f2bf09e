"""The hedge delay the ranker sends Envoy: a multiple of a low quantile of recent latencies."""

from __future__ import annotations

import pytest

from rankserve.ranker.hedging import HEADER, HedgeDelay, HedgeDelays


def test_no_delay_until_enough_calls_were_seen() -> None:
    hedge = HedgeDelay(min_samples=50, refresh=10)
    for _ in range(49):
        hedge.observe(0.010)
    assert hedge.metadata(1.0) is None


def test_delay_is_factor_times_the_quantile_and_follows_the_latency() -> None:
    hedge = HedgeDelay(quantile=0.5, factor=3.0, min_ms=1.0, window=100, min_samples=50,
                       refresh=10)
    for _ in range(100):
        hedge.observe(0.010)
    assert hedge.metadata(1.0) == (HEADER, "30")
    for _ in range(100):  # the whole window is now slower
        hedge.observe(0.020)
    assert hedge.metadata(1.0) == (HEADER, "60")


def test_a_slow_half_does_not_move_a_median_based_delay() -> None:
    """With one of two replicas slow, 40% of calls slow must not make the delay slow too."""
    hedge = HedgeDelay(quantile=0.5, factor=3.0, min_ms=1.0, window=100, min_samples=50,
                       refresh=10)
    for i in range(100):
        hedge.observe(0.100 if i % 5 < 2 else 0.005)
    assert hedge.metadata(1.0) == (HEADER, "15")


def test_floor_and_budget() -> None:
    hedge = HedgeDelay(factor=2.0, min_ms=5.0, min_samples=10, refresh=10)
    for _ in range(10):
        hedge.observe(0.0005)
    assert hedge.delay_ms == 5  # never below the floor
    assert hedge.metadata(0.009) is None  # a copy sent after 5 ms of 9 would not make it
    assert hedge.metadata(0.011) == (HEADER, "5")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="quantile"):
        HedgeDelay(quantile=1.0)
    with pytest.raises(ValueError, match="factor"):
        HedgeDelay(factor=0.5)


def test_each_model_has_its_own_delay() -> None:
    delays = HedgeDelays(min_samples=10, refresh=10, min_ms=1.0)
    for _ in range(10):
        delays.of("fast").observe(0.002)
        delays.of("slow").observe(0.040)
    assert delays.of("fast").delay_ms == 6 and delays.of("slow").delay_ms == 120
    assert delays.of("fast") is delays.of("fast")
