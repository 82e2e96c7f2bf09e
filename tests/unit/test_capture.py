"""Request capture: sampling, the per-minute cap, drops counted, the file format."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry

from rankserve.ranking.v1 import ranking_pb2
from rankserve.server.ranking.capture import RequestCapture
from rankserve.server.ranking.capture_files import (
    CaptureFormatError,
    encode_varint,
    iter_payloads,
    list_capture_files,
    read_records,
)
from rankserve.tfserving.v1 import predict_pb2


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_varint_framing_matches_protobuf():
    assert encode_varint(0) == b"\x00"
    assert encode_varint(300) == b"\xac\x02"


def test_records_round_trip_through_a_file(tmp_path):
    reg = CollectorRegistry()
    cap = RequestCapture(tmp_path, rate=1.0, max_per_minute=100, registry=reg)
    req = ranking_pb2.RankRequest(request_id="r1", query="red shoes", page_size=5)
    with cap.rank(req, "r1"):
        for i in range(3):
            p = predict_pb2.PredictRequest()
            p.model_spec.name = f"m{i}"
            cap.predict(p, i)
    cap.predict(predict_pb2.PredictRequest(), -1)  # outside a sampled Rank call: not captured
    cap.close()
    files = list_capture_files(tmp_path)
    assert len(files) == 1 and not list(tmp_path.glob("*.partial"))
    recs = list(read_records(files))
    assert [r.WhichOneof("record") for r in recs] == ["rank", "predict", "predict", "predict"]
    assert recs[0].rank.request == req
    assert [r.predict.batch_index for r in recs[1:]] == [0, 1, 2]
    assert [r.predict.request.model_spec.name for r in recs[1:]] == ["m0", "m1", "m2"]
    assert {r.request_id for r in recs} == {"r1"}
    assert recs[0].unix_time_ns <= recs[-1].unix_time_ns
    assert metric(reg, "rankserve_capture_records_total", kind="predict") == 3


def test_rate_and_per_minute_cap(tmp_path):
    now = [0.0]
    reg = CollectorRegistry()
    cap = RequestCapture(tmp_path, rate=0.5, max_per_minute=10, registry=reg,
                         clock=lambda: now[0], rng=random.Random(4))
    req = ranking_pb2.RankRequest(query="q")
    for _ in range(100):
        with cap.rank(req, "x"):
            pass
    now[0] = 61.0
    for _ in range(40):
        with cap.rank(req, "y"):
            pass
    cap.close()
    ids = [r.request_id for r in read_records(list_capture_files(tmp_path))]
    # Each minute: about half sampled, at most 10 kept; the rest of the sampled are capped.
    assert ids.count("x") == 10 and ids.count("y") == 10
    assert metric(reg, "rankserve_capture_records_total", kind="rank") == 20
    capped = metric(reg, "rankserve_capture_capped_total")
    assert 20 <= capped + 20 <= 0.5 * 140 + 25


def test_a_full_queue_drops_and_counts_never_blocks(tmp_path):
    reg = CollectorRegistry()
    cap = RequestCapture(tmp_path, rate=1.0, max_per_minute=10, registry=reg, queue_size=1)
    big = predict_pb2.PredictRequest()
    big.inputs["candidates"].tensor_content = b"\x01" * 30000
    with cap.rank(ranking_pb2.RankRequest(query="q"), "r"):
        for _ in range(2000):
            cap.predict(big, -1)
    cap.close()
    written = (metric(reg, "rankserve_capture_records_total", kind="rank")
               + metric(reg, "rankserve_capture_records_total", kind="predict"))
    dropped = metric(reg, "rankserve_capture_dropped_total", reason="queue_full")
    assert dropped > 0
    assert written + dropped == 2001  # every record is either in a file or counted as dropped
    assert len(list(read_records(list_capture_files(tmp_path)))) == written


def test_a_file_that_is_not_a_capture_is_rejected(tmp_path):
    bad = tmp_path / "x.capture.zst"
    bad.write_bytes(b"not zstd at all")
    with pytest.raises(CaptureFormatError, match="not a zstd capture file"):
        list(iter_payloads(bad))
