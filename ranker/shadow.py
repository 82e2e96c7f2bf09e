"""Shadow scoring: a copy of a request's candidates scored by another model, off the answer path.

The copy is sent in a task of its own that the response never waits for, bounded by its own
limit of requests in flight (a shadow must never take model-call slots from live traffic); over
the limit it is dropped and counted. Every outcome is counted and none reaches the caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import numpy as np

from rankserve.ranker.experiments import Arm
from rankserve.ranker.model_inputs import ModelInputs
from rankserve.ranker.planner import plan_batches
from rankserve.ranker.scoring import Call, Scorer
from rankserve.ranker.version_metrics import VersionMetrics

log = logging.getLogger(__name__)


class ShadowRunner:
    def __init__(self, scorer: Scorer, metrics: VersionMetrics | None, max_in_flight: int = 8,
                 timeout_s: float = 1.0) -> None:
        self._scorer = scorer
        self._metrics = metrics
        self._max = max_in_flight
        self._timeout = timeout_s
        self._tasks: set[asyncio.Task[None]] = set()
        self.outcomes: dict[str, int] = {"ok": 0, "error": 0, "dropped": 0}

    def submit(self, experiment: str, arm: Arm, inputs: Callable[[], Awaitable[ModelInputs]],
               batch_size: int, call: Call) -> None:
        """Scores the request's candidates with ``arm``'s model, in batches of ``batch_size``;
        ``inputs`` gives the inputs of the arm's spec (assembled in the shadow's own task when
        the arm's model takes other inputs than the live one)."""
        if len(self._tasks) >= self._max:
            self._count(experiment, arm, "dropped")
            return
        task = asyncio.get_running_loop().create_task(
            self._run(experiment, arm, inputs, batch_size, call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, experiment: str, arm: Arm,
                   inputs: Callable[[], Awaitable[ModelInputs]], batch_size: int,
                   call: Call) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                ready = await inputs()
                results = await asyncio.gather(*(
                    self._scorer.score(arm.model, ready.batch(b), b.stop - b.start,
                                       self._timeout, call)
                    for b in plan_batches(ready.rows, batch_size)))
        except Exception as exc:  # noqa: BLE001 - a shadow's failure is counted, never raised
            log.debug("shadow arm %s/%s failed: %s", experiment, arm.name, exc)
            self._count(experiment, arm, "error")
            return
        if self._metrics is not None and results:
            scores = np.concatenate([r.scores for r in results])
            self._metrics.observe_scores(arm.model.name, results[0].model_version, scores)
        self._count(experiment, arm, "ok")

    def _count(self, experiment: str, arm: Arm, outcome: str) -> None:
        self.outcomes[outcome] += 1
        if self._metrics is not None:
            self._metrics.shadow_calls.labels(experiment, arm.name, outcome).inc()

    async def drain(self) -> None:
        """Waits for the shadow calls in flight (at shutdown, or in tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
