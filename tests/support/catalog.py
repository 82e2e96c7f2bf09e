"""Small synthetic catalogs in the real on-disk format."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rankserve.ranker.catalog import write_catalog

DEVICES = ["mobile", "desktop"]
LOCALES = ["en-US", "de-DE"]
VOCAB = ["red", "blue", "shoes", "shirt", "lamp", "chair"]


def make_catalog(path: Path, num_items: int = 3000, num_features: int = 300, dim: int = 16,
                 num_users: int = 20, user_dim: int = 4, seed: int = 7) -> Path:
    """Column 0 of every item's features is its row number, so a test server can tell which
    catalog rows a batch holds (and fail exactly those)."""
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((num_items, num_features)).astype(np.float32)
    feats[:, 0] = np.arange(num_items, dtype=np.float32)
    emb = rng.standard_normal((num_items, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    write_catalog(
        path,
        item_ids=[f"item-{i:05d}" for i in range(num_items)],
        item_features=feats,
        item_embeddings=emb,
        item_popularity=rng.random(num_items).astype(np.float32),
        feature_names=[f"f{i}" for i in range(num_features)],
        vocab=VOCAB,
        token_embeddings=rng.standard_normal((len(VOCAB), dim)).astype(np.float32),
        user_ids=[f"user-{i}" for i in range(num_users)],
        user_embeddings=rng.standard_normal((num_users, dim)).astype(np.float32),
        user_features=rng.standard_normal((num_users, user_dim)).astype(np.float32),
        devices=DEVICES,
        locales=LOCALES,
        seed=seed,
    )
    write_spec(path, num_features, dim + user_dim + 1)
    return path


def write_spec(catalog_dir: Path, num_features: int, context_width: int) -> Path:
    """A spec for the test models (``candidates @ w + context.sum()``): the catalog's item
    features per candidate, and the user's embedding, features and presence as the context."""
    spec = catalog_dir / "spec.yaml"
    spec.write_text(
        "inputs:\n"
        f"  - {{name: candidates, per: candidate, dtype: float32, shape: [{num_features}],"
        " features: [item.features]}\n"
        f"  - {{name: context, per: request, dtype: float32, shape: [{context_width}],"
        " features: [user.embedding, user.features, user.found]}\n")
    return spec
