"""Warm-up files: TFRecord framing as TensorFlow writes it, replay before a version takes
traffic, and a broken file keeps the version out of traffic."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest

from rankserve.server.modelserver import ModelServerApp, ModelServerSettings
from rankserve.server.modelserver.tf_runtime import TensorFlowRuntime
from rankserve.server.modelserver.tfrecord import read_records, write_records
from rankserve.server.modelserver.warmup import WARMUP_PATH, read_warmup, write_warmup
from tests.integration import modelserver_support as support

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    return support.model_library(tmp_path_factory)


def test_tfrecord_framing_matches_tensorflow(tmp_path):
    import tensorflow as tf

    records = [b"", b"x", bytes(range(256)) * 50, b"warm-up"]
    ours = tmp_path / "ours.tfrecord"
    write_records(ours, records)
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(ours))] == records
    theirs = tmp_path / "theirs.tfrecord"
    with tf.io.TFRecordWriter(str(theirs)) as w:
        for r in records:
            w.write(r)
    assert list(read_records(theirs)) == records
    assert ours.read_bytes() == theirs.read_bytes()


def _requests(n: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        ctx = rng.standard_normal((1, support.C)).astype(np.float32)
        cands = rng.standard_normal((5 + 5 * i, support.F)).astype(np.float32)
        out.append(support.predict_request("m", ctx, cands).SerializeToString())
    return out


class CountingRuntime(TensorFlowRuntime):
    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple] = []

    def predict(self, model, signature, inputs):
        self.shapes.append(tuple(inputs["candidates"].shape))
        return super().predict(model, signature, inputs)


async def _load(base: Path, runtime) -> ModelServerApp:
    app = ModelServerApp(ModelServerSettings(host="127.0.0.1", port=0, model_name="m",
                                             model_base_path=base, poll_interval_s=0.1),
                         runtime=runtime)
    await app.start()
    return app


async def test_a_version_replays_its_warmup_requests_before_serving(tmp_path, library):
    base = tmp_path / "m"
    support.install(library, base, 1)
    write_warmup(base / "1", _requests(3))
    assert [c.inputs["candidates"].shape for c in read_warmup(base / "1")] == [
        (5, support.F), (10, support.F), (15, support.F)]
    runtime = CountingRuntime()
    app = await _load(base, runtime)
    try:
        await asyncio.wait_for(app.wait_serving(), 60)
        # The zeros call of the signature, then the three captured shapes, before serving.
        assert runtime.shapes == [(1, support.F), (5, support.F), (10, support.F),
                                  (15, support.F)]
    finally:
        await app.stop()


async def test_a_broken_warmup_file_keeps_the_version_out_of_traffic(tmp_path, library):
    base = tmp_path / "m"
    support.install(library, base, 1)
    shutil.copytree(library / "2", base / ".incoming")
    write_warmup(base / ".incoming", _requests(2))
    data = bytearray((base / ".incoming" / WARMUP_PATH).read_bytes())
    data[-1] ^= 0xFF  # the last record's checksum no longer matches
    (base / ".incoming" / WARMUP_PATH).write_bytes(bytes(data))
    app = await _load(base, TensorFlowRuntime())
    try:
        await asyncio.wait_for(app.wait_serving(), 60)
        (base / ".incoming").rename(base / "2")
        for _ in range(200):
            status = {s.version: s for s in app.manager.statuses("m")}.get(2)
            if status is not None and status.error_status:
                break
            await asyncio.sleep(0.1)
        assert status.error_status == "DATA_LOSS"
        assert "record 1: data checksum mismatch" in status.error_message
        with app.manager.lease("m") as leased:
            assert leased.version == 1  # the old version keeps serving
    finally:
        await app.stop()


async def test_an_example_parsing_model_without_defaults_loads(tmp_path):
    """An empty tf.Example fails a model whose features have no defaults; TF Serving never makes
    one up, so such a model must load here too (it warms from its warm-up file, if any)."""
    import tensorflow as tf

    class Parser(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            parsed = tf.io.parse_example(
                examples, {"price": tf.io.FixedLenFeature([1], tf.float32)})  # no default
            return {"scores": tf.reshape(parsed["price"], [-1]) * 2.0}

    module = Parser()
    tf.saved_model.save(module, str(tmp_path / "m" / "1"),
                        signatures={"serving_default": module.serve})
    example = tf.train.Example(features=tf.train.Features(feature={
        "price": tf.train.Feature(float_list=tf.train.FloatList(value=[1.5]))}))
    settings = ModelServerSettings(host="127.0.0.1", port=0, metrics_port=0, model_name="m",
                                   model_base_path=tmp_path / "m", poll_interval_s=0.1)
    app = ModelServerApp(settings)
    await app.start()
    try:
        await asyncio.wait_for(app.wait_serving(), 60)
        from rankserve.server.modelserver.core import ModelRef
        from rankserve.server.modelserver.tensors import EncodedInputs
        from rankserve.tfserving.v1 import tensor_pb2

        proto = tensor_pb2.TensorProto(dtype=tensor_pb2.DT_STRING,
                                       string_val=[example.SerializeToString()])
        proto.tensor_shape.dim.add(size=1)
        result = await app.core.predict(ModelRef("m"), EncodedInputs({"examples": proto}, 1 << 20))
        assert result.outputs["scores"].tolist() == [3.0]
    finally:
        await app.stop()
