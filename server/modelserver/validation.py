"""Checks of decoded inputs against a signature, before anything reaches the model.

A bad request must get INVALID_ARGUMENT with a message that says what to change, and must never
reach the batcher: a merged model call fails for every request in it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import dtypes
from .errors import InvalidInput
from .runtime import Signature, TensorSpec


def _names(names) -> str:
    return ", ".join(f"'{n}'" for n in sorted(names)) or "none"


def _shape_text(shape: tuple[int | None, ...] | None) -> str:
    if shape is None:
        return "any shape"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def check_inputs(signature: Signature, inputs: Mapping[str, np.ndarray]) -> None:
    """Raise InvalidInput for the first problem found: names, dtypes, shapes, then values."""
    check_declared(
        signature,
        {n: (dtypes.from_numpy(a.dtype), tuple(a.shape)) for n, a in inputs.items()},
    )
    check_values(inputs)


def check_declared(
    signature: Signature, declared: Mapping[str, tuple[int, tuple[int, ...]]]
) -> None:
    """Names, dtypes and shapes as a request declares them (DataType code, shape), checked
    before any value is decoded: a shape the signature cannot take never costs an allocation."""
    expected = set(signature.inputs)
    given = set(declared)
    missing = expected - given
    extra = given - expected
    if missing:
        raise InvalidInput(
            f"missing input {_names(missing)}; signature '{signature.name}' expects inputs "
            f"{_names(expected)}"
        )
    if extra:
        raise InvalidInput(
            f"unknown input {_names(extra)}; signature '{signature.name}' expects inputs "
            f"{_names(expected)}"
        )
    for name, spec in signature.inputs.items():
        code, shape = declared[name]
        _check_one(signature.name, name, spec, code, shape)


def _check_one(
    sig_name: str, name: str, spec: TensorSpec, code: int, shape: tuple[int, ...]
) -> None:
    if code != spec.dtype_code:
        raise InvalidInput(
            f"input '{name}' has dtype {dtypes.name(code)}; signature "
            f"'{sig_name}' expects {dtypes.name(spec.dtype_code)}"
        )
    if spec.shape is not None:
        fits = len(shape) == len(spec.shape) and all(
            want is None or want == got for want, got in zip(spec.shape, shape, strict=True)
        )
        if not fits:
            raise InvalidInput(
                f"input '{name}' has shape {list(shape)}; signature '{sig_name}' expects "
                f"{_shape_text(spec.shape)} (? is any size)"
            )


def check_values(inputs: Mapping[str, np.ndarray]) -> None:
    """Decoded values a model must never see: NaN and infinities."""
    for name, array in inputs.items():
        if array.dtype.kind != "f":
            continue
        bad = array.size - int(np.count_nonzero(np.isfinite(array)))
        if bad:
            nans = int(np.count_nonzero(np.isnan(array)))
            raise InvalidInput(
                f"input '{name}' has {bad} non-finite value(s) ({nans} NaN, {bad - nans} "
                f"infinite) of {array.size}; send finite numbers"
            )


def check_output_filter(signature: Signature, output_filter) -> list[str]:
    """The outputs to return: all when the filter is empty, else the named ones (validated)."""
    if not output_filter:
        return list(signature.outputs)
    unknown = [n for n in output_filter if n not in signature.outputs]
    if unknown:
        raise InvalidInput(
            f"output_filter names unknown output {_names(unknown)}; signature "
            f"'{signature.name}' has outputs {_names(signature.outputs)}"
        )
    return list(dict.fromkeys(output_filter))
