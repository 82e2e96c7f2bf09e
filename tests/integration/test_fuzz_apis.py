"""Property-based fuzzing of both gRPC APIs against real server processes.

Generated and mutated RankRequests (with caller candidates and request features) and
PredictRequests, truncated and garbage frames, declared shapes that overflow or disagree with
their content, huge dims with tiny payloads, negative dims, unknown dtypes, long repeated fields
and metadata floods go to a ranking server and a model server over loopback. Every case must get
a precise status in time: never INTERNAL or UNKNOWN, never a deadline the client had to enforce,
never a parser's text; no process dies and neither grows past a ceiling.

CI runs RANKSERVE_FUZZ_CASES (default 1000) cases per API; a nightly run sets it to 10000.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import grpc
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rankserve.ranking.v1 import ranking_pb2
from rankserve.tfserving.v1 import predict_pb2, tensor_pb2
from tests.integration import modelserver_support as support
from tests.support.catalog import make_catalog
from tests.support.processes import predict_process
from tests.support.procfs import rss_bytes

CASES = int(os.environ.get("RANKSERVE_FUZZ_CASES", "1000"))
CALL_TIMEOUT_S = 10.0
# A server that decoded what these requests declare would grow by gigabytes; a healthy one
# stays within tens of megabytes of where it started.
RSS_CEILING_GROWTH = 300 * 1024 * 1024
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
PREDICT = "/tensorflow.serving.PredictionService/Predict"
METADATA = "/tensorflow.serving.PredictionService/GetModelMetadata"
STATUS = "/tensorflow.serving.ModelService/GetModelStatus"
RANK = "/rankserve.ranking.v1.RankingService/Rank"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@dataclass
class Tally:
    """What the fuzzer saw: cases per status, and the server's RSS over the run."""

    pid: int
    baseline: int = 0
    peak: int = 0
    cases: int = 0
    codes: dict[str, int] = field(default_factory=dict)

    def sample(self) -> None:
        self.peak = max(self.peak, rss_bytes(self.pid))


def check_call(channel: grpc.Channel, method: str, payload: bytes, tally: Tally,
               metadata: tuple[tuple[str, str], ...] = ()) -> None:
    call = channel.unary_unary(method)  # bytes in, bytes out: no client-side parsing
    started = time.monotonic()
    try:
        call(payload, timeout=CALL_TIMEOUT_S, metadata=metadata or None)
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
    elapsed = time.monotonic() - started
    tally.cases += 1
    tally.codes[code.name] = tally.codes.get(code.name, 0) + 1
    if tally.cases % 50 == 0:
        tally.sample()
    assert code not in FORBIDDEN, (method, code, details, payload[:200])
    assert "Traceback" not in details and "Unexpected <class" not in details, details
    # The server may answer DEADLINE_EXCEEDED for its own budget; the client's timer expiring
    # means the call hung.
    assert elapsed < CALL_TIMEOUT_S - 0.5, (method, code, elapsed, payload[:200])


# ---- byte-level mutations -------------------------------------------------------------------


@st.composite
def mutated(draw, valid: bytes) -> bytes:
    """A valid message truncated, with bytes flipped or spliced in, or replaced by garbage."""
    kind = draw(st.sampled_from(["truncate", "flip", "splice", "garbage", "repeat"]))
    if kind == "garbage" or not valid:
        return draw(st.binary(max_size=512))
    if kind == "truncate":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == "repeat":  # the same fields many times over: repeated-field and merge paths
        return valid * draw(st.integers(2, 40))
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] = draw(st.integers(0, 255))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


metadata_floods = st.lists(
    st.tuples(st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20),
              st.text("abcdefghijklmnopqrstuvwxyz ", max_size=2000)),
    max_size=30,
).map(lambda pairs: tuple((f"x-{k}", v) for k, v in pairs))


# ---- Predict ------------------------------------------------------------------------------------

HUGE_DIMS = [2**31, 2**32, 2**40, 2**62, 2**63 - 1, -(2**63), -1]


@st.composite
def tensors(draw) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(
        dtype=draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 14, 17, 19, 22, 23, 101])))
    if draw(st.booleans()) and draw(st.booleans()):
        proto.tensor_shape.unknown_rank = True
    for size in draw(st.lists(st.one_of(st.integers(0, 64), st.sampled_from(HUGE_DIMS)),
                              max_size=5)):
        proto.tensor_shape.dim.add(size=size)
    which = draw(st.sampled_from(["content", "float", "int", "int64", "string", "half", "bool",
                                  "none"]))
    if which == "content":
        proto.tensor_content = draw(st.binary(max_size=1024))
    elif which == "float":
        proto.float_val.extend(draw(st.lists(st.floats(width=32), max_size=200)))
    elif which == "int":
        proto.int_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=200)))
    elif which == "int64":
        proto.int64_val.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=200)))
    elif which == "string":
        proto.string_val.extend(draw(st.lists(st.binary(max_size=64), max_size=50)))
    elif which == "half":
        proto.half_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=200)))
    elif which == "bool":
        proto.bool_val.extend(draw(st.lists(st.booleans(), max_size=200)))
    return proto


def valid_predict() -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    context = request.inputs["context"]
    context.dtype = tensor_pb2.DT_FLOAT
    context.tensor_shape.dim.add(size=1)
    context.tensor_shape.dim.add(size=support.C)
    context.float_val.extend([0.5] * support.C)
    cands = request.inputs["candidates"]
    cands.dtype = tensor_pb2.DT_FLOAT
    cands.tensor_shape.dim.add(size=3)
    cands.tensor_shape.dim.add(size=support.F)
    cands.float_val.extend([0.25] * 3 * support.F)
    return request


def huge_batch() -> bytes:
    """One repeated value declared as 2^40 candidate rows: terabytes if ever expanded."""
    request = valid_predict()
    cands = request.inputs["candidates"]
    del cands.float_val[1:]
    cands.tensor_shape.dim[0].size = 2**40
    return request.SerializeToString()


@st.composite
def predict_requests(draw) -> bytes:
    request = valid_predict()
    kind = draw(st.sampled_from(["replace-input", "add-input", "spec", "filter", "random",
                                 "huge-batch"]))
    if kind == "huge-batch":  # the signature's shape, rows that a few values cannot fill
        cands = request.inputs["candidates"]
        del cands.float_val[1:]
        cands.tensor_shape.dim[0].size = draw(st.sampled_from(HUGE_DIMS[:5]))
    elif kind == "replace-input":  # past the name checks: the decoder and signature
        name = draw(st.sampled_from(["context", "candidates"]))
        request.inputs[name].CopyFrom(draw(tensors()))
    elif kind == "add-input":
        request.inputs[draw(st.text(max_size=30))].CopyFrom(draw(tensors()))
    elif kind == "spec":
        spec = request.model_spec
        spec.name = draw(st.one_of(st.just("m"), st.text(max_size=100)))
        choice = draw(st.sampled_from(["version", "label", "none"]))
        if choice == "version":
            spec.version.value = draw(st.integers(-(2**63), 2**63 - 1))
        elif choice == "label":
            spec.version_label = draw(st.text(max_size=100))
        spec.signature_name = draw(st.one_of(st.just(""), st.text(max_size=50)))
    elif kind == "filter":
        request.output_filter.extend(draw(st.lists(st.text(max_size=20), max_size=50)))
    else:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = draw(st.sampled_from(["m", ""]))
        for name in draw(st.lists(st.text(max_size=12), max_size=4)):
            request.inputs[name].CopyFrom(draw(tensors()))
    return request.SerializeToString()


@st.composite
def model_server_calls(draw) -> tuple[str, bytes, tuple[tuple[str, str], ...]]:
    method = draw(st.sampled_from([PREDICT] * 6 + [METADATA, STATUS]))
    if method == PREDICT:
        payload = draw(st.one_of(predict_requests(),
                                 mutated(valid_predict().SerializeToString())))
    else:  # both carry a ModelSpec at field 1 (and GetModelMetadata a metadata_field list)
        payload = draw(st.one_of(st.binary(max_size=256),
                                 mutated(b"\x0a\x03\x0a\x01m\x12\rsignature_def")))
    metadata = draw(st.one_of(st.just(()), metadata_floods))
    return method, payload, metadata


# ---- Rank ---------------------------------------------------------------------------------------

INT32 = st.integers(-(2**31), 2**31 - 1)


@st.composite
def rank_requests(draw) -> bytes:
    request = ranking_pb2.RankRequest(
        request_id=draw(st.text(max_size=64)),
        query=draw(st.one_of(st.text(max_size=200), st.sampled_from(["red shoes", "lamp"]),
                             st.text(min_size=2000, max_size=20000))),
        page_size=draw(st.one_of(st.integers(-2, 60), INT32)),
        candidate_limit=draw(st.one_of(st.integers(-2, 6000), INT32)),
        debug=draw(st.booleans()),
    )
    if draw(st.booleans()):
        request.user.id = draw(st.one_of(st.sampled_from(["user-1", "user-7"]),
                                         st.text(max_size=100)))
        request.user.known = draw(st.booleans())
    if draw(st.booleans()):
        request.context.device = draw(st.one_of(st.sampled_from(["mobile", "desktop"]),
                                                st.text(max_size=50)))
        request.context.locale = draw(st.text(max_size=50))
        request.context.viewed_item_ids.extend(draw(st.lists(
            st.one_of(st.sampled_from(["item-00001", "item-00042"]), st.text(max_size=40)),
            max_size=draw(st.sampled_from([5, 500, 5000])))))
    if draw(st.booleans()):  # the caller's own candidates: duplicates, unknown, empty ids
        ids = st.one_of(st.sampled_from(["item-00001", "item-00042", "item-01999", ""]),
                        st.text(max_size=40))
        for item_id in draw(st.lists(ids, max_size=draw(st.sampled_from([5, 60, 6000])))):
            request.candidates.add(id=item_id, retrieval_score=draw(
                st.one_of(st.just(0.0), st.floats(width=32))))
    for name in draw(st.lists(st.one_of(st.sampled_from(["segment", "query", "price"]),
                                        st.text(max_size=20)), max_size=4)):
        value = request.request_features[name]
        kind = draw(st.sampled_from(["float", "int", "string", "bool", "floats", "unset"]))
        if kind == "float":
            value.float_value = draw(st.floats())
        elif kind == "int":
            value.int_value = draw(st.integers(-(2**63), 2**63 - 1))
        elif kind == "string":
            value.string_value = draw(st.text(max_size=50))
        elif kind == "bool":
            value.bool_value = draw(st.booleans())
        elif kind == "floats":
            value.float_list.values.extend(draw(st.lists(st.floats(width=32), max_size=300)))
    if draw(st.booleans()):
        request.model.name = draw(st.one_of(st.just("ranker"), st.text(max_size=60)))
        choice = draw(st.sampled_from(["version", "label", "none"]))
        if choice == "version":
            request.model.version = draw(st.integers(-(2**63), 2**63 - 1))
        elif choice == "label":
            request.model.label = draw(st.text(max_size=60))
    return request.SerializeToString()


VALID_RANK = ranking_pb2.RankRequest(query="red shoes", page_size=10).SerializeToString()


@st.composite
def ranking_calls(draw) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    payload = draw(st.one_of(rank_requests(), mutated(VALID_RANK)))
    metadata = draw(st.one_of(st.just(()), metadata_floods))
    return payload, metadata


# ---- servers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_server(tmp_path_factory):
    with support.serving_test_model(tmp_path_factory) as proc:
        yield proc


@pytest.fixture(scope="module")
def ranking_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz-rank")
    catalog = make_catalog(tmp / "catalog", num_items=2000, num_features=16)
    ready = tmp / "ranker.json"
    with predict_process(tmp) as model:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rankserve.server.ranking", "--catalog-dir", str(catalog),
             "--model-target", model["address"], "--port", "0", "--metrics-port", "0",
             "--ready-file", str(ready), "--grace-s", "1", "--drain-s", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not ready.is_file():
                assert proc.poll() is None, f"ranking server exited {proc.returncode}"
                assert time.monotonic() < deadline, "ranking server not ready after 60 s"
                time.sleep(0.05)
            info = json.loads(ready.read_text())
            yield proc, info["address"]
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


FUZZ = settings(max_examples=CASES, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


def report(api: str, tally: Tally) -> None:
    print(f"\n{api}: {tally.cases} cases, statuses {dict(sorted(tally.codes.items()))},"
          f" RSS {tally.baseline / 2**20:.0f} -> peak {tally.peak / 2**20:.0f} MiB")


def test_fuzz_predict_api(model_server) -> None:
    tally = Tally(model_server.proc.pid)
    with grpc.insecure_channel(model_server.address) as channel:
        check_call(channel, PREDICT, valid_predict().SerializeToString(), tally)
        tally.baseline = tally.peak = rss_bytes(tally.pid)

        @FUZZ
        @given(model_server_calls())
        @example((PREDICT, huge_batch(), ()))  # the expansion that once killed a replica
        def one(call) -> None:
            method, payload, metadata = call
            check_call(channel, method, payload, tally, metadata)

        one()
        tally.sample()
        report("model server", tally)
        assert tally.cases >= CASES
        assert model_server.proc.poll() is None, "the model server died"
        assert tally.peak - tally.baseline < RSS_CEILING_GROWTH
        # Still serving well-formed calls, and the fuzz reached the decoder's refusals.
        check_call(channel, PREDICT, valid_predict().SerializeToString(), tally)
        assert tally.codes.get("INVALID_ARGUMENT", 0) > CASES // 10
        assert tally.codes.get("RESOURCE_EXHAUSTED", 0) > 0
        assert tally.codes.get("OK", 0) > 1


def test_fuzz_rank_api(ranking_server) -> None:
    proc, address = ranking_server
    tally = Tally(proc.pid)
    with grpc.insecure_channel(address) as channel:
        check_call(channel, RANK, VALID_RANK, tally)
        tally.baseline = tally.peak = rss_bytes(tally.pid)

        @FUZZ
        @given(ranking_calls())
        def one(call) -> None:
            payload, metadata = call
            check_call(channel, RANK, payload, tally, metadata)

        one()
        tally.sample()
        report("ranking server", tally)
        assert tally.cases >= CASES
        assert proc.poll() is None, "the ranking server died"
        assert tally.peak - tally.baseline < RSS_CEILING_GROWTH
        check_call(channel, RANK, VALID_RANK, tally)
        assert tally.codes.get("INVALID_ARGUMENT", 0) > CASES // 10
        assert tally.codes.get("OK", 0) > CASES // 20
