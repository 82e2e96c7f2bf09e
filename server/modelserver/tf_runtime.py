"""The TensorFlow runtime: the one module of rankserve that imports TensorFlow.

Versions are loaded with ``tf.saved_model.load(path).signatures[name]``, the cheapest call path
measured for SavedModels (an eager ``model(x)`` is several times slower). Signature metadata is
read from ``saved_model.pb`` itself so GetModelMetadata returns exactly the SignatureDefs TF
Serving would.

It is also where the model server's profiler traces: ``start_profile``/``stop_profile`` wrap
TensorFlow's own profiler (``tf.profiler.experimental``) and hand back the captured XSpace as
bytes, so the gRPC profiler service (``profiler.py``) never touches TensorFlow.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from . import dtypes
from .errors import LoadFailed, ProfilerBusy
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
        self._profile_dir: str | None = None

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
            parameters=_parameters(path),
            size_bytes=_directory_bytes(path),
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

    # ---- profiling -------------------------------------------------------------------------

    def start_profile(self, host_tracer_level: int = 2, device_tracer_level: int = 1,
                      python_tracer_level: int = 0) -> None:
        """Start TensorFlow's profiler for the whole process (one session at a time)."""
        with self._lock:
            if self._profile_dir is not None:
                raise ProfilerBusy("a profile is already being captured on this server; retry"
                                   " when it ends")
            logdir = tempfile.mkdtemp(prefix="rankserve-profile-")
            options = tf.profiler.experimental.ProfilerOptions(
                host_tracer_level=host_tracer_level, python_tracer_level=python_tracer_level,
                device_tracer_level=device_tracer_level)
            try:
                tf.profiler.experimental.start(logdir, options=options)
            except tf.errors.AlreadyExistsError:
                shutil.rmtree(logdir, ignore_errors=True)
                raise ProfilerBusy("TensorFlow's profiler is already running in this process;"
                                   " retry when that capture ends") from None
            self._profile_dir = logdir

    def stop_profile(self, keep: bool = True) -> bytes:
        """Stop the profiler; the captured XSpace, serialized (b"" when ``keep`` is False)."""
        with self._lock:
            logdir, self._profile_dir = self._profile_dir, None
        if logdir is None:
            return b""
        try:
            tf.profiler.experimental.stop(save=keep)
            # TensorFlow writes <logdir>/plugins/profile/<run>/<host>.xplane.pb.
            files = sorted(Path(logdir).glob("plugins/profile/*/*.xplane.pb"))
            return files[0].read_bytes() if keep and files else b""
        finally:
            shutil.rmtree(logdir, ignore_errors=True)


def _parameters(path: Path) -> int | None:
    """Numbers held by the checkpoint's tensors (the variables), optimizer slots left out."""
    prefix = path / "variables" / "variables"
    if not prefix.with_suffix(".index").exists():
        return 0  # a SavedModel without variables (everything constant)
    try:
        entries = tf.train.list_variables(str(prefix))
    except Exception:  # an unreadable checkpoint already failed the load; size is best effort
        return None
    return sum(math.prod(shape) for name, shape in entries
               if "OPTIMIZER_SLOT" not in name and not name.startswith("optimizer/")
               and not name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH"))


def _directory_bytes(path: Path) -> int | None:
    try:
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    except OSError:
        return None


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
