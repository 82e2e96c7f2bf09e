"""The op profile of a load test, from hand-built XSpace messages: which events are ops, self
time less nested ops, shares and per-row figures, the servers' histograms, and compare."""

from __future__ import annotations

import pytest

from rankserve.loadtest import profile as prof
from rankserve.loadtest.compare import compare
from rankserve.tfserving.v1 import xplane_pb2

US = 1_000_000  # ps per microsecond


class Plane:
    """Builds one plane: named event and stat metadata, lines of (name, start us, dur us)."""

    def __init__(self, space: xplane_pb2.XSpace, name: str = prof.HOST_PLANE) -> None:
        self.plane = space.planes.add(name=name)
        self._events: dict[str, int] = {}
        self._stats: dict[str, int] = {}

    def stat_id(self, name: str) -> int:
        if name not in self._stats:
            i = len(self._stats) + 1
            self._stats[name] = i
            self.plane.stat_metadata[i].CopyFrom(xplane_pb2.XStatMetadata(id=i, name=name))
        return self._stats[name]

    def event_id(self, name: str, display: str = "") -> int:
        if name not in self._events:
            i = len(self._events) + 1
            self._events[name] = i
            self.plane.event_metadata[i].CopyFrom(
                xplane_pb2.XEventMetadata(id=i, name=name, display_name=display))
        return self._events[name]

    def line(self, name: str, events: list[tuple], line_id: int = 1) -> xplane_pb2.XLine:
        line = self.plane.lines.add(id=line_id, name=name)
        for ev in events:
            text, start, dur, *stats = ev
            _, _, op_type = text.rpartition(":")
            display = op_type if ":" in text and "::" not in text and " " not in text else ""
            e = line.events.add(metadata_id=self.event_id(text, display), offset_ps=start * US,
                                duration_ps=dur * US)
            for stat in stats:
                e.stats.add(metadata_id=self.stat_id(stat), int64_value=1)
        return line


def space_with(events_by_line: list[list[tuple]]) -> xplane_pb2.XSpace:
    space = xplane_pb2.XSpace(hostnames=["h"])
    plane = Plane(space)
    for i, events in enumerate(events_by_line):
        plane.line(f"tf_Compute/{i}", events, line_id=i + 1)
    return space


def test_ops_are_node_colon_type_events_and_nothing_else():
    space = space_with([[("ExecutorState::Process", 0, 100), ("model/dense/MatMul:MatMul", 1, 10),
                         ("EagerLocalExecute: __inference_f_1", 20, 5), ("MemoryAllocation", 30, 0),
                         ("model/add:AddV2", 40, 2)]])
    totals = prof.op_totals([space])
    assert set(totals) == {("model/dense/MatMul", "MatMul"), ("model/add", "AddV2")}


def test_an_older_trace_names_the_op_in_a_tf_op_stat():
    space = xplane_pb2.XSpace()
    b = Plane(space)
    line = b.plane.lines.add(id=1, name="tf_Compute/1")
    e = line.events.add(metadata_id=b.event_id("some op"), offset_ps=0, duration_ps=7 * US)
    e.stats.add(metadata_id=b.stat_id("tf_op"), str_value="scope/Slow:StringToNumber")
    assert prof.op_totals([space])[("scope/Slow", "StringToNumber")].self_ps == 7 * US


def test_self_time_leaves_out_nested_ops_on_the_same_line_only():
    # A call op [0, 100) holds two ops on its own line: its self time is 100 - 30 - 20 = 50.
    # An op on another thread at the same time is not nested in it.
    space = space_with([
        [("f/Call:StatefulPartitionedCall", 0, 100), ("f/a:MatMul", 10, 30), ("f/b:Sum", 60, 20),
         ("f/a:MatMul", 200, 5)],
        [("f/c:Mul", 0, 100)],
    ])
    totals = prof.op_totals([space])
    assert totals[("f/Call", "StatefulPartitionedCall")].self_ps == 50 * US
    assert totals[("f/a", "MatMul")].self_ps == 35 * US
    assert totals[("f/a", "MatMul")].occurrences == 2
    assert totals[("f/c", "Mul")].self_ps == 100 * US


def test_summary_shares_and_time_per_predict_and_row():
    space = xplane_pb2.XSpace()
    host = Plane(space)
    host.line("tf_Compute/1", [("m/slow:AsString", 0, 300), ("m/fast:MatMul", 400, 100)])
    host.line("python", [("signature_wrapper_serve", 0, 600, "tf_function_call")], line_id=2)
    Plane(space, "/device:GPU:0").line("stream", [("m/gpu:MatMul", 0, 1000)])  # not counted
    s = prof.summarize_ops([space], predicts=10, rows=250)
    assert s["op_ms"] == pytest.approx(0.4)
    top = s["ops"][0]
    assert (top["name"], top["type"]) == ("m/slow", "AsString")
    assert top["share"] == pytest.approx(0.75)
    assert top["us_per_predict"] == pytest.approx(30.0)
    assert top["us_per_row"] == pytest.approx(1.2)
    assert s["model_calls"] == 1 and s["model_call_ms"] == pytest.approx(0.6)
    assert [t["type"] for t in s["op_types"]] == ["AsString", "MatMul"]


def test_trace_length_from_the_task_plane():
    space = xplane_pb2.XSpace()
    task = Plane(space, prof.TASK_PLANE)
    task.plane.stats.add(metadata_id=task.stat_id("profile_start_time"), uint64_value=10**9)
    task.plane.stats.add(metadata_id=task.stat_id("profile_stop_time"), uint64_value=4 * 10**9)
    assert prof.trace_seconds(space) == pytest.approx(3.0)
    assert prof.trace_seconds(xplane_pb2.XSpace()) is None


def metrics_text(n, req, queue, calls, model, rows) -> str:
    """The model server's exposition of these totals (plus a GetModelMetadata to ignore)."""
    mv = 'model="m",version="1"'
    pr, md = f'method="Predict",{mv},status="OK"', f'method="GetModelMetadata",{mv},status="OK"'
    name = "rankserve_modelserver_"
    return "\n".join([
        f"# TYPE {name}request_duration_seconds histogram",
        f"{name}request_duration_seconds_count{{{pr}}} {n}",
        f"{name}request_duration_seconds_sum{{{pr}}} {req}",
        f"{name}request_duration_seconds_count{{{md}}} 99",
        f"{name}request_duration_seconds_sum{{{md}}} 99",
        f"# TYPE {name}queue_wait_seconds histogram",
        f"{name}queue_wait_seconds_count{{{mv}}} {n}",
        f"{name}queue_wait_seconds_sum{{{mv}}} {queue}",
        f"# TYPE {name}inference_duration_seconds histogram",
        f"{name}inference_duration_seconds_count{{{mv}}} {calls}",
        f"{name}inference_duration_seconds_sum{{{mv}}} {model}",
        f"# TYPE {name}model_call_rows histogram",
        f"{name}model_call_rows_count{{{mv}}} {calls}",
        f"{name}model_call_rows_sum{{{mv}}} {rows}",
        f"# TYPE {name}model_parameters gauge",
        f"{name}model_parameters{{{mv}}} 1234",
        f"# TYPE {name}model_bytes gauge",
        f"{name}model_bytes{{{mv}}} 56789", ""])


def test_time_outside_the_model_call_from_the_servers_histograms():
    before = prof.parse_metrics(metrics_text(n=10, req=1.0, queue=0.1, calls=5, model=0.2,
                                               rows=250))
    # 100 more Predicts: 2 ms each in the server, 0.5 ms queued, 50 model calls of 1 ms.
    after = prof.parse_metrics(metrics_text(n=110, req=1.2, queue=0.15, calls=55, model=0.25,
                                              rows=2750))
    split = prof.time_split([before], [after])
    assert split["predicts"] == 100 and split["model_calls"] == 50 and split["rows"] == 2500
    assert split["server_ms_per_predict"] == pytest.approx(2.0)
    assert split["queue_wait_ms_per_predict"] == pytest.approx(0.5)
    assert split["model_call_ms_per_predict"] == pytest.approx(1.0)
    assert split["outside_model_ms_per_predict"] == pytest.approx(0.5)
    assert prof.model_size([after]) == {"available": True, "parameters": 1234,
                                        "saved_model_bytes": 56789,
                                        "source": prof.model_size([after])["source"]}
    assert not prof.time_split([before], [before])["available"]
    assert not prof.model_size([{}])["available"]


def _doc(ops: list[tuple[str, str, float, float]]) -> dict:
    return {"schema": "rankserve.loadtest.report/v1", "runs": [], "profile": {
        "available": True, "op_us_per_row": sum(o[3] for o in ops), "ops_truncated": False,
        "ops": [{"name": n, "type": t, "share": s, "us_per_row": r} for n, t, s, r in ops],
        "op_types": [{"type": t, "share": s, "us_per_row": r} for _, t, s, r in ops]}}


def test_compare_marks_an_op_that_appeared_or_grew():
    a = _doc([("m/mm:MatMul", "MatMul", 1.0, 0.2)])
    b = _doc([("m/slow", "AsString", 0.9, 2.0), ("m/mm", "MatMul", 0.1, 0.2)])
    a["profile"]["ops"][0]["name"] = "m/mm"
    rows = {r["metric"]: r for r in compare(a, b, 0.05)}
    grown = rows["op share of op time: m/slow (AsString)"]
    assert grown["a"] == 0.0 and grown["b"] == 0.9 and grown["mark"] == "REGRESSION"
    assert rows["op us per row: m/slow (AsString)"]["mark"] == "REGRESSION"
    assert rows["op us per row: m/mm (MatMul)"]["mark"] == ""
    assert rows["op type share of op time: AsString"]["mark"] == "REGRESSION"
    assert rows["profile: op time per row (us)"]["mark"] == "REGRESSION"
    # Without a profile on both sides there are no profile rows.
    del b["profile"]
    assert not [r for r in compare(a, b) if "op" in r["metric"]]
