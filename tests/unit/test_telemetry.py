"""Tracing pieces without processes: env switches, the span store, the waterfall, the Envoy
tracing block."""

from __future__ import annotations

import json

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from rankserve.server.telemetry.tracing import tracing_enabled
from rankserve.tools.stack import envoy_config
from rankserve.tools.traces.receiver import SpanStore
from rankserve.tools.traces.waterfall import format_waterfall, orphans

T = "ab" * 16


def span(sid: str, parent: str, name: str, start_ms: float, dur_ms: float, service="svc"):
    return {"trace_id": T, "span_id": sid, "parent_span_id": parent, "name": name,
            "service": service, "start_ns": int(start_ms * 1e6),
            "end_ns": int((start_ms + dur_ms) * 1e6), "status": "UNSET", "kind": "INTERNAL"}


@pytest.mark.parametrize(("env", "on"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_SDK_DISABLED": "true"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_TRACES_EXPORTER": "none"}, False),
])
def test_tracing_follows_the_otel_environment(env, on):
    assert tracing_enabled(env) is on


def test_waterfall_indents_children_and_gives_offsets_and_shares():
    spans = [span("02", "01", "score", 10, 80, "ranker"),
             span("01", "", "Rank", 0, 100, "ranker"),
             span("03", "02", "Predict", 20, 50, "model-server")]
    lines = format_waterfall(spans).splitlines()
    assert lines[0] == f"trace {T}: 3 spans, 100.00 ms"
    assert lines[2].startswith("Rank ") and "100.0%" in lines[2]
    assert lines[3].startswith("  score ") and " 10.00 " in lines[3] and "80.0%" in lines[3]
    assert lines[4].startswith("    Predict ") and "model-server" in lines[4]
    assert "50.0%" in lines[4]
    assert orphans(spans) == []


def test_waterfall_draws_queue_wait_and_inference_from_a_predict_span_events():
    predict = span("03", "01", "Predict", 20, 50, "model-server")
    ms = 1_000_000
    predict["events"] = [{"name": "queued", "time_ns": 22 * ms, "attributes": {}},
                         {"name": "model call started", "time_ns": 30 * ms, "attributes": {}},
                         {"name": "model call finished", "time_ns": 60 * ms, "attributes": {}}]
    lines = format_waterfall([span("01", "", "Rank", 0, 100), predict]).splitlines()
    assert lines[0] == f"trace {T}: 2 spans, 100.00 ms"
    wait, infer = lines[4], lines[5]
    assert wait.startswith("    queue wait") and "model-server" in wait
    assert " 22.00 " in wait and " 8.00 " in wait
    assert infer.startswith("    inference") and " 30.00    30.00 " in infer


def test_waterfall_flags_a_span_whose_parent_is_missing():
    spans = [span("01", "", "Rank", 0, 10), span("09", "77", "lost", 2, 1)]
    assert [s["name"] for s in orphans(spans)] == ["lost"]
    assert "lost" in format_waterfall(spans) and "(parent missing)" in format_waterfall(spans)


def export_request(trace_ids: list[bytes]) -> trace_service_pb2.ExportTraceServiceRequest:
    req = trace_service_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name",
                               value=common_pb2.AnyValue(string_value="ranker"))
    ss = rs.scope_spans.add()
    for i, tid in enumerate(trace_ids):
        s = ss.spans.add(trace_id=tid, span_id=bytes([i + 1]) * 8, name=f"s{i}",
                         kind=trace_pb2.Span.SPAN_KIND_SERVER, start_time_unix_nano=1,
                         end_time_unix_nano=2)
        s.attributes.add(key="rankserve.batch.index", value=common_pb2.AnyValue(int_value=i))
    return req


def test_span_store_keeps_the_newest_traces_and_counts_the_dropped():
    store = SpanStore(max_traces=2)
    ids = [bytes([n]) * 16 for n in (1, 2, 3)]
    assert store.add(export_request([ids[0], ids[1], ids[1], ids[2]])) == 4
    assert store.trace_ids() == [ids[1].hex(), ids[2].hex()]
    assert store.dropped_traces == 1 and store.spans_received == 4
    [first, second] = store.trace(ids[1].hex())
    assert first["service"] == "ranker" and first["kind"] == "SERVER"
    assert second["attributes"] == {"rankserve.batch.index": 2}
    assert store.trace(ids[0].hex()) == []


def test_envoy_config_is_unchanged_without_tracing():
    up = (envoy_config.Upstream("127.0.0.1", 9000),)
    plain = envoy_config.render(envoy_config.EnvoyOptions(upstreams=up))
    assert "tracing" not in json.dumps(plain)
    assert [c["name"] for c in plain["static_resources"]["clusters"]] == ["model_servers"]
    assert plain["stats_config"]["use_all_default_tags"] is False


def test_envoy_config_traces_to_the_named_collector():
    up = (envoy_config.Upstream("127.0.0.1", 9000),)
    cfg = envoy_config.render(envoy_config.EnvoyOptions(
        upstreams=up, tracing=envoy_config.Tracing.from_endpoint("http://127.0.0.7:4317", 5)))
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]
    tracing = hcm["tracing"]
    assert tracing["random_sampling"] == {"value": 5}
    assert tracing["provider"]["name"] == "envoy.tracers.opentelemetry"
    assert tracing["provider"]["typed_config"]["service_name"] == "rankserve-envoy"
    [collector] = [c for c in cfg["static_resources"]["clusters"]
                   if c["name"] == envoy_config.TRACE_CLUSTER]
    endpoint = collector["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.7", "port_value": 4317}
    assert collector["type"] == "STATIC"
    by_name = envoy_config.Tracing.from_endpoint("http://jaeger-collector.observability:4317")
    assert (by_name.collector_host, by_name.collector_port, by_name.discovery) == (
        "jaeger-collector.observability", 4317, "STRICT_DNS")
    with pytest.raises(ValueError, match="names no host"):
        envoy_config.Tracing.from_endpoint("http://:4317")
    with pytest.raises(ValueError, match="sampling_percent"):
        envoy_config.render(envoy_config.EnvoyOptions(
            upstreams=up, tracing=envoy_config.Tracing("127.0.0.7", 4317, sampling_percent=150)))


def test_waterfall_folds_many_same_named_siblings_to_the_slowest():
    root = {"trace_id": "t" * 32, "span_id": "r", "parent_span_id": "", "name": "Rank",
            "service": "ranker", "start_ns": 0, "end_ns": 100_000_000}
    batches = [{"trace_id": "t" * 32, "span_id": f"b{i}", "parent_span_id": "r",
                "name": "Predict", "service": "ranker", "start_ns": i * 1_000_000,
                "end_ns": i * 1_000_000 + (i + 1) * 1_000_000} for i in range(10)]
    full = format_waterfall([root, *batches]).splitlines()
    assert sum("Predict" in line for line in full) == 10
    folded = format_waterfall([root, *batches], max_siblings=3).splitlines()
    shown = [line for line in folded if line.strip().startswith("Predict")]
    assert [float(line.split()[3]) for line in shown] == [8.0, 9.0, 10.0]  # the slowest, in order
    assert folded[-1].strip() == (
        "... 7 more Predict (of 10: duration p50 6.00 ms, max 10.00 ms; the 3 slowest shown)")
    assert folded[0] == full[0]  # the header still counts every span

