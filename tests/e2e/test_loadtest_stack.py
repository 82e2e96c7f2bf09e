"""`rankserve loadtest` against the whole local stack: real model servers, Envoy, the ranker
capturing its traffic; then that traffic replayed through Envoy."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from rankserve.tools.cli import main as rankserve_main
from rankserve.tools.stack.local import LocalStack, StackInputs
from rankserve.tools.stack.settings import StackSettings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def capturing_stack(demo_paths, tmp_path_factory) -> Iterator[tuple[LocalStack, object]]:
    run_dir = tmp_path_factory.mktemp("lt-stack")
    capture = run_dir / "capture"
    s = LocalStack(
        StackSettings(ranker_port=0, run_dir=run_dir, grace_s=5),
        StackInputs(demo_paths.catalog_dir, demo_paths.model_config_file),
        out=lambda _line: None,
        extra_ranker_args=("--capture-dir", str(capture), "--capture-rate", "1"),
    )
    with s:
        yield s, capture


def test_rank_load_then_replay_of_its_capture_through_envoy(capturing_stack, demo_paths,
                                                            tmp_path, capsys):
    stack, capture = capturing_stack
    pids = [str(c.pid) for c in stack.children]
    rank_dir = tmp_path / "rank"
    code = rankserve_main([
        "loadtest", "run", "--kind", "rank", "--target", stack.ranker.address,
        "--catalog-dir", str(demo_paths.catalog_dir), "--rate", "8", "--duration", "3",
        "--warmup", "1", "--timeout-ms", "5000", "--no-progress", "--out", str(rank_dir),
        *[a for p in pids for a in ("--server-pid", p)],
        "--price-core-hour", "0.04", "--replicas", "2", "--replica-cpu", "1",
        "--ranker-cpu", "1", "--peak-rps", "500"])
    assert code == 0, capsys.readouterr().err
    rank = json.loads((rank_dir / "report.json").read_text())["runs"][0]
    assert rank["status_codes"] == {"OK": 24}
    assert rank["cpu"]["server_ms_per_request"] > 0
    assert rank["latency_ms"]["p50"] > 0

    # Stopping the ranker completes its capture file: 32 Rank calls, 40 batches each.
    from rankserve.tools.stack.processes import stop

    stop(stack.ranker, 10)
    from rankserve.server.ranking.capture_files import list_capture_files, read_records

    kinds = [r.WhichOneof("record") for r in read_records(list_capture_files(capture))]
    assert kinds.count("rank") == 32 and kinds.count("predict") == 32 * 40

    predict_dir = tmp_path / "predict"
    code = rankserve_main([
        "loadtest", "run", "--kind", "predict", "--target", stack.envoy.address,
        "--replay", str(capture), "--rate", "100", "--duration", "3", "--warmup", "1",
        "--no-progress", "--out", str(predict_dir),
        *[a for c in [*stack.model_servers, stack.envoy] for a in ("--server-pid", str(c.pid))]])
    assert code == 0, capsys.readouterr().err
    pred = json.loads((predict_dir / "report.json").read_text())["runs"][0]
    assert pred["status_codes"] == {"OK": 300}
    assert pred["bytes"]["request_per_call"] > 30000  # 25 x 300 float32 and the context
    assert abs(pred["throughput_rps"] - 100) <= 10
    assert pred["send_lag_ms"]["mean"] <= 10
