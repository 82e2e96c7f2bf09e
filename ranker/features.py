"""Feature fetch: the request's context vector [C] and the candidates' matrix [N, F].

The embedded store reads the memory-mapped catalog; a remote feature service is another
``FeatureStore``. Values that are not finite (NaN, inf) would make a model's scores NaN, so they
are replaced by 0 and counted; the count reaches the response's degradation reasons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rankserve.ranker.catalog import Catalog
from rankserve.ranker.context import ContextEncoder, EncodedRequest
from rankserve.ranker.types import RankQuery


@dataclass
class FeatureBlock:
    """A contiguous float32 array and how many non-finite values in it were replaced by 0."""

    values: np.ndarray
    nonfinite: int = 0
    # Rows (candidates) that had at least one replaced value; 0 for the context vector.
    nonfinite_rows: int = 0


class FeatureStore(Protocol):
    def context(self, query: RankQuery, encoded: EncodedRequest) -> FeatureBlock: ...

    def candidates(self, rows: np.ndarray) -> FeatureBlock: ...


def sanitize(values: np.ndarray) -> FeatureBlock:
    """Replaces non-finite values by 0 in place and counts them (values must be a fresh copy)."""
    finite = np.isfinite(values)
    if finite.all():
        return FeatureBlock(values)
    bad = ~finite
    values[bad] = 0.0
    rows = int(bad.reshape(values.shape[0], -1).any(axis=1).sum()) if values.ndim == 2 else 0
    return FeatureBlock(values, int(bad.sum()), rows)


class CatalogFeatureStore:
    """Features from the embedded catalog: item rows by fancy index, context by the encoder."""

    def __init__(self, catalog: Catalog, encoder: ContextEncoder) -> None:
        self._features = catalog.item_features
        self._encoder = encoder
        self.context_dim = encoder.dim
        self.num_features = catalog.manifest.num_features

    def context(self, query: RankQuery, encoded: EncodedRequest) -> FeatureBlock:
        vec = self._encoder.context(encoded, query.device, query.locale)
        return sanitize(np.ascontiguousarray(vec, dtype=np.float32))

    def candidates(self, rows: np.ndarray) -> FeatureBlock:
        # Fancy indexing a memmap copies the rows into a fresh in-memory array.
        values = np.ascontiguousarray(self._features[np.asarray(rows, dtype=np.int64)],
                                      dtype=np.float32)
        return sanitize(values)
