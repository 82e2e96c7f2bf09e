"""The TensorFlow runtime: the one module of rankserve that imports TensorFlow.

Versions are loaded with ``tf.saved_model.load(path).signatures[name]``, the cheapest call path
measured for SavedModels (an eager ``model(x)`` is several times slower). Signature metadata is
read from ``saved_model.pb`` itself so GetModelMetadata returns exactly the SignatureDefs TF
Serving would.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from . import dtypes
from .errors import LoadFailed
from .runtime import LoadedModel, Signature, TensorSpec

SERVE_TAG = "serve"
# Signatures present in the MetaGraph that are not callable entry points.
_INIT_OP = "__saved_model_init_op"


class TensorFlowRuntime:
    """Runtime backed by TensorFlow SavedModels; counts model calls for observability."""

    def __init__(self, intra_op_threads: int = 0, inter_op_threads: int = 0) -> None:
        # TensorFlow fixes its thread pools at first use, so this must run before any load.
        # Idle pool threads spin before they sleep: with several replicas on few cores, one
        # thread each keeps the cores for serving instead of spinning (0 = one per core).
        if intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        if inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
        self._lock = threading.Lock()
        self.calls = 0
        """Number of ``predict`` calls made (warm-up calls included)."""

    def load(self, path: Path) -> LoadedModel:
        """Read the serving MetaGraph's SignatureDefs, then load the functions."""
        path = Path(path)
        meta = _serving_meta_graph(path)
        signature_def_map = get_model_metadata_pb2.SignatureDefMap()
        for key, sig_def in meta.signature_def.items():
            signature_def_map.signature_def[key].CopyFrom(sig_def)
        try:
            loaded = tf.saved_model.load(str(path), tags=[SERVE_TAG])
        except Exception as exc:  # TF raises many types; the message is what the operator needs
            raise LoadFailed(f"cannot load SavedModel at {path}: {_first_line(exc)}") from exc
        functions = {k: loaded.signatures[k] for k in loaded.signatures.keys()}
        signatures = {
            key: _signature(key, meta.signature_def[key])
            for key in functions
            if key in meta.signature_def and key != _INIT_OP
        }
        if not signatures:
            raise LoadFailed(f"SavedModel at {path} has no callable signature", "NOT_FOUND")
        return LoadedModel(
            path=path,
            signatures=signatures,
            signature_def_map=signature_def_map.SerializeToString(),
            handle={"module": loaded, "functions": functions},
        )

    def predict(
        self, model: LoadedModel, signature: str, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """One call of the concrete function; outputs back as numpy arrays."""
        with self._lock:
            self.calls += 1
        function = model.handle["functions"][signature]
        outputs = function(**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in outputs.items()}

    def unload(self, model: LoadedModel) -> None:
        """Drop the references; TensorFlow frees the variables with the last one."""
        model.handle = None

    def ready(self, model: LoadedModel) -> bool:
        return model.handle is not None


def _serving_meta_graph(path: Path):
    pb = path / "saved_model.pb"
    try:
        data = pb.read_bytes()
    except OSError as exc:
        raise LoadFailed(f"cannot read {pb}: {exc.strerror}", "NOT_FOUND") from exc
    try:
        saved = saved_model_pb2.SavedModel.FromString(data)
    except DecodeError as exc:
        raise LoadFailed(f"{pb} is not a SavedModel protobuf: {exc}", "DATA_LOSS") from exc
    for meta in saved.meta_graphs:
        if SERVE_TAG in meta.meta_info_def.tags:
            return meta
    raise LoadFailed(f"{pb} has no MetaGraph tagged '{SERVE_TAG}'", "NOT_FOUND")


def _signature(name: str, sig_def) -> Signature:
    return Signature(
        name=name,
        inputs={k: _spec(v) for k, v in sig_def.inputs.items()},
        outputs={k: _spec(v) for k, v in sig_def.outputs.items()},
    )


def _spec(info) -> TensorSpec:
    dtype = dtypes.to_numpy(info.dtype) if dtypes.is_supported(info.dtype) else np.dtype(object)
    shape = info.tensor_shape
    dims = None if shape.unknown_rank else tuple(None if d.size < 0 else d.size for d in shape.dim)
    return TensorSpec(dtype=dtype, dtype_code=info.dtype, shape=dims)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
