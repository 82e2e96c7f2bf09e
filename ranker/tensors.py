"""numpy arrays to and from the slim TF-Serving TensorProto.

Requests carry ``tensor_content`` (raw little-endian bytes): one memcpy instead of one varint
per float. Responses may use either ``tensor_content`` or the typed ``*_val`` fields, as TF
Serving and other servers do both.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rankserve.tfserving.v1 import tensor_pb2

_TO_DTYPE: dict[np.dtype[Any], tensor_pb2.DataType] = {
    np.dtype(np.float32): tensor_pb2.DT_FLOAT,
    np.dtype(np.float64): tensor_pb2.DT_DOUBLE,
    np.dtype(np.int32): tensor_pb2.DT_INT32,
    np.dtype(np.int64): tensor_pb2.DT_INT64,
    np.dtype(np.float16): tensor_pb2.DT_HALF,
    # One byte per value, as TensorFlow lays DT_BOOL out, so tensor_content carries it too.
    np.dtype(np.bool_): tensor_pb2.DT_BOOL,
}
_FROM_DTYPE: dict[tensor_pb2.DataType, tuple[np.dtype[Any], str]] = {
    tensor_pb2.DT_FLOAT: (np.dtype("<f4"), "float_val"),
    tensor_pb2.DT_DOUBLE: (np.dtype("<f8"), "double_val"),
    tensor_pb2.DT_INT32: (np.dtype("<i4"), "int_val"),
    tensor_pb2.DT_INT64: (np.dtype("<i8"), "int64_val"),
    tensor_pb2.DT_HALF: (np.dtype("<f2"), "half_val"),
    tensor_pb2.DT_BOOL: (np.dtype("?"), "bool_val"),
    # Strings are pointers once decoded; their bytes are already in the message.
    tensor_pb2.DT_STRING: (np.dtype(object), "string_val"),
}

# Each wire dtype in this machine's byte order (what decoded arrays are handed on as).
_NATIVE = {dtype: dtype.newbyteorder("=") for dtype, _ in _FROM_DTYPE.values()}

#: Most bytes one decoded tensor may take unless the caller says otherwise (gRPC's message limit
#: here): a short typed field may declare any shape, and it is never expanded past this.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class TensorFormatError(ValueError):
    """A TensorProto this module cannot turn into an array."""


def to_tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    return fill_tensor_proto(tensor_pb2.TensorProto(), array)


def fill_tensor_proto(proto: tensor_pb2.TensorProto, array: np.ndarray) -> tensor_pb2.TensorProto:
    """Writes ``array`` into an empty ``proto`` (e.g. a request's map entry, saving a copy).

    Numbers and booleans go as ``tensor_content``; strings (object arrays of bytes or str) as
    ``string_val``, the only way TensorFlow carries them.
    """
    arr = np.asarray(array)
    if arr.dtype.kind in ("O", "S", "U"):
        proto.dtype = tensor_pb2.DT_STRING
        for size in arr.shape:
            proto.tensor_shape.dim.add(size=int(size))
        proto.string_val.extend(
            v if isinstance(v, bytes) else str(v).encode() for v in arr.ravel().tolist())
        return proto
    dtype = _TO_DTYPE.get(arr.dtype.newbyteorder("="))
    if dtype is None:
        raise TensorFormatError(f"unsupported dtype {arr.dtype}")
    proto.dtype = dtype
    for size in arr.shape:
        proto.tensor_shape.dim.add(size=int(size))
    proto.tensor_content = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    return proto


def from_tensor_proto(
    proto: tensor_pb2.TensorProto, max_bytes: int = DEFAULT_MAX_BYTES
) -> np.ndarray:
    """Decode a tensor; one that declares more than ``max_bytes`` is refused before any
    allocation (its size is computed in Python integers, which cannot overflow).

    Each Rank decodes one of these per batch: message fields are read once each, since every
    read of a field goes through the protobuf runtime (and a bytes field is copied).
    """
    code = proto.dtype
    spec = _FROM_DTYPE.get(code)
    if spec is None:
        known = code in tensor_pb2.DataType.values()
        name = tensor_pb2.DataType.Name(code) if known else str(code)
        raise TensorFormatError(f"unsupported tensor dtype {name}")
    dtype, field = spec
    shape_proto = proto.tensor_shape
    if shape_proto.unknown_rank:
        raise TensorFormatError("tensor of unknown rank")
    shape = tuple([d.size for d in shape_proto.dim])
    if shape and min(shape) < 0:
        raise TensorFormatError(f"tensor of negative dimension in shape {list(shape)}")
    count = math.prod(shape)
    if count * dtype.itemsize > max_bytes:
        raise TensorFormatError(
            f"tensor of shape {list(shape)} would take {count * dtype.itemsize} bytes decoded;"
            f" at most {max_bytes} are accepted"
        )
    native = _NATIVE[dtype]
    content = proto.tensor_content if dtype.kind != "O" else b""
    if content:
        if len(content) != count * dtype.itemsize:
            raise TensorFormatError(
                f"tensor_content holds {len(content)} bytes, shape {shape} needs"
                f" {count * dtype.itemsize}"
            )
        return np.frombuffer(content, dtype=dtype).reshape(shape).astype(native, copy=True)
    values = getattr(proto, field)
    if field == "half_val":
        flat = np.asarray(values, dtype=np.uint16).view(np.float16)
    elif dtype.kind == "O":
        flat = np.empty(len(values), dtype=object)
        flat[:] = list(values)
    else:
        flat = np.asarray(values, dtype=native)
    if flat.size == count:
        return flat.reshape(shape)
    # TF's convention: fewer values than elements repeats the last one (a scalar fill).
    if 0 < flat.size < count:
        out = np.empty(count, dtype=flat.dtype)
        out[: flat.size] = flat
        out[flat.size :] = flat[-1]
        return out.reshape(shape)
    if count == 0:
        return np.zeros(shape, dtype=flat.dtype)
    raise TensorFormatError(f"tensor holds {flat.size} values, shape {shape} needs {count}")
