"""The demo's two-tower retrieval model, one per version: the catalog's embedding space turned
by a rotation seeded from (model name, version).

A rotation keeps every cosine within one version, so a version retrieves exactly as well as the
catalog's own embeddings, while two versions are as incomparable as two independently trained
towers: a version-5 query against version-4 items scores close to random. That is the failure
versioned embeddings exist to prevent, reproduced at no training cost.
"""

from __future__ import annotations

import hashlib

import numpy as np

from rankserve.ranker.catalog import Catalog

# Rows are embedded in blocks of this many so every row goes through the same matrix product
# whatever else is embedded with it: a delta publish then reproduces a bulk one bit for bit.
BLOCK_ROWS = 256


def rotation(model: str, version: int, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(f"{model}\0{version}".encode()).digest()[:8], "big")
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))  # a proper random orthogonal matrix (Haar)


def _embed(vectors: np.ndarray, rot: np.ndarray, normalise: bool) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    out = np.empty((vectors.shape[0], rot.shape[1]), np.float32)
    block = np.zeros((BLOCK_ROWS, rot.shape[0]), np.float64)
    for start in range(0, vectors.shape[0], BLOCK_ROWS):
        chunk = vectors[start:start + BLOCK_ROWS]
        block[:] = 0.0
        block[: chunk.shape[0]] = chunk
        res = block @ rot
        if normalise:
            norms = np.linalg.norm(res, axis=1, keepdims=True)
            res = np.divide(res, norms, out=np.zeros_like(res), where=norms > 0)
        out[start:start + chunk.shape[0]] = res[: chunk.shape[0]]
    return out


class RotationTowers:
    """Item, query and user towers of one version of the demo retrieval model."""

    def __init__(self, catalog: Catalog, model: str, version: int) -> None:
        self.catalog = catalog
        self.model = model
        self.version = version
        self._rot = rotation(model, version, catalog.manifest.embedding_dim)

    def items(self, rows: np.ndarray) -> np.ndarray:
        return _embed(np.asarray(self.catalog.item_embeddings)[rows], self._rot, True)

    def tokens(self) -> tuple[list[str], np.ndarray]:
        vocab = sorted(self.catalog.vocab, key=self.catalog.vocab.__getitem__)
        return vocab, _embed(self.catalog.token_embeddings, self._rot, False)

    def users(self) -> tuple[list[str], np.ndarray]:
        ids = [s.decode() for s in self.catalog.user_ids.tolist()]
        return ids, _embed(self.catalog.user_embeddings, self._rot, False)
