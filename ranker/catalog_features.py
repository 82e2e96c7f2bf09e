"""The embedded catalog's arrays as entity-feature stores, so a spec can name them.

Items: ``features`` (the catalog's feature matrix), ``embedding``, ``popularity``; users:
``embedding``, ``features``. Reading is a fancy-index copy from memory-mapped files, so the
store never waits and never fails.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from rankserve.ranker.catalog import Catalog
from rankserve.ranker.entity_features import FeatureInfo, Fetched


class _CatalogFeatures:
    def __init__(self, entity: str, arrays: Mapping[str, np.ndarray],
                 rows_of: Callable[[Sequence[str]], np.ndarray], version: str) -> None:
        self._entity = entity
        # Plain ndarray views of the memory maps: indexing a np.memmap runs its Python
        # __getitem__ and wraps the copy in a memmap; the base class does neither.
        self._arrays = {name: np.asarray(a if a.ndim == 2 else a.reshape(-1, 1))
                        for name, a in arrays.items()}
        self._rows_of = rows_of
        self._version = version
        self._schema = {name: FeatureInfo(name, "float32", int(a.shape[1]))
                        for name, a in self._arrays.items()}

    @property
    def entity(self) -> str:
        return self._entity

    def schema(self) -> Mapping[str, FeatureInfo]:
        return self._schema

    async def fetch(self, keys: Sequence[str], names: Sequence[str]) -> Fetched:
        for name in names:
            if name not in self._arrays:
                raise KeyError(f"the catalog has no {self._entity} feature '{name}'; it has"
                               f" {', '.join(sorted(self._arrays))}")
        rows = self._rows_of(keys)
        found = rows >= 0
        rows[~found] = 0
        columns = {}
        missing = int(found.size - np.count_nonzero(found))
        for name in names:
            values = np.ascontiguousarray(self._arrays[name][rows], dtype=np.float32)
            if missing:
                values[~found] = self._schema[name].fill_value()
            columns[name] = values
        return Fetched(columns, found, 0, self._version, {n: missing for n in names})

    async def close(self) -> None:
        return None


def catalog_items(catalog: Catalog) -> _CatalogFeatures:
    """Item features of the catalog, keyed by item id."""
    return _CatalogFeatures(
        "item",
        {"features": catalog.item_features, "embedding": catalog.item_embeddings,
         "popularity": catalog.item_popularity},
        catalog.item_rows, f"catalog-{catalog.manifest.seed}")


def catalog_users(catalog: Catalog) -> _CatalogFeatures:
    """User features of the catalog, keyed by user id."""
    return _CatalogFeatures(
        "user",
        {"embedding": catalog.user_embeddings, "features": catalog.user_features},
        catalog.user_rows, f"catalog-{catalog.manifest.seed}")
