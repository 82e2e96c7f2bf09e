"""Online features of one kind of entity (items by candidate id, users by user id).

A model's feature spec names the features it needs; an ``EntityFeatures`` store hands them over
for a batch of keys as one array per feature, ``[N, width]``, with every missing value already
replaced by the feature's default and counted: a model never sees a hole, and no hole goes
unreported. Stores: the embedded tables (memory-mapped Arrow files), Redis, the demo catalog.

A store reads one materialization (``version``) per call, so a request never mixes two imports
of the same table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

#: Feature dtypes a spec and a store may use, with the numpy dtype their arrays have.
DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "bool": np.dtype(np.bool_),
    "string": np.dtype(object),  # arrays of bytes objects, as TF's DT_STRING
}

#: Dtypes a model input may have: the features' own, and float16, a narrower wire type for
#: float features where the model declares one (half the bytes of float32, no codec; about 3
#: significant digits, at most 65504: a value beyond becomes non-finite, counted and zeroed).
INPUT_DTYPES: dict[str, np.dtype] = {**DTYPES, "float16": np.dtype(np.float16)}

Scalar = float | int | bool | str | bytes


@dataclass(frozen=True)
class FeatureInfo:
    """A feature as a store keeps it: ``width`` values of ``dtype`` per entity."""

    name: str
    dtype: str
    width: int = 1
    #: What a missing entity or value gets; None means the dtype's zero ("" for strings).
    default: Scalar | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(
                f"feature '{self.name}': dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.width < 1:
            raise ValueError(f"feature '{self.name}': width must be >= 1, got {self.width}")

    @property
    def numpy_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    def fill_value(self) -> Scalar:
        """The default as a value of the feature's dtype."""
        if self.dtype == "string":
            value = self.default if self.default is not None else b""
            return value.encode() if isinstance(value, str) else value
        if self.default is None:
            return self.numpy_dtype.type(0).item()  # type: ignore[no-any-return]
        return self.numpy_dtype.type(self.default).item()  # type: ignore[no-any-return]

    def defaults(self, rows: int) -> np.ndarray:
        """``rows`` rows of the default, ``[rows, width]``."""
        return np.full((rows, self.width), self.fill_value(), dtype=self.numpy_dtype)


@dataclass
class Fetched:
    """Features of N keys, in the order asked for."""

    #: Feature name -> ``[N, width]`` array of the feature's dtype, defaults where missing.
    #: A writeable array is handed over: the reader may change it in place (a store that keeps
    #: an array for itself returns a read-only view or a copy).
    columns: dict[str, np.ndarray]
    #: ``[N]``: whether the store holds the entity at all.
    found: np.ndarray
    #: Values of present entities that were absent (null) and got their default.
    missing_values: int = 0
    #: The materialization read (an import's version); "" for stores without versions.
    version: str = ""
    #: Per feature, how many of the N values are defaults (missing entity or value).
    defaulted: dict[str, int] = field(default_factory=dict)

    @property
    def missing_entities(self) -> int:
        return int(self.found.size - np.count_nonzero(self.found))


class FeatureSourceUnavailable(Exception):
    """The store cannot be read right now (connection refused, timeout): the pipeline fills
    defaults for the whole source and says so in the response's degradation."""


@runtime_checkable
class EntityFeatures(Protocol):
    """Features of one entity kind by key."""

    @property
    def entity(self) -> str:
        """"item" or "user": which keys this store is read with."""
        ...

    def schema(self) -> Mapping[str, FeatureInfo]:
        """Every feature the store holds, by name."""
        ...

    async def fetch(self, keys: Sequence[str], names: Sequence[str]) -> Fetched:
        """The named features of ``keys``; raises KeyError naming a feature the store lacks
        and FeatureSourceUnavailable when the store cannot be read."""
        ...

    async def close(self) -> None:
        """Releases connections and files; the store is not used afterwards."""
        ...
