"""The slim TF-Serving protos are byte-compatible with the official messages, both ways.

The check runs in a separate process because it imports TensorFlow, which the test process
(and the ranker) never does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rankserve.tfserving.v1 import model_service_pb2, prediction_service_pb2


def test_official_and_slim_messages_read_each_other() -> None:
    script = Path(__file__).with_name("wire_compat_check.py")
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAIL" not in proc.stdout
    assert proc.stdout.count("ok ") >= 25, proc.stdout


def test_services_keep_their_wire_names() -> None:
    predict = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]
    assert predict.full_name == "tensorflow.serving.PredictionService"
    assert predict.methods_by_name["Predict"].input_type.full_name == (
        "rankserve.tfserving.v1.PredictRequest"
    )
    status = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]
    assert status.full_name == "tensorflow.serving.ModelService"
    assert "GetModelStatus" in status.methods_by_name
