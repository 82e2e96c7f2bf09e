"""Request features: what the call itself says, as features a spec can name (``request.X``).

Three kinds, in this order of lookup:

- built-ins every call has: ``query``, ``device``, ``locale``, ``user_id``, ``user_known``;
- the caller's request feature map (``RankRequest.request_features``), declared in the spec's
  ``features`` with dtype, width and default; a declared feature the call lacks gets its default
  and is counted;
- derived features computed by providers the spec names (``request_features:
  [package.module:Factory]``), such as a query embedding. A provider is how a team's own
  request-side preprocessing plugs in without the ranker knowing its layout.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from rankserve.ranker.catalog import Catalog
from rankserve.ranker.entity_features import FeatureInfo
from rankserve.ranker.spec import BUILTIN_REQUEST_FEATURES, FeatureSpec, SpecError
from rankserve.ranker.types import RankQuery


@runtime_checkable
class RequestFeatureProvider(Protocol):
    """Computes derived request features from the call."""

    def schema(self) -> Mapping[str, FeatureInfo]:
        """The features it computes, by name."""
        ...

    def compute(self, query: RankQuery) -> Mapping[str, np.ndarray]:
        """One ``[width]`` array per feature of the schema."""
        ...


#: Builds a provider; it gets the embedded catalog the ranker serves, when there is one.
ProviderFactory = Callable[[Catalog | None], RequestFeatureProvider]


def load_provider(spec_text: str, catalog: Catalog | None) -> RequestFeatureProvider:
    """``"package.module:Factory"`` -> a provider; SpecError says what to fix."""
    module_name, _, attribute = spec_text.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(f"request feature provider {spec_text!r}: cannot import"
                        f" {module_name}: {exc}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise SpecError(f"request feature provider {spec_text!r}: {module_name} has no callable"
                        f" {attribute!r}")
    try:
        provider = factory(catalog)
    except Exception as exc:  # noqa: BLE001 - a plug-in's failure is a start-up message
        raise SpecError(f"request feature provider {spec_text!r} failed to start: {exc}"
                        ) from None
    if not isinstance(provider, RequestFeatureProvider):
        raise SpecError(f"request feature provider {spec_text!r} has no schema() and compute()")
    return provider


@dataclass
class RequestValues:
    """The request features a spec uses, each ``[1, width]``, and the defaults it took."""

    values: dict[str, np.ndarray]
    defaulted: int = 0


class RequestFeatures:
    """Resolves a spec's ``request.*`` features for one call."""

    def __init__(self, spec: FeatureSpec, providers: Sequence[RequestFeatureProvider]) -> None:
        self._names = spec.features_of("request")
        self._providers: dict[str, RequestFeatureProvider] = {}
        self.schema: dict[str, FeatureInfo] = dict(BUILTIN_REQUEST_FEATURES)
        for provider in providers:
            for name, info in provider.schema().items():
                self.schema[name] = info
                self._providers[name] = provider
        for key, info in spec.declared.items():
            if key.startswith("request."):
                self.schema[info.name] = info
        unknown = [n for n in self._names if n not in self.schema]
        if unknown:
            raise SpecError(
                f"{spec.origin}: request feature {unknown[0]!r} is neither built in"
                f" ({', '.join(BUILTIN_REQUEST_FEATURES)}), declared under features, nor"
                " computed by a provider in request_features")

    def resolve(self, query: RankQuery) -> RequestValues:
        out: dict[str, np.ndarray] = {}
        defaulted = 0
        computed: dict[int, Mapping[str, np.ndarray]] = {}
        for name in self._names:
            info = self.schema[name]
            provider = self._providers.get(name)
            if provider is not None:
                if id(provider) not in computed:
                    computed[id(provider)] = provider.compute(query)
                value: object = computed[id(provider)][name]
            elif name in BUILTIN_REQUEST_FEATURES:
                value = _builtin(query, name)
            elif name in query.request_features:
                value = query.request_features[name]
            else:
                out[name] = info.defaults(1)
                defaulted += info.width
                continue
            out[name] = _as_row(name, info, value)
        return RequestValues(out, defaulted)


def _builtin(query: RankQuery, name: str) -> object:
    if name == "user_known":
        return query.user_known
    return str(getattr(query, name)).encode()


def _as_row(name: str, info: FeatureInfo, value: object) -> np.ndarray:
    """``value`` as one ``[1, width]`` row of the feature's dtype; InvalidArgument-worthy
    mismatches raise ValueError naming the feature."""
    from rankserve.ranker.errors import InvalidArgument

    flat = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
    if len(flat) != info.width:
        raise InvalidArgument(f"request feature '{name}' has {len(flat)} value(s); the model's"
                              f" spec expects {info.width}")
    if info.dtype == "string":
        row = [v if isinstance(v, bytes) else str(v).encode() for v in flat]
        return np.asarray(row, dtype=object).reshape(1, info.width)
    if any(isinstance(v, (str, bytes)) for v in flat):
        raise InvalidArgument(f"request feature '{name}' must be {info.dtype}, got"
                              f" {flat[:3]!r}")
    given = np.asarray(flat)
    want = info.numpy_dtype
    try:
        with np.errstate(invalid="ignore", over="ignore"):  # a bad cast is refused below
            values = given.astype(want)
    except (TypeError, ValueError, OverflowError):
        raise InvalidArgument(f"request feature '{name}' must be {info.dtype}, got"
                              f" {flat[:3]!r}") from None
    # A value the dtype cannot hold exactly (2.9 as an integer, 3e9 as int32) is refused, not
    # changed behind the caller's back.
    if want.kind in "iub" and not np.array_equal(values.astype(given.dtype), given):
        raise InvalidArgument(f"request feature '{name}' must be {info.dtype}; {flat[:3]!r}"
                              f" does not fit it")
    return values.reshape(1, info.width)
