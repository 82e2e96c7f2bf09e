"""TF Serving's warm-up file: ``<version>/assets.extra/tf_serving_warmup_requests``.

A TFRecord file of ``PredictionLog`` records, each holding a real ``PredictRequest``. A new
version replays them before it takes traffic, so the first live calls do not pay for graph
tracing and allocation at the shapes production actually sends (the zeros warm-up only covers
the signature's own shapes). As in TF Serving, at most 1000 records are read, and a record that
cannot be replayed fails the version's load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rankserve.tfserving.v1 import predict_pb2, prediction_log_pb2

from .errors import InvalidInput, LoadFailed, TooLarge
from .runtime import DEFAULT_SIGNATURE
from .tensors import EncodedInputs
from .tfrecord import TFRecordError, read_records, write_records

WARMUP_PATH = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000
#: Most bytes one record's inputs may decode to (the default message-size limit).
MAX_RECORD_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class WarmupCall:
    signature: str
    inputs: dict[str, np.ndarray]


def read_warmup(version_dir: Path) -> list[WarmupCall]:
    """The version's warm-up Predict calls; empty when it has no warm-up file."""
    path = Path(version_dir) / WARMUP_PATH
    if not path.is_file():
        return []
    calls = []
    try:
        for i, data in enumerate(read_records(path, MAX_RECORDS)):
            log = prediction_log_pb2.PredictionLog.FromString(data)
            if log.WhichOneof("log_type") != "predict_log":
                raise LoadFailed(f"{path}: record {i} is a {log.WhichOneof('log_type')}; only"
                                 " predict_log records are supported", "INVALID_ARGUMENT")
            request = log.predict_log.request
            inputs = EncodedInputs(request.inputs, MAX_RECORD_BYTES).decode()
            signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
            calls.append(WarmupCall(signature, inputs))
    except TFRecordError as exc:
        raise LoadFailed(f"warm-up file unreadable: {exc}", "DATA_LOSS") from None
    except (InvalidInput, TooLarge) as exc:
        raise LoadFailed(f"{path}: record {i}: {exc.message}", "INVALID_ARGUMENT") from None
    except Exception as exc:  # protobuf DecodeError and friends
        raise LoadFailed(f"{path}: not PredictionLog records: {exc}", "DATA_LOSS") from None
    return calls


def write_warmup(version_dir: Path, requests: list[bytes]) -> Path:
    """Writes serialized PredictRequests as the version's warm-up file (atomically)."""
    path = Path(version_dir) / WARMUP_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    records = []
    for data in requests[:MAX_RECORDS]:
        log = prediction_log_pb2.PredictionLog()
        log.predict_log.request.CopyFrom(predict_pb2.PredictRequest.FromString(data))
        records.append(log.SerializeToString())
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write_records(tmp, records)
    os.replace(tmp, path)
    return path
