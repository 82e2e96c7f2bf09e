"""A model's feature spec: which signature inputs it has and what fills each of them.

The ranker knows no model's layout; a spec file says it (YAML or JSON)::

    signature: serving_default        # the SignatureDef to call
    output: scores                    # the output holding one score per candidate
    encoding: tensors                 # tensors: one tensor per input
                                      # tf_example: one string input of serialized tf.Examples
    example_input: examples           # (tf_example) the input that carries them
    unknown_candidates: defaults      # a caller's candidate id no item store knows:
                                      # defaults (scored with feature defaults) or drop
    request_features: [package.module:Provider]   # computes derived request features
    features:                         # declarations: dtype, width, default
      request.segment: {dtype: int64, default: 0}
      item.price: {default: 0.0}
    inputs:
      - name: candidates
        per: candidate                # one row per candidate
        dtype: float32
        shape: [300]                  # per row; features concatenate in the stated order
        features: [item.features]
      - name: context
        per: request                  # the same for every candidate of a request
        broadcast: model              # model: sent once per batch, leading dim 1;
                                      # client: the ranker tiles it to the batch's rows
        dtype: float32
        shape: [20]
        features: [user.embedding, request.segment]

Features come from three sources: ``item`` (by candidate id), ``user`` (by user id) and
``request`` (the call: ``query``, ``device``, ``locale``, ``user_id``, ``user_known``, the
caller's request features, and what a provider computes). Loading checks the file alone; widths
and dtypes of stored features are checked against the stores at start-up, and the inputs against
the served model's signature (``spec_check``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rankserve.ranker.entity_features import DTYPES, INPUT_DTYPES, FeatureInfo, Scalar

SOURCES = ("item", "user", "request")
PER = ("candidate", "request")
BROADCAST = ("model", "client")
ENCODINGS = ("tensors", "tf_example")
UNKNOWN_CANDIDATES = ("defaults", "drop")

#: Request features every call has, whatever the model: name -> (dtype, width).
BUILTIN_REQUEST_FEATURES: dict[str, FeatureInfo] = {
    "query": FeatureInfo("query", "string"),
    "device": FeatureInfo("device", "string"),
    "locale": FeatureInfo("locale", "string"),
    "user_id": FeatureInfo("user_id", "string"),
    "user_known": FeatureInfo("user_known", "bool"),
}


class SpecError(ValueError):
    """A spec that cannot be used; the message names the file and the key to change."""


@dataclass(frozen=True)
class FeatureRef:
    """``item.price``: a feature of one source."""

    source: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.source}.{self.name}"

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True)
class InputSpec:
    """One signature input and the features that fill it, concatenated in order."""

    name: str
    per: str
    dtype: str
    #: Shape of one row (candidate) or of the request's one row, without the batch dim.
    shape: tuple[int, ...]
    features: tuple[FeatureRef, ...]
    broadcast: str = "model"

    @property
    def width(self) -> int:
        """Values per row: the product of ``shape`` (1 for a scalar)."""
        width = 1
        for dim in self.shape:
            width *= dim
        return width

    @property
    def tiled(self) -> bool:
        """Whether the ranker repeats this per-request input for every row of a batch."""
        return self.per == "request" and self.broadcast == "client"


@dataclass(frozen=True)
class FeatureSpec:
    """A parsed, self-consistent spec (see the module docstring for the file format)."""

    inputs: tuple[InputSpec, ...]
    signature: str = "serving_default"
    output: str = "scores"
    encoding: str = "tensors"
    example_input: str = "examples"
    unknown_candidates: str = "defaults"
    request_features: tuple[str, ...] = ()
    #: Declared features by key ("item.price"): dtype, width and default.
    declared: Mapping[str, FeatureInfo] = field(default_factory=dict)
    #: Where the spec came from, for messages.
    origin: str = "<spec>"

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def features_of(self, source: str) -> list[str]:
        """Names of the features of ``source`` that any input uses, each once, in order."""
        seen: dict[str, None] = {}
        for spec in self.inputs:
            for ref in spec.features:
                if ref.source == source:
                    seen.setdefault(ref.name, None)
        return list(seen)


def load_spec(path: str | Path) -> FeatureSpec:
    """Reads and checks a spec file; SpecError names the file and the key that is wrong."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise SpecError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}:"
                        f" {exc}") from None
    return parse_spec(data, str(path))


def parse_spec(data: Any, origin: str = "<spec>") -> FeatureSpec:
    """A spec from already-parsed YAML/JSON data."""
    if not isinstance(data, dict):
        raise SpecError(f"{origin}: a spec is a mapping with an 'inputs' list")
    known = {"signature", "output", "encoding", "example_input", "unknown_candidates",
             "request_features", "features", "inputs"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(f"{origin}: unknown key {unknown[0]!r}; a spec has"
                        f" {', '.join(sorted(known))}")
    encoding = _choice(data, "encoding", ENCODINGS, "tensors", origin)
    declared = _declarations(data.get("features") or {}, origin)
    inputs = _inputs(data.get("inputs"), declared, origin)
    providers = data.get("request_features") or []
    if not isinstance(providers, list) or not all(
            isinstance(p, str) and ":" in p for p in providers):
        raise SpecError(f"{origin}: request_features is a list of MODULE:NAME providers")
    spec = FeatureSpec(
        inputs=inputs,
        signature=_text(data, "signature", "serving_default", origin),
        output=_text(data, "output", "scores", origin),
        encoding=encoding,
        example_input=_text(data, "example_input", "examples", origin),
        unknown_candidates=_choice(data, "unknown_candidates", UNKNOWN_CANDIDATES, "defaults",
                                   origin),
        request_features=tuple(providers),
        declared=declared,
        origin=origin,
    )
    if not any(i.per == "candidate" for i in inputs):
        raise SpecError(f"{origin}: no input is per: candidate; a ranking model scores one row"
                        " per candidate")
    return spec


def _text(data: Mapping[str, Any], key: str, default: str, origin: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value:
        raise SpecError(f"{origin}: {key} must be a non-empty string, got {value!r}")
    return value


def _choice(data: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str,
            where: str) -> str:
    value = data.get(key, default)
    if value not in choices:
        raise SpecError(f"{where}: {key} must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def parse_ref(text: Any, where: str) -> FeatureRef:
    """``"item.price"`` -> FeatureRef("item", "price")."""
    if not isinstance(text, str) or "." not in text:
        raise SpecError(f"{where}: a feature is SOURCE.NAME with SOURCE one of"
                        f" {', '.join(SOURCES)}, got {text!r}")
    source, name = text.split(".", 1)
    if source not in SOURCES or not name:
        raise SpecError(f"{where}: {text!r}: the source must be one of {', '.join(SOURCES)}")
    return FeatureRef(source, name)


def _declarations(raw: Any, origin: str) -> dict[str, FeatureInfo]:
    if not isinstance(raw, dict):
        raise SpecError(f"{origin}: features maps SOURCE.NAME to {{dtype, width, default}}")
    declared = {}
    for key, body in raw.items():
        where = f"{origin}: features.{key}"
        ref = parse_ref(key, where)
        body = body or {}
        if not isinstance(body, dict) or set(body) - {"dtype", "width", "default"}:
            raise SpecError(f"{where}: give dtype, width and default (each optional)")
        dtype = body.get("dtype", "float32")
        width = body.get("width", 1)
        if dtype not in DTYPES:
            raise SpecError(f"{where}.dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
        if not isinstance(width, int) or width < 1:
            raise SpecError(f"{where}.width: a positive integer, got {width!r}")
        default = body.get("default")
        if default is not None and not isinstance(default, Scalar):
            raise SpecError(f"{where}.default: a number, string or boolean, got {default!r}")
        if default is not None and (dtype == "string") != isinstance(default, (str, bytes)):
            raise SpecError(f"{where}.default: {default!r} is no {dtype} value")
        if ref.source == "request" and ref.name in BUILTIN_REQUEST_FEATURES:
            raise SpecError(f"{where}: '{ref.name}' is a built-in request feature; do not"
                            " redeclare it")
        info = FeatureInfo(ref.name, dtype, width, default)
        try:
            info.fill_value()
        except (TypeError, ValueError, OverflowError):
            raise SpecError(f"{where}.default: {default!r} is no {dtype} value") from None
        declared[ref.key] = info
    return declared


def _inputs(raw: Any, declared: Mapping[str, FeatureInfo], origin: str
            ) -> tuple[InputSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise SpecError(f"{origin}: inputs is a non-empty list of {{name, per, dtype, shape,"
                        " features}}")
    inputs: list[InputSpec] = []
    for i, body in enumerate(raw):
        where = f"{origin}: inputs[{i}]"
        if not isinstance(body, dict):
            raise SpecError(f"{where}: a mapping with name, per, dtype, shape, features")
        extra = sorted(set(body) - {"name", "per", "broadcast", "dtype", "shape", "features"})
        if extra:
            raise SpecError(f"{where}: unknown key {extra[0]!r}")
        name = _text(body, "name", "", where)
        where = f"{origin}: inputs[{i}] ({name})"
        if any(s.name == name for s in inputs):
            raise SpecError(f"{where}: input '{name}' is given twice")
        per = _choice(body, "per", PER, "", where)
        broadcast = _choice(body, "broadcast", BROADCAST, "model", where)
        if per == "candidate" and "broadcast" in body:
            raise SpecError(f"{where}: broadcast applies to per: request inputs only")
        dtype = _choice(body, "dtype", tuple(INPUT_DTYPES), "float32", where)
        refs = body.get("features")
        if not isinstance(refs, list) or not refs:
            raise SpecError(f"{where}: features is a non-empty list of SOURCE.NAME")
        features = tuple(parse_ref(r, f"{where}.features") for r in refs)
        if per == "request" and any(r.source == "item" for r in features):
            raise SpecError(f"{where}: a per: request input cannot hold item features")
        shape = body.get("shape")
        if shape is None:
            shape = _default_shape(features, declared, where)
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 1 for d in shape):
            raise SpecError(f"{where}.shape: a list of positive integers, got {shape!r}")
        spec = InputSpec(name, per, dtype, tuple(shape), features, broadcast)
        _check_declared_widths(spec, declared, where)
        inputs.append(spec)
    return tuple(inputs)


def _default_shape(features: tuple[FeatureRef, ...], declared: Mapping[str, FeatureInfo],
                   where: str) -> list[int]:
    """[] for one scalar feature, else [total width] when every width is known."""
    widths = [_known_width(r, declared) for r in features]
    if len(features) == 1 and widths[0] == 1:
        return []
    unknown = [str(r) for r, w in zip(features, widths, strict=True) if w is None]
    if unknown:
        raise SpecError(f"{where}: give the shape: the widths of {', '.join(unknown)} are only"
                        " known to the stores")
    return [sum(w for w in widths if w is not None)]


def _known_width(ref: FeatureRef, declared: Mapping[str, FeatureInfo]) -> int | None:
    info = declared.get(ref.key)
    if info is not None:
        return info.width
    if ref.source == "request" and ref.name in BUILTIN_REQUEST_FEATURES:
        return 1
    return None


def _check_declared_widths(spec: InputSpec, declared: Mapping[str, FeatureInfo],
                           where: str) -> None:
    widths = [_known_width(r, declared) for r in spec.features]
    if None not in widths and sum(w for w in widths if w is not None) != spec.width:
        listed = ", ".join(f"{r} ({w})" for r, w in zip(spec.features, widths, strict=True))
        raise SpecError(f"{where}: shape {list(spec.shape)} holds {spec.width} values per row,"
                        f" its features give {sum(w for w in widths if w is not None)}: {listed}")
