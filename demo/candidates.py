"""Context vectors and candidates for demo requests, made by the code serving uses.

Training and evaluation go through ``rankserve.ranker.retrieval.EmbeddingRetriever`` and the
demo spec's own context layout (``rankserve.demo.features``), so the model learns exactly what
serving feeds it: the same context and the same candidates to re-rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rankserve.demo.features import context_vector
from rankserve.demo.queries import DemoRequest
from rankserve.ranker.catalog import Catalog
from rankserve.ranker.context import ContextEncoder
from rankserve.ranker.retrieval import EmbeddingRetriever

# How many candidates the ranker retrieves per request by default.
RETRIEVE_K = 1000


@dataclass
class Retrieved:
    context: np.ndarray  # [C] float32
    rows: np.ndarray  # [N] int64 catalog rows, retrieval order
    scores: np.ndarray  # [N] float32 retrieval scores


class CandidateMaker:
    """Encodes a demo request and retrieves its candidates from one catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.encoder = ContextEncoder(catalog)
        self.retriever = EmbeddingRetriever(catalog, self.encoder)

    @classmethod
    def open(cls, catalog_dir: Path) -> CandidateMaker:
        return cls(Catalog.open(catalog_dir))

    def __call__(self, request: DemoRequest, k: int = RETRIEVE_K) -> Retrieved:
        enc = self.encoder.encode(
            request.query, request.user_id, request.user_known, request.viewed_item_ids
        )
        cands = self.retriever.retrieve(enc, k)
        ctx = context_vector(self.catalog, enc, request.device, request.locale)
        return Retrieved(ctx, cands.rows, cands.scores)

    def features(self, rows: np.ndarray) -> np.ndarray:
        """The candidate matrix [N, F] the ranker's feature store would send."""
        return np.asarray(self.catalog.item_features[rows], dtype=np.float32)
