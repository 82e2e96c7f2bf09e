"""The embedded catalog: item ids, features and embeddings as memory-mapped .npy files.

This module owns the on-disk format. demo/ writes it with :func:`write_catalog`; the ranker
reads it with :meth:`Catalog.open`. Arrays are opened with ``mmap_mode="r"`` so a 50,000 x 300
feature matrix costs page cache, not process memory, and a feature fetch is a fancy-index copy.

Layout of a catalog directory::

    manifest.json          format version, sizes, feature names, devices, locales
    item_ids.npy           [N] fixed-width bytes
    item_features.npy      [N, F] float32
    item_embeddings.npy    [N, D] float32, L2-normalised (retrieval)
    item_popularity.npy    [N] float32 (non-embedding fallback retrieval)
    vocab.txt              one query token per line
    token_embeddings.npy   [V, D] float32
    user_ids.npy           [U] fixed-width bytes
    user_embeddings.npy    [U, D] float32
    user_features.npy      [U, K] float32
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    num_items: int
    num_features: int
    embedding_dim: int
    user_feature_dim: int
    feature_names: tuple[str, ...]
    devices: tuple[str, ...]
    locales: tuple[str, ...]
    seed: int


class CatalogFormatError(Exception):
    """The directory is not a catalog this version can read."""


class RowNames(list[str]):
    """Ids of catalog rows that remember the rows they name (:meth:`Catalog.name_rows`).

    Retrieval finds rows; the pipeline names them, and the catalog's feature store turns the
    names back into rows: a Rank's 1000 dict probes. Given these, :meth:`Catalog.item_rows`
    copies the rows instead. Treat the list as read-only: a changed length falls back to the
    probes, a changed element would not be noticed.
    """

    __slots__ = ("rows", "owner")

    rows: np.ndarray
    owner: object


@dataclass
class Catalog:
    manifest: Manifest
    item_ids: np.ndarray
    item_features: np.ndarray
    item_embeddings: np.ndarray
    item_popularity: np.ndarray
    vocab: dict[str, int]
    token_embeddings: np.ndarray
    user_ids: np.ndarray
    user_embeddings: np.ndarray
    user_features: np.ndarray
    _item_index: dict[str, int]
    _user_index: dict[str, int]
    #: Item ids as str, by row: naming a Rank's 1000 retrieved rows is a list index each
    #: (24 us in all), not a numpy scalar and a decode (165 us).
    _item_names: list[str]

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Catalog:
        root = Path(path)
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise CatalogFormatError(
                f"{root} holds no catalog ({MANIFEST} missing); build one with `rankserve demo`"
                " or point --catalog-dir at a catalog directory"
            )
        raw = json.loads(manifest_path.read_text())
        if raw.get("format_version") != FORMAT_VERSION:
            raise CatalogFormatError(
                f"{manifest_path}: format_version {raw.get('format_version')!r}, this build reads"
                f" {FORMAT_VERSION}; rebuild the catalog"
            )
        m = Manifest(
            num_items=raw["num_items"],
            num_features=raw["num_features"],
            embedding_dim=raw["embedding_dim"],
            user_feature_dim=raw["user_feature_dim"],
            feature_names=tuple(raw["feature_names"]),
            devices=tuple(raw["devices"]),
            locales=tuple(raw["locales"]),
            seed=raw["seed"],
        )

        def load(name: str) -> np.ndarray:
            mapped: np.ndarray = np.load(root / name, mmap_mode="r")
            return mapped

        item_ids = np.load(root / "item_ids.npy")
        item_names = [s.decode() for s in item_ids.tolist()]
        user_ids = np.load(root / "user_ids.npy")
        vocab_tokens = (root / "vocab.txt").read_text().split("\n")
        cat = cls(
            manifest=m,
            item_ids=item_ids,
            item_features=load("item_features.npy"),
            item_embeddings=np.load(root / "item_embeddings.npy"),
            item_popularity=np.load(root / "item_popularity.npy"),
            vocab={t: i for i, t in enumerate(t for t in vocab_tokens if t)},
            token_embeddings=np.load(root / "token_embeddings.npy"),
            user_ids=user_ids,
            user_embeddings=np.load(root / "user_embeddings.npy"),
            user_features=np.load(root / "user_features.npy"),
            _item_index={s: i for i, s in enumerate(item_names)},
            _user_index={s.decode(): i for i, s in enumerate(user_ids.tolist())},
            _item_names=item_names,
        )
        cat._check_shapes()
        return cat

    def _check_shapes(self) -> None:
        m = self.manifest
        expect = {
            "item_ids": (self.item_ids.shape, (m.num_items,)),
            "item_features": (self.item_features.shape, (m.num_items, m.num_features)),
            "item_embeddings": (self.item_embeddings.shape, (m.num_items, m.embedding_dim)),
            "item_popularity": (self.item_popularity.shape, (m.num_items,)),
            "token_embeddings": (self.token_embeddings.shape, (len(self.vocab), m.embedding_dim)),
            "user_embeddings": (self.user_embeddings.shape, (len(self.user_ids), m.embedding_dim)),
            "user_features": (self.user_features.shape, (len(self.user_ids), m.user_feature_dim)),
        }
        for name, (got, want) in expect.items():
            if got != want:
                raise CatalogFormatError(f"{name}.npy has shape {got}, manifest implies {want}")

    def item_row(self, item_id: str) -> int | None:
        return self._item_index.get(item_id)

    def user_row(self, user_id: str) -> int | None:
        return self._user_index.get(user_id)

    def item_rows(self, item_ids: Sequence[str]) -> np.ndarray:
        """Rows of many ids at once, -1 for an id the catalog lacks (one dict probe each, but
        for the names of :meth:`name_rows`, which carry their rows)."""
        if (isinstance(item_ids, RowNames) and item_ids.owner is self
                and len(item_ids) == item_ids.rows.size):
            return item_ids.rows.copy()
        get = self._item_index.get
        return np.array([get(i, -1) for i in item_ids], dtype=np.int64)

    def user_rows(self, user_ids: Sequence[str]) -> np.ndarray:
        get = self._user_index.get
        return np.array([get(i, -1) for i in user_ids], dtype=np.int64)

    def item_id(self, row: int) -> str:
        return self._item_names[row]

    def name_rows(self, rows: np.ndarray) -> RowNames:
        """The ids of ``rows`` (item rows of this catalog), carrying the rows along."""
        names = RowNames(map(self._item_names.__getitem__, rows.tolist()))
        names.rows = np.array(rows, dtype=np.int64)
        names.owner = self
        return names


def write_catalog(
    path: str | os.PathLike[str],
    *,
    item_ids: list[str],
    item_features: np.ndarray,
    item_embeddings: np.ndarray,
    item_popularity: np.ndarray,
    feature_names: list[str],
    vocab: list[str],
    token_embeddings: np.ndarray,
    user_ids: list[str],
    user_embeddings: np.ndarray,
    user_features: np.ndarray,
    devices: list[str],
    locales: list[str],
    seed: int,
) -> None:
    """Writes a catalog directory; the manifest goes last so a half-written one never opens."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)
    np.save(root / "item_ids.npy", np.array(item_ids, dtype="S"))
    np.save(root / "item_features.npy", np.ascontiguousarray(item_features, dtype=np.float32))
    np.save(root / "item_embeddings.npy", np.ascontiguousarray(item_embeddings, dtype=np.float32))
    np.save(root / "item_popularity.npy", np.ascontiguousarray(item_popularity, dtype=np.float32))
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    np.save(root / "token_embeddings.npy", np.ascontiguousarray(token_embeddings, dtype=np.float32))
    np.save(root / "user_ids.npy", np.array(user_ids, dtype="S"))
    np.save(root / "user_embeddings.npy", np.ascontiguousarray(user_embeddings, dtype=np.float32))
    np.save(root / "user_features.npy", np.ascontiguousarray(user_features, dtype=np.float32))
    manifest = {
        "format_version": FORMAT_VERSION,
        "num_items": int(item_features.shape[0]),
        "num_features": int(item_features.shape[1]),
        "embedding_dim": int(item_embeddings.shape[1]),
        "user_feature_dim": int(user_features.shape[1]),
        "feature_names": list(feature_names),
        "devices": list(devices),
        "locales": list(locales),
        "seed": seed,
    }
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, root / MANIFEST)
