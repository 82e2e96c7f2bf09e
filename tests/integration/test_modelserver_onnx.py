"""--onnx-models: a named model's signatures run on ONNX Runtime once converted and checked
against TensorFlow at load; a conversion that fails or disagrees leaves them on TensorFlow.
Real SavedModels, the real tf2onnx converter, Predict over gRPC on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from rankserve.server.modelserver import ModelServerApp, ModelServerSettings
from rankserve.server.modelserver.errors import LoadFailed
from rankserve.server.modelserver.onnx_runtime import OnnxRuntime, convert_signature
from rankserve.server.modelserver.warmup import write_warmup
from tests.integration import modelserver_support as support

pytestmark = pytest.mark.timeout(180)
CTX = np.arange(support.C, dtype=np.float32).reshape(1, support.C) / 10
CANDS = np.random.default_rng(3).standard_normal((7, support.F)).astype(np.float32)


@pytest.fixture(scope="session")
def library(tmp_path_factory) -> Path:
    return support.model_library(tmp_path_factory)


@pytest.fixture
def base(tmp_path: Path, library: Path) -> Path:
    support.install(library, tmp_path / "m", 1)
    return tmp_path / "m"


@contextlib.asynccontextmanager
async def serving(base: Path, convert=None, **settings):
    app = ModelServerApp(ModelServerSettings(host="127.0.0.1", port=0, metrics_port=0,
                                             model_name="m", model_base_path=str(base),
                                             poll_interval_s=0.1, **settings))
    if convert is not None:  # the same runtime, with its converter replaced
        onnx = OnnxRuntime(app.runtime, convert=convert)
        app.manager._runtime_for = lambda _name: onnx
    port = await app.start()
    try:
        await asyncio.wait_for(app.wait_serving(), 120)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield app, prediction_service_pb2_grpc.PredictionServiceStub(channel)
    finally:
        await app.stop()


def runs_on(app: ModelServerApp) -> str:
    with app.manager.lease("m") as version:
        runtime = app.manager._model("m").runtime
        return runtime.runtime_of(version.model, "serving_default")


async def scores(stub) -> np.ndarray:
    response = await stub.Predict(support.predict_request("m", CTX, CANDS), timeout=10)
    return support.scores_of(response)


async def test_a_named_model_runs_on_onnx_runtime_with_tensorflows_scores(base, caplog):
    caplog.set_level(logging.INFO, "rankserve.server.modelserver.onnx_runtime")
    async with serving(base, onnx_models="m") as (app, stub):
        assert runs_on(app) == "onnxruntime"
        np.testing.assert_allclose(await scores(stub), support.expected_scores(CTX, CANDS, 1),
                                   rtol=1e-5, atol=1e-6)
    assert "signature 'serving_default' runs on ONNX Runtime" in caplog.text


async def test_other_models_stay_on_tensorflow(base):
    async with serving(base, onnx_models="other") as (app, stub):
        assert not hasattr(app.manager._model("m").runtime, "runtime_of")
        np.testing.assert_allclose(await scores(stub), support.expected_scores(CTX, CANDS, 1),
                                   rtol=1e-5)


async def test_a_converted_model_that_disagrees_stays_on_tensorflow(base, library, caplog):
    # The "conversion" is of version 2, whose scores differ: the parity check must catch it.
    def wrong_version(saved_model: Path, signature: str, out: Path) -> None:
        convert_signature(library / "2", signature, out)

    async with serving(base, convert=wrong_version) as (app, stub):
        assert runs_on(app) == "tensorflow"
        np.testing.assert_allclose(await scores(stub), support.expected_scores(CTX, CANDS, 1),
                                   rtol=1e-5)
    assert "runs on TensorFlow: output 'scores' differs from TensorFlow's by up to" in caplog.text


async def test_a_model_that_does_not_convert_stays_on_tensorflow(base, tmp_path, caplog):
    def broken(saved_model: Path, signature: str, out: Path) -> None:
        damaged = tmp_path / "damaged"
        shutil.copytree(saved_model, damaged)
        (damaged / "saved_model.pb").write_bytes(b"not a SavedModel")
        convert_signature(damaged, signature, out)

    async with serving(base, convert=broken) as (app, stub):
        assert runs_on(app) == "tensorflow"
        np.testing.assert_allclose(await scores(stub), support.expected_scores(CTX, CANDS, 1),
                                   rtol=1e-5)
    assert "runs on TensorFlow: tf2onnx could not convert it" in caplog.text


def test_the_converter_names_what_failed(tmp_path):
    with pytest.raises(LoadFailed, match="tf2onnx could not convert it"):
        convert_signature(tmp_path / "missing", "serving_default", tmp_path / "out.onnx")


def _counting(calls: list[Path]):
    def convert(saved_model: Path, signature: str, out: Path) -> None:
        calls.append(saved_model)
        convert_signature(saved_model, signature, out)
    return convert


def _expected(version: int) -> np.ndarray:
    return support.expected_scores(CTX, CANDS, version)


def _onnx_scores(runtime: OnnxRuntime, model) -> np.ndarray:
    assert runtime.runtime_of(model, "serving_default") == "onnxruntime"
    return runtime.predict(model, "serving_default", {"context": CTX, "candidates": CANDS}
                           )["scores"]


def test_a_kept_conversion_spares_the_next_load_the_converter(library, tmp_path):
    from rankserve.server.modelserver.tf_runtime import TensorFlowRuntime

    calls: list[Path] = []
    cache = tmp_path / "onnx"
    first = OnnxRuntime(TensorFlowRuntime(), convert=_counting(calls), cache_dir=cache)
    np.testing.assert_allclose(_onnx_scores(first, first.load(library / "1")), _expected(1),
                               rtol=1e-5, atol=1e-6)
    assert len(calls) == 1 and len(list(cache.glob("*/model.onnx"))) == 1
    # A restart (a new runtime on the same directory), and the same bytes under another path:
    # no conversion, the same scores.
    copy = tmp_path / "elsewhere" / "1"
    shutil.copytree(library / "1", copy)
    restarted = OnnxRuntime(TensorFlowRuntime(), convert=_counting(calls), cache_dir=cache)
    for path in (library / "1", copy):
        np.testing.assert_allclose(_onnx_scores(restarted, restarted.load(path)), _expected(1),
                                   rtol=1e-5, atol=1e-6)
    assert len(calls) == 1
    # Another model (version 2's bytes) is another key: converted.
    np.testing.assert_allclose(_onnx_scores(restarted, restarted.load(library / "2")),
                               _expected(2), rtol=1e-5, atol=1e-6)
    assert len(calls) == 2 and len(list(cache.glob("*/model.onnx"))) == 2


@pytest.mark.parametrize("damage", ["garbage", "another model"])
def test_a_kept_conversion_that_fails_is_converted_again(library, tmp_path, damage, caplog):
    from rankserve.server.modelserver.tf_runtime import TensorFlowRuntime

    calls: list[Path] = []
    cache = tmp_path / "onnx"
    runtime = OnnxRuntime(TensorFlowRuntime(), convert=_counting(calls), cache_dir=cache)
    runtime.load(library / "1")
    (kept,) = cache.glob("*/model.onnx")
    if damage == "garbage":
        kept.write_bytes(b"not an ONNX model")
    else:  # version 2's conversion under version 1's key: opens, but the parity check fails
        convert_signature(library / "2", "serving_default", kept)
    again = OnnxRuntime(TensorFlowRuntime(), convert=_counting(calls), cache_dir=cache)
    np.testing.assert_allclose(_onnx_scores(again, again.load(library / "1")), _expected(1),
                               rtol=1e-5, atol=1e-6)
    assert len(calls) == 2
    assert "the kept conversion of signature 'serving_default' is not used" in caplog.text
    # The fresh conversion replaced the bad one: the next load takes it as it is.
    OnnxRuntime(TensorFlowRuntime(), convert=_counting(calls), cache_dir=cache).load(
        library / "1")
    assert len(calls) == 2


def _clipping_conversion(version: int):
    """A "conversion" of the test model that clips candidates to [-5, 5]: right on standard
    normal rows, wrong wherever real inputs are large."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def convert(saved_model: Path, signature: str, out: Path) -> None:
        nodes = [helper.make_node("Clip", ["candidates", "lo", "hi"], ["clipped"]),
                 helper.make_node("MatMul", ["clipped", "w"], ["product"]),
                 helper.make_node("ReduceSum", ["context"], ["total"], keepdims=0),
                 helper.make_node("Mul", ["total", "k"], ["shift"]),
                 helper.make_node("Add", ["product", "shift"], ["scores"])]
        constants = [numpy_helper.from_array(np.array(v, np.float32), name) for name, v in
                     (("lo", -5.0), ("hi", 5.0), ("w", support.W), ("k", float(version)))]
        graph = helper.make_graph(
            nodes, "clipping",
            [helper.make_tensor_value_info("context", TensorProto.FLOAT, [1, support.C]),
             helper.make_tensor_value_info("candidates", TensorProto.FLOAT, [None, support.F])],
            [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None])], constants)
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                    ir_version=8), str(out))
    return convert


def test_the_versions_warm_up_requests_join_the_parity_check(library, tmp_path, caplog):
    from rankserve.server.modelserver.tf_runtime import TensorFlowRuntime

    runtime = OnnxRuntime(TensorFlowRuntime(), convert=_clipping_conversion(1))
    plain = tmp_path / "plain" / "1"
    shutil.copytree(library / "1", plain)
    # Random rows alone miss what the conversion gets wrong.
    assert runtime.runtime_of(runtime.load(plain), "serving_default") == "onnxruntime"
    warmed = tmp_path / "warmed" / "1"
    shutil.copytree(library / "1", warmed)
    large = np.full((3, support.F), 100.0, np.float32)
    write_warmup(warmed, [support.predict_request("m", CTX, CANDS).SerializeToString(),
                          support.predict_request("m", CTX, large).SerializeToString()])
    assert runtime.runtime_of(runtime.load(warmed), "serving_default") == "tensorflow"
    assert "differs from TensorFlow's by up to" in caplog.text
    assert "on warm-up record 1" in caplog.text
