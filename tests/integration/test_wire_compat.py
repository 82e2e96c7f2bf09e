"""The slim TF-Serving protos are byte-compatible with the official messages, both ways, declare
the official field names and numbers, and read TF Serving model config texts to the same bytes;
the slim services have TF Serving's methods. tf.Example, SignatureDefMap and a SavedModel that
TensorFlow writes read the same with both.

The check runs in a separate process: it imports TensorFlow's messages, and the slim service
descriptors (package tensorflow.serving) cannot share a descriptor pool with the official
services, which it reads in a child process of its own.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_official_and_slim_messages_read_each_other() -> None:
    script = Path(__file__).with_name("wire_compat_check.py")
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAIL" not in proc.stdout
    assert proc.stdout.count("ok ") >= 250, proc.stdout
    for part in ("PredictionLog", "GetModelMetadataResponse", "model config text",
                 "services, methods and message names as TF Serving's", "Example official->slim",
                 "FloatList.value: packed as official", "SignatureDefMap official->slim",
                 "TensorInfo composite_tensor", "SavedModel signature 'serving_default'"):
        assert f"ok    {part}" in proc.stdout, part
