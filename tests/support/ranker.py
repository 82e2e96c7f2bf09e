"""A Ranker over a test catalog, as the ranking server builds one, with a test's own scorer."""

from __future__ import annotations

from typing import Any

from rankserve.ranker.catalog import Catalog
from rankserve.ranker.catalog_features import catalog_items, catalog_users
from rankserve.ranker.context import ContextEncoder
from rankserve.ranker.model_inputs import InputAssembler
from rankserve.ranker.pipeline import Ranker, RankerConfig
from rankserve.ranker.retrieval import CandidateSource, EmbeddingRetriever
from rankserve.ranker.spec import FeatureSpec, parse_spec


def catalog_spec(catalog: Catalog) -> FeatureSpec:
    """The spec tests/support/catalog.write_spec writes: item features per candidate; the
    user's embedding, features and presence as the context."""
    m = catalog.manifest
    return parse_spec({"inputs": [
        {"name": "candidates", "per": "candidate", "dtype": "float32",
         "shape": [m.num_features], "features": ["item.features"]},
        {"name": "context", "per": "request", "dtype": "float32",
         "shape": [m.embedding_dim + m.user_feature_dim + 1],
         "features": ["user.embedding", "user.features", "user.found"]},
    ]}, "test spec")


def catalog_ranker(catalog: Catalog, scorer: Any, config: RankerConfig | None = None, *,
                   retriever: CandidateSource | None = None, spec: FeatureSpec | None = None,
                   **kw: Any) -> Ranker:
    inputs = InputAssembler(spec or catalog_spec(catalog), items=catalog_items(catalog),
                            users=catalog_users(catalog))
    return Ranker(config or RankerConfig(),
                  retriever=retriever or EmbeddingRetriever(catalog, ContextEncoder(catalog)),
                  inputs=inputs, scorer=scorer, item_names=catalog.name_rows, **kw)
