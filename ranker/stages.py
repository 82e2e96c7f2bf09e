"""Stage timing of one Rank: each stage is a span, a duration in the response and a metric.

The three must agree, so one helper measures a stage once and feeds all of them. Durations are
observed into the stage histogram only when the Rank completes (:meth:`StageTimer.finish`): every
stage then has the same count, the count of answered Ranks, and a request refused half-way
never skews one stage's distribution against the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

from opentelemetry import trace

from rankserve.ranker.metrics import RankerMetrics
from rankserve.ranker.types import StageTimings

Stage = Literal["route", "retrieve", "features", "plan", "score", "merge"]
STAGES: tuple[Stage, ...] = ("route", "retrieve", "features", "plan", "score", "merge")


class StageTimer:
    """Times the stages of one Rank into ``timings`` (milliseconds), each within its own span.

    ``clock`` is ``time.monotonic`` but for tests; ``started`` is the Rank's start on it.
    """

    def __init__(self, tracer: trace.Tracer, started: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._tracer = tracer
        self._clock = clock
        self.started = clock() if started is None else started
        self.timings = StageTimings()
        self._seconds: dict[Stage, float] = {}

    @contextmanager
    def stage(self, name: Stage) -> Iterator[trace.Span]:
        """Runs the block as stage ``name`` and records its duration when it completes."""
        with self._tracer.start_as_current_span(name) as span:
            began = self._clock()
            yield span
            seconds = self._clock() - began
            setattr(self.timings, f"{name}_ms", seconds * 1e3)
            self._seconds[name] = seconds

    def finish(self, metrics: RankerMetrics | None) -> StageTimings:
        """Sets the total and observes every completed stage; call once, when the Rank answers."""
        self.timings.total_ms = (self._clock() - self.started) * 1e3
        if metrics is not None:
            for name, seconds in self._seconds.items():
                metrics.stage_duration_labels[name].observe(seconds)
        return self.timings
