"""Serialized tf.Examples from feature arrays, without TensorFlow (decision 1).

A model whose feature spec says ``encoding: tf_example`` takes one DT_STRING input of
serialized tf.Examples, one per row, and parses them with ``tf.io.parse_example``. The bytes are
written here directly rather than through message objects: every float feature's entry is a
header that is the same for every row, then the row's raw little-endian floats (the bytes of a
packed FloatList), so all float entries of a batch are laid out by a few array copies; integers
are varint-encoded for the whole batch at once with numpy.

Measured on this project's 2-core machines, one batch of 25 rows: 300 float32 values as one
feature take about 20 us; 300 one-value float features 0.32 ms; 300 float32 values plus an int64
id, a string and a bool 0.13 ms; 300 int64 values below 2**14 as one feature 0.2 ms. Building
the same Examples through protobuf messages takes 0.2 ms (one 300-value feature) and 5.9 ms
(300 one-value features).
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


def _varints(values: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Varint bytes of every int64 in ``values`` [rows, width] (negatives as 10 bytes, as
    protobuf writes them), in row-major order, and the byte count of each value."""
    u = values.view(np.uint64)
    count = np.ones(u.shape, dtype=np.uint8)
    for k in range(1, 10):  # one more byte per 7 bits; stop at the widest value present
        above = u >= np.uint64(1 << (7 * k))
        if not above.any():
            break
        count += above
    most = int(count.max()) if count.size else 1
    if most == 1:
        return u.astype(np.uint8).tobytes(), count
    groups = np.empty((*u.shape, most), dtype=np.uint8)
    for k in range(most):
        # The low 7 bits of each group, with the continuation bit set where more follow.
        groups[..., k] = ((u >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        if k < most - 1:
            groups[..., k] |= (count > k + 1).view(np.uint8) << np.uint8(7)
    keep = np.arange(most, dtype=np.uint8) < count[..., None]
    return groups[keep].tobytes(), count


@functools.lru_cache(maxsize=64)
def _float_layout(columns: tuple[tuple[str, int], ...]
                  ) -> tuple[list[tuple[np.ndarray, int, int, int]], np.ndarray, np.ndarray]:
    """The constant part of a row's float entries (name and width, in order): per feature its
    header bytes and where header and floats start and end in the row; and, for many features,
    all header bytes with a mask of the row's bytes that are header. Cached: a model's batches
    share one layout."""
    segments = []
    is_head: list[bool] = []
    pos = 0
    for name, width in columns:
        key = name.encode()
        packed = _TAG_VALUES + _varint(4 * width) if width else b""
        feature_len = len(packed) + 4 * width
        feature_head = _TAG_FLOAT_LIST + _varint(feature_len)
        value_len = len(feature_head) + feature_len
        entry_head = _TAG_KEY + _varint(len(key)) + key + _TAG_VALUE + _varint(value_len)
        head = (_TAG_FEATURE_MAP + _varint(len(entry_head) + value_len) + entry_head
                + feature_head + packed)
        segments.append((np.frombuffer(head, dtype=np.uint8), pos, pos + len(head),
                         pos + len(head) + 4 * width))
        pos += len(head) + 4 * width
        is_head += [True] * len(head) + [False] * (4 * width)
    heads = np.concatenate([seg[0] for seg in segments])
    return segments, heads, np.array(is_head, dtype=bool)


# Up to this many float features, each is copied by slices; past it, two masked copies cost
# less than the per-feature slicing.
_SLICED_FEATURES = 24


def _float_rows(columns: list[tuple[str, np.ndarray]], rows: int) -> np.ndarray:
    """Every row's float entries at once, ``[rows, bytes]``."""
    segments, heads, is_head = _float_layout(
        tuple((name, arr.shape[1]) for name, arr in columns))
    block = np.empty((rows, is_head.size), dtype=np.uint8)
    if len(columns) <= _SLICED_FEATURES:
        for (_, arr), (head, start, mid, end) in zip(columns, segments, strict=True):
            block[:, start:mid] = head
            block[:, mid:end] = np.ascontiguousarray(arr, dtype="<f4").view(np.uint8)
        return block
    data = np.concatenate([arr.astype("<f4", copy=False) for _, arr in columns], axis=1)
    block[:, is_head] = heads
    block[:, ~is_head] = data.view(np.uint8).reshape(rows, -1)
    return block


class _IntHeads(dict[int, bytes]):
    """A feature's entry bytes up to its packed values, by the values' byte count."""

    def __init__(self, key: bytes) -> None:
        super().__init__()
        self.key_part = _TAG_KEY + _varint(len(key)) + key

    def __missing__(self, size: int) -> bytes:
        listed = _TAG_VALUES + _varint(size) if size else b""
        feature = _TAG_INT64_LIST + _varint(len(listed) + size) + listed
        value = _TAG_VALUE + _varint(len(feature) + size) + feature
        entry_len = len(self.key_part) + len(value) + size
        head = _TAG_FEATURE_MAP + _varint(entry_len) + self.key_part + value
        self[size] = head
        return head


def _int_rows(columns: list[tuple[str, np.ndarray]], rows: int) -> list[bytes]:
    """Every row's int64 entries: all features' varints in one pass, then per row and feature
    a header looked up by the values' byte count and a slice of the varint bytes."""
    data = np.concatenate([arr.astype(np.int64, copy=False) for _, arr in columns], axis=1)
    raw, counts = _varints(np.ascontiguousarray(data))
    bounds = np.cumsum([0] + [arr.shape[1] for _, arr in columns])
    ends = np.concatenate([np.zeros((rows, 1), dtype=np.int64),
                           np.cumsum(counts, axis=1, dtype=np.int64)], axis=1)
    row_start = np.concatenate([[0], np.cumsum(ends[:, -1])[:-1]])
    starts = (row_start[:, None] + ends[:, bounds[:-1]]).tolist()
    sizes = (ends[:, bounds[1:]] - ends[:, bounds[:-1]]).tolist()
    heads = [_IntHeads(name.encode()) for name, _ in columns]
    out = []
    for row_starts, row_sizes in zip(starts, sizes, strict=True):
        parts = []
        for head, start, size in zip(heads, row_starts, row_sizes, strict=True):
            parts.append(head[size])
            parts.append(raw[start:start + size])
        out.append(b"".join(parts))
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
    or str as a bytes_list. In each Example the float features come first, then the integer
    ones, then the bytes ones, each group by name (map order carries no meaning)."""
    floats: list[tuple[str, np.ndarray]] = []
    ints: list[tuple[str, np.ndarray]] = []
    strings: list[list[bytes]] = []
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
            ints.append((name, arr))
        elif arr.dtype.kind in "OSU":
            strings.append(_bytes_entries(name.encode(), arr))
        else:
            raise TypeError(f"feature '{name}': dtype {arr.dtype} has no tf.Example list;"
                            " use float, integer, bool or bytes/str")
    out = np.empty(rows, dtype=object)
    if not rows:
        return out
    fixed = _float_rows(floats, rows) if floats else None
    varying = _int_rows(ints, rows) if ints else None
    for i in range(rows):
        body = b"" if fixed is None else fixed[i].tobytes()
        if varying is not None:
            body += varying[i]
        if strings:
            body += b"".join(entries[i] for entries in strings)
        out[i] = _delimited(_TAG_FEATURE_MAP, body) if features else b""
    return out
