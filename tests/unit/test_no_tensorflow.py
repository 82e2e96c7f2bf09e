"""The ranker's, the load generator's and the tools' processes never load TensorFlow."""

import subprocess
import sys

CHECK = """
import importlib, pkgutil, sys
import rankserve.ranker, rankserve.server.ranking, rankserve.server.common
import rankserve.server.embeddings, rankserve.server.telemetry, rankserve.loadtest, rankserve.tools
for pkg in (rankserve.ranker, rankserve.server.ranking, rankserve.server.common,
            rankserve.server.embeddings, rankserve.server.telemetry, rankserve.loadtest,
            rankserve.tools):
    for mod in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if not mod.name.endswith("__main__"):
            importlib.import_module(mod.name)
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
