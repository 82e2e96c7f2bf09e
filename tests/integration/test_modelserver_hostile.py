"""Hostile Predict calls against a model server process: declared shapes that would expand to
terabytes, shapes that overflow, contents that disagree with their shape, bytes that are no
message at all. Each gets a precise status at once, and the process neither dies nor grows.
"""

from __future__ import annotations

import time

import grpc
import pytest
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.integration import modelserver_support as support
from tests.support.procfs import rss_bytes

pytestmark = pytest.mark.timeout(180)
INVALID, EXHAUSTED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED
# A replica that decoded any of these would grow by gigabytes; 200 MiB is far above what a
# well-formed call of this model costs and far below what one expansion would.
RSS_GROWTH_LIMIT = 200 * 1024 * 1024


def tensor(shape, **fields) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto(dtype=1, tensor_shape={"dim": [{"size": s} for s in shape]},
                                  **fields)


def hostile(candidates: tensor_pb2.TensorProto) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["context"].CopyFrom(tensor((1, support.C), float_val=[0.5]))
    request.inputs["candidates"].CopyFrom(candidates)
    return request


CASES = [
    # (what, candidates tensor, status, fragments of the message)
    ("one value repeated to 2^40 rows", tensor((2**40, support.F), float_val=[1.0]), EXHAUSTED,
     ["input 'candidates' declares shape [1099511627776, 6]", "at most 64.0 MiB"]),
    ("zeros of 2^28 rows", tensor((2**28, support.F)), EXHAUSTED, ["6.0 GiB decoded"]),
    ("2^62 rows, 8 bytes of content", tensor((2**62, support.F), tensor_content=b"\0" * 8),
     EXHAUSTED, ["'candidates'"]),
    ("a shape whose product overflows int64", tensor((2**32, 2**32, 2**32), float_val=[1.0]),
     INVALID, ["'candidates' has shape [4294967296, 4294967296, 4294967296]", "[?, 6]"]),
    ("negative dims", tensor((-5, support.F), float_val=[1.0]), INVALID,
     ["negative dimension"]),
    ("content shorter than its shape", tensor((5, support.F), tensor_content=b"\0" * 7),
     INVALID, ["tensor_content has 7 bytes", "needs 120"]),
    ("more values than the shape holds", tensor((1, support.F), float_val=[1.0] * 7), INVALID,
     ["7 values but shape [1, 6] holds 6"]),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with support.serving_test_model(tmp_path_factory) as proc:
        yield proc


def test_hostile_tensors_are_refused_at_once_and_the_server_stays_small(server) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        good = support.predict_request("m", support.np.zeros((1, support.C), "f4"),
                                       support.np.ones((5, support.F), "f4"))
        stub.Predict(good, timeout=30)  # warm: the baseline includes a served call
        baseline = rss_bytes(server.proc.pid)
        for _ in range(20):  # repeated, so a leak or a slow allocation would add up
            for what, candidates, code, fragments in CASES:
                started = time.monotonic()
                with pytest.raises(grpc.RpcError) as info:
                    stub.Predict(hostile(candidates), timeout=5)
                elapsed = time.monotonic() - started
                assert info.value.code() == code, (what, info.value.details())
                for fragment in fragments:
                    assert fragment in info.value.details(), (what, info.value.details())
                assert elapsed < 1.0, f"{what}: answered after {elapsed:.2f} s"
        grown = rss_bytes(server.proc.pid) - baseline
        assert grown < RSS_GROWTH_LIMIT, f"RSS grew by {grown / 2**20:.0f} MiB"
        assert server.proc.poll() is None
        assert len(stub.Predict(good, timeout=30).outputs["scores"].float_val) == 5


@pytest.mark.parametrize(
    ("method", "message_type"),
    [
        ("/tensorflow.serving.PredictionService/Predict", "tensorflow.serving.PredictRequest"),
        ("/tensorflow.serving.PredictionService/GetModelMetadata",
         "tensorflow.serving.GetModelMetadataRequest"),
        ("/tensorflow.serving.ModelService/GetModelStatus",
         "tensorflow.serving.GetModelStatusRequest"),
    ],
)
def test_unparsable_bytes_are_invalid_argument_without_parser_text(server, method, message_type):
    with grpc.insecure_channel(server.address) as channel:
        raw = channel.unary_unary(method)
        for garbage in (b"\xff\xff\xff\xff", b"\x0a\x80", b"\x12\x10" + b"\x0a" * 4):
            with pytest.raises(grpc.RpcError) as info:
                raw(garbage, timeout=5)
            assert info.value.code() == INVALID, info.value.details()
            assert info.value.details() == (
                f"the {len(garbage)}-byte request to {method} is not a valid {message_type}"
                " message; send a serialized message of that type"
            )
    assert server.proc.poll() is None
