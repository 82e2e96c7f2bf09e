"""Run in its own process by test_wire_compat.py: it imports TensorFlow's official messages
beside rankserve's slim ones and checks that each parses the other's bytes to the same fields
and re-serialises them to the same bytes. Prints one line per check; exits non-zero on failure.
"""

from __future__ import annotations

import sys

import numpy as np
from google.protobuf import wrappers_pb2
from google.protobuf.unknown_fields import UnknownFieldSet
from tensorflow.core.framework import tensor_pb2 as tf_tensor_pb2
from tensorflow.core.framework import types_pb2 as tf_types_pb2
from tensorflow_serving.apis import get_model_status_pb2 as tf_status_pb2
from tensorflow_serving.apis import predict_pb2 as tf_predict_pb2

from rankserve.tfserving.v1 import (
    get_model_status_pb2,
    model_service_pb2,
    predict_pb2,
    prediction_service_pb2,
    tensor_pb2,
)

FAILED: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(("ok    " if ok else "FAIL  ") + name + (f": {detail}" if detail and not ok else ""))
    if not ok:
        FAILED.append(name)


def roundtrip(name: str, src, dst_cls) -> object:
    """src -> bytes -> dst_cls -> bytes: the bytes must be identical (deterministic order)."""
    raw = src.SerializeToString(deterministic=True)
    dst = dst_cls()
    dst.ParseFromString(raw)
    back = dst.SerializeToString(deterministic=True)
    check(f"{name}: same bytes after {type(src).__name__} -> {dst_cls.__name__}", raw == back)
    check(f"{name}: no unknown fields", len(UnknownFieldSet(dst)) == 0)
    return dst


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

    # The services keep TF Serving's wire names, so the paths on the wire are TF Serving's.
    predict = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]
    check("PredictionService wire name",
          predict.full_name == "tensorflow.serving.PredictionService")
    check("Predict takes the slim request",
          predict.methods_by_name["Predict"].input_type.full_name
          == "rankserve.tfserving.v1.PredictRequest")
    status = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]
    check("ModelService wire name", status.full_name == "tensorflow.serving.ModelService")
    check("ModelService has GetModelStatus", "GetModelStatus" in status.methods_by_name)

    print(f"{len(FAILED)} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
