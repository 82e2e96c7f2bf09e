"""Rate schedules: a request rate that changes over the run (a simulated day).

A schedule is a list of (time, rate) points; the rate between two points is interpolated
linearly. Its integral Lambda(t), the number of requests due by time t, is then piecewise
quadratic and has an exact inverse. Arrivals follow from it and are fixed before the run:

- constant: the n-th request (n = 1, 2, ...) is due when Lambda reaches n;
- poisson: the n-th is due when Lambda reaches the n-th arrival of a Poisson process of rate
  1 (time rescaling: this gives a non-homogeneous Poisson process of the scheduled rate).

``diurnal`` is a built-in day: a trough at 04:00 and a peak at 20:00.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLUMNS = ("time_s", "rate_rps")

# The built-in day: share of the way from the base rate to the peak, hour by hour (00:00 to
# 24:00). Trough at 04:00 (base), morning rise, a flat afternoon, the peak at 20:00.
DIURNAL_SHAPE = (0.35, 0.22, 0.12, 0.05, 0.0, 0.03, 0.12, 0.28, 0.45, 0.55, 0.6, 0.63, 0.68,
                 0.66, 0.62, 0.6, 0.62, 0.7, 0.82, 0.95, 1.0, 0.92, 0.72, 0.52, 0.35)
DAY_S = 86400.0


class ScheduleError(ValueError):
    """A schedule file or its parameters are unusable; the message says what to fix."""


@dataclass(frozen=True)
class RateSchedule:
    """Rates ``rates_rps[i]`` at ``times_s[i]`` (from 0, increasing), linear in between."""

    times_s: tuple[float, ...]
    rates_rps: tuple[float, ...]
    description: str = ""

    def __post_init__(self) -> None:
        t, r = self.times_s, self.rates_rps
        if len(t) < 2 or len(t) != len(r):
            raise ScheduleError("a schedule needs at least two points of time and rate")
        if t[0] != 0.0 or any(b <= a for a, b in zip(t, t[1:], strict=False)):
            raise ScheduleError("schedule times must start at 0 and increase")
        if any(not math.isfinite(x) or x < 0 for x in r):
            raise ScheduleError("schedule rates must be finite and >= 0")
        if self.total() <= 0:
            raise ScheduleError("the schedule sends no requests: every rate is 0")

    @property
    def duration_s(self) -> float:
        return self.times_s[-1]

    def _knots(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = np.asarray(self.times_s, dtype=np.float64)
        r = np.asarray(self.rates_rps, dtype=np.float64)
        cum = np.concatenate([[0.0], np.cumsum((r[1:] + r[:-1]) / 2 * np.diff(t))])
        return t, r, cum

    def rate_at(self, t: float | np.ndarray) -> np.ndarray:
        """The scheduled rate at ``t`` seconds (the last rate after the end)."""
        return np.interp(t, self.times_s, self.rates_rps)

    def cumulative(self, t: float | np.ndarray) -> np.ndarray:
        """Lambda(t): requests due by ``t`` (the integral of the rate from 0)."""
        kt, kr, cum = self._knots()
        tt = np.clip(np.asarray(t, dtype=np.float64), 0.0, kt[-1])
        i = np.clip(np.searchsorted(kt, tt, side="right") - 1, 0, len(kt) - 2)
        u = tt - kt[i]
        slope = (kr[i + 1] - kr[i]) / (kt[i + 1] - kt[i])
        return cum[i] + kr[i] * u + slope * u * u / 2

    def total(self) -> float:
        return float(self._knots()[2][-1])

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """The time at which Lambda reaches each ``y`` (0 < y <= total)."""
        kt, kr, cum = self._knots()
        y = np.asarray(y, dtype=np.float64)
        i = np.clip(np.searchsorted(cum, y, side="left") - 1, 0, len(kt) - 2)
        d = y - cum[i]
        slope = (kr[i + 1] - kr[i]) / (kt[i + 1] - kt[i])
        # u solves kr u + slope u^2 / 2 = d; this form is exact for slope 0 and stable.
        root = np.sqrt(np.maximum(kr[i] ** 2 + 2 * slope * d, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(kr[i] + root > 0, 2 * d / (kr[i] + root), 0.0)
        return np.minimum(kt[i] + u, kt[i + 1])

    def arrivals(self, kind: str = "constant", *, seed: int = 0,
                 limit: int | None = None) -> np.ndarray:
        """Due offsets (seconds, ascending) of the requests in ``[0, duration)``."""
        total = self.total()
        if kind == "constant":
            marks = np.arange(1, math.floor(total + 1e-9) + 1, dtype=np.float64)
        elif kind == "poisson":
            rng = np.random.default_rng(seed)
            n = int(total + 10 * math.sqrt(total) + 10)
            marks = np.cumsum(rng.exponential(1.0, n))
            while marks[-1] < total:  # astronomically rare: extend
                marks = np.concatenate([marks, marks[-1] + np.cumsum(rng.exponential(1.0, n))])
            marks = marks[marks <= total]
        else:
            raise ScheduleError(f"arrivals must be 'constant' or 'poisson', got {kind!r}")
        out = self.inverse(marks)
        out = out[out < self.duration_s]
        return out[:limit] if limit is not None else out

    def stretched(self, duration_s: float) -> RateSchedule:
        """The same rates over ``duration_s`` seconds (times scaled, rates kept)."""
        if not duration_s > 0:
            raise ScheduleError(f"a schedule's duration must be > 0 s, got {duration_s}")
        k = duration_s / self.duration_s
        return RateSchedule(tuple(t * k for t in self.times_s), self.rates_rps,
                            self.description)

    def with_warmup(self, warmup_s: float) -> RateSchedule:
        """``warmup_s`` seconds at the first rate, then this schedule."""
        if warmup_s <= 0:
            return self
        return RateSchedule((0.0, *(warmup_s + t for t in self.times_s)),
                            (self.rates_rps[0], *self.rates_rps), self.description)

    def mean_rate(self) -> float:
        return self.total() / self.duration_s

    def describe(self) -> dict[str, object]:
        return {"description": self.description, "duration_s": round(self.duration_s, 6),
                "points": len(self.times_s), "mean_rps": round(self.mean_rate(), 4),
                "min_rps": min(self.rates_rps), "max_rps": max(self.rates_rps),
                "expected_requests": round(self.total(), 3)}


def parse_csv(path: Path) -> RateSchedule:
    """A schedule file: a header with ``time_s`` and ``rate_rps`` (other columns ignored),
    then one row per point. Blank lines and lines starting with ``#`` are skipped."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ScheduleError(f"cannot read schedule {path}: {exc.strerror or exc}") from None
    rows = [(n, line) for n, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")]
    if not rows:
        raise ScheduleError(f"{path} is empty: write a header line 'time_s,rate_rps' and one row"
                            " per point, e.g. '0,100' then '60,400'")
    header_line, header = rows[0][0], next(csv.reader([rows[0][1]]))
    names = [h.strip() for h in header]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise ScheduleError(f"{path}: line {header_line}: the header needs the columns"
                            f" time_s and rate_rps; missing {', '.join(missing)} (found:"
                            f" {', '.join(names) or 'nothing'})")
    ti, ri = names.index("time_s"), names.index("rate_rps")
    times: list[float] = []
    rates: list[float] = []
    for n, line in rows[1:]:
        cells = next(csv.reader([line]))
        if len(cells) <= max(ti, ri):
            raise ScheduleError(f"{path}: line {n}: {len(cells)} value(s), the header has"
                                f" {len(names)}: give time_s and rate_rps on every row")
        t = _number(path, n, "time_s", cells[ti])
        r = _number(path, n, "rate_rps", cells[ri])
        if not times and t != 0.0:
            raise ScheduleError(f"{path}: line {n}: the first time_s is {t:g}: the schedule"
                                " starts at the start of the run, so the first row must be at"
                                " time_s 0")
        if times and t <= times[-1]:
            raise ScheduleError(f"{path}: line {n}: time_s {t:g} does not come after the"
                                f" previous row's {times[-1]:g}: times must increase row by row")
        if r < 0:
            raise ScheduleError(f"{path}: line {n}: rate_rps {r:g} is negative: rates are"
                                " requests per second, 0 or more")
        times.append(t)
        rates.append(r)
    if len(times) < 2:
        raise ScheduleError(f"{path}: {len(times)} row(s) after the header: a schedule needs at"
                            " least two, one at time_s 0 and one at its end")
    if sum(rates) == 0:
        raise ScheduleError(f"{path}: every rate_rps is 0: the schedule would send nothing")
    return RateSchedule(tuple(times), tuple(rates), f"{Path(path).name}")


def _number(path: Path, line: int, column: str, cell: str) -> float:
    try:
        v = float(cell.strip())
    except ValueError:
        raise ScheduleError(f"{path}: line {line}: {column} {cell.strip()!r} is not a number"
                            ) from None
    if not math.isfinite(v):
        raise ScheduleError(f"{path}: line {line}: {column} must be a finite number, got"
                            f" {cell.strip()!r}")
    return v


def diurnal(base_rps: float, peak_rps: float, duration_s: float = DAY_S) -> RateSchedule:
    """The built-in day compressed into ``duration_s``: ``base_rps`` at 04:00, ``peak_rps``
    at 20:00, hourly points of DIURNAL_SHAPE in between."""
    if not (base_rps >= 0 and peak_rps > 0 and math.isfinite(peak_rps)):
        raise ScheduleError("--schedule diurnal needs --base-rps >= 0 and --peak-rps > 0")
    if base_rps > peak_rps:
        raise ScheduleError(f"--base-rps {base_rps:g} is above --peak-rps {peak_rps:g}: the"
                            " base is the night's trough, the peak the evening's top")
    hours = len(DIURNAL_SHAPE) - 1
    times = tuple(h * duration_s / hours for h in range(hours + 1))
    rates = tuple(base_rps + (peak_rps - base_rps) * f for f in DIURNAL_SHAPE)
    return RateSchedule(times, rates, f"diurnal day, {base_rps:g} to {peak_rps:g} req/s,"
                        f" 24 h in {duration_s:g} s")


def load(spec: str, *, base_rps: float | None, peak_rps: float | None,
         duration_s: float | None) -> RateSchedule:
    """``--schedule``: ``diurnal`` or a CSV file; ``duration_s`` stretches or compresses it."""
    if spec == "diurnal":
        if base_rps is None or peak_rps is None:
            raise ScheduleError("--schedule diurnal needs --base-rps (the night's trough) and"
                                " --peak-rps (the evening's peak)")
        if duration_s is None:
            raise ScheduleError("--schedule diurnal needs --duration SECONDS: the day is"
                                " compressed into that many seconds (86400 plays it in real"
                                " time)")
        return diurnal(base_rps, peak_rps, duration_s)
    sched = parse_csv(Path(spec))
    return sched.stretched(duration_s) if duration_s is not None else sched
