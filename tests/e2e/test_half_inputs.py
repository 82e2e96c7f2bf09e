"""A model that declares float16 inputs is sent its float features at half the bytes.

The demo model is re-exported with float16 inputs (cast to float32 inside) and the spec says
float16: the stack ranks with it, each Predict request is about half the float32 size, and the
page is the float32 model's page up to float16 rounding.
"""

from __future__ import annotations

import urllib.request

import grpc
import numpy as np

from rankserve.demo.half_inputs import write_half_input_variant
from rankserve.demo.model import load_scorer
from rankserve.ranker.model_signature import saved_model_file
from rankserve.ranking.v1 import ranking_pb2_grpc
from rankserve.tools.stack.local import LocalStack, StackInputs
from rankserve.tools.stack.settings import StackSettings
from tests.e2e.test_stack import rank_request


def _metric(address: str, name: str) -> float:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}")


def test_float16_inputs_halve_the_bytes_and_keep_the_page(demo_paths, tmp_path) -> None:
    half = write_half_input_variant(demo_paths, tmp_path)
    settings = StackSettings(ranker_port=0, run_dir=tmp_path / "run", grace_s=5, traces=False,
                             spec=half.spec_file)
    with LocalStack(settings, StackInputs(demo_paths.catalog_dir, half.model_config_file),
                    out=lambda _line: None) as stack:
        with grpc.insecure_channel(stack.ranker.address) as ch:
            resp = ranking_pb2_grpc.RankingServiceStub(ch).Rank(
                rank_request(0, debug=True), timeout=10)
        metrics = stack.ranker.extra["metrics_address"]
        sent = _metric(metrics, "rankserve_predict_request_bytes_sum")
        calls = _metric(metrics, "rankserve_predict_request_bytes_count")
    assert not resp.degradation.degraded, resp.degradation
    assert resp.degradation.total_batches == 40 and calls >= 40
    # 25 candidates x 300 features and the 115-wide context, 2 bytes each, plus framing.
    per_call = sent / calls
    assert 25 * 300 * 2 < per_call < 25 * 300 * 3, per_call

    # The page is the float32 model's, up to float16 rounding of the features.
    full = load_scorer(saved_model_file(demo_paths.model_base_path).parent)
    half16 = load_scorer(half.model_base_path / "1")
    rng = np.random.default_rng(0)
    context = rng.normal(size=(1, 115)).astype(np.float32)
    cands = rng.normal(size=(25, 300)).astype(np.float32)
    got = half16(context, cands)
    want = full(context, cands)
    assert np.corrcoef(got, want)[0, 1] > 0.999
    assert len(resp.items) == rank_request(0).page_size
    assert all(np.isfinite(i.score) for i in resp.items)
