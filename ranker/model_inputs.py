"""Fills a model's signature inputs for one request, as its feature spec says.

Per-candidate inputs become ``[N, *shape]`` arrays (one row per candidate), per-request inputs
``[1, *shape]``; a batch takes its rows of the first and the whole of the second, tiled to the
batch's rows where the model does not broadcast (``broadcast: client``). With ``encoding:
tf_example`` a batch is one string tensor of serialized tf.Examples instead.

Nothing reaches the model unaccounted for: a missing entity or value gets its feature's
default and is counted, a non-finite float becomes 0 and is counted, a store that cannot be read
gives defaults for all its features and a degradation reason, and an unknown caller candidate is
scored with defaults or dropped as the spec says, counted either way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rankserve.ranker.entity_features import (
    INPUT_DTYPES,
    EntityFeatures,
    FeatureInfo,
    FeatureSourceUnavailable,
    Fetched,
)
from rankserve.ranker.request_features import RequestFeatureProvider, RequestFeatures
from rankserve.ranker.spec import FeatureSpec, InputSpec, SpecError
from rankserve.ranker.types import RankQuery

log = logging.getLogger(__name__)

#: A virtual feature of every entity store: whether it held the entity (1) or not (0).
FOUND = "found"


@dataclass
class FeatureReport:
    """What assembling one request's inputs had to make up, for the response and metrics."""

    #: Caller-supplied candidate ids the item store does not hold.
    unknown_candidates: int = 0
    #: Positions (in retrieval order) removed by the spec's ``unknown_candidates: drop``.
    dropped: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: Feature values that got their default (missing entity, missing value, store down).
    missing_values: int = 0
    #: Non-finite floats replaced by 0, and the candidates that had any.
    nonfinite: int = 0
    nonfinite_rows: int = 0
    #: Sentences for the response's degradation reasons.
    reasons: list[str] = field(default_factory=list)
    #: Sources ("item", "user") that could not be read: all their features took defaults.
    unavailable: set[str] = field(default_factory=set)

    @property
    def degraded(self) -> bool:
        """A whole source could not be read: the page is worse than it should be."""
        return bool(self.unavailable)


@dataclass
class ModelInputs:
    """One request's inputs; :meth:`batch` cuts the arrays one Predict call sends."""

    spec: FeatureSpec
    per_candidate: dict[str, np.ndarray]
    per_request: dict[str, np.ndarray]
    rows: int

    def batch(self, rows: slice) -> dict[str, np.ndarray]:
        count = len(range(*rows.indices(self.rows)))
        out = {name: values[rows] for name, values in self.per_candidate.items()}
        tf_example = self.spec.encoding == "tf_example"
        for name, values in self.per_request.items():
            tiled = tf_example or self.spec.input(name).tiled
            out[name] = np.repeat(values, count, axis=0) if tiled else values
        if tf_example:
            from rankserve.ranker.tf_example import encode_examples

            flat = {name: v.reshape(count, -1) for name, v in out.items()}
            return {self.spec.example_input: encode_examples(flat, count)}
        return out

    def without(self, positions: np.ndarray) -> ModelInputs:
        """The same inputs minus the candidates at ``positions``."""
        keep = np.ones(self.rows, dtype=bool)
        keep[positions] = False
        return ModelInputs(self.spec, {n: v[keep] for n, v in self.per_candidate.items()},
                           self.per_request, int(keep.sum()))


class InputAssembler:
    """Builds :class:`ModelInputs` for one spec from the item and user stores, the call, and
    the spec's request-feature providers. Construction checks that every feature the spec
    names exists with a width and dtype its input can hold (SpecError names the input)."""

    def __init__(self, spec: FeatureSpec, *, items: EntityFeatures | None,
                 users: EntityFeatures | None,
                 providers: Sequence[RequestFeatureProvider] = ()) -> None:
        self.spec = spec
        self._stores = {"item": items, "user": users}
        self._request = RequestFeatures(spec, providers)
        self._names = {source: [n for n in spec.features_of(source) if n != FOUND]
                       for source in ("item", "user")}
        self._uses_found = {source: FOUND in spec.features_of(source)
                            for source in ("item", "user")}
        self._info = {key: self._resolve(key) for key in self._all_keys()}
        for spec_in in spec.inputs:
            self._check_input(spec_in)

    def _all_keys(self) -> list[str]:
        return list(dict.fromkeys(r.key for i in self.spec.inputs for r in i.features))

    def _resolve(self, key: str) -> FeatureInfo:
        source, name = key.split(".", 1)
        declared = self.spec.declared.get(key)
        if source == "request":
            return self._request.schema[name]
        if name == FOUND:
            return FeatureInfo(FOUND, "bool")
        store = self._stores[source]
        if store is None:
            raise SpecError(f"{self.spec.origin}: '{key}' needs a {source} feature store, and"
                            " this ranker has none configured")
        schema = store.schema()
        held = schema.get(name)
        if held is None and not schema and declared is not None:
            # The store could not be read at start-up (Redis down): the spec's declaration
            # stands in, and fetches degrade until the store answers.
            return declared
        if held is None:
            raise SpecError(f"{self.spec.origin}: the {source} store has no feature '{name}';"
                            f" it has {', '.join(sorted(schema)) or 'none'}"
                            + ("" if schema else " (declare the feature's dtype and width in"
                               " the spec's features to start while the store is down)"))
        if declared is not None and declared.width != held.width:
            raise SpecError(f"{self.spec.origin}: features.{key} declares width"
                            f" {declared.width}, the {source} store holds {held.width}")
        if declared is not None and declared.default is not None:
            return FeatureInfo(name, held.dtype, held.width, declared.default)
        return held

    def _check_input(self, spec_in: InputSpec) -> None:
        where = f"{self.spec.origin}: input '{spec_in.name}'"
        infos = [self._info[r.key] for r in spec_in.features]
        width = sum(i.width for i in infos)
        if width != spec_in.width:
            listed = ", ".join(f"{r} ({i.width})"
                               for r, i in zip(spec_in.features, infos, strict=True))
            raise SpecError(f"{where}: shape {list(spec_in.shape)} holds {spec_in.width} values"
                            f" per row, its features give {width}: {listed}")
        wants_text = spec_in.dtype == "string"
        target = INPUT_DTYPES[spec_in.dtype]
        for ref, info in zip(spec_in.features, infos, strict=True):
            if (info.dtype == "string") != wants_text:
                raise SpecError(f"{where}: feature {ref} is {info.dtype} and cannot fill a"
                                f" {spec_in.dtype} input")
            # Floats into an integer input would be truncated (and NaN made a huge integer).
            if not wants_text and not np.can_cast(info.numpy_dtype, target, "same_kind"):
                raise SpecError(f"{where}: feature {ref} is {info.dtype}; a {spec_in.dtype}"
                                " input would truncate it: make the input a float, or import"
                                " the feature as an integer")

    def stores(self) -> list[EntityFeatures]:
        """The stores it reads (the ranker closes them on shutdown)."""
        return [store for store in self._stores.values() if store is not None]

    @property
    def uses_users(self) -> bool:
        return bool(self._names["user"]) or self._uses_found["user"]

    async def assemble(self, query: RankQuery, ids: Sequence[str], caller_ids: bool = False,
                       timeout_s: float | None = None) -> tuple[ModelInputs, FeatureReport]:
        """Inputs for candidates ``ids`` (in retrieval order) of ``query``.

        ``caller_ids``: the ids came from the caller, so unknown ones follow the spec's
        ``unknown_candidates`` policy (retrieved ids are the store's own). ``timeout_s``: how
        long a store may take; one that takes longer counts as unavailable (the request's
        budget is worth more than its features).
        """
        report = FeatureReport()
        want_user = self.uses_users and query.user_known and bool(query.user_id)
        # Not copied when a list already: the catalog's row names carry their rows.
        keys = ids if isinstance(ids, list) else list(ids)
        item_task = self._fetch("item", keys, report, timeout_s)
        user_task = (self._fetch("user", [query.user_id], report, timeout_s) if want_user
                     else _nothing())
        items, user = await asyncio.gather(item_task, user_task)
        if user is None:
            user = self._absent("user", 1)
        request = self._request.resolve(query)
        report.missing_values += request.defaulted
        n = len(ids)
        # A store that cannot be read knows no id: that is an outage, not unknown candidates.
        if caller_ids and items.missing_entities and "item" not in report.unavailable:
            report.unknown_candidates = items.missing_entities
            if self.spec.unknown_candidates == "drop":
                report.dropped = np.flatnonzero(~items.found).astype(np.int64)
                # Their defaults never reach the model: not counted as values sent defaulted.
                report.missing_values -= report.dropped.size * sum(
                    self._info[f"item.{n}"].width for n in self._names["item"])
                report.reasons.append(f"{report.unknown_candidates} candidate id(s) unknown to"
                                      " the item store: dropped, as the model's spec says")
            else:
                report.reasons.append(f"{report.unknown_candidates} candidate id(s) unknown to"
                                      " the item store: scored with feature defaults")
        per_candidate: dict[str, np.ndarray] = {}
        per_request: dict[str, np.ndarray] = {}
        sources: dict[str, Fetched | Mapping[str, np.ndarray]] = {
            "item": items, "user": user, "request": request.values}
        for spec_in in self.spec.inputs:
            rows = n if spec_in.per == "candidate" else 1
            values = self._fill(spec_in, sources, rows, report)
            (per_candidate if spec_in.per == "candidate" else per_request)[spec_in.name] = values
        inputs = ModelInputs(self.spec, per_candidate, per_request, n)
        if report.dropped.size:
            inputs = inputs.without(report.dropped)
        return inputs, report

    async def _fetch(self, source: str, keys: list[str], report: FeatureReport,
                     timeout_s: float | None = None) -> Fetched:
        store = self._stores[source]
        names = self._names[source]
        if store is None or (not names and not self._uses_found[source]):
            return self._absent(source, len(keys), found=True)
        try:
            async with asyncio.timeout(timeout_s):
                fetched = await store.fetch(keys, names)
            self._check_fetched(source, fetched, len(keys))
        except TimeoutError:
            return self._unavailable(source, keys, report,
                                     f"no answer within {timeout_s * 1e3:.0f} ms"
                                     if timeout_s is not None else "no answer")
        except (FeatureSourceUnavailable, KeyError, ValueError) as exc:
            # KeyError/ValueError: a newer import of the store no longer holds what the spec
            # names, or holds it at another width: not this request's fault, not a crash.
            return self._unavailable(source, keys, report, str(exc))
        report.missing_values += sum(
            count * self._info[f"{source}.{name}"].width
            for name, count in fetched.defaulted.items())
        self._apply_declared_defaults(source, fetched)
        return fetched

    def _check_fetched(self, source: str, fetched: Fetched, rows: int) -> None:
        for name in self._names[source]:
            column = fetched.columns.get(name)
            width = self._info[f"{source}.{name}"].width
            if column is None or column.shape != (rows, width):
                got = "nothing" if column is None else f"shape {list(column.shape)}"
                raise ValueError(f"the {source} store returned {got} for '{name}'; the spec"
                                 f" needs [{rows}, {width}]")

    def _apply_declared_defaults(self, source: str, fetched: Fetched) -> None:
        """An entity the store lacks takes the default the spec declares (the store's own
        default, given at import, fills nulls of entities it holds)."""
        missing = ~fetched.found
        if not missing.any():
            return
        for name in self._names[source]:
            declared = self.spec.declared.get(f"{source}.{name}")
            if declared is not None and declared.default is not None:
                column = fetched.columns[name]
                if not column.flags.writeable:
                    column = fetched.columns[name] = column.copy()
                column[missing] = self._info[f"{source}.{name}"].fill_value()

    def _unavailable(self, source: str, keys: list[str], report: FeatureReport,
                     why: str) -> Fetched:
        log.warning("%s features unavailable: %s", source, why)
        report.reasons.append(f"{source} features unavailable: every {source} feature took"
                              " its default")
        report.unavailable.add(source)
        report.missing_values += sum(self._info[f"{source}.{n}"].width * len(keys)
                                     for n in self._names[source])
        return self._absent(source, len(keys))

    def _absent(self, source: str, rows: int, found: bool = False) -> Fetched:
        """Defaults for every feature of ``source`` (an entity not asked for, or not readable)."""
        columns = {n: self._info[f"{source}.{n}"].defaults(rows) for n in self._names[source]}
        return Fetched(columns, np.full(rows, found, dtype=bool))

    def _fill(self, spec_in: InputSpec, sources: Mapping[str, Fetched | Mapping[str, np.ndarray]],
              rows: int, report: FeatureReport) -> np.ndarray:
        dtype = INPUT_DTYPES[spec_in.dtype]
        parts = []
        for ref in spec_in.features:
            got = sources[ref.source]
            if isinstance(got, Fetched):
                part = (got.found.reshape(-1, 1) if ref.name == FOUND
                        else got.columns[ref.name])
            else:
                part = got[ref.name]
            parts.append(part)
        only = parts[0]
        if (len(parts) == 1 and only.dtype == dtype and only.shape[0] == rows
                and only.flags.writeable and only.flags.c_contiguous):
            # A store's fresh array of the input's dtype (the common 300-wide item features):
            # used as it is, no second copy of 1000 x 300 values.
            out = only
        else:
            out = np.empty((rows, spec_in.width), dtype=dtype)
            at = 0
            # A float16 input: a value past its range becomes inf, counted and zeroed below.
            with np.errstate(over="ignore"):
                for part in parts:
                    width = part.shape[1]
                    # A per-request input reads per-request sources only; shapes agree by check.
                    out[:, at:at + width] = part if part.shape[0] == rows else part[:1]
                    at += width
        if dtype.kind == "f":
            bad = ~np.isfinite(out)
            if bad.any():
                report.nonfinite += int(bad.sum())
                if spec_in.per == "candidate":
                    report.nonfinite_rows += int(bad.any(axis=1).sum())
                out[bad] = 0
        return out.reshape((rows, *spec_in.shape))


async def _nothing() -> None:
    return None
