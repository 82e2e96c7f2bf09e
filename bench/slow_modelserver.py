"""The model server with every model call made N times slower: a slow replica for benchmarks.

After each model call its thread sleeps (N - 1) times the call's own duration, on the version's
executor, so the replica's capacity falls N-fold as a degraded node's would and its queue grows
(a delay on the wire alone would add latency but keep its capacity).

    RANKSERVE_BENCH_SLOWDOWN=10 python -m bench.slow_modelserver [model-server flags]
"""

from __future__ import annotations

import os
import sys
import time

from rankserve.server.modelserver import cli, tf_runtime


def _slowed(factor: float):
    real = tf_runtime.TensorFlowRuntime.predict

    def predict(self, model, signature, inputs):
        started = time.perf_counter()
        outputs = real(self, model, signature, inputs)
        time.sleep((factor - 1) * (time.perf_counter() - started))
        return outputs

    return predict


def main() -> int:
    factor = float(os.environ.get("RANKSERVE_BENCH_SLOWDOWN", "10"))
    tf_runtime.TensorFlowRuntime.predict = _slowed(factor)
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
