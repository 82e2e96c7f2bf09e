"""Which TensorFlow ops a model spends its time in, from a profiler trace (an XSpace).

TensorFlow's profiler records, on the host plane ("/host:CPU"), one line per thread; every op
the executor runs is an event named "<node name>:<op type>" (its metadata's display name is the
op type; older traces carry the same text in a "tf_op" stat instead). Events on one line do not
overlap unless nested, so an op's self time is its duration less the ops nested in it on the
same line. Ops on different threads run in parallel: summed self times are CPU time in ops,
which may exceed the wall time of the model calls. A signature call is the event with a
"tf_function_call" stat; its duration is the wall time of one model call.

Only host-plane ops are counted: on a GPU the kernels' time lies on the device planes, which
this summary leaves out (the raw trace has them; open it in TensorBoard).

Pure functions over the slim XSpace messages; nothing here imports TensorFlow.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from rankserve.tfserving.v1 import xplane_pb2

HOST_PLANE = "/host:CPU"
TASK_PLANE = "Task Environment"
_OP_TEXT = re.compile(r"^([^:]+):([A-Za-z_][A-Za-z0-9_]*)$")
TOP_OPS = 15
KEPT_OPS = 50


@dataclass(frozen=True)
class OpEvent:
    """One op execution on a thread line: start and duration in ps."""

    name: str
    type: str
    start_ps: int
    duration_ps: int


@dataclass
class OpTotal:
    """An op's self time summed over every execution in the trace."""

    name: str
    type: str
    self_ps: int = 0
    occurrences: int = 0


def _stat_text(stat: xplane_pb2.XStat, plane: xplane_pb2.XPlane) -> str | None:
    kind = stat.WhichOneof("value")
    if kind == "str_value":
        return stat.str_value
    if kind == "ref_value":
        ref = plane.stat_metadata.get(stat.ref_value)
        return ref.name if ref is not None else None
    return None


def _stat_names(plane: xplane_pb2.XPlane) -> dict[int, str]:
    return {k: v.name for k, v in plane.stat_metadata.items()}


def op_of(event: xplane_pb2.XEvent, plane: xplane_pb2.XPlane,
          stat_names: dict[int, str]) -> tuple[str, str] | None:
    """(node name, op type) when ``event`` is a TensorFlow op execution, else None."""
    meta = plane.event_metadata.get(event.metadata_id)
    if meta is None:
        return None
    for stat in (*event.stats, *meta.stats):
        if stat_names.get(stat.metadata_id) == "tf_op":
            text = _stat_text(stat, plane)
            m = _OP_TEXT.match(text or "")
            if m:
                return m.group(1), m.group(2)
    m = _OP_TEXT.match(meta.name)
    if m and meta.display_name == m.group(2):
        return m.group(1), m.group(2)
    return None


def host_planes(space: xplane_pb2.XSpace) -> list[xplane_pb2.XPlane]:
    return [p for p in space.planes if p.name == HOST_PLANE]


def op_lines(plane: xplane_pb2.XPlane) -> Iterator[list[OpEvent]]:
    """The op events of each line of a host plane, in line order."""
    names = _stat_names(plane)
    for line in plane.lines:
        ops = []
        for e in line.events:
            op = op_of(e, plane, names)
            if op is not None:
                ops.append(OpEvent(op[0], op[1], e.offset_ps, e.duration_ps))
        if ops:
            yield ops


def self_times(events: Iterable[OpEvent]) -> list[tuple[OpEvent, int]]:
    """(event, self time in ps) for the events of one line: each event's duration less the
    durations of the events directly nested in it."""
    ordered = sorted(events, key=lambda e: (e.start_ps, -e.duration_ps))
    out: list[tuple[OpEvent, int]] = []
    stack: list[int] = []  # indexes into `out` of the open (enclosing) events
    for e in ordered:
        while stack and out[stack[-1]][0].start_ps + out[stack[-1]][0].duration_ps <= e.start_ps:
            stack.pop()
        if stack:
            parent, own = out[stack[-1]]
            out[stack[-1]] = (parent, own - min(e.duration_ps, parent.start_ps
                                                 + parent.duration_ps - e.start_ps))
        out.append((e, e.duration_ps))
        stack.append(len(out) - 1)
    return [(e, max(own, 0)) for e, own in out]


def op_totals(spaces: Iterable[xplane_pb2.XSpace]) -> dict[tuple[str, str], OpTotal]:
    """Self time and executions of every op, over every host plane of every trace."""
    totals: dict[tuple[str, str], OpTotal] = {}
    for space in spaces:
        for plane in host_planes(space):
            for events in op_lines(plane):
                for e, own in self_times(events):
                    t = totals.get((e.name, e.type))
                    if t is None:
                        t = totals[(e.name, e.type)] = OpTotal(e.name, e.type)
                    t.self_ps += own
                    t.occurrences += 1
    return totals


def model_calls(spaces: Iterable[xplane_pb2.XSpace]) -> tuple[int, int]:
    """(signature calls, their summed wall time in ps): events with a "tf_function_call"
    stat on the host planes."""
    calls = total = 0
    for space in spaces:
        for plane in host_planes(space):
            names = _stat_names(plane)
            ids = {k for k, v in names.items() if v == "tf_function_call"}
            if not ids:
                continue
            for line in plane.lines:
                for e in line.events:
                    if any(s.metadata_id in ids for s in e.stats):
                        calls += 1
                        total += e.duration_ps
    return calls, total


def trace_seconds(space: xplane_pb2.XSpace) -> float | None:
    """How long the trace ran: profile_stop_time - profile_start_time of its task plane."""
    for plane in space.planes:
        if plane.name != TASK_PLANE:
            continue
        names = _stat_names(plane)
        got = {names.get(s.metadata_id): s for s in plane.stats}
        start, stop = got.get("profile_start_time"), got.get("profile_stop_time")
        if start is not None and stop is not None:
            a = start.uint64_value or start.int64_value
            b = stop.uint64_value or stop.int64_value
            if b > a:
                return (b - a) / 1e9
    return None


def _ms(ps: float) -> float:
    return round(ps / 1e9, 4)


def _per(ps: float, n: int | float | None) -> float | None:
    """Microseconds per unit."""
    return round(ps / 1e6 / n, 4) if n else None


def summarize_ops(spaces: list[xplane_pb2.XSpace], predicts: int | None, rows: float | None,
                  top: int = KEPT_OPS) -> dict[str, Any]:
    """The op section of a report: op time, model calls, the top ops and op types by self
    time, each with its share of all op time and its time per Predict and per row."""
    totals = op_totals(spaces)
    op_ps = sum(t.self_ps for t in totals.values())
    calls, call_ps = model_calls(spaces)
    ranked = sorted(totals.values(), key=lambda t: (-t.self_ps, t.name))
    by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for t in totals.values():
        by_type[t.type][0] += t.self_ps
        by_type[t.type][1] += t.occurrences
    types = sorted(by_type.items(), key=lambda kv: (-kv[1][0], kv[0]))

    def share(ps: int) -> float | None:
        return round(ps / op_ps, 6) if op_ps else None

    return {
        "ops_seen": len(totals),
        "ops_truncated": len(ranked) > top,
        "op_ms": _ms(op_ps),
        "op_us_per_predict": _per(op_ps, predicts),
        "op_us_per_row": _per(op_ps, rows),
        "model_calls": calls,
        "model_call_ms": _ms(call_ps),
        "model_call_ms_mean": round(call_ps / 1e9 / calls, 4) if calls else None,
        "ops": [{"name": t.name, "type": t.type, "self_ms": _ms(t.self_ps),
                 "share": share(t.self_ps), "occurrences": t.occurrences,
                 "us_per_predict": _per(t.self_ps, predicts), "us_per_row": _per(t.self_ps, rows)}
                for t in ranked[:top]],
        "op_types": [{"type": k, "self_ms": _ms(ps), "share": share(ps), "occurrences": n,
                      "us_per_predict": _per(ps, predicts), "us_per_row": _per(ps, rows)}
                     for k, (ps, n) in types[:top]],
    }


# -- the model server's own metrics (Prometheus text) -------------------------------------------

PREFIX = "rankserve_modelserver_"


def parse_metrics(text: str) -> dict[str, float]:
    """The model server's series a profile needs, summed over labels: count and time of the
    Predicts answered OK, queue wait, model calls (time and rows), and model size (the largest
    version)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(PREFIX):
            continue
        for s in family.samples:
            key = s.name[len(PREFIX):]
            if key.startswith("request_duration_seconds_") and (
                    s.labels.get("method") != "Predict" or s.labels.get("status") != "OK"):
                continue  # answered Predicts only
            if key in ("request_duration_seconds_sum", "request_duration_seconds_count",
                       "queue_wait_seconds_sum", "queue_wait_seconds_count",
                       "inference_duration_seconds_sum", "inference_duration_seconds_count",
                       "model_call_rows_sum", "model_call_rows_count"):
                out[key] += s.value
            elif key in ("model_parameters", "model_bytes"):
                out[key] = max(out.get(key, 0.0), s.value)
    return dict(out)


def time_split(before: list[dict[str, float]], after: list[dict[str, float]]
               ) -> dict[str, Any]:
    """Where a Predict's time in the model servers went over the window, from the change of
    their own histograms (summed over the replicas): queue wait, the model call it rode on,
    and the rest (decode, validation, encode, gRPC handling)."""
    d: dict[str, float] = defaultdict(float)
    for b, a in zip(before, after, strict=True):
        for k, v in a.items():
            if k not in ("model_parameters", "model_bytes"):
                d[k] += v - b.get(k, 0.0)
    predicts = d["request_duration_seconds_count"]
    if predicts <= 0:
        return {"available": False, "reason": "the model servers answered no Predict in the"
                " window (their metrics did not change)"}
    server = d["request_duration_seconds_sum"] / predicts
    queue = (d["queue_wait_seconds_sum"] / d["queue_wait_seconds_count"]
             if d["queue_wait_seconds_count"] else 0.0)
    call = (d["inference_duration_seconds_sum"] / d["inference_duration_seconds_count"]
            if d["inference_duration_seconds_count"] else 0.0)
    rest = max(server - queue - call, 0.0)
    return {
        "available": True,
        "source": "the model servers' histograms rankserve_modelserver_request_duration_seconds"
                  " (Predict), queue_wait_seconds and inference_duration_seconds, read before"
                  " and after the window",
        "predicts": int(round(predicts)),
        "model_calls": int(round(d["inference_duration_seconds_count"])),
        "rows": int(round(d["model_call_rows_sum"])),
        "server_ms_per_predict": round(server * 1e3, 4),
        "queue_wait_ms_per_predict": round(queue * 1e3, 4),
        "model_call_ms_per_predict": round(call * 1e3, 4),
        "outside_model_ms_per_predict": round(rest * 1e3, 4),
        "inside_model_share": round(call / server, 4) if server else None,
        "model_ms_per_predict_amortized": round(
            d["inference_duration_seconds_sum"] / predicts * 1e3, 4),
    }


def model_size(after: list[dict[str, float]]) -> dict[str, Any]:
    """Parameters and SavedModel bytes the model servers export (the largest version)."""
    params = [m["model_parameters"] for m in after if "model_parameters" in m]
    size = [m["model_bytes"] for m in after if "model_bytes" in m]
    if not params and not size:
        return {"available": False, "reason": "the model servers export no model size"
                " (rankserve_modelserver_model_parameters/_bytes); TF Serving has none"}
    return {"available": True, "parameters": int(max(params)) if params else None,
            "saved_model_bytes": int(max(size)) if size else None,
            "source": "rankserve_modelserver_model_parameters and _model_bytes"}
