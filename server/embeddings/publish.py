"""Publishes a model version's embeddings: every item (bulk) or only changed items (delta).

A delta recomputes the changed items with the version's towers and merges them into the
version's current index: changed ids present in the catalog are updated or added, changed ids
gone from the catalog are removed, and the merged index is ordered by catalog row, exactly as a
bulk publish orders it, so both give the same index for the same catalog.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from rankserve.ranker.catalog import Catalog
from rankserve.ranker.embedding_store import (
    ITEMS,
    TOWER,
    USERS,
    EmbeddingStore,
    EmbeddingStoreError,
)


class Towers(Protocol):
    """One version of an embedding model, as the refresh job uses it."""

    def items(self, rows: np.ndarray) -> np.ndarray:
        """Embeddings of the catalog rows ``rows``, one row each, L2-normalised."""
        ...

    def tokens(self) -> tuple[list[str], np.ndarray]:
        """The query tower: vocabulary and one embedding per token."""
        ...

    def users(self) -> tuple[list[str], np.ndarray]:
        """User ids and one embedding per user."""
        ...


#: Builds a version's towers: (catalog, embedding model name, version) -> Towers.
TowersFactory = Callable[[Catalog, str, int], Towers]

#: The towers a publish uses unless told otherwise: the demo model's, found by name so this
#: job depends on no model of its own and a team's towers plug in the same way.
DEFAULT_TOWERS = "rankserve.demo.towers:RotationTowers"


def load_towers(spec: str) -> TowersFactory:
    """``"package.module:name"`` -> the factory it names; ValueError says what to fix."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"towers {spec!r}: give MODULE:NAME, e.g. {DEFAULT_TOWERS}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"towers {spec!r}: cannot import {module_name}: {exc}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ValueError(f"towers {spec!r}: {module_name} has no callable {attribute!r}")
    return factory


@dataclass(frozen=True)
class PublishResult:
    version: int
    mode: str
    items: int
    recomputed: int
    removed: int
    parts: tuple[str, ...]
    seconds: float

    def __str__(self) -> str:
        return (f"published {'+'.join(self.parts)} of version {self.version} ({self.mode}):"
                f" {self.items:,} items in the index, {self.recomputed:,} computed,"
                f" {self.removed:,} removed, {self.seconds:.2f} s")


def publish(
    catalog: Catalog, store: EmbeddingStore, version: int, *, mode: str = "bulk",
    changed_ids: list[str] | None = None, parts: tuple[str, ...] = (ITEMS, TOWER, USERS),
    keep_user_versions: int = 3, towers_factory: TowersFactory | None = None,
) -> PublishResult:
    t0 = time.perf_counter()
    factory = towers_factory if towers_factory is not None else load_towers(DEFAULT_TOWERS)
    towers = factory(catalog, store.model, version)
    n = catalog.manifest.num_items
    removed = 0
    if mode == "bulk":
        rows = np.arange(n, dtype=np.int64)
        ids = catalog.item_ids
        emb = towers.items(rows) if ITEMS in parts else None
        recomputed = n
    elif mode == "delta":
        if changed_ids is None:
            raise ValueError("a delta publish needs the changed item ids")
        current = store.load_items(version)
        if current is None:
            raise EmbeddingStoreError(
                f"version {version} of '{store.model}' has no item index to merge into:"
                " publish it in bulk first")
        by_row: dict[int, np.ndarray] = {}
        for item_id, vec in zip(current.ids.tolist(), current.embeddings, strict=True):
            row = catalog.item_row(item_id.decode())
            if row is not None:
                by_row[row] = vec
        changed_rows = []
        for item_id in dict.fromkeys(changed_ids):
            row = catalog.item_row(item_id)
            if row is not None:  # an id gone from the catalog simply leaves the index
                changed_rows.append(row)
        if changed_rows:
            fresh = towers.items(np.asarray(changed_rows, dtype=np.int64))
            for row, vec in zip(changed_rows, fresh, strict=True):
                by_row[row] = vec
        rows = np.asarray(sorted(by_row), dtype=np.int64)
        ids = catalog.item_ids[rows]
        emb = (np.stack([by_row[int(r)] for r in rows]) if rows.size
               else np.zeros((0, catalog.manifest.embedding_dim), np.float32))
        recomputed = len(changed_rows)
        removed = len(set(current.ids.tolist()) - set(ids.tolist()))
        parts = (ITEMS,)
    else:
        raise ValueError(f"mode must be 'bulk' or 'delta', got {mode!r}")
    # Query-side parts first: the item index makes a version usable, so it goes last.
    if TOWER in parts:
        vocab, tokens = towers.tokens()
        store.publish_tower(version, vocab, tokens)
    if USERS in parts:
        user_ids, users = towers.users()
        store.publish_users(version, user_ids, users)
    if ITEMS in parts:
        store.publish_items(version, ids, emb, mode=mode)
    if USERS in parts:
        # Old user embeddings go only now: a publish killed before its item index must leave
        # the versions readers are on whole.
        store.prune_users(keep_user_versions)
    return PublishResult(version, mode, int(len(ids)), recomputed, removed, parts,
                         time.perf_counter() - t0)


def read_ids(path: Path) -> list[str]:
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
