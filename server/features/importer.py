"""The feature import job: check a feature file, then publish it as one version of a store.

Nothing is written unless the whole file is good (``checks``); a version is published
atomically, so readers see the old version or the new one, never part of it (``writers``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pyarrow as pa

from rankserve.ranker.entity_features import FeatureInfo
from rankserve.ranker.redis_features import redis_address, redis_url
from rankserve.ranker.table_features import FeatureManifest, check_entity, check_version
from rankserve.server.features.checks import ImportOptions, InputProblems, prepare, read_input
from rankserve.server.features.writers import (
    Progress,
    StoreError,
    is_redis,
    write_redis,
    write_table_store,
)

__all__ = ["ImportOptions", "ImportResult", "InputProblems", "StoreError", "run"]


@dataclass(frozen=True)
class ImportResult:
    entity: str
    version: str
    rows: int
    features: tuple[FeatureInfo, ...]
    store: str
    seconds: float
    removed: tuple[str, ...] = ()

    def __str__(self) -> str:
        listed = ", ".join(f.name if f.width == 1 else f"{f.name}[{f.width}]"
                           for f in self.features)
        gone = f"; removed {', '.join(self.removed)}" if self.removed else ""
        return (f"imported {self.entity} features version {self.version}: {self.rows} rows,"
                f" {len(self.features)} features ({listed}) into {self.store}"
                f" in {self.seconds:.2f} s{gone}")


def run(options: ImportOptions, progress_stream: IO[str] | None = None,
        reader: Callable[[Path], pa.Table] = read_input) -> ImportResult:
    """Checks and publishes; raises InputProblems, StoreError or ValueError."""
    started = time.monotonic()
    check_entity(options.entity)
    check_version(options.version)
    if options.keep_versions < 1:
        raise ValueError("--keep-versions must be >= 1")
    table = reader(options.input)
    prepared = prepare(options, table)
    manifest = FeatureManifest(
        options.entity, options.version, options.key, prepared.rows,
        datetime.now(UTC).isoformat(timespec="microseconds"),
        tuple(f.info for f in prepared.features))
    progress = Progress(f"{options.entity} features {options.version}", prepared.rows,
                        progress_stream)
    if is_redis(options.store):
        removed = write_redis(options.store, manifest, prepared, options.prefix,
                              options.keep_versions, progress)
        store = redis_address(redis_url(options.store))
    else:
        removed = write_table_store(Path(options.store), manifest, prepared,
                                    options.keep_versions, progress)
        store = options.store
    return ImportResult(options.entity, options.version, prepared.rows, manifest.features,
                        store, time.monotonic() - started, removed)
