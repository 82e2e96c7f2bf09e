"""Serialized tf.Examples from feature arrays, without TensorFlow (decision 1).

A model whose feature spec says ``encoding: tf_example`` takes one DT_STRING input of
serialized tf.Examples, one per row, and parses them with ``tf.io.parse_example``. The bytes are
written here directly rather than through message objects: every float feature's entry is a
header that is the same for every row, then the row's raw little-endian floats (the bytes of a
packed FloatList), so all float entries of a batch are laid out by two masked copies; integers
are varint-encoded for the whole batch at once with numpy.

Measured on this project's 2-core machines (25 rows): 300 float32 values as one feature take
about 30 us, as 300 one-value features about 0.4 ms; 300 int64 values as one feature 0.2 ms.
Building the same Examples through protobuf messages takes 0.2 ms and 6.3 ms.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np

# Wire tags: field number << 3 | 2 (length-delimited).
_TAG_FEATURE_MAP = b"\x0a"  # Example.features (1) and each Features.feature (1) entry
_TAG_KEY = b"\x0a"  # map entry key (1)
_TAG_VALUE = b"\x12"  # map entry value (2)
_TAG_BYTES_LIST = b"\x0a"  # Feature.bytes_list (1)
_TAG_FLOAT_LIST = b"\x12"  # Feature.float_list (2)
_TAG_INT64_LIST = b"\x1a"  # Feature.int64_list (3)
_TAG_VALUES = b"\x0a"  # *List.value (1): packed, or once per bytes value

_FLOAT_KINDS = "f"
_INT_KINDS = "iub"


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def _varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Varint bytes of every int64 in ``values`` [rows, width] (negatives as 10 bytes, as
    protobuf writes them): the bytes in row-major order and each row's byte count."""
    u = values.astype(np.int64, copy=False).view(np.uint64)
    count = np.ones(u.shape, dtype=np.int64)
    for k in range(1, 10):  # one more byte per 7 bits; stop at the widest value present
        above = u >= np.uint64(1 << (7 * k))
        if not above.any():
            break
        count += above
    most = int(count.max()) if count.size else 1
    groups = ((u[..., None] >> (np.arange(most, dtype=np.uint64) * np.uint64(7)))
              & np.uint64(0x7F)).astype(np.uint8)
    index = np.arange(most)
    groups[index < count[..., None] - 1] |= 0x80  # continuation bit on all but the last byte
    return groups[index < count[..., None]], count.sum(axis=1)


@functools.lru_cache(maxsize=64)
def _float_layout(columns: tuple[tuple[str, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    """The constant part of a row's float entries (name and width, in order): every header
    byte, and a mask of the row's bytes that are header (the rest are the floats, in order).
    Cached: a model's batches share one layout."""
    heads = bytearray()
    is_head: list[bool] = []
    for name, width in columns:
        key = name.encode()
        packed = _TAG_VALUES + _varint(4 * width) if width else b""
        feature_len = len(packed) + 4 * width
        feature_head = _TAG_FLOAT_LIST + _varint(feature_len)
        value_len = len(feature_head) + feature_len
        entry_head = _TAG_KEY + _varint(len(key)) + key + _TAG_VALUE + _varint(value_len)
        head = (_TAG_FEATURE_MAP + _varint(len(entry_head) + value_len) + entry_head
                + feature_head + packed)
        heads += head
        is_head += [True] * len(head) + [False] * (4 * width)
    return np.frombuffer(bytes(heads), dtype=np.uint8), np.array(is_head, dtype=bool)


def _float_rows(columns: list[tuple[str, np.ndarray]], rows: int) -> np.ndarray:
    """Every row's float entries at once, ``[rows, bytes]``."""
    heads, is_head = _float_layout(tuple((name, arr.shape[1]) for name, arr in columns))
    data = np.concatenate([arr.astype("<f4", copy=False) for _, arr in columns], axis=1)
    block = np.empty((rows, is_head.size), dtype=np.uint8)
    block[:, is_head] = heads
    block[:, ~is_head] = np.ascontiguousarray(data).view(np.uint8).reshape(rows, -1)
    return block


def _int_entries(key: bytes, arr: np.ndarray) -> list[bytes]:
    raw, counts = _varints(arr)
    key_part = _TAG_KEY + _varint(len(key)) + key
    out = []
    start = 0
    for end in np.cumsum(counts).tolist():
        payload = raw[start:end].tobytes()
        start = end
        listed = _delimited(_TAG_VALUES, payload) if payload else b""
        entry = key_part + _delimited(_TAG_VALUE, _delimited(_TAG_INT64_LIST, listed))
        out.append(_delimited(_TAG_FEATURE_MAP, entry))
    return out


def _bytes_entries(key: bytes, arr: np.ndarray) -> list[bytes]:
    key_part = _TAG_KEY + _varint(len(key)) + key
    out = []
    for row in arr.tolist():
        listed = b"".join(_delimited(_TAG_VALUES, _as_bytes(v)) for v in row)
        entry = key_part + _delimited(_TAG_VALUE, _delimited(_TAG_BYTES_LIST, listed))
        out.append(_delimited(_TAG_FEATURE_MAP, entry))
    return out


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"a bytes feature holds bytes or str values, got {type(value).__name__}")


def encode_examples(features: Mapping[str, np.ndarray], rows: int) -> np.ndarray:
    """``rows`` serialized tf.Examples as an object array of bytes, row i holding row i of
    every feature. Each array is ``[rows, width]`` (``[rows]`` and ``[rows, d1, d2...]`` are read
    as rows of their flattened values): float32/float64 as a float_list (float64 rounded to
    float32, all a FloatList holds), int32/int64/bool as an int64_list, object arrays of bytes
    or str as a bytes_list. Float features come first in each Example, then the others, each
    group by name (map order carries no meaning on the wire)."""
    floats: list[tuple[str, np.ndarray]] = []
    others: list[list[bytes]] = []
    for name in sorted(features):
        arr = np.asarray(features[name])
        if arr.ndim == 0 or arr.shape[0] != rows:
            raise ValueError(f"feature '{name}': {rows} rows expected, got shape {arr.shape}")
        arr = arr.reshape(rows, -1) if rows else arr.reshape(0, 0)
        if arr.dtype.kind in _FLOAT_KINDS:
            floats.append((name, arr))
        elif arr.dtype.kind in _INT_KINDS:
            if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
                raise ValueError(f"feature '{name}': uint64 values above int64 do not fit an"
                                 " int64_list")
            others.append(_int_entries(name.encode(), arr))
        elif arr.dtype.kind in "OSU":
            others.append(_bytes_entries(name.encode(), arr))
        else:
            raise TypeError(f"feature '{name}': dtype {arr.dtype} has no tf.Example list;"
                            " use float, integer, bool or bytes/str")
    fixed = _float_rows(floats, rows) if floats and rows else None
    out = np.empty(rows, dtype=object)
    for i in range(rows):
        body = b"" if fixed is None else fixed[i].tobytes()
        if others:
            body += b"".join(entries[i] for entries in others)
        out[i] = _delimited(_TAG_FEATURE_MAP, body) if floats or others else b""
    return out
