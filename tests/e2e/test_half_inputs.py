"""A model that declares float16 inputs is sent its float features at half the bytes.

The demo model is re-exported with float16 inputs (cast to float32 inside) and the spec says
float16: the stack ranks with it, each Predict request is about half the float32 size, and the
page is the float32 model's page up to float16 rounding.
"""

from __future__ import annotations

import urllib.request

import grpc
import numpy as np
import yaml

from rankserve.demo.model import export_half_inputs, load_scorer
from rankserve.ranking.v1 import ranking_pb2_grpc
from rankserve.tools.stack.local import LocalStack, StackInputs, model_config_text
from rankserve.tools.stack.settings import StackSettings
from tests.e2e.test_stack import rank_request


def _metric(address: str, name: str) -> float:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}")


def test_float16_inputs_halve_the_bytes_and_keep_the_page(demo_paths, tmp_path) -> None:
    version = max((p for p in demo_paths.model_base_path.iterdir() if p.name.isdigit()),
                  key=lambda p: int(p.name))
    export_half_inputs(version, tmp_path / "ranker" / "1")
    config = tmp_path / "models.config"
    config.write_text(model_config_text("ranker", tmp_path / "ranker"))
    spec = yaml.safe_load((demo_paths.catalog_dir / "spec.yaml").read_text())
    for entry in spec["inputs"]:
        entry["dtype"] = "float16"
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))

    settings = StackSettings(ranker_port=0, run_dir=tmp_path / "run", grace_s=5, traces=False,
                             spec=tmp_path / "spec.yaml")
    with LocalStack(settings, StackInputs(demo_paths.catalog_dir, config),
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
    full = load_scorer(version)
    half = load_scorer(tmp_path / "ranker" / "1")
    rng = np.random.default_rng(0)
    context = rng.normal(size=(1, 115)).astype(np.float32)
    cands = rng.normal(size=(25, 300)).astype(np.float32)
    got = half(context, cands)
    want = full(context, cands)
    assert np.corrcoef(got, want)[0, 1] > 0.999
    assert len(resp.items) == rank_request(0).page_size
    assert all(np.isfinite(i.score) for i in resp.items)
