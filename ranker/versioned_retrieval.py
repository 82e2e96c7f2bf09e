"""Retrieval that only ever compares embeddings of one model version.

A query embedding from version 5 against item embeddings from version 4 ranks close to random,
and nothing downstream would notice. So the retriever picks the highest version for which every
side the request needs exists (item index, query tower when the query has known words, user
embedding when the user is known), falls back to the next version down, and never mixes two.
When no version has a complete pair it retrieves by popularity and the response says why.

Published parts are picked up by a rescan at most every ``refresh_s``; a rescan loads changed
parts off the request path's data structures and swaps one immutable snapshot in, so a request
sees one consistent set of versions from start to end.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from opentelemetry import trace

from rankserve.ranker.catalog import Catalog
from rankserve.ranker.context import tokenize
from rankserve.ranker.embedding_store import (
    ITEMS,
    TOWER,
    USERS,
    EmbeddingStore,
    QueryTower,
    UserEmbeddings,
)
from rankserve.ranker.retrieval import top_k
from rankserve.ranker.types import Candidates, RankQuery
from rankserve.ranker.version_metrics import VersionMetrics

log = logging.getLogger(__name__)

_EMPTY_REASON = "no query tokens, user or viewed items matched the catalog: popularity retrieval"


@dataclass(frozen=True)
class _Items:
    version: int
    path: Path
    rows: np.ndarray  # catalog row of each index entry
    embeddings: np.ndarray  # [N, D]
    position: dict[int, int]  # catalog row -> index entry


@dataclass(frozen=True)
class _Snapshot:
    items: dict[int, _Items] = field(default_factory=dict)
    towers: dict[int, tuple[Path, QueryTower]] = field(default_factory=dict)
    users: dict[int, tuple[Path, UserEmbeddings]] = field(default_factory=dict)


@dataclass(frozen=True)
class Pick:
    """The version chosen for one request, or None, and why the newest was not taken."""

    version: int | None
    newest: int | None
    reason: str | None = None


def _normalise(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


class VersionedRetriever:
    """Cosine top-k within one embedding version; see the module docstring."""

    def __init__(self, catalog: Catalog, store: EmbeddingStore, *, refresh_s: float = 1.0,
                 metrics: VersionMetrics | None = None) -> None:
        self._cat = catalog
        self._store = store
        self._refresh_s = refresh_s
        self._metrics = metrics
        self._pop = np.asarray(catalog.item_popularity, dtype=np.float32)
        self._snap = _Snapshot()
        self._scanned_at = -float("inf")
        self._lock = threading.Lock()
        self.refresh()

    @property
    def model(self) -> str:
        return self._store.model

    def refresh(self) -> None:
        """Rescans the store now and swaps in a snapshot of what is published."""
        with self._lock:
            old = self._snap
            store = self._store
            items: dict[int, _Items] = {}
            towers: dict[int, tuple[Path, QueryTower]] = {}
            users: dict[int, tuple[Path, UserEmbeddings]] = {}
            for v in store.versions(ITEMS):
                path = store.part_path(v, ITEMS)
                if path is None:
                    continue
                prev_items = old.items.get(v)
                loaded = (prev_items if prev_items is not None and prev_items.path == path
                          else self._load_items(v))
                if loaded is not None:
                    items[v] = loaded
            for v in store.versions(TOWER):
                path = store.part_path(v, TOWER)
                if path is None:
                    continue
                prev_tower = old.towers.get(v)
                tower = (prev_tower[1] if prev_tower and prev_tower[0] == path
                         else store.load_tower(v))
                if tower is not None:
                    towers[v] = (path, tower)
            for v in store.versions(USERS):
                path = store.part_path(v, USERS)
                if path is None:
                    continue
                prev_users = old.users.get(v)
                u = (prev_users[1] if prev_users and prev_users[0] == path
                     else store.load_users(v))
                if u is not None:
                    users[v] = (path, u)
            self._snap = _Snapshot(items, towers, users)
            self._scanned_at = time.monotonic()

    def _load_items(self, version: int) -> _Items | None:
        path = self._store.part_path(version, ITEMS)
        index = self._store.load_items(version)
        if index is None or path is None:
            return None
        found = (self._cat.item_row(s.decode()) for s in index.ids.tolist())
        rows = np.array([-1 if r is None else r for r in found], dtype=np.int64)
        keep = rows >= 0
        if not keep.all():
            log.warning("embedding index %s/%d: %d items are not in the catalog; ignored",
                        self._store.model, version, int((~keep).sum()))
        rows = rows[keep]
        emb = np.ascontiguousarray(index.embeddings[keep], dtype=np.float32)
        return _Items(version, path, rows, emb, {int(r): i for i, r in enumerate(rows)})

    def _snapshot(self) -> _Snapshot:
        if time.monotonic() - self._scanned_at >= self._refresh_s:
            try:
                self.refresh()
            except Exception:  # a bad publish must not fail requests; keep the last snapshot
                log.exception("embedding rescan failed; keeping the previous versions")
                self._scanned_at = time.monotonic()
        return self._snap

    def pick(self, snap: _Snapshot, query: RankQuery, tokens: list[str], user_needed: bool
             ) -> Pick:
        """The highest version with an item index and every query side the request needs.

        ``reason`` is set when the newest version of some side was passed over: a system
        without pairing would have compared it with another version's embeddings.
        """
        newest = {"item index": max(snap.items, default=None)}
        if tokens:
            newest["query tower"] = max(snap.towers, default=None)
        if user_needed:
            newest["user embedding"] = max(
                (v for v, (_, u) in snap.users.items() if u.get(query.user_id) is not None),
                default=None)
        top = max((v for v in newest.values() if v is not None), default=None)
        chosen = None
        for v in sorted(snap.items, reverse=True):
            if tokens and v not in snap.towers:
                continue
            if user_needed and (v not in snap.users or snap.users[v][1].get(query.user_id)
                                is None):
                continue
            chosen = v
            break
        unpaired = [f"{side} {v}" for side, v in newest.items() if v is not None and v != chosen]
        if chosen is None or not unpaired:
            return Pick(chosen, top)
        return Pick(chosen, top, "newest versions are not paired: " + ", ".join(
            f"{side} at version {v}" for side, v in newest.items() if v is not None))

    def retrieve_for(self, query: RankQuery, k: int) -> Candidates:
        span = trace.get_current_span()
        snap = self._snapshot()
        tokens = [t for t in tokenize(query.query) if t in self._cat.vocab]
        user_needed = (query.user_known and bool(query.user_id)
                       and self._cat.user_row(query.user_id) is not None)
        viewed_rows = [r for r in (self._cat.item_row(i) for i in query.viewed_item_ids)
                       if r is not None]
        if not tokens and not user_needed and not viewed_rows:
            rows = top_k(self._pop, k)
            return Candidates(rows, self._pop[rows].copy(), None, _EMPTY_REASON)
        pick = self.pick(snap, query, tokens, user_needed)
        metrics, model = self._metrics, self._store.model
        if pick.version is None:
            reason = (f"no version of embedding model '{model}' has both an item index and the"
                      " query/user embeddings this request needs: popularity retrieval")
            if metrics:
                metrics.retrieval_fallback(model, "popularity")
            span.set_attribute("rankserve.embedding.fallback", "popularity")
            rows = top_k(self._pop, k)
            return Candidates(rows, self._pop[rows].copy(), None, reason)
        version = pick.version
        if pick.reason:
            if metrics:
                metrics.mismatch_avoided(model)
                metrics.retrieval_fallback(model, "older_version")
            span.set_attribute("rankserve.embedding.mismatch_avoided", True)
            span.add_event("embedding version fallback",
                           {"from_version": int(pick.newest or 0), "to_version": version,
                            "reason": pick.reason})
        span.set_attribute("rankserve.embedding.version", version)
        items = snap.items[version]
        vec = self._vector(snap, version, items, tokens, query, user_needed, viewed_rows)
        sims = items.embeddings @ vec
        pos = top_k(sims, k)
        paired = (f"embedding version {version} used for query and items: {pick.reason}"
                  if pick.reason else None)
        return Candidates(items.rows[pos], sims[pos].astype(np.float32), version, paired)

    def _vector(self, snap: _Snapshot, version: int, items: _Items, tokens: list[str],
                query: RankQuery, user_needed: bool, viewed_rows: list[int]) -> np.ndarray:
        dim = items.embeddings.shape[1]
        q = np.zeros(dim, np.float32)
        if tokens:
            tower = snap.towers[version][1]
            ids = [tower.vocab[t] for t in tokens if t in tower.vocab]
            if ids:
                q = _normalise(tower.token_embeddings[ids].mean(axis=0))
        u = np.zeros(dim, np.float32)
        if user_needed:
            u = np.asarray(snap.users[version][1].get(query.user_id), dtype=np.float32)
        v = np.zeros(dim, np.float32)
        pos = [items.position[r] for r in viewed_rows if r in items.position]
        if pos:
            v = _normalise(items.embeddings[pos].mean(axis=0))
        # Same blend as ContextEncoder.retrieval_vector, within one version.
        return _normalise(q + 0.5 * u + 0.5 * v).astype(np.float32)
