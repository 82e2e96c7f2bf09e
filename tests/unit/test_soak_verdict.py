"""The soak's verdict over synthetic series and calls (bench/soak_verdict.py), and its reading
of Prometheus text (bench/soak_probes.py)."""

from __future__ import annotations

from bench.soak_probes import metric_by
from bench.soak_verdict import (
    Thresholds,
    Window,
    call_failures,
    increase_outside,
    judge,
    split_statuses,
    warm_until,
)

TH = Thresholds()


def series(rss, fds=None, tasks=None, *, t0: float = 0.0, step: float = 10.0) -> list[dict]:
    fds = fds or [50] * len(rss)
    tasks = tasks or [20] * len(rss)
    return [{"t": t0 + i * step, "rss_mib": r, "fds": f, "tasks": k}
            for i, (r, f, k) in enumerate(zip(rss, fds, tasks, strict=True))]


def whole_run(points: list[dict], th: Thresholds = TH):
    run_s = points[-1]["t"]
    return judge("ranker", 1, points, run_s=run_s, seg_start=0.0, seg_end=run_s, ready=0.0,
                 th=th)


def test_flat_series_pass():
    j = whole_run(series([500.0 + (i % 3) for i in range(90)]))
    assert not j.failed and j.failures() == [] and j.samples > 60


def test_steady_rss_climb_fails_and_names_process_and_series():
    j = whole_run(series([500.0 + 3 * i for i in range(90)]))
    assert j.failed
    [msg] = j.failures()
    assert msg.startswith("ranker (pid 1): rss_mib grew from")


def test_rss_needs_both_relative_and_absolute_growth():
    # +25 MiB on 100 MiB: 25 % but under 30 MiB.
    assert not whole_run(series([100.0] * 20 + [125.0] * 20)).failed
    # +40 MiB on 1000 MiB: 40 MiB but 4 %.
    assert not whole_run(series([1000.0] * 20 + [1040.0] * 20)).failed
    # +40 MiB on 100 MiB: both.
    assert whole_run(series([100.0] * 20 + [140.0] * 20)).failed


def test_fds_and_tasks_have_an_absolute_slack():
    flat = [500.0] * 40
    assert not whole_run(series(flat, fds=[50] * 20 + [58] * 20)).failed
    j = whole_run(series(flat, fds=[50] * 20 + [59] * 20, tasks=[20] * 20 + [40] * 20))
    assert [g.series for g in j.growth if g.failed] == ["fds", "tasks"]


def test_medians_ignore_a_single_spike():
    rss = [500.0] * 40
    rss[-1] = 900.0
    assert not whole_run(series(rss)).failed


def test_warmup_ramp_is_left_out():
    ramp = [50.0 + 100 * i for i in range(7)] + [700.0] * 33  # loading, then flat
    assert not whole_run(series(ramp)).failed


def test_late_process_is_judged_after_its_own_warmup_and_ready():
    # Started at 450 s of a 900 s run, ready at 470 s: judged from 540 s (20 % of its life).
    assert warm_until(900, 450, 900, 470, 0.2) == 540
    # Ready late: judged from ready.
    assert warm_until(900, 450, 900, 600, 0.2) == 600
    # A process stopped at half time is judged after the run's warm-up only.
    assert warm_until(900, 0, 450, 0, 0.2) == 180
    points = series([10.0, 300.0, 650.0] + [700.0] * 43, t0=450.0)
    j = judge("model-server-1", 2, points, run_s=900, seg_start=450, seg_end=900, ready=470,
              th=TH)
    assert not j.failed and j.from_s >= 540


def test_too_few_samples_give_no_verdict():
    j = judge("model-server-1", 2, series([700.0, 800.0], t0=880.0), run_s=900, seg_start=870,
              seg_end=900, ready=890, th=TH)
    assert not j.failed and j.growth == () and "no verdict" in j.note


RESTART = Window(60.0, 65.0, "restart")


def test_failed_calls_split_by_event_window():
    done = [10.0, 59.5, 62.0, 69.0, 71.0, 100.0]
    codes = ["OK", "UNAVAILABLE", "UNAVAILABLE", "DEADLINE_EXCEEDED", "UNAVAILABLE", "OK"]
    st = split_statuses(done, codes, [RESTART])
    assert st == {"codes": {"OK": 2, "UNAVAILABLE": 3, "DEADLINE_EXCEEDED": 1},
                  "failed_in_events": {"UNAVAILABLE": 2, "DEADLINE_EXCEEDED": 1},
                  "failed_outside_events": {"UNAVAILABLE": 1}}
    [msg] = call_failures({"predict": st}, max_event_errors=20)
    assert msg.startswith("predict: 1 failed call(s) outside the events")


def test_a_few_failures_around_events_pass_too_many_fail():
    st = split_statuses([61.0] * 3, ["UNAVAILABLE"] * 3, [RESTART])
    assert call_failures({"rank": st}, max_event_errors=3) == []
    assert call_failures({"rank": st}, max_event_errors=2) == [
        "3 failed calls around the events (more than --max-event-errors 2)"]


def test_counter_growth_is_charged_to_events_it_overlaps():
    points = [(50.0, 0.0), (58.0, 0.0), (66.0, 4.0), (74.0, 4.0), (82.0, 6.0)]
    # 58-66 overlaps the restart; 74-82 is clear of it (ends at 65 + 5 s).
    assert increase_outside(points, [RESTART]) == 2.0
    assert increase_outside(points, []) == 6.0


def test_metric_by_sums_samples_by_label():
    text = """# HELP x_total calls
# TYPE x_total counter
x_total{method="Predict",version="1",status="OK"} 10.0
x_total{method="Predict",version="2",status="OK"} 3.0
x_total{method="Predict",version="1",status="UNAVAILABLE"} 1.0
x_created{method="Predict",version="1",status="OK"} 1.7e+09
y_total 4.0
"""
    assert metric_by(text, "x_total", "version") == {"1": 11.0, "2": 3.0}
    assert metric_by(text, "x_total", "version", status="OK") == {"1": 10.0, "2": 3.0}
    assert metric_by(text, "y_total") == {"": 4.0}
    assert metric_by(text, "z_total") == {}
