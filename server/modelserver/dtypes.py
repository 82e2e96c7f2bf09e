"""TensorFlow DataType codes and names beside their numpy dtypes.

The enum values are fixed by ``tensorflow/core/framework/types.proto``; keeping them here as plain
ints lets validation and messages speak the client's dtype names (``DT_FLOAT``) without importing
any protobuf module.
"""

from __future__ import annotations

import numpy as np

#: DataType code -> (name, numpy dtype). DT_STRING maps to numpy object arrays of bytes.
_TABLE: dict[int, tuple[str, np.dtype]] = {
    1: ("DT_FLOAT", np.dtype(np.float32)),
    2: ("DT_DOUBLE", np.dtype(np.float64)),
    3: ("DT_INT32", np.dtype(np.int32)),
    4: ("DT_UINT8", np.dtype(np.uint8)),
    5: ("DT_INT16", np.dtype(np.int16)),
    6: ("DT_INT8", np.dtype(np.int8)),
    7: ("DT_STRING", np.dtype(object)),
    9: ("DT_INT64", np.dtype(np.int64)),
    10: ("DT_BOOL", np.dtype(np.bool_)),
    17: ("DT_UINT16", np.dtype(np.uint16)),
    19: ("DT_HALF", np.dtype(np.float16)),
    22: ("DT_UINT32", np.dtype(np.uint32)),
    23: ("DT_UINT64", np.dtype(np.uint64)),
}
_BY_NUMPY = {dtype: code for code, (_, dtype) in _TABLE.items()}

DT_STRING = 7


def is_supported(code: int) -> bool:
    """Whether tensors of this DataType can be converted to numpy here."""
    return code in _TABLE


def to_numpy(code: int) -> np.dtype:
    """The numpy dtype of a DataType code (KeyError when unsupported)."""
    return _TABLE[code][1]


def from_numpy(dtype: np.dtype) -> int:
    """The DataType code of a numpy dtype; any bytes/str array counts as DT_STRING."""
    dtype = np.dtype(dtype)
    if dtype.kind in ("O", "S", "U"):
        return DT_STRING
    return _BY_NUMPY[dtype.newbyteorder("=")]


def name(code: int) -> str:
    """``DT_FLOAT`` for 1; unknown codes are named by number so messages stay useful."""
    entry = _TABLE.get(code)
    return entry[0] if entry else f"DataType {code}"


def name_of_numpy(dtype: np.dtype) -> str:
    """The DataType name of a numpy dtype, e.g. ``DT_DOUBLE`` for float64."""
    try:
        return name(from_numpy(dtype))
    except KeyError:
        return f"numpy {np.dtype(dtype)}"
