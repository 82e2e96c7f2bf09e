"""Rate schedules: the integral and its inverse, arrivals, the built-in day, CSV errors, and
the per-window report of a scheduled run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rankserve.loadtest.progress import Live, _line
from rankserve.loadtest.schedule import (
    DAY_S,
    RateSchedule,
    ScheduleError,
    diurnal,
    load,
    parse_csv,
)
from rankserve.loadtest.stats import in_flight, schedule_windows, within_tolerance
from rankserve.tools.cli import main as rankserve_main

# 0 -> 100 req/s over 10 s: r(t) = 10 t, Lambda(t) = 5 t^2.
RAMP = RateSchedule((0.0, 10.0), (0.0, 100.0))


def test_cumulative_integral_and_its_inverse():
    assert RAMP.total() == 500.0
    np.testing.assert_allclose(RAMP.cumulative([0, 2, 5, 10, 12]), [0, 20, 125, 500, 500])
    np.testing.assert_allclose(RAMP.inverse([20, 125, 500]), [2, 5, 10])
    steps = RateSchedule((0.0, 2.0, 3.0, 5.0), (0.0, 0.0, 100.0, 100.0))
    # 0 for 2 s, a ramp to 100 over 1 s (50 requests), then 100 for 2 s (200).
    assert steps.total() == 250.0
    np.testing.assert_allclose(steps.inverse([50, 150]), [3, 4])


def test_constant_arrivals_are_due_where_the_integral_reaches_n():
    a = RAMP.arrivals()
    assert len(a) == 499  # the 500th is due at 10 s, the end (excluded)
    np.testing.assert_allclose(a[:3], np.sqrt(np.array([1, 2, 3]) / 5))
    # Per second, the count due is the integral over that second, to within one.
    counts = np.histogram(a, bins=np.arange(11))[0]
    expected = np.diff(RAMP.cumulative(np.arange(11)))
    assert np.all(np.abs(counts - expected) <= 1)
    flat = RateSchedule((0.0, 2.0), (100.0, 100.0))
    np.testing.assert_allclose(np.diff(flat.arrivals()), 0.01)


def test_poisson_arrivals_follow_the_rate_by_time_rescaling():
    sched = RateSchedule((0.0, 100.0), (0.0, 100.0))  # 5000 requests expected
    a = sched.arrivals("poisson", seed=5)
    assert np.all(np.diff(a) >= 0) and a[-1] < 100.0
    for lo, hi in ((0, 50), (50, 100)):
        expected = float(np.diff(sched.cumulative([lo, hi]))[0])  # 1250, then 3750
        n = int(((a >= lo) & (a < hi)).sum())
        assert abs(n - expected) < 4 * math.sqrt(expected), (lo, n, expected)
    # The rescaled gaps are exponential with mean 1.
    gaps = np.diff(sched.cumulative(a))
    assert abs(gaps.mean() - 1.0) < 0.05 and abs(gaps.std() - 1.0) < 0.05


def test_no_arrival_while_the_rate_is_zero():
    sched = RateSchedule((0.0, 2.0, 3.0, 5.0), (0.0, 0.0, 100.0, 100.0))
    for kind in ("constant", "poisson"):
        assert sched.arrivals(kind, seed=1).min() > 2.0


def test_diurnal_day_has_its_trough_at_night_and_peak_in_the_evening():
    day = diurnal(100.0, 1000.0, 240.0)  # 24 h in 240 s: an hour is 10 s
    t = np.linspace(0, 240, 24001)
    r = day.rate_at(t)
    assert r.min() == 100.0 and r.max() == 1000.0
    assert t[np.argmin(r)] == pytest.approx(40.0)  # 04:00
    assert t[np.argmax(r)] == pytest.approx(200.0)  # 20:00
    assert day.rate_at(130.0) < day.rate_at(190.0)  # afternoon below the evening
    assert diurnal(100.0, 1000.0).duration_s == DAY_S
    with pytest.raises(ScheduleError, match="--base-rps 5 is above --peak-rps 2"):
        diurnal(5, 2)
    with pytest.raises(ScheduleError, match="needs --duration"):
        load("diurnal", base_rps=1, peak_rps=2, duration_s=None)


def test_stretching_keeps_rates_and_scales_time(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text("# a ramp\ntime_s,rate_rps,note\n0,10,night\n\n60,70,day\n")
    sched = parse_csv(f)
    assert sched.times_s == (0.0, 60.0) and sched.rates_rps == (10.0, 70.0)
    short = load(str(f), base_rps=None, peak_rps=None, duration_s=6.0)
    assert short.times_s == (0.0, 6.0) and short.total() == pytest.approx(sched.total() / 10)
    warm = short.with_warmup(1.0)
    assert warm.times_s == (0.0, 1.0, 7.0) and warm.rate_at(0.5) == 10.0


@pytest.mark.parametrize(("text", "match"), [
    ("", r"is empty: write a header line 'time_s,rate_rps'"),
    ("# only a comment\n\n", "is empty"),
    ("time,rps\n0,1\n1,2\n", r"line 1: the header needs the columns time_s and rate_rps;"
                             r" missing time_s, rate_rps \(found: time, rps\)"),
    ("time_s\n0\n", "missing rate_rps"),
    ("time_s,rate_rps\n0,10\n5,20\n5,30\n", r"line 4: time_s 5 does not come after the"
                                           r" previous row's 5: times must increase"),
    ("time_s,rate_rps\n0,10\n\n5,20\n3,30\n", r"line 5: time_s 3 does not come after"),
    ("time_s,rate_rps\n0,10\n5,-1\n", r"line 3: rate_rps -1 is negative"),
    ("time_s,rate_rps\n0,10\n5,fast\n", r"line 3: rate_rps 'fast' is not a number"),
    ("time_s,rate_rps\n0,10\n5,nan\n", r"line 3: rate_rps must be a finite number"),
    ("time_s,rate_rps\n2,10\n5,20\n", r"line 2: the first time_s is 2: .* must be at time_s 0"),
    ("time_s,rate_rps\n0,10\n", r"1 row\(s\) after the header: a schedule needs at least two"),
    ("time_s,rate_rps\n0,0\n5,0\n", "every rate_rps is 0"),
    ("time_s,rate_rps\n0,10\n5\n", r"line 3: 1 value\(s\), the header has 2"),
])
def test_csv_errors_name_the_line_and_the_fix(tmp_path, text, match):
    f = tmp_path / "day.csv"
    f.write_text(text)
    with pytest.raises(ScheduleError, match=match):
        parse_csv(f)


def test_a_bad_schedule_stops_the_cli_before_any_load(tmp_path, capsys):
    f = tmp_path / "day.csv"
    f.write_text("time_s,rate_rps\n0,10\n5,-3\n")
    code = rankserve_main(["loadtest", "run", "--target", "127.0.0.1:1", "--schedule", str(f)])
    assert code == 2
    assert "line 3: rate_rps -3 is negative" in capsys.readouterr().err


def test_in_flight_is_time_weighted_over_the_window():
    sent, done = np.array([0.0, 0.5, 1.8]), np.array([1.0, 1.5, 1.9])
    assert in_flight(sent, done, 0.0, 2.0) == {"mean": pytest.approx(1.05), "max": 2.0}
    assert in_flight(sent, done, 1.0, 2.0) == {"mean": pytest.approx(0.6), "max": 1.0}
    # One answer leaving as the next call is sent: never two at once.
    assert in_flight(np.array([0.0, 1.0]), np.array([1.0, 2.0]), 0, 2)["max"] == 1.0


def test_windows_compare_answers_with_the_requests_due():
    sched = RateSchedule((0.0, 4.0), (10.0, 10.0))
    due = np.arange(40) / 10.0
    done = due + 0.05
    done[25:30] += 10.0  # five answers of window 2 arrive after the end: they count in the last
    ok = np.ones(40, bool)
    ok[0] = False
    w = schedule_windows(sched, due, due, done, np.full(40, 50.0), ok, 1.0)
    assert [x["due"] for x in w] == [10, 10, 10, 10]
    assert [x["answered"] for x in w] == [10, 10, 5, 15]
    assert [x["within_tolerance"] for x in w] == [True, True, False, False]
    assert w[0]["errors"] == 1 and w[0]["ok_rps"] == 9.0 and w[0]["scheduled_rps"] == 10.0
    assert within_tolerance(107, 100) and within_tolerance(3, 0) and not within_tolerance(111, 100)


def test_the_progress_line_shows_the_scheduled_rate():
    live = Live()
    live.begin(100.0, 101.0, RateSchedule((0.0, 10.0), (0.0, 100.0)))
    assert "(scheduled    50.0)" in _line("run", live.snapshot(105.0), 10.0)
    live.begin(100.0, 101.0)
    assert "scheduled" not in _line("run", live.snapshot(105.0), 10.0)
