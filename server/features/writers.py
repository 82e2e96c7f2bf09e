"""Publishes a checked feature table as one version of a store, atomically.

- embedded tables: the version is written to ``<version>.tmp-<pid>-<random>``, synced, renamed
  into place, and then CURRENT is replaced by rename;
- Redis: the version is registered, every record is written (MSET batches), then the manifest,
  then ``current``; versions beyond ``keep_versions`` are removed last, manifest first.

A kill at any point leaves CURRENT (or ``current``) naming a complete version.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from rankserve.ranker.durable_files import fsync_dir, process_alive
from rankserve.ranker.redis_features import (
    RecordLayout,
    current_key,
    manifest_key,
    record_key,
    redis_address,
    redis_url,
    versions_key,
)
from rankserve.ranker.table_features import CURRENT, DATA_FILE, MANIFEST_FILE, FeatureManifest
from rankserve.server.features.checks import Prepared

#: The key of a version's manifest beside its records; no entity may have it.
MANIFEST_KEY = "manifest"
#: Records per MSET (one round trip).
REDIS_BATCH = 2000


class StoreError(RuntimeError):
    """The store cannot take the version (unreachable, or the version is in use)."""


class Progress:
    """``rows done / total, rows/s`` on stderr, at most once a second (so small imports print
    nothing)."""

    def __init__(self, label: str, total: int, stream: IO[str] | None = None) -> None:
        self.label, self.total = label, total
        self.stream = stream if stream is not None else sys.stderr
        self.started = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < 1.0:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        print(f"{self.label}: {done}/{self.total} rows, {rate:,.0f} rows/s", file=self.stream,
              flush=True)




def _arrow_table(prepared: Prepared, key: str) -> pa.Table:
    arrays: dict[str, pa.Array] = {key: pa.array(prepared.keys, type=pa.string())}
    for f in prepared.features:
        info, width = f.info, f.info.width
        flat_values = f.values.reshape(-1)
        mask = None if f.valid is None else ~f.valid.reshape(-1)
        if info.dtype == "string":
            texts = [v.decode() if isinstance(v, bytes) else v for v in flat_values.tolist()]
            flat = pa.array(texts, type=pa.string(), mask=mask)
        else:
            flat = pa.array(flat_values, type=pa.from_numpy_dtype(info.numpy_dtype), mask=mask)
        arrays[info.name] = (flat if width == 1
                             else pa.FixedSizeListArray.from_arrays(flat, width))
    return pa.table(arrays)


def _remove_stale(entity_dir: Path) -> None:
    """Temporary directories and files of imports that died (their pid is gone)."""
    for path in entity_dir.glob("*.tmp-*"):
        try:
            pid = int(path.name.rsplit(".tmp-", 1)[1].split("-", 1)[0])
        except (ValueError, IndexError):
            continue
        if not process_alive(pid):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def write_table_store(root: Path, manifest: FeatureManifest, prepared: Prepared,
                      keep_versions: int, progress: Progress) -> tuple[str, ...]:
    entity_dir = root / manifest.entity
    entity_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale(entity_dir)
    current_file = entity_dir / CURRENT
    current = current_file.read_text().strip() if current_file.is_file() else None
    if current == manifest.version:
        raise StoreError(f"{entity_dir}: version {manifest.version} is the current one; import"
                         " under a new version")
    suffix = f".tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp = entity_dir / f"{manifest.version}{suffix}"
    tmp.mkdir()
    table = _arrow_table(prepared, manifest.key)
    with pa.OSFile(str(tmp / DATA_FILE), "wb") as sink:
        with pa.ipc.new_file(sink, table.schema) as writer:
            # One record batch: readers map it and take numpy views of each column.
            writer.write_table(table, max_chunksize=max(table.num_rows, 1))
    (tmp / MANIFEST_FILE).write_text(manifest.to_json())
    for name in (DATA_FILE, MANIFEST_FILE):
        fd = os.open(tmp / name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_dir(tmp)
    progress.update(prepared.rows)
    final = entity_dir / manifest.version
    if final.exists():  # an earlier import of this version that never became current
        old = entity_dir / f"{manifest.version}.old{suffix}"
        final.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    tmp.rename(final)
    fsync_dir(entity_dir)
    pointer = entity_dir / f"{CURRENT}{suffix}"
    with open(pointer, "w") as out:
        out.write(manifest.version + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(pointer, current_file)
    fsync_dir(entity_dir)
    return _prune_tables(entity_dir, manifest.version, keep_versions)


def _prune_tables(entity_dir: Path, current: str, keep: int) -> tuple[str, ...]:
    versions: list[tuple[str, str]] = []
    for path in entity_dir.iterdir():
        if path.is_dir() and ".tmp-" not in path.name and (path / MANIFEST_FILE).is_file():
            try:
                created = FeatureManifest.from_json((path / MANIFEST_FILE).read_text(),
                                                    str(path)).created
            except ValueError:
                created = ""
            versions.append((created, path.name))
    others = sorted((v for v in versions if v[1] != current), reverse=True)
    removed = tuple(name for _, name in others[max(keep - 1, 0):])
    for name in removed:
        shutil.rmtree(entity_dir / name, ignore_errors=True)
    return removed


def _scan_pattern(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _delete_redis_version(client: Any, prefix: str, entity: str, version: str) -> None:
    # Manifest first: a reader holding this version then notices it is gone.
    client.delete(manifest_key(prefix, entity, version))
    pattern = _scan_pattern(f"{prefix}:{entity}:{version}:") + "*"
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


def write_redis(target: str, manifest: FeatureManifest, prepared: Prepared, prefix: str,
                keep_versions: int, progress: Progress) -> tuple[str, ...]:
    import redis
    from redis.exceptions import RedisError

    url = redis_url(target)
    address = redis_address(url)
    entity, version = manifest.entity, manifest.version
    client = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5)
    try:
        current = client.get(current_key(prefix, entity))
        if current is not None and current.decode() == version:
            raise StoreError(f"redis at {address}: {entity} version {version} is the current"
                             " one; import under a new version")
        if MANIFEST_KEY in prepared.keys:
            row = prepared.keys.index(MANIFEST_KEY) + 1
            raise StoreError(f"redis at {address}: key {MANIFEST_KEY!r} (row {row}) names the"
                             " version's manifest in Redis; rename that entity")
        # An earlier import of this version that never became current: its keys go first.
        if client.zscore(versions_key(prefix, entity), version) is not None:
            _delete_redis_version(client, prefix, entity, version)
        # Registered before any record: a clean-up finds the keys of an import that died.
        client.zadd(versions_key(prefix, entity), {version: time.time()})
        layout = RecordLayout(manifest.features)
        columns = {f.info.name: f.values for f in prepared.features}
        valid = {f.info.name: f.valid for f in prepared.features}
        for start in range(0, prepared.rows, REDIS_BATCH):
            stop = min(start + REDIS_BATCH, prepared.rows)
            records = layout.encode(columns, valid, start, stop)
            client.mset({record_key(prefix, entity, version, k): r
                         for k, r in zip(prepared.keys[start:stop], records, strict=True)})
            progress.update(stop)
        client.set(manifest_key(prefix, entity, version), manifest.to_json())
        client.set(current_key(prefix, entity), version)
        return _prune_redis(client, prefix, entity, version, keep_versions)
    except RedisError as exc:
        raise StoreError(f"redis at {address}: {exc}") from None
    finally:
        client.close()


def _prune_redis(client: Any, prefix: str, entity: str, current: str,
                 keep: int) -> tuple[str, ...]:
    names = [v.decode() for v in client.zrange(versions_key(prefix, entity), 0, -1)]
    others = [v for v in reversed(names) if v != current]
    removed = tuple(others[max(keep - 1, 0):])
    for version in removed:
        _delete_redis_version(client, prefix, entity, version)
        client.zrem(versions_key(prefix, entity), version)
    return removed


def is_redis(store: str) -> bool:
    return store.startswith(("redis://", "rediss://", "unix://"))
