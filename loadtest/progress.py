"""The live progress line: elapsed time, rate, p50, p99 and errors over the last seconds."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import TextIO

import numpy as np

from rankserve.loadtest.schedule import RateSchedule

WINDOW_S = 2.0


class Live:
    """Running counters the runner updates and the progress line reads."""

    def __init__(self) -> None:
        self.start = self.measured_from = 0.0
        self.done = self.errors = 0
        self._recent: deque[tuple[float, float, bool]] = deque()
        self.schedule: RateSchedule | None = None

    def begin(self, start: float, measured_from: float,
              schedule: RateSchedule | None = None) -> None:
        """``schedule``: the rate schedule from ``start`` (warm-up included), if any."""
        self.start, self.measured_from, self.schedule = start, measured_from, schedule

    def record(self, done: float, latency_s: float, ok: bool, counted: bool) -> None:
        self.done += 1
        self.errors += not ok
        self._recent.append((done, latency_s, ok))

    def snapshot(self, now: float) -> dict[str, float]:
        while self._recent and self._recent[0][0] < now - WINDOW_S:
            self._recent.popleft()
        lat = np.fromiter((r[1] for r in self._recent), dtype=np.float64)
        span = min(WINDOW_S, max(1e-3, now - self.start))
        return {
            "elapsed": now - self.start,
            "rate": len(lat) / span,
            "p50_ms": float(np.percentile(lat, 50)) * 1e3 if len(lat) else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) * 1e3 if len(lat) else float("nan"),
            "errors": self.errors,
            "done": self.done,
            "warmup": float(now < self.measured_from),
            "scheduled": (float(self.schedule.rate_at(now - self.start))
                          if self.schedule is not None else float("nan")),
        }


def _line(label: str, s: dict[str, float], total_s: float) -> str:
    frac = min(1.0, max(0.0, s["elapsed"] / total_s)) if total_s > 0 else 1.0
    width = 20
    bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
    phase = "warm-up " if s["warmup"] else ""
    sched = "" if s["scheduled"] != s["scheduled"] else f" (scheduled {s['scheduled']:7.1f})"
    return (f"{label} [{bar}] {s['elapsed']:5.1f}/{total_s:.0f}s {phase}"
            f"{s['rate']:7.1f} req/s{sched}  p50 {s['p50_ms']:7.2f} ms  p99 {s['p99_ms']:7.2f} ms"
            f"  errors {int(s['errors'])}/{int(s['done'])}")


@contextlib.asynccontextmanager
async def show(live: Live, label: str, total_s: float, *, enabled: bool = True,
               stream: TextIO | None = None) -> AsyncIterator[None]:
    """Prints the progress line while the body runs: redrawn in place on a terminal, one line
    every 5 s otherwise (logs)."""
    stream = stream or sys.stderr
    if not enabled:
        yield
        return
    tty = stream.isatty()
    loop = asyncio.get_running_loop()

    async def draw() -> None:
        last = 0.0
        while True:
            await asyncio.sleep(0.5)
            if live.start == 0.0:
                continue
            line = _line(label, live.snapshot(loop.time()), total_s)
            if tty:
                stream.write("\r" + line)
                stream.flush()
            elif time.monotonic() - last >= 5.0:
                stream.write(line + "\n")
                stream.flush()
                last = time.monotonic()

    task = asyncio.create_task(draw())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if live.start:
            end = _line(label, live.snapshot(loop.time()), total_s)
            stream.write(("\r" if tty else "") + end + "\n")
            stream.flush()
