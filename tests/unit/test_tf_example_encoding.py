"""encode_examples writes the bytes of the Examples one would build with the (slim) messages:
every dtype, widths 0 and 1, negatives and the int64 extremes, str and bytes."""

from __future__ import annotations

import numpy as np
import pytest

from rankserve.ranker.tf_example import encode_examples
from rankserve.tfserving.v1 import example_pb2

ROWS = 7


def features() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    ints = rng.integers(-(2**63), 2**63 - 1, (ROWS, 4), dtype=np.int64)
    ints[0] = [0, -1, 2**63 - 1, -(2**63)]
    ints[1] = [127, 128, 16383, 16384]
    return {
        "f32": rng.standard_normal((ROWS, 3)).astype(np.float32),
        "f64": rng.standard_normal((ROWS, 2)),
        "scalar": rng.standard_normal(ROWS).astype(np.float32),
        "matrix": rng.standard_normal((ROWS, 2, 2)).astype(np.float32),
        "i64": ints,
        "i32": rng.integers(-300, 300, ROWS).astype(np.int32),
        "u8": rng.integers(0, 255, (ROWS, 2)).astype(np.uint8),
        "flag": rng.integers(0, 2, (ROWS, 1)).astype(bool),
        "bytes": np.array([[b"red bag", b""]] * ROWS, dtype=object),
        "text": np.array([["\u00e9t\u00e9"]] * ROWS, dtype=object),
        "no_floats": np.zeros((ROWS, 0), np.float32),
        "no_ints": np.zeros((ROWS, 0), np.int64),
        "t\u00e9l\u00e9phone": np.ones((ROWS, 1), np.float32),
    }


def expected(feats: dict[str, np.ndarray], row: int) -> example_pb2.Example:
    ex = example_pb2.Example()
    for name, arr in feats.items():
        values = np.asarray(arr).reshape(ROWS, -1)[row]
        feature = ex.features.feature[name]
        if arr.dtype.kind == "f":
            feature.float_list.SetInParent()
            feature.float_list.value.extend(values.astype(np.float32).tolist())
        elif arr.dtype.kind in "iub":
            feature.int64_list.SetInParent()
            feature.int64_list.value.extend(int(v) for v in values)
        else:
            feature.bytes_list.SetInParent()
            feature.bytes_list.value.extend(
                v if isinstance(v, bytes) else v.encode() for v in values)
    return ex


def test_rows_parse_to_the_examples_built_with_messages() -> None:
    feats = features()
    out = encode_examples(feats, ROWS)
    assert out.dtype == object and out.shape == (ROWS,)
    for row in range(ROWS):
        assert example_pb2.Example.FromString(out[row]) == expected(feats, row)


@pytest.mark.parametrize("name", list(features()))
def test_one_feature_is_the_deterministic_serialization(name: str) -> None:
    feats = {name: features()[name]}
    out = encode_examples(feats, ROWS)
    for row in range(ROWS):
        assert out[row] == expected(feats, row).SerializeToString(deterministic=True)


def test_a_batch_of_300_floats_per_row() -> None:
    x = np.random.default_rng(0).standard_normal((25, 300)).astype(np.float32)
    out = encode_examples({"candidates": x}, 25)
    for row in (0, 24):
        parsed = example_pb2.Example.FromString(out[row])
        assert np.array_equal(np.array(parsed.features.feature["candidates"].float_list.value,
                                       np.float32), x[row])


def test_no_rows_and_no_features() -> None:
    assert encode_examples({"x": np.zeros((0, 3), np.float32)}, 0).shape == (0,)
    assert list(encode_examples({}, 2)) == [b"", b""]


def test_refused_inputs() -> None:
    with pytest.raises(ValueError, match="feature 'x': 3 rows expected, got shape"):
        encode_examples({"x": np.zeros((2, 1), np.float32)}, 3)
    with pytest.raises(TypeError, match="complex128 has no tf.Example list"):
        encode_examples({"x": np.zeros((2, 1), np.complex128)}, 2)
    with pytest.raises(TypeError, match="bytes or str values, got int"):
        encode_examples({"x": np.array([[1], [2]], dtype=object)}, 2)
    with pytest.raises(ValueError, match="uint64 values above int64"):
        encode_examples({"x": np.array([[2**64 - 1]], dtype=np.uint64)}, 1)


def test_many_features_of_each_kind() -> None:
    """Past a few dozen float features the layout is copied by masks, not slices."""
    rng = np.random.default_rng(9)
    feats: dict[str, np.ndarray] = {}
    for j in range(40):
        feats[f"f{j:02d}"] = rng.standard_normal((ROWS, j % 3)).astype(np.float32)
        feats[f"i{j:02d}"] = rng.integers(-(2**40), 2**40, (ROWS, j % 4))
    out = encode_examples(feats, ROWS)
    for row in range(ROWS):
        assert example_pb2.Example.FromString(out[row]) == expected(feats, row)
