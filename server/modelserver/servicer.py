"""TF Serving's PredictionService and ModelService: convert protobuf, delegate to the core.

Responses are shaped as TF Serving shapes them: PredictResponse.model_spec carries the name,
the concrete version and the signature used; GetModelMetadata packs a SignatureDefMap in an Any
under "signature_def"; GetModelStatus lists versions with TF Serving's states. Methods this
server does not provide answer UNIMPLEMENTED (through the error-mapping interceptor).

The messages are rankserve's slim copies of TF Serving's (same names and field numbers, so the
bytes on the wire are TF Serving's); TensorFlow is never imported here.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2

from rankserve.tfserving.v1 import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from . import tensors
from .core import SIGNATURE_DEF_FIELD, ModelRef, ModelServerCore
from .errors import Unimplemented

_SIGNATURE_DEF_MAP_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
_STATES = get_model_status_pb2.ModelVersionStatus.State


def model_ref(spec: model_pb2.ModelSpec) -> ModelRef:
    """ModelSpec -> ModelRef (version and label are a oneof, as in TF Serving)."""
    choice = spec.WhichOneof("version_choice")
    return ModelRef(
        name=spec.name,
        version=spec.version.value if choice == "version" else None,
        label=spec.version_label if choice == "version_label" else None,
        signature=spec.signature_name,
    )


def _spec(name: str, version: int, signature: str = "") -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=name, signature_name=signature)
    spec.version.value = version
    return spec


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService: Predict and GetModelMetadata."""

    def __init__(self, core: ModelServerCore, max_decoded_bytes: int) -> None:
        self._core = core
        self._max_decoded_bytes = max_decoded_bytes

    async def Predict(self, request: predict_pb2.PredictRequest, context):  # noqa: N802
        inputs = tensors.EncodedInputs(request.inputs, self._max_decoded_bytes)
        result = await self._core.predict(
            model_ref(request.model_spec), inputs, list(request.output_filter)
        )
        # Written in place: building the spec and each output apart and copying them in would
        # make and copy a second message for each.
        response = predict_pb2.PredictResponse()
        spec = response.model_spec
        spec.name = result.name
        spec.signature_name = result.signature
        spec.version.value = result.version
        outputs = response.outputs
        for name, value in result.outputs.items():
            tensors.fill(outputs[name], value)
        return response

    async def GetModelMetadata(self, request, context):  # noqa: N802
        result = self._core.metadata(model_ref(request.model_spec), list(request.metadata_field))
        response = get_model_metadata_pb2.GetModelMetadataResponse(
            model_spec=_spec(result.name, result.version)
        )
        response.metadata[SIGNATURE_DEF_FIELD].CopyFrom(
            any_pb2.Any(type_url=_SIGNATURE_DEF_MAP_URL, value=result.signature_def_map)
        )
        return response

    async def Classify(self, request, context):  # noqa: N802
        raise Unimplemented("Classify is not provided by this server; use Predict")

    async def Regress(self, request, context):  # noqa: N802
        raise Unimplemented("Regress is not provided by this server; use Predict")

    async def MultiInference(self, request, context):  # noqa: N802
        raise Unimplemented("MultiInference is not provided by this server; use Predict")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService: GetModelStatus."""

    def __init__(self, core: ModelServerCore) -> None:
        self._core = core

    async def GetModelStatus(self, request, context):  # noqa: N802
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in self._core.status(model_ref(request.model_spec)):
            entry = response.model_version_status.add(
                version=status.version, state=_STATES.Value(status.state)
            )
            entry.status.SetInParent()
            if status.error_status:
                entry.status.error_code = grpc.StatusCode[status.error_status].value[0]
                entry.status.error_message = status.error_message
        return response

    async def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        raise Unimplemented(
            "HandleReloadConfigRequest is not provided; edit the model config file instead, "
            "it is re-read on every poll"
        )
