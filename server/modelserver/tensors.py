"""TensorProto <-> numpy, with numpy only.

Requests arrive either as ``tensor_content`` (raw little-endian bytes, what fast clients send) or
as typed repeated fields (``float_val`` ...). Typed fields follow TensorFlow's rules: an empty
field means zeros and a shorter one repeats its last value. Responses use the typed fields by
default, as TF Serving's gRPC Predict does, so clients written against TF Serving read them
unchanged.
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

from . import dtypes
from .errors import InvalidInput

# DataType code -> name of the repeated field that carries its values.
_FIELD = {
    1: "float_val",
    2: "double_val",
    3: "int_val",
    4: "int_val",
    5: "int_val",
    6: "int_val",
    7: "string_val",
    9: "int64_val",
    10: "bool_val",
    17: "int_val",
    19: "half_val",
    22: "uint32_val",
    23: "uint64_val",
}


def shape_of(proto: tensor_pb2.TensorProto) -> tuple[int, ...] | None:
    """The shape of a tensor; None when the proto says the rank is unknown."""
    if proto.tensor_shape.unknown_rank:
        return None
    return tuple(d.size for d in proto.tensor_shape.dim)


def to_numpy(name: str, proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Decode input ``name``; raises InvalidInput with what is wrong with the tensor."""
    if not dtypes.is_supported(proto.dtype):
        raise InvalidInput(f"input '{name}' has unsupported dtype {dtypes.name(proto.dtype)}")
    shape = shape_of(proto)
    if shape is None:
        raise InvalidInput(f"input '{name}' has an unknown rank; send a tensor_shape with dims")
    if any(size < 0 for size in shape):
        raise InvalidInput(f"input '{name}' has a negative dimension in shape {list(shape)}")
    dtype = dtypes.to_numpy(proto.dtype)
    count = int(np.prod(shape, dtype=np.int64))
    if proto.tensor_content and proto.dtype != dtypes.DT_STRING:
        little = dtype.newbyteorder("<")
        expected = count * little.itemsize
        if len(proto.tensor_content) != expected:
            raise InvalidInput(
                f"input '{name}': tensor_content has {len(proto.tensor_content)} bytes, "
                f"shape {list(shape)} of {dtypes.name(proto.dtype)} needs {expected}"
            )
        return np.frombuffer(proto.tensor_content, dtype=little).astype(dtype, copy=False).reshape(
            shape
        )
    values = _typed_values(proto, dtype)
    if len(values) == count:
        return values.reshape(shape)
    if len(values) > count:
        raise InvalidInput(
            f"input '{name}' has {len(values)} values but shape {list(shape)} holds {count}"
        )
    if len(values) == 0:
        fill = b"" if dtype.kind == "O" else 0
        return np.full(shape, fill, dtype=dtype)
    padded = np.empty(count, dtype=dtype)
    padded[: len(values)] = values
    padded[len(values) :] = values[-1]
    return padded.reshape(shape)


def _typed_values(proto: tensor_pb2.TensorProto, dtype: np.dtype) -> np.ndarray:
    field = getattr(proto, _FIELD[proto.dtype])
    if proto.dtype == 19:  # DT_HALF: bit patterns of float16 carried in an int32 field
        return np.asarray(field, dtype=np.uint16).view(np.float16)
    if dtype.kind == "O":
        return np.asarray(list(field), dtype=object)
    return np.asarray(field, dtype=dtype)


def from_numpy(array: np.ndarray, use_tensor_content: bool = False) -> tensor_pb2.TensorProto:
    """Encode an output; typed fields by default (as TF Serving), raw bytes when asked."""
    array = np.asarray(array)
    code = dtypes.from_numpy(array.dtype)
    proto = tensor_pb2.TensorProto(
        dtype=code,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in array.shape]
        ),
    )
    if code == dtypes.DT_STRING:
        proto.string_val.extend(
            v if isinstance(v, bytes) else str(v).encode() for v in array.ravel()
        )
    elif use_tensor_content:
        little = array.dtype.newbyteorder("<")
        proto.tensor_content = np.ascontiguousarray(array, dtype=little).tobytes()
    elif code == 19:
        proto.half_val.extend(array.ravel().view(np.uint16).tolist())
    else:
        getattr(proto, _FIELD[code]).extend(array.ravel().tolist())
    return proto
