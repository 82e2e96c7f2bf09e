"""Versioned embeddings on disk: one directory per model version, each part published atomically.

A two-tower retrieval model is retrained as a whole: version 5's query tower is only comparable
with version 5's item embeddings. So every artifact is filed under the model version that made
it, and retrieval pairs them by version (see :mod:`rankserve.ranker.versioned_retrieval`).

Layout under an embeddings root::

    <root>/<model>/<version>/items  -> ../.data/<version>-items-<id>   item index (symlink)
    <root>/<model>/<version>/tower  -> ../.data/<version>-tower-<id>   query tower
    <root>/<model>/<version>/users  -> ../.data/<version>-users-<id>   user embeddings
    <root>/<model>/.data/...                                            the parts' contents

A part is written completely into a fresh directory under ``.data`` (files and directory
synced), renamed to its final name, and then made visible by atomically replacing the
``<version>/<part>`` symlink (``os.replace`` of a symlink is one rename), so a reader resolves
either the whole old part or the whole new one, never half of one. The replaced data directory
is removed after ``grace_s`` so a reader that resolved the old link just before the swap can
still finish loading it.

A publisher killed at any point leaves at most a temporary directory or link whose name holds
its host and pid (``.tmp@<host>@<pid>@...``); readers never look at them, and the next publish
on the same host removes those whose process is gone (another host's once a day old). The item
index is what makes a version usable, so the publish job writes it last and prunes old user
embeddings only after it.

Each part holds ``manifest.json`` (written last) and ``.npy`` arrays:

* items: ``ids.npy`` [N] bytes, ``embeddings.npy`` [N, D] float32, L2-normalised rows;
* tower: ``vocab.txt`` and ``token_embeddings.npy`` [V, D] (a lookup-table query tower);
* users: ``ids.npy`` [U] bytes, ``embeddings.npy`` [U, D].
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankserve.ranker.durable_files import fsync_dir, fsync_file, process_alive

ITEMS, TOWER, USERS = "items", "tower", "users"
PARTS = (ITEMS, TOWER, USERS)
DATA_DIR = ".data"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class EmbeddingStoreError(Exception):
    """A part is missing, malformed, or does not fit the others."""


@dataclass(frozen=True)
class ItemIndex:
    version: int
    ids: np.ndarray  # [N] bytes
    embeddings: np.ndarray  # [N, D] float32


@dataclass(frozen=True)
class QueryTower:
    version: int
    vocab: dict[str, int]
    token_embeddings: np.ndarray  # [V, D]


@dataclass(frozen=True)
class UserEmbeddings:
    version: int
    index: dict[str, int]
    embeddings: np.ndarray  # [U, D]

    def get(self, user_id: str) -> np.ndarray | None:
        row = self.index.get(user_id)
        return None if row is None else self.embeddings[row]


class EmbeddingStore:
    """Reads and publishes the versioned parts of one model under ``root/<model>``."""

    def __init__(self, root: str | os.PathLike[str], model: str) -> None:
        if not model or "/" in model or model.startswith("."):
            raise ValueError(f"embedding model name {model!r} must be a plain directory name")
        self.root = Path(root)
        self.model = model
        self.model_dir = self.root / model

    # ---- reading ---------------------------------------------------------------------------

    def versions(self, part: str) -> list[int]:
        """Versions that have ``part`` published, newest first."""
        try:
            entries = list(self.model_dir.iterdir())
        except OSError:
            return []
        out = [int(e.name) for e in entries
               if e.name.isascii() and e.name.isdigit() and (e / part).is_dir()]
        return sorted(out, reverse=True)

    def part_path(self, version: int, part: str) -> Path | None:
        """The resolved data directory of a part (resolve once, then read only from it)."""
        link = self.model_dir / str(version) / part
        try:
            target = link.resolve(strict=True)
        except OSError:
            return None
        return target if (target / MANIFEST).is_file() else None

    def _manifest(self, path: Path, part: str, version: int) -> dict[str, Any]:
        raw: dict[str, Any] = json.loads((path / MANIFEST).read_text())
        if raw.get("format_version") != FORMAT_VERSION or raw.get("part") != part:
            raise EmbeddingStoreError(f"{path}: not a {part} part of format {FORMAT_VERSION}")
        if raw.get("version") != version:
            raise EmbeddingStoreError(f"{path}: holds version {raw.get('version')}, not {version}")
        return raw

    def load_items(self, version: int) -> ItemIndex | None:
        path = self.part_path(version, ITEMS)
        if path is None:
            return None
        self._manifest(path, ITEMS, version)
        ids = np.load(path / "ids.npy")
        emb = np.load(path / "embeddings.npy")
        if emb.ndim != 2 or emb.shape[0] != ids.shape[0]:
            raise EmbeddingStoreError(f"{path}: {ids.shape[0]} ids but embeddings {emb.shape}")
        return ItemIndex(version, ids, emb)

    def load_tower(self, version: int) -> QueryTower | None:
        path = self.part_path(version, TOWER)
        if path is None:
            return None
        self._manifest(path, TOWER, version)
        tokens = [t for t in (path / "vocab.txt").read_text().split("\n") if t]
        emb = np.load(path / "token_embeddings.npy")
        if emb.shape[0] != len(tokens):
            raise EmbeddingStoreError(f"{path}: {len(tokens)} tokens but embeddings {emb.shape}")
        return QueryTower(version, {t: i for i, t in enumerate(tokens)}, emb)

    def load_users(self, version: int) -> UserEmbeddings | None:
        path = self.part_path(version, USERS)
        if path is None:
            return None
        self._manifest(path, USERS, version)
        ids = np.load(path / "ids.npy")
        emb = np.load(path / "embeddings.npy")
        index = {s.decode(): i for i, s in enumerate(ids.tolist())}
        return UserEmbeddings(version, index, emb)

    # ---- publishing ------------------------------------------------------------------------

    def publish_items(self, version: int, ids: np.ndarray, embeddings: np.ndarray,
                      **info: object) -> Path:
        ids = np.asarray(ids, dtype="S")
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != ids.shape[0]:
            raise EmbeddingStoreError(f"{ids.shape[0]} ids but embeddings of shape {emb.shape}")
        return self._publish(version, ITEMS, {"ids.npy": ids, "embeddings.npy": emb},
                             {"num_items": int(ids.shape[0]), "dim": int(emb.shape[1]), **info})

    def publish_tower(self, version: int, vocab: list[str], token_embeddings: np.ndarray,
                      **info: object) -> Path:
        emb = np.ascontiguousarray(token_embeddings, dtype=np.float32)
        return self._publish(version, TOWER, {"token_embeddings.npy": emb},
                             {"vocab_size": len(vocab), "dim": int(emb.shape[1]), **info},
                             texts={"vocab.txt": "\n".join(vocab) + "\n"})

    def publish_users(self, version: int, ids: list[str], embeddings: np.ndarray,
                      keep_versions: int | None = None, **info: object) -> Path:
        """Publishes version's user embeddings; with ``keep_versions`` N, removes the user
        embeddings of all but the newest N versions (a user keeps their last N versions)."""
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        path = self._publish(version, USERS,
                             {"ids.npy": np.array(ids, dtype="S"), "embeddings.npy": emb},
                             {"num_users": len(ids), "dim": int(emb.shape[1]), **info})
        if keep_versions is not None:
            self.prune_users(keep_versions)
        return path

    def prune_users(self, keep_versions: int) -> None:
        """Removes the user embeddings of all but the newest ``keep_versions`` versions."""
        if keep_versions < 1:
            raise ValueError("keep_versions must be >= 1")
        for old in self.versions(USERS)[keep_versions:]:
            self.unpublish(old, USERS)

    def unpublish(self, version: int, part: str, grace_s: float = 5.0) -> None:
        """Makes a part invisible at once; its data goes after ``grace_s``."""
        link = self.model_dir / str(version) / part
        try:
            target = link.resolve(strict=True)
        except OSError:
            return
        link.unlink()
        self._collect(grace_s, extra=[target])

    def _publish(self, version: int, part: str, arrays: dict[str, np.ndarray],
                 info: dict[str, object],
                 texts: dict[str, str] | None = None, grace_s: float = 5.0) -> Path:
        if version < 1:
            raise ValueError(f"embedding version must be >= 1, got {version}")
        data_root = self.model_dir / DATA_DIR
        if not data_root.is_dir():
            data_root.mkdir(parents=True, exist_ok=True)
            fsync_dir(self.model_dir)
        self._remove_stale()
        data = data_root / f"{version}-{part}-{uuid.uuid4().hex[:12]}"
        tmp = data_root / _tmp_name(data.name)
        tmp.mkdir()
        try:
            for name, arr in arrays.items():
                np.save(tmp / name, arr)
            for name, text in (texts or {}).items():
                (tmp / name).write_text(text)
            manifest = {"format_version": FORMAT_VERSION, "part": part, "version": version,
                        "model": self.model, "published_at": time.time(), **info}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
            for written in tmp.iterdir():
                fsync_file(written)
            fsync_dir(tmp)
            os.rename(tmp, data)
            fsync_dir(data_root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        version_dir = self.model_dir / str(version)
        if not version_dir.is_dir():
            version_dir.mkdir(exist_ok=True)
            fsync_dir(self.model_dir)
        link = version_dir / part
        old = link.resolve() if link.is_symlink() else None
        new_link = version_dir / _tmp_name(f"{part}-{uuid.uuid4().hex[:8]}")
        os.symlink(os.path.relpath(data, version_dir), new_link)
        os.replace(new_link, link)  # the atomic switch
        fsync_dir(version_dir)
        self._collect(grace_s, extra=[old] if old is not None else [])
        return data

    def _remove_stale(self) -> None:
        """Temporary directories and links of publishers that were killed."""
        places = [self.model_dir / DATA_DIR]
        places += [d for d in self.model_dir.iterdir()
                   if d.name.isascii() and d.name.isdigit() and d.is_dir()]
        for place in places:
            for entry in place.iterdir():
                if not _stale(entry):
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    def _collect(self, grace_s: float, extra: list[Path]) -> None:
        """Removes data directories no link points at that are older than ``grace_s``.

        A just-replaced directory is marked with a timestamp file rather than removed, so
        readers that resolved it a moment ago can still open its files.
        """
        now = time.time()
        for path in extra:
            if path.is_dir():
                (path / ".retired").write_text(str(now))
        data_root = self.model_dir / DATA_DIR
        live = set()
        for version_dir in self.model_dir.iterdir():
            if not (version_dir.name.isascii() and version_dir.name.isdigit()):
                continue
            for part in PARTS:
                link = version_dir / part
                if link.is_symlink():
                    live.add(link.resolve())
        for data in data_root.iterdir():
            if data.name.startswith(".") or data.resolve() in live:
                continue
            marker = data / ".retired"
            try:
                retired_at = float(marker.read_text())
            except (OSError, ValueError):
                marker.write_text(str(now))
                continue
            if now - retired_at >= grace_s:
                shutil.rmtree(data, ignore_errors=True)


# Temporary names say who made them: ``.tmp@<host>@<pid>@<what>`` (hostnames hold no "@").
_TMP = ".tmp@"
#: A temporary entry of another host (whose pids this one cannot check) untouched this long
#: belongs to a publisher that died.
_ABANDONED_S = 24 * 3600.0


def _tmp_name(what: str) -> str:
    return f"{_TMP}{socket.gethostname()}@{os.getpid()}@{what}"


def _stale(entry: Path) -> bool:
    """True for a temporary entry whose publisher is gone: a dead pid on this host, or on any
    host untouched for ``_ABANDONED_S``."""
    if not entry.name.startswith(_TMP):
        return False
    host, _, rest = entry.name[len(_TMP):].partition("@")
    pid_text = rest.partition("@")[0]
    if host == socket.gethostname() and pid_text.isascii() and pid_text.isdigit():
        return not process_alive(int(pid_text))
    try:
        return time.time() - entry.lstat().st_mtime > _ABANDONED_S
    except OSError:
        return False
