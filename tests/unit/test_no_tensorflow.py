"""The ranker's and the load generator's processes never load TensorFlow (DESIGN decision 1)."""

import subprocess
import sys

CHECK = """
import importlib, pkgutil, sys
import ranker, server.ranking, server.common, server.embeddings, loadtest, loadtest.report
for pkg in (ranker, server.ranking, server.common, server.embeddings, loadtest, loadtest.report):
    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name != "__main__":
            importlib.import_module(f"{pkg.__name__}.{mod.name}")
import server.ranking.app
import server.cli
from rankserve.capture.v1 import capture_pb2
from rankserve.ranking.v1 import ranking_pb2, ranking_pb2_grpc
from rankserve.tfserving.v1 import (get_model_status_pb2, model_pb2, model_service_pb2_grpc,
    predict_pb2, prediction_service_pb2_grpc, tensor_pb2)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_serving"))
assert not loaded, loaded
print("ok")
"""


def test_ranker_modules_do_not_import_tensorflow():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
