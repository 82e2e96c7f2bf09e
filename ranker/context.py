"""Encodes a request into the vectors embedding retrieval over the catalog searches with.

D = the catalog's embedding dim: the query (mean of known token embeddings), the user's
embedding and the mean embedding of the items being viewed, each [D]. What a model is fed is
not decided here but by its feature spec (``rankserve.ranker.spec``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from rankserve.ranker.catalog import Catalog

_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _normalise(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


@dataclass(frozen=True)
class EncodedRequest:
    """What retrieval and the feature store need to know about one request."""

    query: np.ndarray  # [D] normalised query-token embedding or zeros
    user: np.ndarray  # [D]
    viewed: np.ndarray  # [D]
    user_row: int | None  # row in the user tables when the user is known and present
    known_tokens: int


class ContextEncoder:
    def __init__(self, catalog: Catalog) -> None:
        self._cat = catalog
        self._d = catalog.manifest.embedding_dim

    def encode(
        self,
        query: str,
        user_id: str,
        user_known: bool,
        viewed_item_ids: tuple[str, ...] | list[str],
    ) -> EncodedRequest:
        cat = self._cat
        d = self._d
        tokens = [cat.vocab[t] for t in tokenize(query) if t in cat.vocab]
        q = np.zeros(d, np.float32)
        if tokens:
            q = _normalise(cat.token_embeddings[tokens].mean(axis=0))
        row = cat.user_row(user_id) if (user_known and user_id) else None
        u = np.asarray(cat.user_embeddings[row]) if row is not None else np.zeros(d, np.float32)
        rows = [r for r in (cat.item_row(i) for i in viewed_item_ids) if r is not None]
        v = np.zeros(d, np.float32)
        if rows:
            v = _normalise(np.asarray(cat.item_embeddings[rows]).mean(axis=0))
        f32 = np.float32
        return EncodedRequest(q.astype(f32), u.astype(f32), v.astype(f32), row, len(tokens))

    def retrieval_vector(self, enc: EncodedRequest) -> np.ndarray:
        """The vector retrieval searches with; all zeros when the request says nothing usable."""
        return _normalise(enc.query + 0.5 * enc.user + 0.5 * enc.viewed).astype(np.float32)
