"""encode_examples' bytes parse with TensorFlow's own tf.io.parse_example to the same values,
and a SavedModel that parses them scores them as it scores the same values given as tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rankserve.ranker.tf_example import encode_examples

ROWS = 25


@pytest.fixture(scope="module")
def tf():  # noqa: ANN201 - TensorFlow, imported once for the module
    import tensorflow

    return tensorflow


def features() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    ints = rng.integers(-(2**63), 2**63 - 1, (ROWS, 4), dtype=np.int64)
    ints[0] = [0, -1, 2**63 - 1, -(2**63)]
    return {
        "candidates": rng.standard_normal((ROWS, 300)).astype(np.float32),
        "price": rng.standard_normal(ROWS),  # float64, one value per row
        "grid": rng.standard_normal((ROWS, 2, 3)).astype(np.float32),
        "ids": ints,
        "count": rng.integers(-5, 5, ROWS).astype(np.int32),
        "flags": rng.integers(0, 2, (ROWS, 2)).astype(bool),
        "query": np.array([[f"red bag {i}".encode()] for i in range(ROWS)], dtype=object),
        "tags": np.array([["\u00e9t\u00e9", f"t{i}"] for i in range(ROWS)], dtype=object),
    }


def parse_spec(tf) -> dict:
    return {
        "candidates": tf.io.FixedLenFeature([300], tf.float32),
        "price": tf.io.FixedLenFeature([], tf.float32),
        "grid": tf.io.FixedLenFeature([2, 3], tf.float32),
        "ids": tf.io.FixedLenFeature([4], tf.int64),
        "count": tf.io.FixedLenFeature([], tf.int64),
        "flags": tf.io.FixedLenFeature([2], tf.int64),
        "query": tf.io.FixedLenFeature([1], tf.string),
        "tags": tf.io.FixedLenFeature([2], tf.string),
    }


def test_tensorflow_parses_the_same_values(tf) -> None:
    feats = features()
    serialized = encode_examples(feats, ROWS)
    parsed = tf.io.parse_example(tf.constant(list(serialized)), parse_spec(tf))
    got = {k: v.numpy() for k, v in parsed.items()}
    np.testing.assert_array_equal(got["candidates"], feats["candidates"])
    np.testing.assert_array_equal(got["price"], feats["price"].astype(np.float32))
    np.testing.assert_array_equal(got["grid"], feats["grid"])
    np.testing.assert_array_equal(got["ids"], feats["ids"])
    np.testing.assert_array_equal(got["count"], feats["count"].astype(np.int64))
    np.testing.assert_array_equal(got["flags"], feats["flags"].astype(np.int64))
    assert got["query"].tolist() == feats["query"].tolist()
    assert got["tags"].tolist() == [[v.encode() for v in row] for row in feats["tags"].tolist()]


def test_tensorflows_examples_are_the_same_messages(tf) -> None:
    feats = features()
    ours = encode_examples(feats, ROWS)
    for row in (0, ROWS - 1):
        theirs = tf.train.Example(features=tf.train.Features(feature={
            name: _feature(tf, np.asarray(arr).reshape(ROWS, -1)[row])
            for name, arr in feats.items()}))
        assert tf.train.Example.FromString(ours[row]) == theirs


def _feature(tf, values: np.ndarray):
    if values.dtype.kind == "f":
        return tf.train.Feature(float_list=tf.train.FloatList(value=values.astype(np.float32)))
    if values.dtype.kind in "iub":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values.astype(np.int64)))
    return tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[v if isinstance(v, bytes) else v.encode() for v in values.tolist()]))


def test_a_parsing_model_scores_examples_as_tensors(tf, tmp_path: Path) -> None:
    class Model(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(np.linspace(-1, 1, 300, dtype=np.float32))

        def score(self, candidates, ids):
            return tf.linalg.matvec(candidates, self.w) + tf.cast(ids, tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def parse(self, examples):
            parsed = tf.io.parse_example(examples, {
                "candidates": tf.io.FixedLenFeature([300], tf.float32),
                "ids": tf.io.FixedLenFeature([], tf.int64)})
            return {"scores": self.score(parsed["candidates"], parsed["ids"])}

        @tf.function(input_signature=[tf.TensorSpec([None, 300], tf.float32, name="candidates"),
                                      tf.TensorSpec([None], tf.int64, name="ids")])
        def tensors(self, candidates, ids):
            return {"scores": self.score(candidates, ids)}

    model = Model()
    tf.saved_model.save(model, str(tmp_path / "m"),
                        signatures={"serving_default": model.parse, "tensors": model.tensors})
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    rng = np.random.default_rng(5)
    candidates = rng.standard_normal((ROWS, 300)).astype(np.float32)
    ids = rng.integers(0, 1000, ROWS)
    examples = encode_examples({"candidates": candidates, "ids": ids}, ROWS)
    by_examples = loaded.signatures["serving_default"](examples=tf.constant(list(examples)))
    by_tensors = loaded.signatures["tensors"](candidates=tf.constant(candidates),
                                              ids=tf.constant(ids))
    np.testing.assert_array_equal(by_examples["scores"].numpy(), by_tensors["scores"].numpy())
