"""What the model server needs from an inference library.

The version manager, batcher and servicers only see this protocol and these plain types, so
TensorFlow is one runtime among possible others and stays confined to ``tf_runtime``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class TensorSpec:
    """dtype and shape of a signature tensor; None in ``shape`` is an unknown dim."""

    dtype: np.dtype
    dtype_code: int
    shape: tuple[int | None, ...] | None

    @property
    def batched(self) -> bool:
        """Whether the leading dim is unknown, so calls can be stacked along it."""
        return bool(self.shape) and self.shape[0] is None


@dataclass(frozen=True)
class Signature:
    """A callable signature: named inputs to named outputs."""

    name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]


@dataclass
class LoadedModel:
    """One loaded version. ``handle`` is private to the runtime that loaded it."""

    path: Path
    signatures: Mapping[str, Signature]
    #: Serialized ``tensorflow.serving.SignatureDefMap`` that GetModelMetadata returns verbatim.
    signature_def_map: bytes
    handle: Any = field(default=None, repr=False)
    #: Numbers held by the version's variables (None: the runtime cannot tell).
    parameters: int | None = None
    #: Bytes of the version's directory on disk (None: not measured).
    size_bytes: int | None = None


class Runtime(Protocol):
    """Loads versions and runs them. Every method may block: callers run them off the loop."""

    def load(self, path: Path) -> LoadedModel:
        """Load the SavedModel at ``path``; raise ``LoadFailed`` with a readable message."""
        ...

    def predict(
        self, model: LoadedModel, signature: str, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Run one call of ``signature`` on validated inputs."""
        ...

    def unload(self, model: LoadedModel) -> None:
        """Release the version; it is never called again afterwards."""
        ...

    def ready(self, model: LoadedModel) -> bool:
        """Whether the version is loaded and callable (False after ``unload``)."""
        ...


def warm_up_inputs(signature: Signature) -> dict[str, np.ndarray]:
    """Zeros of the signature's shapes, unknown dims as 1: the first call a version gets.

    The first call of a loaded graph traces and allocates; doing it before a version takes
    traffic keeps that latency away from clients.
    """
    inputs = {}
    for name, spec in signature.inputs.items():
        shape = tuple(1 if d is None else d for d in (spec.shape or (1,)))
        fill = b"" if spec.dtype.kind == "O" else 0
        inputs[name] = np.full(shape, fill, dtype=spec.dtype)
    return inputs
