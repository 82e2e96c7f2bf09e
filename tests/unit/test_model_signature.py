"""ModelSignature from a GetModelMetadataResponse, a SignatureDefMap and a SavedModel directory,
built here with the slim messages (no TensorFlow), and the errors that say what to change."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import any_pb2

from rankserve.ranker.errors import InvalidArgument, NotFound, RankerError
from rankserve.ranker.model_signature import (
    ModelSignature,
    TensorSig,
    dtype_name,
    from_metadata_response,
    from_saved_model,
    from_signature_def_map,
    metadata_request,
)
from rankserve.ranker.types import ModelRef
from rankserve.tfserving.v1 import (
    get_model_metadata_pb2,
    meta_graph_pb2,
    saved_model_pb2,
    signature_def_map_pb2,
    tensor_pb2,
)

URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"


def dense(info: meta_graph_pb2.TensorInfo, dtype: int, dims: list[int] | None) -> None:
    info.name = "t:0"
    info.dtype = dtype  # type: ignore[assignment]
    if dims is None:
        info.tensor_shape.unknown_rank = True
    else:
        info.tensor_shape.SetInParent()
        for d in dims:
            info.tensor_shape.dim.add(size=d)


def signature_def() -> meta_graph_pb2.SignatureDef:
    sig = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    dense(sig.inputs["dense"], tensor_pb2.DT_FLOAT, [-1, 3])
    dense(sig.inputs["ids"], tensor_pb2.DT_INT64, [-1])
    dense(sig.inputs["query"], tensor_pb2.DT_STRING, [-1])
    dense(sig.inputs["flag"], tensor_pb2.DT_BOOL, [-1])
    dense(sig.inputs["half"], tensor_pb2.DT_HALF, [])
    dense(sig.inputs["bf16"], 14, [2])
    dense(sig.inputs["anything"], tensor_pb2.DT_DOUBLE, None)
    sig.inputs["sparse"].coo_sparse.values_tensor_name = "v:0"
    sig.inputs["sparse"].dtype = tensor_pb2.DT_FLOAT
    sig.outputs["ragged"].composite_tensor.type_spec.type_spec_class_name = "RaggedTensorSpec"
    dense(sig.outputs["scores"], tensor_pb2.DT_FLOAT, [-1])
    return sig


EXPECTED = ModelSignature(
    name="serving_default",
    inputs={"anything": TensorSig("float64", None), "bf16": TensorSig("DT_BFLOAT16", (2,)),
            "dense": TensorSig("float32", (None, 3)), "flag": TensorSig("bool", (None,)),
            "half": TensorSig("float16", ()), "ids": TensorSig("int64", (None,)),
            "query": TensorSig("string", (None,)), "sparse": TensorSig("float32", ())},
    outputs={"ragged": TensorSig("DT_INVALID", ()), "scores": TensorSig("float32", (None,))},
    unsupported={"sparse": "sparse", "ragged": "composite (RaggedTensorSpec)"},
    method_name="tensorflow/serving/predict",
)


def signature_map() -> signature_def_map_pb2.SignatureDefMap:
    sig_map = signature_def_map_pb2.SignatureDefMap()
    sig_map.signature_def["serving_default"].CopyFrom(signature_def())
    sig_map.signature_def["parse"].method_name = "tensorflow/serving/predict"
    sig_map.signature_def["__saved_model_init_op"].outputs["x"].name = "NoOp"
    return sig_map


def metadata_response() -> get_model_metadata_pb2.GetModelMetadataResponse:
    resp = get_model_metadata_pb2.GetModelMetadataResponse()
    resp.model_spec.name = "m"
    resp.metadata["signature_def"].CopyFrom(
        any_pb2.Any(type_url=URL, value=signature_map().SerializeToString()))
    return resp


def write_saved_model(directory: Path, tags: tuple[str, ...] = ("serve",)) -> Path:
    saved = saved_model_pb2.SavedModel(saved_model_schema_version=1)
    meta = saved.meta_graphs.add()
    meta.meta_info_def.tags.extend(tags)
    for key, sig in signature_map().signature_def.items():
        meta.signature_def[key].CopyFrom(sig)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "saved_model.pb").write_bytes(saved.SerializeToString())
    return directory


def test_every_source_gives_the_same_signature(tmp_path: Path) -> None:
    raw = metadata_response().SerializeToString()
    assert from_metadata_response(raw, "serving_default") == EXPECTED
    assert from_metadata_response(metadata_response(), "serving_default") == EXPECTED
    assert from_signature_def_map(signature_map().SerializeToString(),
                                  "serving_default") == EXPECTED
    assert from_saved_model(write_saved_model(tmp_path / "m"), "serving_default") == EXPECTED


def test_inputs_compare_as_plain_tuples() -> None:
    sig = from_metadata_response(metadata_response(), "serving_default")
    assert sig.inputs["dense"] == ("float32", (None, 3))


def test_a_base_path_reads_the_highest_numeric_version(tmp_path: Path) -> None:
    write_saved_model(tmp_path / "base" / "2")
    write_saved_model(tmp_path / "base" / "10", tags=("serve", "gpu"))
    (tmp_path / "base" / "11").mkdir()  # no saved_model.pb yet: not a version
    (tmp_path / "base" / "latest").mkdir()
    (tmp_path / "base" / "10" / "saved_model.pb").write_bytes(b"")  # the one read: empty
    with pytest.raises(NotFound, match="base/10/saved_model.pb has no MetaGraph tagged 'serve'"):
        from_saved_model(tmp_path / "base", "serving_default")
    write_saved_model(tmp_path / "base" / "10")
    assert from_saved_model(tmp_path / "base", "serving_default") == EXPECTED


def test_a_missing_signature_lists_the_others(tmp_path: Path) -> None:
    with pytest.raises(NotFound) as err:
        from_metadata_response(metadata_response(), "rank", "model m")
    assert err.value.message == ("model m has no signature 'rank'; its signatures: parse,"
                                 " serving_default: set the spec's signature to one of them")
    with pytest.raises(NotFound, match="no signature '__saved_model_init_op'"):
        from_saved_model(write_saved_model(tmp_path / "m"), "__saved_model_init_op")


def test_directory_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such directory"):
        from_saved_model(tmp_path / "absent", "serving_default")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFound, match="neither saved_model.pb nor a numbered version"):
        from_saved_model(tmp_path / "empty", "serving_default")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "saved_model.pb").write_bytes(b"\x0a\xff\xffnot a SavedModel")
    with pytest.raises(InvalidArgument, match="is not a SavedModel"):
        from_saved_model(tmp_path / "bad", "serving_default")


def test_metadata_without_a_signature_map() -> None:
    resp = get_model_metadata_pb2.GetModelMetadataResponse()
    with pytest.raises(RankerError, match="without 'signature_def'"):
        from_metadata_response(resp, "serving_default")
    resp.metadata["signature_def"].type_url = "type.googleapis.com/acme.Other"
    with pytest.raises(RankerError, match="acme.Other, not a tensorflow.serving.SignatureDefMap"):
        from_metadata_response(resp, "serving_default")


def test_dtype_names() -> None:
    assert [dtype_name(c) for c in (1, 2, 3, 9, 10, 7, 19, 21, 99)] == [
        "float32", "float64", "int32", "int64", "bool", "string", "float16", "DT_VARIANT",
        "DT_<99>"]


def test_metadata_request_carries_the_version_or_label() -> None:
    req = metadata_request(ModelRef("m", version=3))
    assert (req.model_spec.name, req.model_spec.version.value, list(req.metadata_field)) == (
        "m", 3, ["signature_def"])
    req = metadata_request(ModelRef("m", label="stable"))
    assert req.model_spec.WhichOneof("version_choice") == "version_label"
    assert not metadata_request(ModelRef("m")).model_spec.HasField("version")
