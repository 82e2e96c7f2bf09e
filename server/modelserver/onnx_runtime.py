"""ONNX Runtime beside TensorFlow, for the models an operator names; TensorFlow stays the reference.

TensorFlow's signature call costs 0.35 ms for 25 rows of the demo's MLP and 0.7 ms for 300,
ONNX Runtime's 0.03 and 0.17 (one thread each), and the same call is made about once per dozen
Predicts. So a chosen model's version is loaded by TensorFlow as always (signatures, metadata,
warm-up), then each signature is converted from the SavedModel with tf2onnx (in a child
process: the converter imports TensorFlow and its graph tooling, and its memory goes with it),
and run on both runtimes over seeded random inputs and the version's warm-up requests (its
real inputs, where it ships TF Serving's warm-up file). A signature whose outputs agree within
``rtol``/``atol`` runs on ONNX Runtime; one that fails to convert, has inputs ONNX Runtime cannot
take (strings), or disagrees stays on TensorFlow, and the log says why. Nothing about a
version's API changes: GetModelMetadata still answers TensorFlow's SignatureDefs.

Converting takes seconds per signature (about 5 s for the demo's). With a cache directory, a
converted model is kept under a digest of the SavedModel's files, the signature and the
converter's version, so a restart, another replica sharing the directory or the same version
under another path loads it without converting; the parity check still runs at every load, and
a kept file that fails it (or does not open) is converted afresh and replaced.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from .errors import LoadFailed
from .runtime import LoadedModel, Runtime, Signature
from .warmup import read_warmup

log = logging.getLogger(__name__)

#: Rows of the random inputs the parity check runs on both runtimes.
PARITY_ROWS = 64
#: Warm-up records of a version (its real requests) the parity check runs too, at most.
PARITY_WARMUP_RECORDS = 100
CONVERT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Parity:
    """How close ONNX Runtime's outputs must be to TensorFlow's (``numpy.allclose`` terms)."""

    rtol: float = 1e-3
    atol: float = 1e-4


@dataclass
class _Accelerated:
    """A version loaded by TensorFlow, with the signatures that run on ONNX Runtime."""

    reference: LoadedModel
    sessions: dict[str, object]  # signature -> onnxruntime.InferenceSession


class OnnxRuntime:
    """A ``Runtime`` that runs the signatures of each version on ONNX Runtime where they
    convert and agree with ``reference`` (the TensorFlow runtime), and on it otherwise."""

    def __init__(self, reference: Runtime, threads: int = 1, parity: Parity = Parity(),
                 convert: Callable[[Path, str, Path], None] | None = None,
                 cache_dir: Path | None = None) -> None:
        import onnxruntime  # noqa: F401  (fail at start, not at the first load)

        self._reference = reference
        self._threads = threads
        self._parity = parity
        self._convert = convert or convert_signature
        self._cache = Path(cache_dir) if cache_dir is not None else None

    def load(self, path: Path) -> LoadedModel:
        loaded = self._reference.load(path)
        # Read once for every signature's parity check (an unreadable warm-up file fails the
        # version's load anyway, when the version manager replays it).
        try:
            warmup = read_warmup(path)
        except LoadFailed:
            warmup = []
        # The SavedModel's files are read for the cache key once per load, not per signature.
        model_digest = saved_model_digest(path) if self._cache is not None else ""
        sessions: dict[str, object] = {}
        for name, signature in loaded.signatures.items():
            reason = _unsupported(signature)
            if reason is None:
                try:
                    sessions[name] = self._checked_session(
                        loaded, path, signature, model_digest,
                        [c.inputs for c in warmup if c.signature == name][:PARITY_WARMUP_RECORDS])
                    continue
                except _Rejected as exc:
                    reason = str(exc)
                except Exception as exc:  # the check itself failed (say, TF on random inputs)
                    first = (str(exc).strip().splitlines() or [""])[0][:300]
                    reason = f"the parity check failed: {type(exc).__name__}: {first}"
            log.warning("%s: signature '%s' runs on TensorFlow: %s", path, name, reason)
        return LoadedModel(path=loaded.path, signatures=loaded.signatures,
                           signature_def_map=loaded.signature_def_map,
                           handle=_Accelerated(loaded, sessions),
                           parameters=loaded.parameters, size_bytes=loaded.size_bytes)

    def predict(self, model: LoadedModel, signature: str, inputs: Mapping[str, np.ndarray]
                ) -> dict[str, np.ndarray]:
        handle: _Accelerated = model.handle
        session = handle.sessions.get(signature)
        if session is None:
            return self._reference.predict(handle.reference, signature, inputs)
        names = list(model.signatures[signature].outputs)
        feed = {k: np.ascontiguousarray(v) for k, v in inputs.items()}
        values = session.run(names, feed)  # type: ignore[attr-defined]
        return dict(zip(names, values, strict=True))

    def unload(self, model: LoadedModel) -> None:
        handle: _Accelerated | None = model.handle
        if handle is not None:
            self._reference.unload(handle.reference)
        model.handle = None

    def ready(self, model: LoadedModel) -> bool:
        handle: _Accelerated | None = model.handle
        return handle is not None and self._reference.ready(handle.reference)

    def runtime_of(self, model: LoadedModel, signature: str) -> str:
        """"onnxruntime" or "tensorflow": what runs ``signature`` of this version."""
        handle: _Accelerated = model.handle
        return "onnxruntime" if signature in handle.sessions else "tensorflow"

    def _checked_session(self, loaded: LoadedModel, path: Path, signature: Signature,
                         model_digest: str, warmup: list[dict[str, np.ndarray]]) -> object:
        """A session of the signature's conversion that agrees with TensorFlow on random rows
        and on ``warmup`` (the signature's warm-up inputs): the kept one when there is one and
        it passes, else a fresh conversion (kept for next time under ``model_digest``, the
        SavedModel's ``saved_model_digest``)."""
        kept = (self._cache / conversion_key(model_digest, signature.name) / "model.onnx"
                if self._cache is not None else None)
        if kept is not None and kept.is_file():
            try:
                return self._session(kept, loaded, path, signature, warmup,
                                     f"kept in {kept.parent}")
            except _Rejected as exc:
                log.warning("%s: the kept conversion of signature '%s' is not used (%s);"
                            " converting it again", path, signature.name, exc)
        with tempfile.TemporaryDirectory(prefix="rankserve-onnx-") as tmp:
            out = Path(tmp) / "model.onnx"
            try:
                self._convert(path, signature.name, out)
            except LoadFailed as exc:
                raise _Rejected(exc.message) from None
            session = self._session(out, loaded, path, signature, warmup, "converted")
            if kept is not None:
                _keep(out, kept)
            return session

    def _session(self, model_file: Path, loaded: LoadedModel, path: Path,
                 signature: Signature, warmup: list[dict[str, np.ndarray]], source: str
                 ) -> object:
        """An ONNX Runtime session of ``model_file`` once its outputs agree with TensorFlow's
        on the parity inputs; raises _Rejected saying why not."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(model_file), options,
                                           providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own types for a model it cannot run
            raise _Rejected(f"ONNX Runtime cannot open the converted model: {exc}") from None
        wanted_in = set(signature.inputs)
        got_in = {i.name for i in session.get_inputs()}
        got_out = {o.name for o in session.get_outputs()}
        if got_in != wanted_in or not set(signature.outputs) <= got_out:
            raise _Rejected(f"the converted model takes {sorted(got_in)} and gives"
                            f" {sorted(got_out)}; the signature has {sorted(wanted_in)} and"
                            f" {sorted(signature.outputs)}")
        self._agree(session, loaded, signature, parity_inputs(signature),
                    f"{PARITY_ROWS} random rows")
        # Random rows may not reach where a model's real inputs lie; the version's own
        # warm-up requests do.
        for i, inputs in enumerate(warmup):
            self._agree(session, loaded, signature, inputs, f"warm-up record {i}")
        log.info("%s: signature '%s' runs on ONNX Runtime (%s; outputs within rtol %g, atol %g"
                 " of TensorFlow's on %d random rows and %d warm-up records)", path,
                 signature.name, source, self._parity.rtol, self._parity.atol, PARITY_ROWS,
                 len(warmup))
        return session

    def _agree(self, session: object, loaded: LoadedModel, signature: Signature,
               inputs: Mapping[str, np.ndarray], what: str) -> None:
        """Raises _Rejected unless both runtimes' outputs for ``inputs`` agree."""
        expected = self._reference.predict(loaded, signature.name, inputs)
        names = list(signature.outputs)
        feed = {k: np.ascontiguousarray(v) for k, v in inputs.items()}
        got = dict(zip(names, session.run(names, feed), strict=True))  # type: ignore[attr-defined]
        for name in names:
            want, have = np.asarray(expected[name]), np.asarray(got[name])
            if want.shape != have.shape:
                raise _Rejected(f"output '{name}' has shape {have.shape} on ONNX Runtime,"
                                f" {want.shape} on TensorFlow, on {what}")
            if not np.allclose(have, want, rtol=self._parity.rtol, atol=self._parity.atol):
                worst = float(np.max(np.abs(have.astype(np.float64) - want)))
                raise _Rejected(f"output '{name}' differs from TensorFlow's by up to {worst:.3g}"
                                f" on {what} (rtol {self._parity.rtol:g},"
                                f" atol {self._parity.atol:g})")


def conversion_key(model_digest: str, signature: str) -> str:
    """The digest a conversion is kept under: the converter's version, the signature, and the
    SavedModel's ``saved_model_digest``, so any change of the model or the converter is a new
    key."""
    return hashlib.sha256(
        f"tf2onnx {_converter_version()}\0{signature}\0{model_digest}".encode()).hexdigest()


def saved_model_digest(saved_model: Path) -> str:
    """A digest of every file of the SavedModel: relative path, size and bytes."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(saved_model).rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(saved_model).as_posix()}\0{file.stat().st_size}\0"
                      .encode())
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _converter_version() -> str:
    try:
        return metadata.version("tf2onnx")
    except metadata.PackageNotFoundError:
        return "unknown"


def _keep(converted: Path, kept: Path) -> None:
    """Copies a conversion into the cache, whole or not at all (written aside, then renamed);
    a cache that cannot be written costs the next load a conversion, not this one."""
    try:
        kept.parent.mkdir(parents=True, exist_ok=True)
        aside = kept.with_name(f".{kept.name}.{os.getpid()}.{threading.get_ident()}")
        shutil.copyfile(converted, aside)
        os.replace(aside, kept)
    except OSError as exc:
        log.warning("cannot keep the conversion in %s: %s", kept.parent, exc)


class _Rejected(Exception):
    """Why a signature stays on TensorFlow."""


def _unsupported(signature: Signature) -> str | None:
    for name, spec in (*signature.inputs.items(), *signature.outputs.items()):
        if spec.dtype.kind not in "fiub":
            return f"'{name}' is {spec.dtype}, which only TensorFlow runs here"
        if spec.shape is None:
            return f"'{name}' has an unknown rank"
    return None


def parity_inputs(signature: Signature, rows: int = PARITY_ROWS, seed: int = 0
                  ) -> dict[str, np.ndarray]:
    """Seeded inputs of the signature's shapes (unknown dims: ``rows``): normal values for
    floats, small integers for integers, both values for booleans."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, spec in sorted(signature.inputs.items()):
        shape = tuple(rows if d is None else d for d in spec.shape or ())
        if spec.dtype.kind == "f":
            out[name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype.kind == "b":
            out[name] = rng.integers(0, 2, shape).astype(bool)
        else:
            out[name] = rng.integers(0, 8, shape).astype(spec.dtype)
    return out


def convert_signature(saved_model: Path, signature: str, out: Path) -> None:
    """tf2onnx's converter on one signature of a SavedModel, in a child process."""
    argv = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved_model),
            "--signature_def", signature, "--output", str(out)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        raise LoadFailed(f"tf2onnx did not finish in {CONVERT_TIMEOUT_S:g} s") from None
    if done.returncode != 0 or not out.is_file():
        lines = [line for line in done.stderr.splitlines() if "Error" in line or "error" in line]
        raise LoadFailed(f"tf2onnx could not convert it: {(lines or ['exit status'])[-1][:300]}"
                         f" (exit {done.returncode})")
