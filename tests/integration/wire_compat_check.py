"""Run in its own process by test_wire_compat.py: it imports TensorFlow's official messages
beside rankserve's slim ones and checks that each parses the other's bytes to the same fields
and re-serialises them to the same bytes, that the slim fields carry the official names, numbers
and types, and that TF Serving model config texts parse to the same bytes with both. The
official services are read in a child process (``--official-services``): their descriptors
cannot share a pool with the slim services, which keep the same wire names. Prints one line per
check; exits non-zero on failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from google.protobuf import any_pb2, descriptor, text_format, wrappers_pb2
from google.protobuf.unknown_fields import UnknownFieldSet
from tensorflow.core.example import example_pb2 as tf_example_pb2
from tensorflow.core.example import feature_pb2 as tf_feature_pb2
from tensorflow.core.framework import tensor_pb2 as tf_tensor_pb2
from tensorflow.core.framework import types_pb2 as tf_types_pb2
from tensorflow.core.protobuf import meta_graph_pb2 as tf_meta_graph_pb2
from tensorflow.core.protobuf import saved_model_pb2 as tf_saved_model_pb2
from tensorflow_serving.apis import classification_pb2 as tf_classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2 as tf_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2 as tf_status_pb2
from tensorflow_serving.apis import inference_pb2 as tf_inference_pb2
from tensorflow_serving.apis import model_management_pb2 as tf_management_pb2
from tensorflow_serving.apis import predict_pb2 as tf_predict_pb2
from tensorflow_serving.apis import prediction_log_pb2 as tf_log_pb2
from tensorflow_serving.apis import regression_pb2 as tf_regression_pb2
from tensorflow_serving.config import model_server_config_pb2 as tf_config_pb2

# Message modules only: the slim service modules are imported in main(), so that the child
# that reads the official services never loads them.
from rankserve.tfserving.v1 import (
    example_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    meta_graph_pb2,
    model_management_pb2,
    model_server_config_pb2,
    predict_pb2,
    prediction_log_pb2,
    saved_model_pb2,
    signature_def_map_pb2,
    tensor_pb2,
)

FAILED: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(("ok    " if ok else "FAIL  ") + name + (f": {detail}" if detail and not ok else ""))
    if not ok:
        FAILED.append(name)


def roundtrip(name: str, src, dst_cls, unknown: bool = False) -> object:
    """src -> bytes -> dst_cls -> bytes: the bytes must be identical (deterministic order).

    ``unknown``: the destination declares none of the fields set (the minimal slim messages of
    methods the server does not provide), so they must come back as unknown fields.
    """
    raw = src.SerializeToString(deterministic=True)
    dst = dst_cls()
    dst.ParseFromString(raw)
    back = dst.SerializeToString(deterministic=True)
    check(f"{name}: same bytes after {type(src).__name__} -> {dst_cls.__name__}", raw == back)
    if unknown:
        check(f"{name}: kept as unknown fields", len(UnknownFieldSet(dst)) > 0)
    else:
        check(f"{name}: no unknown fields", len(UnknownFieldSet(dst)) == 0)
    return dst


def _type_name(field: descriptor.FieldDescriptor) -> str:
    """The message or enum type of a field without its package (the packages differ)."""
    kind = field.message_type or field.enum_type
    if kind is None:
        return ""
    return kind.full_name.removeprefix(kind.file.package + ".")


def _shape(field: descriptor.FieldDescriptor) -> tuple:
    oneof = field.containing_oneof.name if field.containing_oneof else ""
    kind = field.type
    if kind == field.TYPE_ENUM and field.enum_type.full_name == "tensorflow.error.Code":
        kind = field.TYPE_INT32  # StatusProto.error_code: the same varint, read as a number
    return (field.number, kind, field.is_repeated, oneof,
            "" if kind == field.TYPE_INT32 else _type_name(field))


def same_fields(name: str, slim, official, complete: bool, seen: set | None = None) -> None:
    """Every slim field has the official name, number, type, cardinality and oneof; with
    ``complete`` the slim message declares every official field too, down its message fields."""
    seen = set() if seen is None else seen
    if slim.full_name in seen:
        return
    seen.add(slim.full_name)
    check(f"{name}: message name", slim.name == official.name, f"{slim.name} != {official.name}")
    for field in slim.fields:
        theirs = official.fields_by_name.get(field.name)
        check(f"{name}.{field.name}: as official", theirs is not None
              and _shape(field) == _shape(theirs),
              f"{_shape(field)} != {theirs and _shape(theirs)}")
    if not complete:
        return
    missing = sorted(set(official.fields_by_name) - set(slim.fields_by_name))
    check(f"{name}: declares every official field", not missing, str(missing))
    for field in slim.fields:
        theirs = official.fields_by_name.get(field.name)
        if field.message_type is not None and theirs is not None and theirs.message_type:
            if field.message_type.GetOptions().map_entry:
                continue
            if field.message_type.full_name == "google.protobuf.Any":
                continue
            same_fields(f"{name}.{field.name}", field.message_type, theirs.message_type,
                        complete, seen)
    for enum in slim.enum_types:
        theirs = official.enum_types_by_name.get(enum.name)
        check(f"{name}.{enum.name}: enum values as official", theirs is not None and
              [(v.name, v.number) for v in enum.values] ==
              [(v.name, v.number) for v in theirs.values])


def official_services() -> dict:
    """Run in the child: TF Serving's services as {service: {method: [in, out, streams]}}."""
    from tensorflow_serving.apis import model_service_pb2 as tf_model_service_pb2
    from tensorflow_serving.apis import prediction_service_pb2 as tf_prediction_service_pb2

    return {
        service.full_name: describe_service(service)
        for module in (tf_prediction_service_pb2, tf_model_service_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
    }


def describe_service(service: descriptor.ServiceDescriptor) -> dict:
    return {
        m.name: [m.input_type.name, m.output_type.name, m.client_streaming, m.server_streaming]
        for m in service.methods
    }


def official_tensor(arr: np.ndarray) -> tf_tensor_pb2.TensorProto:
    t = tf_tensor_pb2.TensorProto(dtype=tf_types_pb2.DT_FLOAT, tensor_content=arr.tobytes())
    for d in arr.shape:
        t.tensor_shape.dim.add(size=d)
    return t


def slim_tensor(arr: np.ndarray) -> tensor_pb2.TensorProto:
    t = tensor_pb2.TensorProto(dtype=tensor_pb2.DT_FLOAT, tensor_content=arr.tobytes())
    for d in arr.shape:
        t.tensor_shape.dim.add(size=d)
    return t


def check_tensor_fields() -> None:
    """The unsigned typed fields and every DataType the model server converts."""
    for dtype, field, values in (("DT_UINT32", "uint32_val", [0, 2**32 - 1]),
                                 ("DT_UINT64", "uint64_val", [0, 2**64 - 1])):
        off = tf_tensor_pb2.TensorProto(dtype=tf_types_pb2.DataType.Value(dtype))
        off.tensor_shape.dim.add(size=2)
        getattr(off, field).extend(values)
        slim = roundtrip(f"TensorProto {field} official->slim", off, tensor_pb2.TensorProto)
        check(f"TensorProto {field} values", list(getattr(slim, field)) == values)
        roundtrip(f"TensorProto {field} slim->official", slim, tf_tensor_pb2.TensorProto)
    same_fields("TensorProto", tensor_pb2.TensorProto.DESCRIPTOR,
                tf_tensor_pb2.TensorProto.DESCRIPTOR, complete=False)
    same_fields("TensorShapeProto", tensor_pb2.TensorShapeProto.DESCRIPTOR,
                tf_tensor_pb2.TensorProto.DESCRIPTOR.fields_by_name["tensor_shape"].message_type,
                complete=True)
    for value in tensor_pb2.DataType.DESCRIPTOR.values:
        check(f"enum {value.name}", tf_types_pb2.DataType.Value(value.name) == value.number)


def check_metadata() -> None:
    """GetModelMetadata both ways, with a SignatureDefMap packed in the Any as the server does."""
    req = tf_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "ranker"
    req.model_spec.version.value = 4
    slim = roundtrip("GetModelMetadataRequest official->slim", req,
                     get_model_metadata_pb2.GetModelMetadataRequest)
    check("GetModelMetadataRequest fields",
          (slim.model_spec.version.value, list(slim.metadata_field)) == (4, ["signature_def"]))
    roundtrip("GetModelMetadataRequest slim->official", slim,
              tf_metadata_pb2.GetModelMetadataRequest)

    sig_map = tf_metadata_pb2.SignatureDefMap()
    sig = sig_map.signature_def["serving_default"]
    sig.method_name = "tensorflow/serving/predict"
    sig.inputs["candidates"].name = "serving_default_candidates:0"
    sig.inputs["candidates"].dtype = tf_types_pb2.DT_FLOAT
    sig.inputs["candidates"].tensor_shape.dim.add(size=-1)
    sig.outputs["scores"].name = "StatefulPartitionedCall:0"
    resp = tf_metadata_pb2.GetModelMetadataResponse()
    resp.model_spec.name = "ranker"
    resp.model_spec.version.value = 4
    resp.metadata["signature_def"].Pack(sig_map)
    slim_resp = roundtrip("GetModelMetadataResponse official->slim", resp,
                          get_model_metadata_pb2.GetModelMetadataResponse)
    packed = slim_resp.metadata["signature_def"]
    check("GetModelMetadataResponse Any", packed.type_url ==
          "type.googleapis.com/tensorflow.serving.SignatureDefMap"
          and packed.value == sig_map.SerializeToString())
    # What the servicer builds: the runtime's serialized SignatureDefMap in an Any.
    ours = get_model_metadata_pb2.GetModelMetadataResponse()
    ours.model_spec.name = "ranker"
    ours.model_spec.version.value = 4
    ours.metadata["signature_def"].CopyFrom(any_pb2.Any(
        type_url="type.googleapis.com/tensorflow.serving.SignatureDefMap",
        value=sig_map.SerializeToString()))
    off = roundtrip("GetModelMetadataResponse slim->official", ours,
                    tf_metadata_pb2.GetModelMetadataResponse)
    unpacked = tf_metadata_pb2.SignatureDefMap()
    check("GetModelMetadataResponse unpacks with the official messages",
          off.metadata["signature_def"].Unpack(unpacked) and unpacked == sig_map)
    for name in ("GetModelMetadataRequest", "GetModelMetadataResponse"):
        same_fields(name, getattr(get_model_metadata_pb2, name).DESCRIPTOR,
                    getattr(tf_metadata_pb2, name).DESCRIPTOR, complete=True)


def declares_every_field(name: str, slim, official) -> None:
    missing = sorted(set(official.fields_by_name) - set(slim.fields_by_name))
    check(f"{name}: declares every official field", not missing, str(missing))


def check_examples() -> None:
    """tf.Example both ways, every kind of feature; packing as TensorFlow declares it."""
    ex = tf_example_pb2.Example()
    feature = ex.features.feature
    feature["floats"].float_list.value.extend([1.5, -2.25, 3e-8])
    feature["ints"].int64_list.value.extend([0, -1, 1 << 62, -(1 << 63)])
    feature["strings"].bytes_list.value.extend([b"red bag", b"", "\u00e9t\u00e9".encode()])
    feature["empty_floats"].float_list.SetInParent()
    feature["empty_ints"].int64_list.SetInParent()
    feature["unset"].SetInParent()
    slim = roundtrip("Example official->slim", ex, example_pb2.Example)
    check("Example official->slim: values",
          (list(slim.features.feature["ints"].int64_list.value),
           list(slim.features.feature["strings"].bytes_list.value),
           slim.features.feature["empty_ints"].WhichOneof("kind"),
           slim.features.feature["unset"].WhichOneof("kind"))
          == ([0, -1, 1 << 62, -(1 << 63)], [b"red bag", b"", "\u00e9t\u00e9".encode()],
              "int64_list", None))
    roundtrip("Example slim->official", slim, tf_example_pb2.Example)
    ours = example_pb2.Example()
    ours.features.feature["x"].float_list.value.extend([0.5] * 300)
    off = roundtrip("Example as written slim->official", ours, tf_example_pb2.Example)
    check("Example as written: official values",
          list(off.features.feature["x"].float_list.value) == [0.5] * 300)
    for name in ("Features", "Feature", "BytesList", "FloatList", "Int64List"):
        official = getattr(tf_feature_pb2, name).DESCRIPTOR
        same_fields(name, getattr(example_pb2, name).DESCRIPTOR, official, complete=True)
    same_fields("Example", example_pb2.Example.DESCRIPTOR, tf_example_pb2.Example.DESCRIPTOR,
                complete=True)
    for name in ("BytesList", "FloatList", "Int64List"):
        ours_field = getattr(example_pb2, name).DESCRIPTOR.fields_by_name["value"]
        theirs = getattr(tf_feature_pb2, name).DESCRIPTOR.fields_by_name["value"]
        check(f"{name}.value: packed as official", ours_field.is_packed == theirs.is_packed
              and ours_field.GetOptions() == theirs.GetOptions(),
              f"{ours_field.GetOptions()} != {theirs.GetOptions()}")


def official_signature_map() -> tf_metadata_pb2.SignatureDefMap:
    """Two signatures with dense inputs of every spec dtype, unknown dims and rank, defaults."""
    sig_map = tf_metadata_pb2.SignatureDefMap()
    sig = sig_map.signature_def["serving_default"]
    sig.method_name = "tensorflow/serving/predict"
    for name, dtype, dims in (("candidates", "DT_FLOAT", [-1, 3]), ("ids", "DT_INT64", [-1]),
                              ("query", "DT_STRING", [-1]), ("flag", "DT_BOOL", [-1]),
                              ("context", "DT_DOUBLE", [1, 2]), ("n", "DT_INT32", [])):
        info = sig.inputs[name]
        info.name = f"serving_default_{name}:0"
        info.dtype = tf_types_pb2.DataType.Value(dtype)
        for d in dims:
            info.tensor_shape.dim.add(size=d)
        if not dims:
            info.tensor_shape.SetInParent()
    sig.outputs["scores"].name = "StatefulPartitionedCall:0"
    sig.outputs["scores"].dtype = tf_types_pb2.DT_FLOAT
    sig.outputs["scores"].tensor_shape.unknown_rank = True
    sig.defaults["n"].dtype = tf_types_pb2.DT_INT32
    sig.defaults["n"].int_val.append(5)
    parse = sig_map.signature_def["parse"]
    parse.method_name = "tensorflow/serving/predict"
    parse.inputs["examples"].name = "parse_examples:0"
    parse.inputs["examples"].dtype = tf_types_pb2.DT_STRING
    parse.inputs["examples"].tensor_shape.dim.add(size=-1, name="batch")
    parse.outputs["scores"].name = "out:0"
    parse.outputs["scores"].dtype = tf_types_pb2.DT_FLOAT
    return sig_map


def check_signatures() -> None:
    """SignatureDefMap, TensorInfo (every encoding) and a real SavedModel's signatures."""
    sig_map = official_signature_map()
    slim = roundtrip("SignatureDefMap official->slim", sig_map,
                     signature_def_map_pb2.SignatureDefMap)
    got = slim.signature_def["serving_default"]
    check("SignatureDefMap official->slim: fields",
          (got.inputs["candidates"].WhichOneof("encoding"), got.inputs["ids"].dtype,
           [d.size for d in got.inputs["candidates"].tensor_shape.dim],
           got.outputs["scores"].tensor_shape.unknown_rank, list(got.defaults["n"].int_val),
           slim.signature_def["parse"].inputs["examples"].tensor_shape.dim[0].name)
          == ("name", tensor_pb2.DT_INT64, [-1, 3], True, [5], "batch"))
    roundtrip("SignatureDefMap slim->official", slim, tf_metadata_pb2.SignatureDefMap)

    # Sparse and composite tensors: the slim TypeSpecProto reads only the class name; the rest
    # of it is kept as unknown fields, so the official message comes back equal.
    off = tf_meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    sparse = off.inputs["sparse"].coo_sparse
    sparse.values_tensor_name = "v:0"
    sparse.indices_tensor_name = "i:0"
    sparse.dense_shape_tensor_name = "s:0"
    ragged = off.inputs["ragged"].composite_tensor
    ragged.type_spec.type_spec_class = ragged.type_spec.RAGGED_TENSOR_SPEC
    ragged.type_spec.type_spec_class_name = "RaggedTensorSpec"
    ragged.type_spec.num_flat_components = 2
    ragged.type_spec.type_state.tuple_value.values.add().int64_value = 1
    ragged.components.add(name="c:0", dtype=tf_types_pb2.DT_FLOAT).tensor_shape.dim.add(size=-1)
    ragged.components.add(name="c:1", dtype=tf_types_pb2.DT_INT64)
    raw = off.SerializeToString(deterministic=True)
    slim_sig = meta_graph_pb2.SignatureDef.FromString(raw)
    check("TensorInfo coo_sparse official->slim",
          slim_sig.inputs["sparse"].WhichOneof("encoding") == "coo_sparse"
          and slim_sig.inputs["sparse"].coo_sparse.dense_shape_tensor_name == "s:0")
    composite = slim_sig.inputs["ragged"].composite_tensor
    check("TensorInfo composite_tensor official->slim",
          slim_sig.inputs["ragged"].WhichOneof("encoding") == "composite_tensor"
          and composite.type_spec.type_spec_class_name == "RaggedTensorSpec"
          and [(c.name, c.dtype) for c in composite.components]
          == [("c:0", tensor_pb2.DT_FLOAT), ("c:1", tensor_pb2.DT_INT64)])
    check("TensorInfo composite_tensor slim->official: equal message",
          tf_meta_graph_pb2.SignatureDef.FromString(slim_sig.SerializeToString()) == off)

    info = meta_graph_pb2.TensorInfo.DESCRIPTOR
    tf_info = tf_meta_graph_pb2.TensorInfo.DESCRIPTOR
    same_fields("TensorInfo", info, tf_info, complete=False)
    declares_every_field("TensorInfo", info, tf_info)
    same_fields("TensorInfo.CooSparse", info.nested_types_by_name["CooSparse"],
                tf_info.nested_types_by_name["CooSparse"], complete=True)
    same_fields("TensorInfo.CompositeTensor", info.nested_types_by_name["CompositeTensor"],
                tf_info.nested_types_by_name["CompositeTensor"], complete=False)
    declares_every_field("TensorInfo.CompositeTensor", info.nested_types_by_name[
        "CompositeTensor"], tf_info.nested_types_by_name["CompositeTensor"])
    same_fields("TypeSpecProto", meta_graph_pb2.TypeSpecProto.DESCRIPTOR,
                tf_info.nested_types_by_name["CompositeTensor"].fields_by_name["type_spec"]
                .message_type, complete=False)
    same_fields("SignatureDef", meta_graph_pb2.SignatureDef.DESCRIPTOR,
                tf_meta_graph_pb2.SignatureDef.DESCRIPTOR, complete=True)
    same_fields("SignatureDefMap", signature_def_map_pb2.SignatureDefMap.DESCRIPTOR,
                tf_metadata_pb2.SignatureDefMap.DESCRIPTOR, complete=True)
    same_fields("SavedModel", saved_model_pb2.SavedModel.DESCRIPTOR,
                tf_saved_model_pb2.SavedModel.DESCRIPTOR, complete=False)
    same_fields("MetaGraphDef", meta_graph_pb2.MetaGraphDef.DESCRIPTOR,
                tf_meta_graph_pb2.MetaGraphDef.DESCRIPTOR, complete=False)
    same_fields("MetaGraphDef.MetaInfoDef",
                meta_graph_pb2.MetaGraphDef.DESCRIPTOR.nested_types_by_name["MetaInfoDef"],
                tf_meta_graph_pb2.MetaGraphDef.MetaInfoDef.DESCRIPTOR, complete=False)
    check_saved_model()


def check_saved_model() -> None:
    """A SavedModel TensorFlow writes: the slim messages read its tags and every signature to
    the same bytes as the official ones (a ragged output included)."""
    import tempfile

    import tensorflow as tf

    class Model(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="dense"),
                                      tf.TensorSpec([None], tf.string, name="query")])
        def serve(self, dense, query):
            ragged = tf.RaggedTensor.from_row_lengths(tf.reshape(dense, [-1]),
                                                      tf.fill([tf.shape(dense)[0]], 3))
            return {"scores": tf.reduce_sum(dense, 1) + tf.cast(tf.strings.length(query),
                                                                  tf.float32),
                    "ragged": ragged}

    model = Model()
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(model, tmp, signatures={"serving_default": model.serve})
        data = (Path(tmp) / "saved_model.pb").read_bytes()
    official = tf_saved_model_pb2.SavedModel.FromString(data)
    slim = saved_model_pb2.SavedModel.FromString(data)
    check("SavedModel: same MetaGraphs and tags",
          [list(m.meta_info_def.tags) for m in slim.meta_graphs]
          == [list(m.meta_info_def.tags) for m in official.meta_graphs] == [["serve"]])
    theirs = official.meta_graphs[0].signature_def
    ours = slim.meta_graphs[0].signature_def
    check("SavedModel: same signature names", sorted(ours) == sorted(theirs), str(sorted(ours)))
    check("SavedModel: has a composite output",
          ours["serving_default"].outputs["ragged"].WhichOneof("encoding") == "composite_tensor")
    for key in theirs:
        back = tf_meta_graph_pb2.SignatureDef.FromString(ours[key].SerializeToString())
        check(f"SavedModel signature '{key}': slim->official equal", back == theirs[key])
    dense_only = [k for k, v in theirs.items() if not any(
        t.WhichOneof("encoding") != "name" for t in [*v.inputs.values(), *v.outputs.values()])]
    for key in dense_only:
        check(f"SavedModel signature '{key}': same bytes",
              ours[key].SerializeToString(deterministic=True)
              == theirs[key].SerializeToString(deterministic=True))


def check_unprovided_methods() -> None:
    """The minimal messages of UNIMPLEMENTED methods keep what a client sends, and the names."""
    classify = tf_classification_pb2.ClassificationRequest()
    classify.model_spec.name = "ranker"
    classify.input.example_list.examples.add()
    regress = tf_regression_pb2.RegressionRequest()
    regress.model_spec.name = "ranker"
    multi = tf_inference_pb2.MultiInferenceRequest()
    multi.tasks.add().model_spec.name = "ranker"
    reload = tf_management_pb2.ReloadConfigRequest(metric_names=["x"])
    reload.config.model_config_list.config.add(name="ranker", base_path="/models/ranker")
    pairs = [
        (classify, inference_pb2.ClassificationRequest),
        (regress, inference_pb2.RegressionRequest),
        (multi, inference_pb2.MultiInferenceRequest),
        (reload, model_management_pb2.ReloadConfigRequest),
    ]
    for official, slim_cls in pairs:
        name = slim_cls.DESCRIPTOR.name
        slim = roundtrip(f"{name} official->slim", official, slim_cls, unknown=True)
        roundtrip(f"{name} slim->official", slim, type(official))
    for slim_module, official_module, names in (
        (inference_pb2, tf_classification_pb2, ("ClassificationRequest", "ClassificationResponse")),
        (inference_pb2, tf_regression_pb2, ("RegressionRequest", "RegressionResponse")),
        (inference_pb2, tf_inference_pb2, ("MultiInferenceRequest", "MultiInferenceResponse")),
        (model_management_pb2, tf_management_pb2, ("ReloadConfigRequest", "ReloadConfigResponse")),
    ):
        for name in names:
            check(f"message {name} exists in both",
                  name in slim_module.DESCRIPTOR.message_types_by_name
                  and name in official_module.DESCRIPTOR.message_types_by_name)


def check_prediction_log(cands: np.ndarray) -> None:
    """Warm-up records: predict_log both ways, every other log type told apart."""
    log = tf_log_pb2.PredictionLog()
    request = log.predict_log.request
    request.model_spec.name = "ranker"
    request.model_spec.signature_name = "serving_default"
    request.inputs["candidates"].CopyFrom(official_tensor(cands))
    log.predict_log.response.outputs["scores"].float_val.extend([0.5, 0.25])
    slim = roundtrip("PredictionLog official->slim", log, prediction_log_pb2.PredictionLog)
    check("PredictionLog log_type", slim.WhichOneof("log_type") == "predict_log")
    check("PredictionLog request", slim.predict_log.request.inputs["candidates"].tensor_content
          == cands.tobytes())
    roundtrip("PredictionLog slim->official", slim, tf_log_pb2.PredictionLog)

    ours = prediction_log_pb2.PredictionLog()
    ours.predict_log.request.model_spec.name = "ranker"
    ours.predict_log.request.inputs["candidates"].CopyFrom(slim_tensor(cands))
    off = roundtrip("PredictionLog as written slim->official", ours, tf_log_pb2.PredictionLog)
    check("PredictionLog as written: official log_type",
          off.WhichOneof("log_type") == "predict_log")

    with_metadata = tf_log_pb2.PredictionLog()
    with_metadata.CopyFrom(log)
    with_metadata.log_metadata.model_spec.name = "ranker"
    with_metadata.log_metadata.timestamp_secs = 1_700_000_000
    raw = with_metadata.SerializeToString(deterministic=True)
    kept = prediction_log_pb2.PredictionLog.FromString(raw)
    check("PredictionLog log_metadata kept", kept.SerializeToString(deterministic=True) == raw)

    for field in tf_log_pb2.PredictionLog.DESCRIPTOR.oneofs_by_name["log_type"].fields:
        if field.name == "predict_log":
            continue
        other = tf_log_pb2.PredictionLog()
        getattr(other, field.name).SetInParent()
        inner = getattr(other, field.name)
        request = inner.DESCRIPTOR.fields_by_name.get("request")
        if request is not None and request.is_repeated:
            inner.request.add()
        elif request is not None:
            inner.request.SetInParent()
        raw = other.SerializeToString(deterministic=True)
        parsed = prediction_log_pb2.PredictionLog.FromString(raw)
        check(f"PredictionLog {field.name} told apart",
              parsed.WhichOneof("log_type") == field.name
              and parsed.SerializeToString(deterministic=True) == raw)
    official = tf_log_pb2.PredictionLog.DESCRIPTOR
    same_fields("PredictionLog", prediction_log_pb2.PredictionLog.DESCRIPTOR, official,
                complete=False)
    check("PredictionLog declares every field", set(official.fields_by_name)
          == set(prediction_log_pb2.PredictionLog.DESCRIPTOR.fields_by_name))
    same_fields("PredictLog", prediction_log_pb2.PredictLog.DESCRIPTOR,
                tf_log_pb2.PredictLog.DESCRIPTOR, complete=False)
    check("PredictLog declares every field", set(tf_log_pb2.PredictLog.DESCRIPTOR.fields_by_name)
          == set(prediction_log_pb2.PredictLog.DESCRIPTOR.fields_by_name))


# TF Serving model config files: the project's own (demo, chart) and every field TF Serving has.
CONFIG_TEXTS = {
    "demo": """
model_config_list {
  config {
    name: "ranker"
    base_path: "/models/ranker"
    model_platform: "tensorflow"
    model_version_policy { latest { num_versions: 2 } }
    version_labels { key: "stable" value: 1 }
  }
}
""",
    "chart, every policy": """
# rendered by deploy/helm: one config per model
model_config_list {
  config {
    name: "ranker"
    base_path: "/models/ranker"
    model_platform: "tensorflow"
    model_version_policy {
      specific {
        versions: 1
        versions: 3
      }
    }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 3 }
  }
  config {
    name: "towers"
    base_path: "/models/towers"
    model_platform: "tensorflow"
    model_version_policy { all { } }
  }
  config { name: "bare" base_path: "relative/bare" }
}
""",
    "every field": r"""
model_config_list: {
  config: {
    name: "ranker",
    base_path: "/models/ranker",
    model_type: TENSORFLOW,
    model_platform: "tensorflow",
    model_version_policy: { latest: { num_versions: 3 } },
    version_labels: [{ key: "stable", value: 2 }, { key: "canary", value: 3 }],
    logging_config: {
      log_collector_config: { type: "file", filename_prefix: "/logs/ranker" }
      sampling_config: {
        sampling_rate: 0.01
        attributes: 3
        per_task_sampling_configs: { dc: "eu", task_index: 2, sampling_rate: 0.5 }
        per_task_sampling_configs: { dc: "us", task_index: 0 }
      }
      custom_logging_config: { type_url: "type.googleapis.com/acme.Log" value: "\001\002" }
    }
  }
}
""",
    "custom model config": r"""
custom_model_config { type_url: "type.googleapis.com/acme.Models" value: "\n\003abc" }
""",
}


def check_config_text() -> None:
    """Text format goes by field name: each file parses to the same bytes with both."""
    for name, text in CONFIG_TEXTS.items():
        official = text_format.Parse(text, tf_config_pb2.ModelServerConfig())
        try:
            slim = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
        except text_format.ParseError as exc:
            check(f"model config text '{name}': parses with the slim message", False, str(exc))
            continue
        raw = official.SerializeToString(deterministic=True)
        check(f"model config text '{name}': same bytes",
              raw == slim.SerializeToString(deterministic=True))
        check(f"model config text '{name}': not empty", len(raw) > 10)
    misspelt = 'model_config_list { config { name: "m" base_pth: "/m" } }'
    for label, cls in (("official", tf_config_pb2.ModelServerConfig),
                       ("slim", model_server_config_pb2.ModelServerConfig)):
        try:
            text_format.Parse(misspelt, cls())
        except text_format.ParseError:
            check(f"model config text with a misspelt field is refused ({label})", True)
        else:
            check(f"model config text with a misspelt field is refused ({label})", False)
    same_fields("ModelServerConfig", model_server_config_pb2.ModelServerConfig.DESCRIPTOR,
                tf_config_pb2.ModelServerConfig.DESCRIPTOR, complete=True)
    check("enum ModelType", [(v.name, v.number) for v in model_server_config_pb2.ModelType.
                             DESCRIPTOR.values] ==
          [(v.name, v.number) for v in tf_config_pb2.ModelType.DESCRIPTOR.values])


def check_services() -> None:
    """The slim services are TF Serving's: same names, methods, message names and streaming."""
    from rankserve.tfserving.v1 import model_service_pb2, prediction_service_pb2

    ours = {
        service.full_name: describe_service(service)
        for module in (prediction_service_pb2, model_service_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
    }
    child = subprocess.run([sys.executable, __file__, "--official-services"],
                           capture_output=True, text=True, timeout=150)
    theirs = json.loads(child.stdout.strip().splitlines()[-1]) if child.returncode == 0 else {}
    check("official services read in a child process", child.returncode == 0, child.stderr[-500:])
    check("services, methods and message names as TF Serving's", ours == theirs,
          f"{ours} != {theirs}")
    predict = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]
    check("PredictionService wire name",
          predict.full_name == "tensorflow.serving.PredictionService")
    check("Predict takes the slim request",
          predict.methods_by_name["Predict"].input_type.full_name
          == "rankserve.tfserving.v1.PredictRequest")
    status = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]
    check("ModelService wire name", status.full_name == "tensorflow.serving.ModelService")
    check("ModelService has GetModelStatus", "GetModelStatus" in status.methods_by_name)


def main() -> int:
    rng = np.random.default_rng(7)
    context = rng.standard_normal((1, 115), dtype=np.float32)
    cands = rng.standard_normal((25, 300), dtype=np.float32)

    # official -> slim: a PredictRequest as a TF Serving client builds it.
    req = tf_predict_pb2.PredictRequest()
    req.model_spec.name = "ranker"
    req.model_spec.version.CopyFrom(wrappers_pb2.Int64Value(value=3))
    req.model_spec.signature_name = "serving_default"
    req.inputs["context"].CopyFrom(official_tensor(context))
    req.inputs["candidates"].CopyFrom(official_tensor(cands))
    req.output_filter.append("scores")
    slim = roundtrip("PredictRequest official->slim", req, predict_pb2.PredictRequest)
    check("PredictRequest official->slim: model spec",
          (slim.model_spec.name, slim.model_spec.version.value, slim.model_spec.signature_name,
           slim.model_spec.WhichOneof("version_choice")) ==
          ("ranker", 3, "serving_default", "version"))
    got = np.frombuffer(slim.inputs["candidates"].tensor_content, np.float32).reshape(
        [d.size for d in slim.inputs["candidates"].tensor_shape.dim])
    check("PredictRequest official->slim: candidates tensor", np.array_equal(got, cands))
    check("PredictRequest official->slim: dtype",
          slim.inputs["context"].dtype == tensor_pb2.DT_FLOAT)

    # slim -> official: what the ranker sends, with a version label.
    sreq = predict_pb2.PredictRequest()
    sreq.model_spec.name = "ranker"
    sreq.model_spec.version_label = "canary"
    sreq.inputs["context"].CopyFrom(slim_tensor(context))
    sreq.inputs["candidates"].CopyFrom(slim_tensor(cands))
    off = roundtrip("PredictRequest slim->official", sreq, tf_predict_pb2.PredictRequest)
    check("PredictRequest slim->official: label",
          off.model_spec.WhichOneof("version_choice") == "version_label"
          and off.model_spec.version_label == "canary")
    import tensorflow as tf  # the official decoder, to be sure TF itself reads our tensors

    check("PredictRequest slim->official: tf.make_ndarray reads candidates",
          np.array_equal(tf.make_ndarray(off.inputs["candidates"]), cands))
    check("serialized size of a 25x300 request", len(sreq.SerializeToString()) > 30_000)

    # PredictResponse both ways, with the typed float_val encoding TF Serving may answer with.
    resp = tf_predict_pb2.PredictResponse()
    resp.model_spec.name = "ranker"
    resp.model_spec.version.value = 3
    resp.model_spec.signature_name = "serving_default"
    scores = rng.standard_normal(25).astype(np.float32)
    out = resp.outputs["scores"]
    out.dtype = tf_types_pb2.DT_FLOAT
    out.tensor_shape.dim.add(size=25)
    out.float_val.extend(scores.tolist())
    sresp = roundtrip("PredictResponse official->slim", resp, predict_pb2.PredictResponse)
    check("PredictResponse official->slim: float_val",
          np.array_equal(np.array(sresp.outputs["scores"].float_val, np.float32), scores))
    check("PredictResponse official->slim: version", sresp.model_spec.version.value == 3)
    roundtrip("PredictResponse slim->official", sresp, tf_predict_pb2.PredictResponse)

    # Every typed value field of TensorProto keeps its number.
    full = tf_tensor_pb2.TensorProto(dtype=tf_types_pb2.DT_HALF, version_number=1)
    full.tensor_shape.unknown_rank = True
    full.tensor_shape.dim.add(size=-1, name="batch")
    full.float_val.extend([1.5])
    full.double_val.extend([2.5])
    full.int_val.extend([3])
    full.string_val.extend([b"x"])
    full.int64_val.extend([1 << 40])
    full.bool_val.extend([True])
    full.half_val.extend([15360])
    s_full = roundtrip("TensorProto every field official->slim", full, tensor_pb2.TensorProto)
    check("TensorProto fields", (s_full.dtype, s_full.int64_val[0], s_full.half_val[0],
          s_full.tensor_shape.dim[0].name) == (tensor_pb2.DT_HALF, 1 << 40, 15360, "batch"))
    roundtrip("TensorProto every field slim->official", s_full, tf_tensor_pb2.TensorProto)
    dtypes = ("DT_FLOAT", "DT_DOUBLE", "DT_INT32", "DT_STRING", "DT_INT64", "DT_BOOL", "DT_HALF")
    for name in dtypes:
        check(f"enum {name}", tensor_pb2.DataType.Value(name) == tf_types_pb2.DataType.Value(name))

    # GetModelStatus both ways.
    st = tf_status_pb2.GetModelStatusResponse()
    v = st.model_version_status.add(version=2, state=tf_status_pb2.ModelVersionStatus.AVAILABLE)
    v.status.error_code = 0
    bad = st.model_version_status.add(version=3, state=tf_status_pb2.ModelVersionStatus.END)
    bad.status.error_code = 3
    bad.status.error_message = "could not load"
    s_st = roundtrip("GetModelStatusResponse official->slim", st,
                     get_model_status_pb2.GetModelStatusResponse)
    check("GetModelStatusResponse fields",
          [(x.version, x.state, x.status.error_code) for x in s_st.model_version_status]
          == [(2, 30, 0), (3, 50, 3)])
    roundtrip("GetModelStatusResponse slim->official", s_st, tf_status_pb2.GetModelStatusResponse)
    sreq2 = get_model_status_pb2.GetModelStatusRequest()
    sreq2.model_spec.name = "ranker"
    sreq2.model_spec.version.value = 2
    roundtrip("GetModelStatusRequest slim->official", sreq2, tf_status_pb2.GetModelStatusRequest)

    for name in ("GetModelStatusRequest", "GetModelStatusResponse"):
        same_fields(name, getattr(get_model_status_pb2, name).DESCRIPTOR,
                    getattr(tf_status_pb2, name).DESCRIPTOR, complete=True)
    # The ranker's PredictRequest leaves out the options it never sets (kept as unknown fields).
    for name, complete in (("PredictRequest", False), ("PredictResponse", True)):
        same_fields(name, getattr(predict_pb2, name).DESCRIPTOR,
                    getattr(tf_predict_pb2, name).DESCRIPTOR, complete=complete)

    check_tensor_fields()
    check_metadata()
    check_examples()
    check_signatures()
    check_unprovided_methods()
    check_prediction_log(cands)
    check_config_text()
    # The services keep TF Serving's wire names, so the paths on the wire are TF Serving's.
    check_services()

    print(f"{len(FAILED)} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--official-services"]:
        print(json.dumps(official_services()))
        sys.exit(0)
    sys.exit(main())
