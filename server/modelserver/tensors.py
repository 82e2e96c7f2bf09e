"""TensorProto <-> numpy, with numpy and rankserve's slim TensorProto (TensorFlow's numbers).

Requests arrive either as ``tensor_content`` (raw little-endian bytes, what fast clients send) or
as typed repeated fields (``float_val`` ...). Typed fields follow TensorFlow's rules: an empty
field means zeros and a shorter one repeats its last value. Responses use the typed fields by
default, as TF Serving's gRPC Predict does, so clients written against TF Serving read them
unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from rankserve.tfserving.v1 import tensor_pb2

from . import dtypes
from .errors import InvalidInput, TooLarge

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


class Declared(NamedTuple):
    """What a TensorProto says it holds, read without touching its values.

    A few bytes of ``tensor_shape`` can declare terabytes, and TensorFlow's fill rule (a short
    typed field repeats its last value) would make a decoder allocate all of it; every size
    decision is taken on this header first, in Python integers, which cannot overflow. A tuple
    of (DataType code, shape), made for every input of every Predict: a frozen dataclass costs
    several times more to build.
    """

    dtype_code: int
    shape: tuple[int, ...]

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded array (pointers for strings, whose bytes the message holds)."""
        return self.elements * dtypes.to_numpy(self.dtype_code).itemsize


def shape_of(proto: tensor_pb2.TensorProto) -> tuple[int, ...] | None:
    """The shape of a tensor; None when the proto says the rank is unknown."""
    shape = proto.tensor_shape
    if shape.unknown_rank:
        return None
    return tuple([d.size for d in shape.dim])


def declared(name: str, proto: tensor_pb2.TensorProto) -> Declared:
    """The header of input ``name``; raises InvalidInput when it cannot describe an array."""
    code = proto.dtype
    if not dtypes.is_supported(code):
        raise InvalidInput(f"input '{name}' has unsupported dtype {dtypes.name(code)}")
    shape = shape_of(proto)
    if shape is None:
        raise InvalidInput(f"input '{name}' has an unknown rank; send a tensor_shape with dims")
    if shape and min(shape) < 0:
        raise InvalidInput(f"input '{name}' has a negative dimension in shape {list(shape)}")
    return Declared(code, shape)


class EncodedInputs:
    """A request's input tensors, read in two steps: what they declare, then their values.

    The core checks the declared names, dtypes and shapes against the signature before
    ``decode`` allocates anything, and ``decode`` refuses inputs that would take more than
    ``max_bytes`` once decoded (all inputs together), naming the largest.
    """

    def __init__(self, protos: Mapping[str, tensor_pb2.TensorProto], max_bytes: int) -> None:
        self._protos = protos
        self._max_bytes = max_bytes
        self._declared: dict[str, Declared] | None = None

    def declared(self) -> dict[str, Declared]:
        if self._declared is None:
            self._declared = {name: declared(name, t) for name, t in self._protos.items()}
        return self._declared

    def decode(self) -> dict[str, np.ndarray]:
        headers = self.declared()
        check_decoded_size(headers, self._max_bytes)
        return {name: _decode(name, self._protos[name], headers[name]) for name in headers}


def check_decoded_size(headers: Mapping[str, Declared], max_bytes: int) -> None:
    """RESOURCE_EXHAUSTED when the inputs would decode to more than ``max_bytes`` together."""
    total = sum(h.nbytes for h in headers.values())
    if total <= max_bytes:
        return
    name, biggest = max(headers.items(), key=lambda item: item[1].nbytes)
    raise TooLarge(
        f"input '{name}' declares shape {list(biggest.shape)} of "
        f"{dtypes.name(biggest.dtype_code)}: {biggest.elements} elements, "
        f"{_size_text(biggest.nbytes)} decoded; the inputs of one request may decode to at most "
        f"{_size_text(max_bytes)} (the server's message-size limit); send fewer rows per call"
    )


def _size_text(nbytes: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def to_numpy(name: str, proto: tensor_pb2.TensorProto, max_bytes: int) -> np.ndarray:
    """Decode one tensor of at most ``max_bytes``; raises InvalidInput or TooLarge."""
    header = declared(name, proto)
    check_decoded_size({name: header}, max_bytes)
    return _decode(name, proto, header)


def _decode(name: str, proto: tensor_pb2.TensorProto, header: Declared) -> np.ndarray:
    code, shape = header
    dtype = dtypes.to_numpy(code)
    count = header.elements
    # Read once: every read of a bytes field copies it out of the message.
    content = proto.tensor_content if code != dtypes.DT_STRING else b""
    if content:
        little = dtype.newbyteorder("<")
        expected = count * little.itemsize
        if len(content) != expected:
            raise InvalidInput(
                f"input '{name}': tensor_content has {len(content)} bytes, "
                f"shape {list(shape)} of {dtypes.name(code)} needs {expected}"
            )
        return np.frombuffer(content, dtype=little).astype(dtype, copy=False).reshape(shape)
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
    return fill(tensor_pb2.TensorProto(), array, use_tensor_content)


def fill(proto: tensor_pb2.TensorProto, array: np.ndarray, use_tensor_content: bool = False
         ) -> tensor_pb2.TensorProto:
    """``from_numpy`` into an empty ``proto``, such as a response's map entry: building a
    TensorProto apart and copying it in costs a second message per output."""
    array = np.asarray(array)
    code = dtypes.from_numpy(array.dtype)
    proto.dtype = code
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add(size=size)
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
