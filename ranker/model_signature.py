"""A served model's signature, read without TensorFlow (decision 1).

Three sources give the same ``ModelSignature``: a GetModelMetadataResponse (or the
SignatureDefMap it packs), a SavedModel directory's ``saved_model.pb``, and a live model server
asked with GetModelMetadata. A spec is checked against it (``spec_check``) before a model is
fed, so a mismatch is a message at deploy time instead of INVALID_ARGUMENT on every batch.

Dtypes are named as feature specs name them (``entity_features.DTYPES``) where one maps, else by
TensorFlow's ``DT_`` name; shapes are tuples with None for an unknown dim, or None for an
unknown rank.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import grpc
from google.protobuf import wrappers_pb2
from google.protobuf.message import DecodeError

from rankserve.ranker.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    RankerError,
    ResourceExhausted,
    ScoringError,
    Unavailable,
)
from rankserve.ranker.types import ModelRef
from rankserve.tfserving.v1 import (
    get_model_metadata_pb2,
    meta_graph_pb2,
    model_pb2,
    prediction_service_pb2_grpc,
    saved_model_pb2,
    signature_def_map_pb2,
    tensor_pb2,
)

SIGNATURE_DEF_FIELD = "signature_def"
SIGNATURE_DEF_MAP_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
SERVE_TAG = "serve"
# A SavedModel's initializer, stored beside the signatures but never called by a client.
_INIT_OP = "__saved_model_init_op"

#: DataType -> the feature-spec dtype that carries it.
SPEC_DTYPES: dict[int, str] = {
    tensor_pb2.DT_FLOAT: "float32",
    tensor_pb2.DT_DOUBLE: "float64",
    tensor_pb2.DT_HALF: "float16",
    tensor_pb2.DT_INT32: "int32",
    tensor_pb2.DT_INT64: "int64",
    tensor_pb2.DT_BOOL: "bool",
    tensor_pb2.DT_STRING: "string",
}
#: TensorFlow's names of the DataTypes the slim enum leaves out (checked against TensorFlow's
#: own enum in tests), so a report names e.g. DT_BFLOAT16 rather than a number.
_MORE_DT_NAMES: dict[int, str] = {
    8: "DT_COMPLEX64",
    11: "DT_QINT8",
    12: "DT_QUINT8",
    13: "DT_QINT32",
    14: "DT_BFLOAT16",
    15: "DT_QINT16",
    16: "DT_QUINT16",
    18: "DT_COMPLEX128",
    20: "DT_RESOURCE",
    21: "DT_VARIANT",
}

Shape = tuple[int | None, ...] | None


class TensorSig(NamedTuple):
    """One input or output: dtype name and shape (None dims unknown; None shape: unknown rank)."""

    dtype: str
    shape: Shape


@dataclass(frozen=True)
class ModelSignature:
    """The inputs and outputs of one SignatureDef of one model version."""

    name: str
    inputs: Mapping[str, TensorSig]
    outputs: Mapping[str, TensorSig]
    #: Inputs and outputs that are not dense tensors: name -> "sparse" or "composite (...)".
    #: The ranker feeds and reads dense tensors only.
    unsupported: Mapping[str, str] = field(default_factory=dict)
    method_name: str = ""


def dtype_name(code: int) -> str:
    """``DT_FLOAT`` -> ``"float32"``; a DataType no spec dtype carries keeps its DT_ name."""
    if code in SPEC_DTYPES:
        return SPEC_DTYPES[code]
    if code in tensor_pb2.DataType.values():
        return str(tensor_pb2.DataType.Name(code))
    return _MORE_DT_NAMES.get(code, f"DT_<{code}>")


def format_shape(shape: Shape) -> str:
    """``(None, 3)`` -> ``[?, 3]``; an unknown rank -> ``<unknown rank>``."""
    if shape is None:
        return "<unknown rank>"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _shape(proto: tensor_pb2.TensorShapeProto) -> Shape:
    if proto.unknown_rank:
        return None
    return tuple(None if d.size < 0 else int(d.size) for d in proto.dim)


def _tensor(info: meta_graph_pb2.TensorInfo) -> TensorSig:
    return TensorSig(dtype_name(info.dtype), _shape(info.tensor_shape))


def _encoding(info: meta_graph_pb2.TensorInfo) -> str | None:
    kind = info.WhichOneof("encoding")
    if kind == "coo_sparse":
        return "sparse"
    if kind == "composite_tensor":
        cls = info.composite_tensor.type_spec.type_spec_class_name
        return f"composite ({cls})" if cls else "composite"
    return None


def from_signature_def(name: str, sig: meta_graph_pb2.SignatureDef) -> ModelSignature:
    unsupported: dict[str, str] = {}
    for side in (sig.inputs, sig.outputs):
        for key, info in side.items():
            kind = _encoding(info)
            if kind is not None:
                unsupported[key] = kind
    return ModelSignature(
        name=name,
        inputs={k: _tensor(v) for k, v in sorted(sig.inputs.items())},
        outputs={k: _tensor(v) for k, v in sorted(sig.outputs.items())},
        unsupported=unsupported,
        method_name=sig.method_name,
    )


def signature_names(signatures: Mapping[str, meta_graph_pb2.SignatureDef]) -> list[str]:
    """The callable signatures, sorted (the SavedModel initializer left out)."""
    return sorted(k for k in signatures if k != _INIT_OP)


def _pick(signatures: Mapping[str, meta_graph_pb2.SignatureDef], name: str, where: str
          ) -> ModelSignature:
    if name not in signatures or name == _INIT_OP:
        have = ", ".join(signature_names(signatures)) or "none"
        raise NotFound(f"{where} has no signature '{name}'; its signatures: {have}:"
                       " set the spec's signature to one of them")
    return from_signature_def(name, signatures[name])


def from_signature_def_map(data: bytes, name: str, where: str = "the model") -> ModelSignature:
    """Signature ``name`` of a serialized tensorflow.serving.SignatureDefMap."""
    try:
        sig_map = signature_def_map_pb2.SignatureDefMap.FromString(data)
    except DecodeError as exc:
        raise RankerError(f"{where}: unreadable SignatureDefMap: {exc}") from None
    return _pick(sig_map.signature_def, name, where)


def from_metadata_response(data: bytes | get_model_metadata_pb2.GetModelMetadataResponse,
                           name: str, where: str = "the model") -> ModelSignature:
    """Signature ``name`` of a GetModelMetadataResponse (serialized or parsed)."""
    if isinstance(data, bytes):
        try:
            response = get_model_metadata_pb2.GetModelMetadataResponse.FromString(data)
        except DecodeError as exc:
            raise RankerError(f"{where}: unreadable GetModelMetadataResponse: {exc}") from None
    else:
        response = data
    packed = response.metadata.get(SIGNATURE_DEF_FIELD)
    if packed is None:
        raise RankerError(f"{where}: GetModelMetadata answered without '{SIGNATURE_DEF_FIELD}'"
                          f" (it has {sorted(response.metadata) or 'nothing'})")
    if packed.type_url.rsplit("/", 1)[-1] != "tensorflow.serving.SignatureDefMap":
        raise RankerError(f"{where}: metadata['{SIGNATURE_DEF_FIELD}'] holds {packed.type_url},"
                          " not a tensorflow.serving.SignatureDefMap")
    return from_signature_def_map(packed.value, name, where)


def saved_model_file(path: str | Path) -> Path:
    """``<dir>/saved_model.pb``, or ``<base>/<highest numeric version>/saved_model.pb``."""
    path = Path(path)
    direct = path / "saved_model.pb"
    if direct.is_file():
        return direct
    if not path.is_dir():
        raise NotFound(f"{path}: no such directory: pass a SavedModel directory or a model base"
                       " path holding numbered versions")
    # ASCII digits only: int() also reads "²" or "٣", names no server loads.
    versions = sorted(int(p.name) for p in path.iterdir() if p.name.isascii()
                      and p.name.isdigit() and (p / "saved_model.pb").is_file())
    if not versions:
        raise NotFound(f"{path}: neither saved_model.pb nor a numbered version directory"
                       " holding one")
    return path / str(versions[-1]) / "saved_model.pb"


def from_saved_model(path: str | Path, name: str) -> ModelSignature:
    """Signature ``name`` of the MetaGraph tagged "serve" (as TF Serving loads it)."""
    pb = saved_model_file(path)
    try:
        saved = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    except OSError as exc:
        raise NotFound(f"{pb}: cannot read: {exc.strerror or exc}") from None
    except DecodeError as exc:
        raise InvalidArgument(f"{pb} is not a SavedModel: {exc}") from None
    for meta in saved.meta_graphs:
        if SERVE_TAG in meta.meta_info_def.tags:
            return _pick(meta.signature_def, name, str(pb.parent))
    raise NotFound(f"{pb} has no MetaGraph tagged '{SERVE_TAG}': export it for serving")


def metadata_request(model: ModelRef) -> get_model_metadata_pb2.GetModelMetadataRequest:
    spec = model_pb2.ModelSpec(name=model.name)
    if model.version is not None:
        spec.version.CopyFrom(wrappers_pb2.Int64Value(value=model.version))
    elif model.label:
        spec.version_label = model.label
    return get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=spec, metadata_field=[SIGNATURE_DEF_FIELD])


_STATUS_ERRORS: dict[grpc.StatusCode, type[RankerError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


async def fetch_signature(target: str, model: ModelRef, signature: str = "serving_default",
                          timeout_s: float = 10.0,
                          credentials: grpc.ChannelCredentials | None = None,
                          channel_options: tuple[tuple[str, str], ...] = ()) -> ModelSignature:
    """Asks the model server at ``target`` (HOST:PORT) for ``model``'s signature by
    GetModelMetadata, over TLS with ``credentials``; NotFound, Unavailable,
    DeadlineExceeded... say what went wrong."""
    where = f"model {model} at {target}"
    channel = (grpc.aio.secure_channel(target, credentials, options=list(channel_options))
               if credentials is not None
               else grpc.aio.insecure_channel(target, options=list(channel_options)))
    async with channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = await stub.GetModelMetadata(metadata_request(model), timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            detail = exc.details() or code.name
            kind = _STATUS_ERRORS.get(code)
            if code == grpc.StatusCode.UNAVAILABLE:
                detail = f"no model server answers ({detail})"
            elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
                detail = f"no answer within {timeout_s:g} s"
            message = f"{where}: GetModelMetadata failed: {code.name}: {detail}"
            if kind is None:
                raise ScoringError(code.name, message) from None
            raise kind(message) from None
    return from_metadata_response(response, signature, where)
