"""One Rank through the local stack is one trace, from the calling client to every model call.

The spans are what the processes really exported over OTLP/gRPC to the stack's trace receiver
(built on opentelemetry-proto): the ranker, Envoy's OpenTelemetry tracer, the model servers.
"""

from __future__ import annotations

from collections import Counter

import grpc

from rankserve.ranking.v1 import ranking_pb2_grpc
from rankserve.server.telemetry.interceptors import TracingClientInterceptor
from rankserve.server.telemetry.tracing import exporting_provider, shutdown_provider
from rankserve.tools.traces.trace_cmd import fetch_trace
from rankserve.tools.traces.waterfall import format_waterfall, orphans, span_tree
from tests.e2e.test_stack import rank_request

RANK = "rankserve.ranking.v1.RankingService/Rank"
PREDICT = "tensorflow.serving.PredictionService/Predict"
STAGES = ("route", "retrieve", "features", "plan", "score", "merge")


def traced_rank(stack, request):
    provider = exporting_provider("e2e-client", stack.otlp_endpoint)
    try:
        interceptor = TracingClientInterceptor(provider.get_tracer("e2e"))
        with grpc.insecure_channel(stack.ranker.address) as ch:
            stub = ranking_pb2_grpc.RankingServiceStub(grpc.intercept_channel(ch, interceptor))
            resp, call = stub.Rank.with_call(request, timeout=10)
    finally:
        shutdown_provider(provider)
    return resp, dict(call.trailing_metadata())


def test_one_rank_is_one_trace_from_client_to_every_model_call(stack) -> None:
    resp, metadata = traced_rank(stack, rank_request(3))
    assert not resp.degradation.degraded
    batches = resp.degradation.total_batches
    assert batches == 40
    # The trace id reaches the caller twice: in the response and in its traceparent metadata.
    assert len(resp.trace_id) == 32 and metadata["traceparent"].split("-")[1] == resp.trace_id

    spans = fetch_trace(stack.receiver_http, resp.trace_id, wait_s=20)
    by_id = {s["span_id"]: s for s in spans}
    kinds = Counter((s["service"], s["name"]) for s in spans)
    # client 1 + ranker (server 1 + 6 stages + 40 batches) + Envoy 2 x 40 + model server 40
    # (queue wait and inference are events of the model server's span).
    assert len(spans) == 1 + 7 + 40 + 80 + 40, kinds
    assert {s["trace_id"] for s in spans} == {resp.trace_id}
    assert orphans(spans) == []
    roots, children = span_tree(spans)
    assert [(r["service"], r["name"], r["kind"]) for r in roots] == [
        ("e2e-client", RANK, "CLIENT")]

    def kids(span, service, name):
        return [k for k in children.get(span["span_id"], ())
                if k["service"] == service and k["name"] == name]

    [server] = kids(roots[0], "rankserve-ranker", RANK)
    assert server["kind"] == "SERVER" and server["attributes"]["rpc.grpc.status_code"] == 0
    stage = {name: kids(server, "rankserve-ranker", name) for name in STAGES}
    assert all(len(v) == 1 for v in stage.values()), stage
    starts = [stage[n][0]["start_ns"] for n in STAGES]
    assert starts == sorted(starts)

    batch_spans = kids(stage["score"][0], "rankserve-ranker", PREDICT)
    assert len(batch_spans) == batches
    assert sorted(b["attributes"]["rankserve.batch.index"] for b in batch_spans) == list(
        range(batches))
    for b in batch_spans:
        a = b["attributes"]
        assert b["kind"] == "CLIENT"
        assert a["rankserve.batch.size"] == 25
        assert a["rankserve.request.bytes"] > 25 * 300 * 4
        assert a["rankserve.request.compression"] == "none"
        assert a["rankserve.model.name"] == "ranker"
        assert a["rankserve.model.version"] == str(resp.model.version)
        assert a["rankserve.batch.outcome"] == "OK"
        [ingress] = kids(b, "rankserve-envoy", "ingress")
        [egress] = kids(ingress, "rankserve-envoy", "router model_servers egress")
        [predict] = kids(egress, "rankserve-model-server", PREDICT)
        assert predict["kind"] == "SERVER"
        assert predict["attributes"]["rankserve.model.version"] == resp.model.version
        assert kids(predict, "rankserve-model-server", "queue wait") == []
        pa = predict["attributes"]
        assert 25 <= pa["rankserve.merged_rows"] <= 1000 and pa["rankserve.merged_calls"] >= 1
        assert pa["rankserve.queue_wait_ms"] >= 0 and pa["rankserve.inference_ms"] > 0
        at = {e["name"]: e["time_ns"] for e in predict["events"]}
        assert at["queued"] <= at["model call started"] < at["model call finished"]
        # Each child lies within its parent (clocks are one machine's), the events too.
        for parent, child in ((b, ingress), (ingress, egress), (egress, predict)):
            assert parent["start_ns"] <= child["start_ns"] + 1_000_000, (parent, child)
            assert child["end_ns"] <= parent["end_ns"] + 1_000_000, (parent, child)
        assert predict["start_ns"] <= at["queued"] and at["model call finished"] <= predict[
            "end_ns"]
    assert all(s["parent_span_id"] in by_id for s in spans if s is not roots[0])

    text = format_waterfall(spans)
    assert text.splitlines()[0].startswith(f"trace {resp.trace_id}: {len(spans)} spans")
    assert "(parent missing)" not in text


def test_a_caller_without_trace_context_still_gets_a_trace_id(stack) -> None:
    with grpc.insecure_channel(stack.ranker.address) as ch:
        resp = ranking_pb2_grpc.RankingServiceStub(ch).Rank(rank_request(1), timeout=10)
    spans = fetch_trace(stack.receiver_http, resp.trace_id, wait_s=20)
    roots, _ = span_tree(spans)
    assert [(r["service"], r["name"]) for r in roots] == [("rankserve-ranker", RANK)]
    assert orphans(spans) == []


def test_rankserve_trace_prints_the_waterfall(stack) -> None:
    import subprocess
    import sys

    with grpc.insecure_channel(stack.ranker.address) as ch:
        resp = ranking_pb2_grpc.RankingServiceStub(ch).Rank(rank_request(2), timeout=10)
    out = subprocess.run(
        [sys.executable, "-m", "rankserve.tools.cli", "trace", resp.trace_id, "--receiver",
         stack.receiver_http, "--wait-s", "20"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"trace {resp.trace_id}:")
    assert lines[2].startswith(RANK) and "rankserve-ranker" in lines[2] and "100.0%" in lines[2]
    assert any(line.strip().startswith("inference") for line in lines)


def test_demo_prints_the_waterfall_of_one_rank(demo_paths, tmp_path) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "rankserve.tools", "demo", "--eval-requests", "0", "--top", "1",
         "--run-dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    head = text.index("trace of one Rank call")
    waterfall = text[head:].splitlines()
    assert waterfall[1].startswith("trace ") and " spans, " in waterfall[1]
    body = waterfall[3:]
    assert body[0].startswith(RANK) and "rankserve-demo-client" in body[0]
    # The 40 batches fold to the 3 slowest, each with its Envoy and model-server spans, and a
    # summary line that accounts for the other 37.
    assert sum(ln.strip().startswith("ingress") for ln in body) == 3
    assert sum(ln.strip().startswith("inference") for ln in body) == 3
    assert any(ln.strip().startswith(f"... 37 more {PREDICT} (of 40:") for ln in body), body
    assert "(parent missing)" not in text
