"""Capture in a running ranker, then replay: every captured record goes back on the wire. A
capture file cut short or with garbage in it replays every whole record before the damage and
says where it stopped."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from rankserve.capture.v1 import capture_pb2
from rankserve.loadtest.runner import LoadSpec, run
from rankserve.loadtest.sources import SourceError, replay
from rankserve.loadtest.stats import summarize
from rankserve.loadtest.targets import Target
from rankserve.ranker.scoring import build_request
from rankserve.ranker.types import ModelRef
from rankserve.ranking.v1 import ranking_pb2, ranking_pb2_grpc
from rankserve.server.ranking import RankerSettings, RankingApp
from rankserve.server.ranking.capture_files import (
    CaptureWriter,
    encode_varint,
    list_capture_files,
    read_records,
)
from tests.support.catalog import make_catalog
from tests.support.predict_server import NumpyModel, PredictServer

pytestmark = pytest.mark.timeout(60)
QUERIES = ["red shoes", "blue lamp", "chair", "red shirt", "lamp"]


async def test_capture_then_replay_round_trips_every_record(tmp_path):
    catalog = make_catalog(tmp_path / "catalog", num_items=3000)
    capture_dir = tmp_path / "capture"
    seen: list[tuple[float, ...]] = []

    def note(cands):  # the server records which catalog rows (column 0) each batch holds
        seen.append(tuple(cands[:, 0].tolist()))
        return 0.0

    model = NumpyModel(delay=note)
    async with PredictServer(model) as predict:
        app = RankingApp(RankerSettings(
            catalog_dir=str(catalog), model_target=predict.target, port=0, grace_s=0.5,
            capture_dir=str(capture_dir), capture_rate=1.0, capture_max_per_minute=100))
        port = await app.start()
        sent = [ranking_pb2.RankRequest(request_id=f"cap-{i}", query=q, page_size=5)
                for i, q in enumerate(QUERIES)]
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = ranking_pb2_grpc.RankingServiceStub(ch)
                for req in sent:
                    await stub.Rank(req, timeout=10)
        finally:
            await app.stop()
        live = sorted(seen)

        records = list(read_records(list_capture_files(capture_dir)))
        ranks = [r for r in records if r.WhichOneof("record") == "rank"]
        predicts = [r for r in records if r.WhichOneof("record") == "predict"]
        assert [r.rank.request for r in ranks] == sent
        assert len(predicts) == 5 * 40 == len(live)
        for req in sent:
            idx = sorted(r.predict.batch_index for r in predicts
                         if r.request_id == req.request_id)
            assert idx == list(range(40))

        # Replay the Predict records straight at the model server: the same batches arrive.
        seen.clear()
        payloads = replay(capture_dir, "predict")
        assert len(payloads) == 200
        out = await run(Target("predict", predict.target), payloads,
                        LoadSpec(mode="closed", concurrency=4, max_requests=200, warmup_s=0,
                                 duration_s=30))
        s = summarize(out)
        assert s["status_codes"] == {"OK": 200}
        assert sorted(seen) == live

        # And the Rank records at a ranker (capture off this time).
        app2 = RankingApp(RankerSettings(catalog_dir=str(catalog), model_target=predict.target,
                                         port=0, grace_s=0.5))
        port2 = await app2.start()
        try:
            ranks_out = await run(Target("rank", f"127.0.0.1:{port2}"), replay(capture_dir, "rank"),
                                  LoadSpec(mode="closed", concurrency=1, max_requests=5,
                                           warmup_s=0, duration_s=30))
        finally:
            await app2.stop()
    assert summarize(ranks_out)["status_codes"] == {"OK": 5}
    assert len(seen) == 200 + 5 * 40


async def test_replay_can_re_split_batches_and_re_address_the_model(tmp_path):
    catalog = make_catalog(tmp_path / "catalog", num_items=3000)
    capture_dir = tmp_path / "capture"
    async with PredictServer(NumpyModel(versions=(1, 2))) as predict:
        app = RankingApp(RankerSettings(catalog_dir=str(catalog), model_target=predict.target,
                                        port=0, capture_dir=str(capture_dir), capture_rate=1.0))
        port = await app.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                await ranking_pb2_grpc.RankingServiceStub(ch).Rank(
                    ranking_pb2.RankRequest(query="red shoes", page_size=5), timeout=10)
        finally:
            await app.stop()
    from rankserve.loadtest.sources import parse_model

    p = replay(capture_dir, "predict", batch_size=10, model=parse_model("ranker@2"))
    assert len(p) == 100 and set(p.batch_sizes) == {10}
    from rankserve.ranker.tensors import from_tensor_proto
    from rankserve.tfserving.v1 import predict_pb2

    req = predict_pb2.PredictRequest.FromString(p[0])
    assert req.model_spec.version.value == 2
    assert from_tensor_proto(req.inputs["candidates"]).shape == (10, 300)
    async with PredictServer(NumpyModel(versions=(1, 2))) as predict:
        out = await run(Target("predict", predict.target), p,
                        LoadSpec(mode="closed", concurrency=2, max_requests=100, warmup_s=0))
    assert summarize(out)["status_codes"] == {"OK": 100}


# -- damaged capture files ---------------------------------------------------------------------

RECORDS = 24


def predict_records(n: int = RECORDS, first: int = 0) -> list[bytes]:
    """Serialized CaptureRecords of Predict batches (4 per request id), each batch different."""
    out = []
    for i in range(first, first + n):
        rows = 5 + i % 7
        inputs = {"context": np.full((1, 3), i, np.float32),
                  "candidates": np.arange(rows * 8, dtype=np.float32).reshape(rows, 8) + i}
        rec = capture_pb2.CaptureRecord(request_id=f"r{i // 4}", unix_time_ns=i)
        rec.predict.batch_index = i % 4
        rec.predict.request.CopyFrom(build_request(ModelRef("ranker"), inputs))
        out.append(rec.SerializeToString())
    return out


def write_capture(path: Path, payloads: list[bytes], close: bool = True) -> list[int]:
    """Writes with the ranker's writer; returns the file size after each record."""
    ends = []
    with open(path, "wb") as raw:
        writer = CaptureWriter(raw)
        for p in payloads:
            writer.write(p)
            ends.append(raw.tell())
        if close:
            writer.close()
    return ends


def requests_of(payloads: list[bytes]) -> list[bytes]:
    return [capture_pb2.CaptureRecord.FromString(p).predict.request.SerializeToString()
            for p in payloads]


def stream_offset(payloads: list[bytes]) -> int:
    """Where the record after ``payloads`` starts in the decompressed stream."""
    return sum(len(encode_varint(len(p))) + len(p) for p in payloads)


@pytest.mark.parametrize("whole", [0, 1, 11, RECORDS - 1])
def test_a_file_cut_inside_a_record_replays_the_records_before_it(tmp_path, caplog, whole):
    payloads = predict_records()
    whole_file = tmp_path / "whole.capture.zst"
    ends = write_capture(whole_file, payloads)
    start = ends[whole - 1] if whole else 0
    cut = (start + ends[whole]) // 2  # inside record ``whole`` (0-based)
    damaged = tmp_path / "cut.capture.zst"
    damaged.write_bytes(whole_file.read_bytes()[:cut])
    if whole == 0:
        with pytest.raises(SourceError, match=r"holds no Predict requests; damaged capture file"
                                              r" .*stopped after 0 complete record\(s\), at"
                                              r" byte 0 "):
            replay(damaged, "predict")
        return
    got = replay(damaged, "predict")
    assert len(got) == whole
    assert got.items == requests_of(payloads[:whole])
    assert got.notes == [
        f"damaged capture file replayed up to the damage: {damaged}: stopped after {whole}"
        f" complete record(s), at byte {stream_offset(payloads[:whole]):,} of the decompressed"
        f" records: the file ends inside a zstd frame (cut short at file byte {cut:,})"]
    assert got.notes[0] in caplog.text  # a warning in the command's output
    assert "1 damaged" in got.description


def test_a_file_whose_writer_was_killed_replays_every_record_written(tmp_path):
    """A capture file never completed (no end of frame) still holds every record written."""
    payloads = predict_records()
    path = tmp_path / "killed.capture.zst"
    write_capture(path, payloads, close=False)
    got = replay(path, "predict")
    assert got.items == requests_of(payloads)
    assert f"stopped after {RECORDS} complete record(s)" in got.notes[0]


def test_garbage_after_the_records_replays_them_all_and_says_where(tmp_path):
    payloads = predict_records()
    path = tmp_path / "tail.capture.zst"
    write_capture(path, payloads)
    size = path.stat().st_size
    with open(path, "ab") as fh:
        fh.write(b"garbage appended by a bad copy " * 3)
    got = replay(path, "predict")
    assert got.items == requests_of(payloads)
    assert len(got.notes) == 1
    assert (f"stopped after {RECORDS} complete record(s), at byte"
            f" {stream_offset(payloads):,} of the decompressed records: unreadable zstd data in"
            f" the frame at file byte {size:,}") in got.notes[0]


def test_a_record_that_does_not_parse_stops_its_file_and_the_next_file_replays(tmp_path):
    first, second = predict_records(12), predict_records(8, first=100)
    write_capture(tmp_path / "a.capture.zst", first[:5] + [b"\xff\xff\xff\xff"] + first[5:])
    write_capture(tmp_path / "b.capture.zst", second)
    got = replay(tmp_path, "predict")
    assert sorted(got.items) == sorted(requests_of(first[:5] + second))
    assert len(got.notes) == 1 and got.notes[0].startswith(
        f"damaged capture file replayed up to the damage: {tmp_path / 'a.capture.zst'}: stopped"
        f" after 5 complete record(s), at byte {stream_offset(first[:5]):,} of the decompressed"
        " records: record 6 does not parse (")


async def test_load_test_replays_a_damaged_capture_and_reports_where_it_stopped(tmp_path):
    payloads = predict_records()
    capture_dir = tmp_path / "capture"
    capture_dir.mkdir()
    ends = write_capture(capture_dir / "cut.capture.zst", payloads)
    cut = (ends[10] + ends[11]) // 2
    path = capture_dir / "cut.capture.zst"
    path.write_bytes(path.read_bytes()[:cut])
    model = NumpyModel()
    async with PredictServer(model) as predict:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rankserve.tools", "loadtest", "run", "--target",
            predict.target, "--kind", "predict", "--replay", str(capture_dir), "--mode",
            "closed", "--concurrency", "2", "--max-requests", "22", "--warmup", "0",
            "--duration", "30", "--no-progress", "--out", str(tmp_path / "report"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, err.decode()
    note = (f"damaged capture file replayed up to the damage: {path}: stopped after 11 complete"
            f" record(s), at byte {stream_offset(payloads[:11]):,}")
    assert "WARNING" in err.decode() and note in err.decode()
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    source = report["runs"][0]["source"]
    assert source["distinct_requests"] == 11
    assert len(source["notes"]) == 1 and source["notes"][0].startswith(note)
    assert report["runs"][0]["status_codes"] == {"OK": 22}
    assert model.requests == 22
    assert note in (tmp_path / "report" / "report.html").read_text()
