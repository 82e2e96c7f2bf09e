"""The model server in this process on a real socket, called with TF Serving's own stubs:
Predict / GetModelMetadata / GetModelStatus, every bad input, version policies, micro-batching.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from rankserve.server.modelserver import ModelServerApp, ModelServerSettings
from tests.integration import modelserver_support as support

pytestmark = pytest.mark.timeout(120)
CTX = np.arange(support.C, dtype=np.float32).reshape(1, support.C) / 10
CANDS = np.linspace(-1, 1, 5 * support.F, dtype=np.float32).reshape(5, support.F)


@pytest.fixture(scope="session")
def library(tmp_path_factory) -> Path:
    return support.model_library(tmp_path_factory)


class Client:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)

    async def status(self, name: str, **spec):
        request = get_model_status_pb2.GetModelStatusRequest(model_spec={"name": name, **spec})
        response = await self.models.GetModelStatus(request, timeout=10)
        return {s.version: s for s in response.model_version_status}

    async def health_status(self, service: str = "") -> int:
        request = health_pb2.HealthCheckRequest(service=service)
        return (await self.health.Check(request, timeout=10)).status


@contextlib.asynccontextmanager
async def serving(wait: bool = True, **settings):
    settings.setdefault("poll_interval_s", 0.1)
    app = ModelServerApp(ModelServerSettings(host="127.0.0.1", port=0, metrics_port=0, **settings))
    port = await app.start()
    try:
        if wait:
            await asyncio.wait_for(app.wait_serving(), 60)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield app, Client(channel)
    finally:
        await app.stop()


@pytest.fixture
def base(tmp_path: Path, library: Path) -> Path:
    support.install(library, tmp_path / "m", 1)
    return tmp_path / "m"


async def expect_error(call, code: grpc.StatusCode, *fragments: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    details = info.value.details()
    for fragment in fragments:
        assert fragment in details, details
    assert "Traceback" not in details
    return details


async def test_predict_metadata_and_status_as_tf_serving(base: Path) -> None:
    async with serving(model_name="m", model_base_path=base) as (_, client):
        request = support.predict_request("m", CTX, CANDS)
        response = await client.predict.Predict(request, timeout=10)
        assert response.model_spec.name == "m"
        assert response.model_spec.HasField("version") and response.model_spec.version.value == 1
        assert response.model_spec.signature_name == "serving_default"
        assert list(response.outputs) == ["scores"]
        assert len(response.outputs["scores"].float_val) == 5  # typed values, as TF Serving
        np.testing.assert_allclose(
            support.scores_of(response), support.expected_scores(CTX, CANDS, 1), rtol=1e-5
        )
        pinned = support.predict_request("m", CTX, CANDS, version=1)
        pinned.output_filter.append("scores")
        assert (await client.predict.Predict(pinned, timeout=10)).model_spec.version.value == 1

        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec={"name": "m"}, metadata_field=["signature_def"]
        )
        metadata = await client.predict.GetModelMetadata(request, timeout=10)
        assert metadata.model_spec.name == "m" and metadata.model_spec.version.value == 1
        packed = metadata.metadata["signature_def"]
        assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        assert packed.Unpack(sig_map)
        sig = sig_map.signature_def["serving_default"]
        assert sig.method_name == "tensorflow/serving/predict"
        assert [d.size for d in sig.inputs["context"].tensor_shape.dim] == [1, support.C]
        assert [d.size for d in sig.inputs["candidates"].tensor_shape.dim] == [-1, support.F]
        assert sig.inputs["candidates"].dtype == 1 and "scores" in sig.outputs

        statuses = await client.status("m")
        assert list(statuses) == [1]
        assert statuses[1].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
        assert statuses[1].status.error_code == 0
        reflection = reflection_pb2_grpc.ServerReflectionStub(client.channel)
        async for answer in reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        ):
            listed = {s.name for s in answer.list_services_response.service}
            assert {"tensorflow.serving.PredictionService", "grpc.health.v1.Health"} <= listed
        serving_ = health_pb2.HealthCheckResponse.SERVING
        assert await client.health_status() == serving_
        assert await client.health_status("tensorflow.serving.PredictionService") == serving_


async def test_every_bad_input_gets_its_status_and_a_helpful_message(base: Path) -> None:
    invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    async with serving(model_name="m", model_base_path=base) as (_, client):
        predict = client.predict.Predict

        def request(ctx=CTX, cands=CANDS, **spec):
            return support.predict_request("m", ctx, cands, **spec)

        missing = request()
        del missing.inputs["context"]
        await expect_error(predict(missing), invalid, "missing input 'context'", "'candidates'")
        extra = request()
        extra.inputs["bogus"].CopyFrom(support.official_tensor(CTX))
        await expect_error(predict(extra), invalid, "unknown input 'bogus'", "'context'")
        await expect_error(
            predict(request(cands=CANDS.astype(np.float64))), invalid, "DT_DOUBLE", "DT_FLOAT"
        )
        await expect_error(
            predict(request(cands=CANDS[0])), invalid, "'candidates'", "[6]", "[?, 6]"
        )
        await expect_error(
            predict(request(ctx=np.zeros((2, support.C), np.float32))), invalid, "[1, 4]"
        )
        await expect_error(predict(request(cands=CANDS[:, :5])), invalid, "[5, 5]", "[?, 6]")
        bad = CANDS.copy()
        bad[0, :2] = np.nan
        bad[1, 0] = np.inf
        await expect_error(
            predict(request(cands=bad)), invalid, "'candidates'", "3 non-finite", "2 NaN"
        )
        short = request()
        short.inputs["candidates"].tensor_content = b"\0" * 7
        await expect_error(predict(short), invalid, "tensor_content has 7 bytes")

        await expect_error(
            predict(support.predict_request("nope", CTX, CANDS)), not_found, "'nope'", "'m'"
        )
        await expect_error(
            predict(request(version=7)), not_found, "version 7", "available versions: 1"
        )
        await expect_error(
            predict(request(label="stable")), not_found, "label 'stable'", "available versions"
        )
        wrong_sig = request()
        wrong_sig.model_spec.signature_name = "other"
        await expect_error(
            predict(wrong_sig), grpc.StatusCode.FAILED_PRECONDITION, "'other'", "serving_default"
        )
        filtered = request()
        filtered.output_filter.append("nope")
        await expect_error(predict(filtered), invalid, "'nope'", "'scores'")

        no_field = get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "m"})
        await expect_error(
            client.predict.GetModelMetadata(no_field), invalid, "metadata_field", "signature_def"
        )
        await expect_error(client.status("nope"), not_found, "'nope'")
        await expect_error(client.status("m", version={"value": 9}), not_found, "version 9")
        classify = classification_pb2.ClassificationRequest(model_spec={"name": "m"})
        await expect_error(
            client.predict.Classify(classify), grpc.StatusCode.UNIMPLEMENTED, "Predict"
        )
        reload = model_management_pb2.ReloadConfigRequest()
        await expect_error(
            client.models.HandleReloadConfigRequest(reload), grpc.StatusCode.UNIMPLEMENTED
        )
        # Nothing above hurt the server.
        assert (await predict(request(), timeout=10)).model_spec.version.value == 1


async def test_oversized_message_is_resource_exhausted(base: Path) -> None:
    async with serving(model_name="m", model_base_path=base, max_message_mb=1) as (_, client):
        big = np.ones((50_000, support.F), np.float32)  # 1.2 MB
        await expect_error(
            client.predict.Predict(support.predict_request("m", CTX, big)),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        assert (await client.predict.Predict(support.predict_request("m", CTX, CANDS))).outputs


async def test_unavailable_until_a_version_arrives(tmp_path: Path, library: Path) -> None:
    base = tmp_path / "m"
    base.mkdir()
    async with serving(wait=False, model_name="m", model_base_path=base) as (app, client):
        await expect_error(
            client.predict.Predict(support.predict_request("m", CTX, CANDS)),
            grpc.StatusCode.UNAVAILABLE,
            "no version loaded yet",
        )
        assert await client.health_status() == health_pb2.HealthCheckResponse.NOT_SERVING
        support.install(library, base, 2)
        await asyncio.wait_for(app.wait_serving(), 60)
        response = await client.predict.Predict(support.predict_request("m", CTX, CANDS))
        assert response.model_spec.version.value == 2
        assert await client.health_status() == health_pb2.HealthCheckResponse.SERVING


async def test_version_policies_from_a_config_file(tmp_path: Path, library: Path) -> None:
    base = tmp_path / "m"
    for version in (1, 2, 3):
        support.install(library, base, version)
    (tmp_path / "models.config").write_text(
        "model_config_list {\n"
        f'  config {{ name: "newest2" base_path: "{base}" model_platform: "tensorflow"\n'
        "    model_version_policy { latest { num_versions: 2 } } }\n"
        f'  config {{ name: "every" base_path: "{base}" model_platform: "tensorflow"\n'
        "    model_version_policy { all {} } }\n"
        f'  config {{ name: "picked" base_path: "{base}" model_platform: "tensorflow"\n'
        "    model_version_policy { specific { versions: 1 versions: 3 } } }\n"
        f'  config {{ name: "default" base_path: "{base}" model_platform: "tensorflow" }}\n'
        "}\n"
    )
    async with serving(model_config_file=tmp_path / "models.config") as (_, client):
        available = get_model_status_pb2.ModelVersionStatus.AVAILABLE

        async def loaded(name: str) -> list[int]:
            statuses = await client.status(name)
            return sorted(v for v, s in statuses.items() if s.state == available)

        assert await loaded("newest2") == [2, 3]
        assert await loaded("every") == [1, 2, 3]
        assert await loaded("picked") == [1, 3]
        assert await loaded("default") == [3]
        latest = await client.predict.Predict(support.predict_request("picked", CTX, CANDS))
        assert latest.model_spec.version.value == 3
        one = await client.predict.Predict(support.predict_request("picked", CTX, CANDS, 1))
        np.testing.assert_allclose(
            support.scores_of(one), support.expected_scores(CTX, CANDS, 1), rtol=1e-5
        )
        await expect_error(
            client.predict.Predict(support.predict_request("picked", CTX, CANDS, 2)),
            grpc.StatusCode.NOT_FOUND,
            "available versions: 1, 3",
        )


async def test_concurrent_calls_sharing_a_context_merge_into_few_model_calls(base: Path) -> None:
    settings = {"model_name": "m", "model_base_path": base, "batch_max_wait_ms": 20}
    async with serving(**settings) as (app, client):
        rng = np.random.default_rng(7)
        cands = [rng.random((5, support.F), dtype=np.float32) for _ in range(40)]

        async def burst(contexts) -> int:
            before = app.runtime.calls
            responses = await asyncio.gather(
                *(
                    client.predict.Predict(support.predict_request("m", ctx, c), timeout=20)
                    for ctx, c in zip(contexts, cands, strict=True)
                )
            )
            for ctx, c, response in zip(contexts, cands, responses, strict=True):
                np.testing.assert_allclose(
                    support.scores_of(response), support.expected_scores(ctx, c, 1), rtol=1e-5
                )
            return app.runtime.calls - before

        shared = await burst([CTX] * 40)
        assert 1 <= shared <= 12, f"40 calls sharing a context took {shared} model calls"
        distinct = [CTX + i for i in range(40)]
        assert await burst(distinct) == 40  # different contexts are never merged


async def test_unexpected_errors_are_internal_without_detail(base: Path, caplog) -> None:
    from rankserve.server.modelserver.tf_runtime import TensorFlowRuntime

    class Exploding(TensorFlowRuntime):
        def predict(self, model, signature, inputs):
            if (inputs["candidates"] == 42).any():
                raise RuntimeError("secret detail of the failure")
            return super().predict(model, signature, inputs)

    settings = ModelServerSettings(
        host="127.0.0.1", port=0, metrics_port=0, model_name="m", model_base_path=base,
        poll_interval_s=0.1,
    )
    app = ModelServerApp(settings, runtime=Exploding())
    port = await app.start()
    try:
        await asyncio.wait_for(app.wait_serving(), 60)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            boom = np.full_like(CANDS, 42)
            details = await expect_error(
                stub.Predict(support.predict_request("m", CTX, boom)), grpc.StatusCode.INTERNAL
            )
            assert details == "internal error"
            assert "secret detail" in caplog.text
            assert (await stub.Predict(support.predict_request("m", CTX, CANDS))).outputs
    finally:
        await app.stop()


async def test_its_own_process_freezes_what_it_loaded_and_again_after_a_version_change(
        base: Path, library: Path):
    # As `python -m rankserve.server.modelserver` builds it (freeze_gc): once the versions
    # settle, the long-lived objects leave the collector's sight (server/common/gc_freeze.py).
    gc.unfreeze()
    app = ModelServerApp(ModelServerSettings(host="127.0.0.1", port=0, metrics_port=0,
                                             model_name="m", model_base_path=str(base),
                                             poll_interval_s=0.1), freeze_gc=True)
    await app.start()
    try:
        await asyncio.wait_for(app.wait_serving(), 60)
        await wait_for(lambda: gc.get_freeze_count() > 0)
        gc.unfreeze()
        support.install(library, base, 2)  # version 2 loads, version 1 unloads: a new freeze
        await wait_for(lambda: gc.get_freeze_count() > 0)
        assert [v for _, v, s in app.manager.version_states() if s == "AVAILABLE"] == [2]
    finally:
        await app.stop()
        gc.unfreeze()


async def wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("hold_s", [0.0, 10.0])
async def test_a_caller_that_did_not_sample_gets_no_trailer(base: Path, hold_s: float) -> None:
    # The caller (the ranker through Envoy) sent the context and reads nothing back: an
    # unsampled call gets no trailer, and no span either unless a keep policy holds one (not
    # exported: nothing asked to keep it); a sampled call gets both.
    exporter = InMemorySpanExporter()
    app = ModelServerApp(ModelServerSettings(host="127.0.0.1", port=0, metrics_port=0,
                                             model_name="m", model_base_path=base,
                                             poll_interval_s=0.1, trace_hold_s=hold_s),
                         span_exporter=exporter)
    port = await app.start()
    trailers = {}
    try:
        await asyncio.wait_for(app.wait_serving(), 60)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for trace_id, flags in (("1" * 32, "00"), ("2" * 32, "01")):
                parent = f"00-{trace_id}-{'3' * 16}-{flags}"
                call = stub.Predict(support.predict_request("m", CTX, CANDS), timeout=10,
                                    metadata=(("traceparent", parent),))
                await call
                trailers[flags] = dict(await call.trailing_metadata())
        app.tracer_provider.force_flush()
    finally:
        await app.stop()
    assert "traceparent" not in trailers["00"]
    assert trailers["01"]["traceparent"].startswith(f"00-{'2' * 32}-")
    spans = exporter.get_finished_spans()
    assert [(s.context.trace_id, s.parent.span_id) for s in spans] == [
        (int("2" * 32, 16), int("3" * 16, 16))]
