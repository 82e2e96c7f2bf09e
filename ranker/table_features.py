"""Entity features from an embedded, versioned table: memory-mapped Arrow files.

Layout under a root directory, one tree per entity kind::

    <root>/<entity>/CURRENT              the version readers use (replaced by rename)
    <root>/<entity>/<version>/features.arrow   one Arrow IPC file, uncompressed
    <root>/<entity>/<version>/manifest.json    features, key column, row count, created

A version directory is complete before CURRENT names it (``rankserve features import`` writes a
temporary directory, syncs it and renames it), so a reader sees one whole import or another.
Scalar features are plain columns; a feature of width > 1 is a FixedSizeList column.

Reading maps the file and takes numpy views of Arrow's buffers without copying: a fetch is a
dict lookup per key plus one ``take`` per feature. A new CURRENT is noticed at most every
``refresh_s`` and loaded in a worker thread while fetches go on with the old version; a fetch
reads the version it started with from start to end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rankserve.ranker.entity_features import FeatureInfo, Fetched

log = logging.getLogger(__name__)

ENTITIES = ("item", "user")
CURRENT = "CURRENT"
DATA_FILE = "features.arrow"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1

_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class FeatureTableError(ValueError):
    """A table or manifest that cannot be read as one; the message names the path."""


def check_version(version: str) -> str:
    """A version name usable as a directory and in a Redis key, else ValueError."""
    if not _VERSION.match(version) or ".tmp-" in version or version == CURRENT:
        raise ValueError(f"version {version!r}: use letters, digits, '.', '_' and '-'"
                         " (at most 128, starting with a letter or digit), e.g. 2026-12-01")
    return version


def check_entity(entity: str) -> str:
    if entity not in ENTITIES:
        raise ValueError(f"entity {entity!r} is not one of {', '.join(ENTITIES)}")
    return entity


@dataclass(frozen=True)
class FeatureManifest:
    """What one import holds: the same document in a table directory and in Redis."""

    entity: str
    version: str
    key: str
    rows: int
    created: str
    features: tuple[FeatureInfo, ...]

    def to_json(self) -> str:
        features = []
        for f in self.features:
            default = f.default.decode() if isinstance(f.default, bytes) else f.default
            features.append({"name": f.name, "dtype": f.dtype, "width": f.width,
                             "default": default})
        return json.dumps({"format": MANIFEST_FORMAT, "entity": self.entity,
                           "version": self.version, "key": self.key, "rows": self.rows,
                           "created": self.created, "features": features}, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes, origin: str) -> FeatureManifest:
        try:
            doc = json.loads(text)
            if doc.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"format {doc.get('format')!r}, this reader knows"
                                 f" {MANIFEST_FORMAT}")
            features = tuple(FeatureInfo(str(f["name"]), str(f["dtype"]), int(f["width"]),
                                         f.get("default")) for f in doc["features"])
            return cls(str(doc["entity"]), str(doc["version"]), str(doc["key"]),
                       int(doc["rows"]), str(doc["created"]), features)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FeatureTableError(f"{origin}: not a feature manifest: {exc}") from None

    def schema(self) -> dict[str, FeatureInfo]:
        return {f.name: f for f in self.features}


def _validity(arr: pa.Array) -> np.ndarray | None:
    """[len] bool, True where a value is present; None when nothing is null."""
    if arr.null_count == 0:
        return None
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _primitive(arr: pa.Array, dtype: np.dtype) -> np.ndarray:
    """The values of a primitive array as numpy, a view of Arrow's buffer (bools: a copy, as
    Arrow packs them in bits)."""
    buf = arr.buffers()[1]
    if dtype == np.bool_:
        bits = np.unpackbits(np.frombuffer(buf, np.uint8), bitorder="little")
        return bits[arr.offset: arr.offset + len(arr)].astype(bool)
    return np.frombuffer(buf, dtype=dtype, count=arr.offset + len(arr))[arr.offset:]


@dataclass(frozen=True)
class _Column:
    info: FeatureInfo
    #: [rows, width] values (numeric and bool); None for strings.
    values: np.ndarray | None
    #: [rows, width] bool, True where a value is present; None when nothing is null.
    valid: np.ndarray | None
    #: Strings: (offsets [rows * width + 1], bytes data), flat index row * width + j.
    strings: tuple[np.ndarray, memoryview] | None


def _column(chunked: pa.ChunkedArray, info: FeatureInfo, origin: str) -> _Column:
    if chunked.num_chunks == 1:
        arr = chunked.chunk(0)
    elif chunked.num_chunks == 0:
        arr = pa.array([], type=chunked.type)
    else:
        arr = chunked.combine_chunks()  # one copy, only for files written in several batches
    rows, width = len(arr), info.width
    row_valid = _validity(arr)
    if width > 1:
        if not pa.types.is_fixed_size_list(arr.type) or arr.type.list_size != width:
            raise FeatureTableError(f"{origin}: column '{info.name}' is {arr.type}, the"
                                    f" manifest says {width} x {info.dtype}")
        flat = arr.values.slice(arr.offset * width, rows * width)
    else:
        flat = arr
    elem_valid = _validity(flat)
    valid: np.ndarray | None = None
    if row_valid is not None or elem_valid is not None:
        valid = np.ones((rows, width), dtype=bool)
        if elem_valid is not None:
            valid &= elem_valid.reshape(rows, width)
        if row_valid is not None:
            valid &= row_valid[:, None]
    if info.dtype == "string":
        if pa.types.is_large_string(flat.type) or pa.types.is_large_binary(flat.type):
            offset_type: Any = np.int64
        elif pa.types.is_string(flat.type) or pa.types.is_binary(flat.type):
            offset_type = np.int32
        else:
            raise FeatureTableError(f"{origin}: column '{info.name}' is {flat.type}, the"
                                    " manifest says string")
        _, offsets_buf, data_buf = flat.buffers()
        offsets = np.frombuffer(offsets_buf, offset_type, count=flat.offset + len(flat) + 1)
        data = memoryview(data_buf) if data_buf is not None else memoryview(b"")
        return _Column(info, None, valid, (offsets[flat.offset:], data))
    expected = pa.from_numpy_dtype(info.numpy_dtype)
    if flat.type != expected:
        raise FeatureTableError(f"{origin}: column '{info.name}' holds {flat.type}, the"
                                f" manifest says {info.dtype}")
    values = _primitive(flat, info.numpy_dtype).reshape(rows, width)
    return _Column(info, values, valid, None)


class _Loaded:
    """One version, mapped: the key index and the columns."""

    def __init__(self, directory: Path) -> None:
        origin = str(directory)
        try:
            self.manifest = FeatureManifest.from_json(
                (directory / MANIFEST_FILE).read_text(), str(directory / MANIFEST_FILE))
            source = pa.memory_map(str(directory / DATA_FILE), "r")
            table = pa.ipc.open_file(source).read_all()
        except (OSError, pa.ArrowInvalid) as exc:
            raise FeatureTableError(f"{origin}: cannot read the feature table: {exc}") from None
        self.version = self.manifest.version
        if table.num_rows != self.manifest.rows:
            raise FeatureTableError(f"{origin}: {table.num_rows} rows, the manifest says"
                                    f" {self.manifest.rows}")
        names = set(table.column_names)
        for needed in (self.manifest.key, *(f.name for f in self.manifest.features)):
            if needed not in names:
                raise FeatureTableError(f"{origin}: no column '{needed}'")
        keys = table.column(self.manifest.key).to_pylist()
        self.index: dict[str, int] = {str(k): i for i, k in enumerate(keys)}
        self.columns = {f.name: _column(table.column(f.name), f, origin)
                        for f in self.manifest.features}
        self.schema = self.manifest.schema()


def _take(col: _Column, rows: np.ndarray, found: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """[n, width] values of ``rows`` (0 where not found), defaults filled; and how many rows
    of found entities had a null value."""
    info = col.info
    fill = info.fill_value()
    if col.strings is not None:
        out = np.full((n, info.width), fill, dtype=object)
        offsets, data = col.strings
        w = info.width
        for i in np.flatnonzero(found).tolist():
            base = rows[i] * w
            for j in range(w):
                out[i, j] = data[offsets[base + j]: offsets[base + j + 1]].tobytes()
    else:
        assert col.values is not None
        out = col.values.take(rows, axis=0)
        if not found.all():
            out[~found] = fill
    nulls = 0
    if col.valid is not None:
        bad = ~col.valid.take(rows, axis=0)
        bad &= found[:, None]
        if bad.any():
            out[bad] = fill
            nulls = int(np.count_nonzero(bad.any(axis=1)))
    return out, nulls


class TableFeatures:
    """``EntityFeatures`` over ``<root>/<entity>/``; raises FeatureTableError at construction
    when no readable version is there."""

    def __init__(self, root: str | Path, entity: str, *, refresh_s: float = 1.0) -> None:
        self._entity = check_entity(entity)
        self._dir = Path(root) / entity
        self._refresh_s = refresh_s
        version = self._read_current()
        if version is None:
            raise FeatureTableError(f"{self._dir / CURRENT}: missing; import {entity} features"
                                    " first (rankserve features import)")
        self._state = self._load(version)
        self._checked = time.monotonic()
        self._loading: asyncio.Task[None] | None = None
        self._failed: str | None = None

    @property
    def entity(self) -> str:
        return self._entity

    @property
    def version(self) -> str:
        return self._state.version

    def schema(self) -> Mapping[str, FeatureInfo]:
        return self._state.schema

    def _read_current(self) -> str | None:
        try:
            return (self._dir / CURRENT).read_text().strip() or None
        except FileNotFoundError:
            return None

    def _load(self, version: str) -> _Loaded:
        try:
            check_version(version)
        except ValueError as exc:
            raise FeatureTableError(f"{self._dir / CURRENT}: {exc}") from None
        started = time.perf_counter()
        loaded = _Loaded(self._dir / version)
        log.info("%s features: version %s loaded (%d rows) in %.2f s", self._entity, version,
                 loaded.manifest.rows, time.perf_counter() - started)
        return loaded

    def _due(self) -> str | None:
        """The version to load now, if CURRENT changed (checked at most every refresh_s)."""
        now = time.monotonic()
        if now - self._checked < self._refresh_s:
            return None
        self._checked = now
        version = self._read_current()
        if version is None or version in (self._state.version, self._failed):
            return None
        return version

    async def _reload(self, version: str) -> None:
        try:
            self._state = await asyncio.to_thread(self._load, version)
            self._failed = None
        except FeatureTableError as exc:
            # A broken version is never served; the old one stays until CURRENT changes.
            self._failed = version
            log.error("%s features: keeping version %s: %s", self._entity, self._state.version,
                      exc)

    async def refresh(self) -> str:
        """Checks CURRENT now and loads a new version before returning; returns the version
        served afterwards."""
        if self._loading is not None:
            await self._loading
        self._checked = float("-inf")
        version = self._due()
        if version is not None:
            await self._reload(version)
        return self._state.version

    def _start_refresh(self) -> None:
        if self._loading is not None and not self._loading.done():
            return
        version = self._due()
        if version is not None:
            self._loading = asyncio.get_running_loop().create_task(self._reload(version))

    async def fetch(self, keys: Sequence[str], names: Sequence[str]) -> Fetched:
        self._start_refresh()
        state = self._state  # this fetch reads this version only
        for name in names:
            if name not in state.columns:
                raise KeyError(f"{self._entity} features (version {state.version}) have no"
                               f" feature '{name}'; they have {', '.join(sorted(state.columns))}")
        n = len(keys)
        index = state.index
        rows = np.fromiter((index.get(k, -1) for k in keys), dtype=np.int64, count=n)
        found = rows >= 0
        missing = n - int(np.count_nonzero(found))
        if missing:
            rows[~found] = 0
        columns: dict[str, np.ndarray] = {}
        defaulted: dict[str, int] = {}
        null_total = 0
        for name in names:
            col = state.columns[name]
            if state.manifest.rows == 0:
                values, nulls = col.info.defaults(n), 0
            else:
                values, nulls = _take(col, rows, found, n)
            columns[name] = values
            defaulted[name] = missing + nulls
            null_total += nulls
        return Fetched(columns, found, null_total, state.version, defaulted)

    async def close(self) -> None:
        if self._loading is not None and not self._loading.done():
            await self._loading
