"""What fails a soak: a process that grew, and calls that failed where no event explains them.

Growth: RSS, open fds and tasks of each process (each pid), judged on its own samples. Leave out
the warm-up (the first share of the run, and for a process started during the run, also the
first share of its own life and everything before it was ready), then compare the median of
the last quarter of the remaining samples with the median of their first quarter. Medians of
quarters, not the first and last sample, so one sample taken during a burst of traffic or a
garbage collection neither raises nor hides growth. RSS fails on relative and absolute growth
together (a small process doubling by 2 MiB is noise; a large one growing by 30 MiB may be its
caches filling), fds and tasks on an absolute slack (pools may open a few more under load, but
a leak keeps climbing).

Calls: a failed call (or a degraded Rank) is explained by an event (a replica restart, a version
swap) when it finished within that event's window, from WINDOW_BEFORE_S before the event began
to WINDOW_AFTER_S after it ended; a few such failures are allowed, none elsewhere.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

#: The measured series of every sample, in the order reports show them.
SERIES = ("rss_mib", "fds", "tasks")
#: Seconds around an event (before its start, after its end) whose failed calls it explains.
WINDOW_BEFORE_S, WINDOW_AFTER_S = 1.0, 5.0


@dataclass(frozen=True)
class Thresholds:
    """When growth fails the soak."""

    rss_pct: float = 5.0  # RSS must grow by more than this share ...
    rss_mib: float = 30.0  # ... and by at least this many MiB
    fds: float = 8  # open fds may grow by this many
    tasks: float = 8  # threads may grow by this many
    warmup: float = 0.2  # share of the run (and of a late process's own life) left out


@dataclass(frozen=True)
class Growth:
    """One series of one process: median of the first and of the last quarter judged."""

    series: str
    start: float
    end: float
    failed: bool

    @property
    def grew(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Judgement:
    """The verdict on one process (one pid) over the samples after its warm-up."""

    process: str
    pid: int
    from_s: float  # the judged window, seconds since the run started
    to_s: float
    samples: int
    growth: tuple[Growth, ...]
    note: str = ""  # why there is no verdict (too few samples)

    @property
    def failed(self) -> bool:
        return any(g.failed for g in self.growth)

    def failures(self) -> list[str]:
        """One message per failed series, naming the process and the series."""
        return [f"{self.process} (pid {self.pid}): {g.series} grew from {g.start:g} to"
                f" {g.end:g} between {self.from_s:.0f} s and {self.to_s:.0f} s"
                for g in self.growth if g.failed]


def warm_until(run_s: float, seg_start: float, seg_end: float, ready: float,
               warmup: float) -> float:
    """When a process's judged samples begin: after the run's warm-up, the warm-up of its own
    life (from ``seg_start`` to ``seg_end``) and the moment it was ready, whichever is last."""
    return max(warmup * run_s, seg_start + warmup * (seg_end - seg_start), ready)


def grew_too_much(series: str, start: float, end: float, th: Thresholds) -> bool:
    grew = end - start
    if series == "rss_mib":
        return grew > th.rss_pct / 100.0 * start and grew >= th.rss_mib
    slack = th.fds if series == "fds" else th.tasks
    return grew > slack


def judge(process: str, pid: int, points: Sequence[Mapping[str, float]], *, run_s: float,
          seg_start: float, seg_end: float, ready: float, th: Thresholds) -> Judgement:
    """``points``: this pid's samples in time order, each with ``t`` (seconds since the run
    started) and every series of SERIES."""
    begin = warm_until(run_s, seg_start, seg_end, ready, th.warmup)
    kept = [p for p in points if p["t"] >= begin]
    if len(kept) < 2:
        return Judgement(process, pid, begin, seg_end, len(kept), (),
                         note=f"{len(kept)} sample(s) after warm-up: no verdict")
    k = max(1, len(kept) // 4)
    growth = []
    for name in SERIES:
        start = statistics.median(p[name] for p in kept[:k])
        end = statistics.median(p[name] for p in kept[-k:])
        growth.append(Growth(name, start, end, grew_too_much(name, start, end, th)))
    return Judgement(process, pid, kept[0]["t"], kept[-1]["t"], len(kept), tuple(growth))


# -- calls -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """An event's span, seconds since the run started."""

    begin: float
    end: float
    event: str

    def covers(self, t0: float, t1: float | None = None) -> bool:
        """Whether the window, widened as the module says, meets the moment ``t0`` (or the
        interval ``t0``..``t1``)."""
        t1 = t0 if t1 is None else t1
        return self.begin - WINDOW_BEFORE_S <= t1 and t0 <= self.end + WINDOW_AFTER_S


def split_statuses(done: Iterable[float], codes: Iterable[str],
                   windows: Sequence[Window]) -> dict[str, dict[str, int]]:
    """Status counts, and the failed calls (by code) inside and outside the event windows;
    ``done``: when each call finished, seconds since the run started."""
    every, inside, outside = Counter(), Counter(), Counter()
    for t, code in zip(done, codes, strict=True):
        every[code] += 1
        if code != "OK":
            (inside if any(w.covers(t) for w in windows) else outside)[code] += 1
    return {"codes": dict(every), "failed_in_events": dict(inside),
            "failed_outside_events": dict(outside)}


def increase_outside(points: Sequence[tuple[float, float]], windows: Sequence[Window]) -> float:
    """How much a counter sampled as (t, value) grew over sample intervals that meet no event
    window (an interval is charged to an event when the two overlap)."""
    total = 0.0
    for (t0, v0), (t1, v1) in zip(points, points[1:], strict=False):
        if v1 > v0 and not any(w.covers(t0, t1) for w in windows):
            total += v1 - v0
    return total


def call_failures(statuses: Mapping[str, Mapping[str, Mapping[str, int]]],
                  max_event_errors: int) -> list[str]:
    """Messages for failed calls outside the events, and for too many around them."""
    out = []
    for kind, st in statuses.items():
        outside = sum(st["failed_outside_events"].values())
        if outside:
            out.append(f"{kind}: {outside} failed call(s) outside the events:"
                       f" {dict(st['failed_outside_events'])}")
    around = sum(sum(st["failed_in_events"].values()) for st in statuses.values())
    if around > max_event_errors:
        out.append(f"{around} failed calls around the events (more than --max-event-errors"
                   f" {max_event_errors})")
    return out
