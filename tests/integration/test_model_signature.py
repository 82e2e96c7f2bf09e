"""Signatures of SavedModels that TensorFlow writes here, read without TensorFlow from the
directory and from a running model server (GetModelMetadata), and `rankserve spec check` on them:
a fitting spec, each kind of mismatch, and the errors that exit 2.

Two models: ``mixed`` takes named inputs of mixed dtypes (float32 [?, 3], int64 [?], string [?],
bool [?], float32 [1, 2]) and returns scores [?] and an embedding [?, 2]; ``parse`` takes
``examples`` [?] DT_STRING and parses them with tf.io.parse_example.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from rankserve.ranker.errors import DeadlineExceeded, NotFound, Unavailable
from rankserve.ranker.model_signature import (
    _MORE_DT_NAMES,
    ModelSignature,
    TensorSig,
    fetch_signature,
    from_saved_model,
)
from rankserve.ranker.types import ModelRef
from rankserve.tfserving.v1 import prediction_service_pb2_grpc
from rankserve.tools import cli

from . import modelserver_support as support

MIXED = ModelSignature(
    name="serving_default",
    inputs={"context": TensorSig("float32", (1, 2)), "dense": TensorSig("float32", (None, 3)),
            "flag": TensorSig("bool", (None,)), "ids": TensorSig("int64", (None,)),
            "query": TensorSig("string", (None,))},
    outputs={"embedding": TensorSig("float32", (None, 2)), "scores": TensorSig("float32", (None,))},
    method_name="tensorflow/serving/predict",
)
PARSE = ModelSignature(
    name="serving_default",
    inputs={"examples": TensorSig("string", (None,))},
    outputs={"scores": TensorSig("float32", (None,))},
    method_name="tensorflow/serving/predict",
)


def build_models(base: Path) -> None:
    """``<base>/mixed/1`` and ``<base>/parse/1``."""
    import tensorflow as tf

    class Mixed(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable([0.5, -1.0, 2.0])

        @tf.function(input_signature=[
            tf.TensorSpec([None, 3], tf.float32, name="dense"),
            tf.TensorSpec([None], tf.int64, name="ids"),
            tf.TensorSpec([None], tf.string, name="query"),
            tf.TensorSpec([None], tf.bool, name="flag"),
            tf.TensorSpec([1, 2], tf.float32, name="context"),
        ])
        def serve(self, dense, ids, query, flag, context):
            scores = (tf.linalg.matvec(dense, self.w) + tf.cast(ids, tf.float32)
                      + tf.cast(tf.strings.length(query), tf.float32)
                      + tf.cast(flag, tf.float32) + tf.reduce_sum(context))
            return {"scores": scores, "embedding": tf.stack([scores, -scores], axis=1)}

    class Parse(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            # Defaults: the model server's first call sends empty Examples.
            parsed = tf.io.parse_example(examples, {
                "dense": tf.io.FixedLenFeature([3], tf.float32, default_value=[0.0] * 3),
                "ids": tf.io.FixedLenFeature([], tf.int64, default_value=0),
                "query": tf.io.FixedLenFeature([], tf.string, default_value=""),
            })
            scores = (tf.reduce_sum(parsed["dense"], axis=1) + tf.cast(parsed["ids"], tf.float32)
                      + tf.cast(tf.strings.length(parsed["query"]), tf.float32))
            return {"scores": scores}

    for name, module in (("mixed", Mixed()), ("parse", Parse())):
        tf.saved_model.save(module, str(base / name / "1"),
                            signatures={"serving_default": module.serve})


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("signature-models")
    build_models(base)
    return base


@pytest.fixture(scope="module")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("signature-server")
    config = tmp / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{name}" base_path: "{models / name}" model_platform: "tensorflow"'
        ' }\n' for name in ("mixed", "parse")) + "}\n")
    proc = support.ServerProcess(tmp, "--model-config-file", str(config))
    try:
        yield proc.wait_ready(60)
    finally:
        proc.terminate()


def fetch(target: str, model: ModelRef, signature: str = "serving_default",
          timeout_s: float = 10.0) -> ModelSignature:
    return asyncio.run(fetch_signature(target, model, signature, timeout_s))


def test_a_directory_reads_the_signature_tensorflow_wrote(models: Path) -> None:
    assert from_saved_model(models / "mixed" / "1", "serving_default") == MIXED
    assert from_saved_model(models / "parse", "serving_default") == PARSE  # base path


def test_the_directory_and_the_model_server_agree(models: Path, server: str) -> None:
    for name, expected in (("mixed", MIXED), ("parse", PARSE)):
        from_dir = from_saved_model(models / name, "serving_default")
        assert fetch(server, ModelRef(name)) == from_dir == expected
        assert fetch(server, ModelRef(name, version=1)) == from_dir


def test_fetch_errors_name_what_is_wrong(server: str) -> None:
    with pytest.raises(NotFound, match="model absent@latest at 127.0.0.1:.*NOT_FOUND"):
        fetch(server, ModelRef("absent"))
    with pytest.raises(NotFound, match="NOT_FOUND"):
        fetch(server, ModelRef("mixed", version=9))
    with pytest.raises(NotFound) as err:
        fetch(server, ModelRef("mixed"), "rank")
    assert "has no signature 'rank'; its signatures: serving_default" in err.value.message


def test_dtype_names_beyond_the_slim_enum_are_tensorflows() -> None:
    from tensorflow.core.framework import types_pb2

    for number, name in _MORE_DT_NAMES.items():
        assert types_pb2.DataType.Name(number) == name


# -- rankserve spec check ---------------------------------------------------------------------

MIXED_SPEC: dict[str, Any] = {
    "output": "scores",
    "inputs": [
        {"name": "dense", "per": "candidate", "dtype": "float32", "shape": [3],
         "features": ["item.features"]},
        {"name": "ids", "per": "candidate", "dtype": "int64", "shape": [],
         "features": ["item.id"]},
        {"name": "query", "per": "request", "broadcast": "client", "dtype": "string",
         "shape": [], "features": ["request.query"]},
        {"name": "flag", "per": "request", "broadcast": "client", "dtype": "bool",
         "shape": [], "features": ["request.user_known"]},
        {"name": "context", "per": "request", "dtype": "float32", "shape": [2],
         "features": ["user.embedding"]},
    ],
}
PARSE_SPEC: dict[str, Any] = {
    "encoding": "tf_example",
    "example_input": "examples",
    "inputs": [
        {"name": "dense", "per": "candidate", "dtype": "float32", "shape": [3],
         "features": ["item.features"]},
        {"name": "ids", "per": "candidate", "dtype": "int64", "shape": [],
         "features": ["item.id"]},
        {"name": "query", "per": "request", "broadcast": "client", "dtype": "string",
         "shape": [], "features": ["request.query"]},
    ],
}


def changed(spec: dict[str, Any], target: str | None = None, /, **fields: Any
            ) -> dict[str, Any]:
    """A copy of ``spec`` with input ``target`` changed (a field set to None is removed), or
    with top-level ``fields`` changed when no input is named."""
    out = json.loads(json.dumps(spec))
    if target is None:
        out.update(fields)
        return out
    for inp in out["inputs"]:
        if inp["name"] == target:
            inp.update(fields)
            for key in [k for k, v in inp.items() if v is None]:
                del inp[key]
    return out


def without(spec: dict[str, Any], name: str) -> dict[str, Any]:
    out = json.loads(json.dumps(spec))
    out["inputs"] = [i for i in out["inputs"] if i["name"] != name]
    return out


def run_check(tmp_path: Path, spec: dict[str, Any], *source: str,
              capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    path = tmp_path / f"spec-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(spec))
    code = cli.main(["spec", "check", "--spec", str(path), *source])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("model,spec", [("mixed", MIXED_SPEC), ("parse", PARSE_SPEC)])
def test_a_fitting_spec(models: Path, server: str, tmp_path: Path, model: str,
                        spec: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    for source in (["--model-dir", str(models / model)],
                   ["--target", server, "--model", f"{model}@1"]):
        code, out, err = run_check(tmp_path, spec, *source, capsys=capsys)
        assert (code, err) == (0, ""), out + err
        lines = out.splitlines()
        assert lines[-1] == "spec fits"
        assert lines[1] == "inputs:"
        if model == "mixed":
            assert "  dense    float32 [?, 3]" in lines and "  flag     bool [?]" in lines
        else:
            assert "  examples  string [?]" in lines


MISMATCHES = [
    ("missing input", changed(MIXED_SPEC, "ids", name="item_ids"),
     ["input 'item_ids': the model has no input 'item_ids'; its inputs are context (float32"
      " [1, 2]), dense (float32 [?, 3]), flag (bool [?]), ids (int64 [?]), query (string [?])",
      "input 'ids': the model takes 'ids' (int64 [?]) and the spec does not fill it"]),
    ("unfilled input", without(MIXED_SPEC, "flag"),
     ["input 'flag': the model takes 'flag' (bool [?]) and the spec does not fill it: add an"
      " input named 'flag' to the spec"]),
    ("dtype", changed(MIXED_SPEC, "ids", dtype="int32"),
     ["input 'ids': the spec sends int32, the model takes int64: set dtype: int64"]),
    ("row shape", changed(MIXED_SPEC, "dense", shape=[4]),
     ["input 'dense': model shape [?, 3]: the model takes rows of [3], the spec sends rows of"
      " [4]: set shape: [3]"]),
    ("per candidate on a leading dim of 1", changed(
        changed(MIXED_SPEC, "dense", name="dense_x"), "context", per="candidate",
        broadcast=None),
     ["input 'context': model shape [1, 2]: its leading dim is fixed at 1; per: candidate"]),
    ("broadcast client on a leading dim of 1", changed(MIXED_SPEC, "context",
                                                        broadcast="client"),
     ["input 'context': model shape [1, 2]: its leading dim is fixed at 1; per: request with"
      " broadcast: client sends [B, 2], B rows per batch: export the model with leading dim"
      " None, or set broadcast: model"]),
    ("output missing", changed(MIXED_SPEC, output="score"),
     ["output 'score': the model has no output 'score'; its outputs are embedding (float32"
      " [?, 2]), scores (float32 [?])"]),
    ("output shape", changed(MIXED_SPEC, output="embedding"),
     ["output 'embedding': the model returns [?, 2]; the ranker reads one score per candidate,"
      " [?] or [?, 1]"]),
    ("tf_example against named inputs", changed(PARSE_SPEC, example_input="dense"),
     ["input 'dense' (encoding: tf_example): the model takes float32 [?, 3]; serialized"
      " tf.Examples go as DT_STRING [?]",
      "input 'context': the model takes 'context' (float32 [1, 2]) besides 'dense'"]),
]


@pytest.mark.parametrize("kind,spec,expected", MISMATCHES, ids=[m[0] for m in MISMATCHES])
def test_each_kind_of_mismatch(models: Path, tmp_path: Path, kind: str, spec: dict[str, Any],
                               expected: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_check(tmp_path, spec, "--model-dir", str(models / "mixed"),
                               capsys=capsys)
    assert code == 1 and err == "", out + err
    problems = out.split("problem")[-1].splitlines()[1:]
    for fragment in expected:
        assert any(line.startswith(fragment) for line in problems), (fragment, out)
    if kind == "per candidate on a leading dim of 1":
        assert any("input 'dense_x': the model has no input" in p for p in problems)


def test_the_tensors_spec_against_the_parsing_model(server: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_check(tmp_path, MIXED_SPEC, "--target", server, "--model", "parse",
                             capsys=capsys)
    assert code == 1
    assert "input 'dense': the model has no input 'dense'; its inputs are examples (string [?])"\
        in out
    assert "input 'examples': the model takes 'examples' (string [?]) and the spec does not" \
        " fill it: add an input named 'examples' to the spec, or set encoding: tf_example and" \
        " example_input: examples" in out


def test_errors_exit_2_with_a_plain_message(models: Path, server: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["--target", server, "--model", "absent"], "model absent@latest at"),
        (["--target", server, "--model", "mixed@7"], "NOT_FOUND"),
        (["--model-dir", str(tmp_path / "none")], "no such directory"),
        (["--target", server], "--target needs --model"),
        (["--model-dir", str(models / "mixed"), "--model", "mixed"], "--model goes with"),
    ]
    for source, fragment in cases:
        code, out, err = run_check(tmp_path, MIXED_SPEC, *source, capsys=capsys)
        assert code == 2 and out == "", (source, out, err)
        assert err.startswith("rankserve spec check: ") and fragment in err, err
        assert "Traceback" not in err
    code, _, err = run_check(tmp_path, changed(MIXED_SPEC, signature="rank"),
                             "--model-dir", str(models / "mixed"), capsys=capsys)
    assert code == 2
    assert "has no signature 'rank'; its signatures: serving_default: set the spec's" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("inputs: [{name: x}]\n")
    assert cli.main(["spec", "check", "--spec", str(bad), "--model-dir", str(models)]) == 2
    assert "inputs[0] (x)" in capsys.readouterr().err


class Refusing(prediction_service_pb2_grpc.PredictionServiceServicer):
    """A PredictionService whose GetModelMetadata answers one status, or sleeps."""

    def __init__(self, code: grpc.StatusCode | None) -> None:
        self.code = code
        self.target = ""

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        if self.code is None:
            time.sleep(1.0)
            context.abort(grpc.StatusCode.INTERNAL, "too late")
        context.abort(self.code, "model server is shutting down")


@pytest.fixture
def refusing() -> Iterator[Refusing]:
    servicer = Refusing(grpc.StatusCode.UNAVAILABLE)
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    servicer.target = f"127.0.0.1:{port}"
    try:
        yield servicer
    finally:
        grpc_server.stop(None).wait()


def test_unavailable_and_deadline(refusing: Refusing, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    target = refusing.target
    with pytest.raises(Unavailable, match="UNAVAILABLE: no model server answers"):
        fetch(target, ModelRef("m"))
    code, _, err = run_check(tmp_path, MIXED_SPEC, "--target", target, "--model", "m",
                             capsys=capsys)
    assert code == 2 and "UNAVAILABLE" in err
    refusing.code = None
    with pytest.raises(DeadlineExceeded, match="no answer within 0.2 s"):
        fetch(target, ModelRef("m"), timeout_s=0.2)
