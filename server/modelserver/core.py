"""The model server's operations, free of gRPC and protobuf.

The servicers decode requests into plain values, call these, and encode the results; the
version manager routes, validation guards the model, the batcher runs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInput, SignatureNotFound
from .runtime import DEFAULT_SIGNATURE
from .validation import check_inputs, check_output_filter
from .versions import VersionManager, VersionStatus

SIGNATURE_DEF_FIELD = "signature_def"


@dataclass(frozen=True)
class ModelRef:
    """A model reference as a request gives it: name plus a version or a label (or neither)."""

    name: str
    version: int | None = None
    label: str | None = None
    signature: str = ""


@dataclass
class PredictResult:
    name: str
    version: int
    signature: str
    outputs: dict[str, np.ndarray]


@dataclass
class MetadataResult:
    name: str
    version: int
    #: Serialized tensorflow.serving.SignatureDefMap.
    signature_def_map: bytes


class ModelServerCore:
    """Predict, metadata and status over the versions a ``VersionManager`` serves."""

    def __init__(self, manager: VersionManager) -> None:
        self._manager = manager

    async def predict(
        self, ref: ModelRef, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()
    ) -> PredictResult:
        _check_name(ref)
        with self._manager.lease(ref.name, ref.version, ref.label) as version:
            name = ref.signature or DEFAULT_SIGNATURE
            signature = version.model.signatures.get(name)
            if signature is None:
                known = ", ".join(f"'{s}'" for s in sorted(version.model.signatures))
                raise SignatureNotFound(
                    f"model '{ref.name}' version {version.version} has no signature '{name}'; "
                    f"signatures: {known}"
                )
            check_inputs(signature, inputs)
            wanted = check_output_filter(signature, output_filter)
            outputs = await version.batcher(name).submit(inputs)
            return PredictResult(
                ref.name, version.version, name, {k: outputs[k] for k in wanted}
            )

    def metadata(self, ref: ModelRef, fields: Sequence[str]) -> MetadataResult:
        _check_name(ref)
        if not fields:
            raise InvalidInput(
                f"metadata_field is empty; name at least one of: '{SIGNATURE_DEF_FIELD}'"
            )
        unsupported = [f for f in fields if f != SIGNATURE_DEF_FIELD]
        if unsupported:
            raise InvalidInput(
                f"metadata_field {unsupported} is not supported; supported: "
                f"'{SIGNATURE_DEF_FIELD}'"
            )
        with self._manager.lease(ref.name, ref.version, ref.label) as version:
            return MetadataResult(ref.name, version.version, version.model.signature_def_map)

    def status(self, ref: ModelRef) -> list[VersionStatus]:
        _check_name(ref)
        return self._manager.statuses(ref.name, ref.version, ref.label)


def _check_name(ref: ModelRef) -> None:
    if not ref.name:
        raise InvalidInput("model_spec.name is empty; name the model to call")
