"""Trains the marketplace ranking model on synthetic clicks and exports it twice, as a team
would hand it to TF Serving:

    <out>/marketplace/1/       signature serving_default, one named input per feature:
        price           float32 [?]       per candidate
        category        string  [?]       per candidate; looked up in the graph
        seller_rating   float32 [?]       per candidate
        in_stock        bool    [?]       per candidate
        item_embedding  float32 [?, 32]   per candidate
        user_segment    int64   [?]       per request, one copy per row (the model cannot
                                          broadcast it: the ranker tiles it)
        user_embedding  float32 [1, 16]   per request, sent once (the model broadcasts it)
        query           string  [1]       per request
        budget          float32 [1]       per request, from the caller's request features
      output ``score`` float32 [?]
    <out>/marketplace_tfx/1/   the same weights behind a TFX-style signature: ``examples``
      (string [?], serialized tf.Examples with the features above) parsed with
      tf.io.parse_example; output ``score``.

Preprocessing (category lookup, log price, the query-category match, the budget rule) lives
in the model's graph, so the ranker only moves feature values.

Run: .venv/bin/python examples/marketplace/train.py --data /tmp/marketplace \\
         --out /tmp/marketplace/models
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402 - after the log level

CATEGORIES = ("electronics", "books", "fashion", "home", "toys", "sports", "garden", "beauty")
NUM_SEGMENTS = 6
ITEM_DIM = 32
USER_DIM = 16
HIDDEN = 32

#: What one tf.Example of the TFX-style model holds (the spec's input names, one row each).
EXAMPLE_FEATURES = {
    "price": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
    "category": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "seller_rating": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
    "in_stock": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "item_embedding": tf.io.FixedLenFeature([ITEM_DIM], tf.float32,
                                            default_value=[0.0] * ITEM_DIM),
    "user_segment": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "user_embedding": tf.io.FixedLenFeature([USER_DIM], tf.float32,
                                            default_value=[0.0] * USER_DIM),
    "query": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "budget": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
}


class MarketplaceScorer(tf.Module):
    """The model: per-candidate tensors ``[B]``/``[B, 32]``; per-request ones ``[1]``/``[1, 16]``
    or ``[B]``/``[B, 16]`` alike (everything broadcasts)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        init = tf.random.stateless_normal
        s = tf.constant([seed, 0], tf.int64)
        self.categories = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(CATEGORIES), tf.range(1, len(CATEGORIES) + 1, dtype=tf.int64)),
            default_value=0)  # 0: an unknown or empty category
        self.category_emb = tf.Variable(init([len(CATEGORIES) + 1, 8], s) * 0.1)
        self.segment_emb = tf.Variable(init([NUM_SEGMENTS + 1, 8], s + 1) * 0.1)
        self.project = tf.Variable(init([ITEM_DIM, USER_DIM], s + 2) * 0.1)
        self.w1 = tf.Variable(init([15, HIDDEN], s + 3) * 0.3)
        self.b1 = tf.Variable(tf.zeros([HIDDEN]))
        self.w2 = tf.Variable(init([HIDDEN, 1], s + 4) * 0.3)
        self.b2 = tf.Variable(tf.zeros([1]))

    def score(self, price, category, seller_rating, in_stock, item_embedding, user_segment,
              user_embedding, query, budget):
        rows = tf.shape(price)[0]
        cat = self.categories.lookup(category)
        cat_e = tf.gather(self.category_emb, cat)
        seg = tf.clip_by_value(user_segment, 0, NUM_SEGMENTS)
        seg_e = tf.broadcast_to(tf.gather(self.segment_emb, seg), [rows, 8])
        affinity = tf.reduce_sum(tf.matmul(item_embedding, self.project) * user_embedding, -1)
        match = tf.cast(tf.equal(tf.strings.lower(tf.strings.strip(query)), category), tf.float32)
        over = tf.cast((budget > 0.0) & (price > budget), tf.float32)
        columns = [tf.math.log1p(tf.maximum(price, 0.0)) / 5.0, seller_rating / 5.0,
                   tf.cast(in_stock, tf.float32), match, over, affinity * 4.0,
                   tf.reduce_sum(seg_e * cat_e, -1)]
        x = tf.concat([tf.stack([tf.broadcast_to(c, [rows]) for c in columns], 1), cat_e], 1)
        hidden = tf.nn.relu(tf.matmul(x, self.w1) + self.b1)
        return tf.squeeze(tf.matmul(hidden, self.w2) + self.b2, -1)


class TensorServing(tf.Module):
    def __init__(self, scorer: MarketplaceScorer) -> None:
        super().__init__()
        self.scorer = scorer

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.float32, name="price"),
        tf.TensorSpec([None], tf.string, name="category"),
        tf.TensorSpec([None], tf.float32, name="seller_rating"),
        tf.TensorSpec([None], tf.bool, name="in_stock"),
        tf.TensorSpec([None, ITEM_DIM], tf.float32, name="item_embedding"),
        tf.TensorSpec([None], tf.int64, name="user_segment"),
        tf.TensorSpec([1, USER_DIM], tf.float32, name="user_embedding"),
        tf.TensorSpec([1], tf.string, name="query"),
        tf.TensorSpec([1], tf.float32, name="budget"),
    ])
    def serve(self, price, category, seller_rating, in_stock, item_embedding, user_segment,
              user_embedding, query, budget):
        return {"score": self.scorer.score(price, category, seller_rating, in_stock,
                                           item_embedding, user_segment, user_embedding, query,
                                           budget)}


class ExampleServing(tf.Module):
    def __init__(self, scorer: MarketplaceScorer) -> None:
        super().__init__()
        self.scorer = scorer

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        f = tf.io.parse_example(examples, EXAMPLE_FEATURES)
        return {"score": self.scorer.score(
            f["price"], f["category"], f["seller_rating"], tf.cast(f["in_stock"], tf.bool),
            f["item_embedding"], f["user_segment"], f["user_embedding"], f["query"],
            f["budget"])}


def _column(path: Path, name: str) -> np.ndarray:
    values = pq.read_table(path, columns=[name]).column(name).combine_chunks()
    if hasattr(values, "flatten") and values.type.num_fields:  # a list column
        return np.asarray(values.flatten()).reshape(len(values), -1)
    return np.asarray(values.to_pylist() if values.type == "string" else values)


def training_pairs(data: Path, pairs: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Random (user, item, query, budget) rows with synthetic clicks from a hidden rule."""
    rng = np.random.default_rng(seed)
    items, users = data / "items.parquet", data / "users.parquet"
    price, category = _column(items, "price"), _column(items, "category")
    rating, stock = _column(items, "seller_rating"), _column(items, "in_stock")
    item_emb = _column(items, "embedding").astype(np.float32)
    segment, user_emb = _column(users, "segment"), _column(users, "embedding")
    i = rng.integers(0, len(price), pairs)
    u = rng.integers(0, len(segment), pairs)
    query = np.where(rng.random(pairs) < 0.5, category[i],
                     np.where(rng.random(pairs) < 0.5, rng.choice(CATEGORIES, pairs), ""))
    budget = np.where(rng.random(pairs) < 0.4, rng.uniform(10, 80, pairs), 0.0)
    features = {
        "price": price[i].astype(np.float32), "category": category[i].astype(object),
        "seller_rating": rating[i].astype(np.float32), "in_stock": stock[i].astype(bool),
        "item_embedding": item_emb[i], "user_segment": segment[u].astype(np.int64),
        "user_embedding": user_emb[u].astype(np.float32), "query": query.astype(object),
        "budget": budget.astype(np.float32),
    }
    taste = np.sin(np.arange(1, NUM_SEGMENTS + 2)[:, None] * np.arange(1, 9)[None, :])
    cat_index = np.array([CATEGORIES.index(c) for c in category[i]])
    hidden = (1.5 * (query == category[i]) + 0.8 * stock[i] + 0.4 * (rating[i] - 3.0)
              - 1.2 * ((budget > 0) & (price[i] > budget))
              + 6.0 * np.sum(item_emb[i][:, :USER_DIM] * user_emb[u], 1)
              + 0.5 * taste[np.clip(segment[u], 0, NUM_SEGMENTS), cat_index] - 0.5)
    clicks = (rng.random(pairs) < 1.0 / (1.0 + np.exp(-hidden))).astype(np.float32)
    return features, clicks


def fit(data: Path, *, steps: int = 300, batch: int = 256, seed: int = 0,
        learning_rate: float = 0.02) -> tuple[MarketplaceScorer, float]:
    """A scorer trained with Adam on sigmoid cross-entropy; returns it and its last loss."""
    scorer = MarketplaceScorer(seed)
    features, clicks = training_pairs(data, steps * batch, seed)
    variables = scorer.trainable_variables
    moments = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for v in variables]
    beta1, beta2 = 0.9, 0.999

    @tf.function
    def step(t, x, y):
        with tf.GradientTape() as tape:
            logits = scorer.score(**x)
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits))
        grads = tape.gradient(loss, variables)
        for v, g, (m, s) in zip(variables, grads, moments, strict=True):
            g = tf.convert_to_tensor(g)  # embedding gathers give IndexedSlices
            m.assign(beta1 * m + (1 - beta1) * g)
            s.assign(beta2 * s + (1 - beta2) * g * g)
            m_hat = m / (1 - beta1 ** t)
            s_hat = s / (1 - beta2 ** t)
            v.assign_sub(learning_rate * m_hat / (tf.sqrt(s_hat) + 1e-7))
        return loss

    loss = tf.constant(0.0)
    for k in range(steps):
        rows = slice(k * batch, (k + 1) * batch)
        x = {name: tf.constant(values[rows]) for name, values in features.items()}
        loss = step(tf.constant(float(k + 1)), x, tf.constant(clicks[rows]))
    return scorer, float(loss)


def export(scorer: MarketplaceScorer, out: Path, version: int = 1) -> dict[str, Path]:
    """Writes both SavedModels under ``out`` (TF Serving's <base>/<model>/<version> layout)."""
    paths = {"marketplace": out / "marketplace" / str(version),
             "marketplace_tfx": out / "marketplace_tfx" / str(version)}
    for name, module in (("marketplace", TensorServing(scorer)),
                         ("marketplace_tfx", ExampleServing(scorer))):
        tf.saved_model.save(module, str(paths[name]), signatures={"serving_default": module.serve})
    return paths


def train(data: Path, out: Path, *, steps: int = 300, version: int = 1,
          seed: int = 0) -> dict[str, Path]:
    """Trains on the files of make_data.py in ``data`` and exports both models."""
    scorer, _ = fit(data, steps=steps, seed=seed)
    return export(scorer, out, version)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Train the marketplace ranking model on synthetic clicks and export it as"
        " <out>/marketplace/<version>/ (one input per feature) and"
        " <out>/marketplace_tfx/<version>/ (serialized tf.Examples).")
    parser.add_argument("--data", type=Path, required=True,
                        help="Directory holding items.parquet and users.parquet (make_data.py).")
    parser.add_argument("--out", type=Path, required=True,
                        help="Model base directory to export into.")
    parser.add_argument("--steps", type=int, default=300,
                        help="Training steps of 256 pairs (default %(default)s).")
    parser.add_argument("--version", type=int, default=1,
                        help="Version directory to write (default %(default)s).")
    parser.add_argument("--seed", type=int, default=0, help="Random seed (default %(default)s).")
    args = parser.parse_args(argv)
    scorer, loss = fit(args.data, steps=args.steps, seed=args.seed)
    print(f"trained {args.steps} steps, last batch loss {loss:.4f}")
    for name, path in export(scorer, args.out, args.version).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
