"""Encodes a request into the model's context vector [C] and the retrieval query vector [D].

The demo model is trained on vectors made by this same code, so the layout here is the model's
input contract. Layout (D = embedding dim, K = user feature dim)::

    [0, D)        query embedding: mean of known token embeddings, L2-normalised (or zeros)
    [D, 2D)       user embedding (zeros for an unknown or anonymous user)
    [2D, 3D)      mean embedding of the items being viewed, L2-normalised (or zeros)
    [3D, 3D+K)    user features (zeros for an unknown user)
    3D+K          1.0 when the user is known
    next |dev|+1  device one-hot, the last slot for any other device
    next |loc|+1  locale one-hot, the last slot for any other locale
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
        m = catalog.manifest
        self._d = m.embedding_dim
        self._k = m.user_feature_dim
        self._devices = {d: i for i, d in enumerate(m.devices)}
        self._locales = {loc: i for i, loc in enumerate(m.locales)}
        self.dim = m.context_dim

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

    def context(self, enc: EncodedRequest, device: str, locale: str) -> np.ndarray:
        d, k = self._d, self._k
        out = np.zeros(self.dim, np.float32)
        out[0:d] = enc.query
        out[d : 2 * d] = enc.user
        out[2 * d : 3 * d] = enc.viewed
        if enc.user_row is not None:
            out[3 * d : 3 * d + k] = self._cat.user_features[enc.user_row]
            out[3 * d + k] = 1.0
        base = 3 * d + k + 1
        n_dev = len(self._devices)
        out[base + self._devices.get(device, n_dev)] = 1.0
        base += n_dev + 1
        out[base + self._locales.get(locale, len(self._locales))] = 1.0
        return out
