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


def test_step_through_envoy_writes_autoscaling_values_the_chart_renders(
        capturing_stack, demo_paths, tmp_path, capsys) -> None:
    """`loadtest step` against the stack's two model servers (through Envoy) prints the
    autoscaling values, writes them for the chart, and the chart's HPA takes them."""
    import yaml

    from tests.support.chart import CLAIMS, find, objects, render, validate

    stack, _ = capturing_stack
    out = tmp_path / "step"
    values_file = tmp_path / "autoscaling.yaml"
    code = rankserve_main([
        "loadtest", "step", "--kind", "predict", "--target", stack.envoy.address,
        "--catalog-dir", str(demo_paths.catalog_dir), "--model", "ranker",
        "--budget-p99-ms", "400", "--start-rate", "40", "--factor", "2", "--max-rate", "160",
        "--refine", "0", "--duration", "2", "--warmup", "0.5", "--no-progress",
        "--replicas", "2", "--base-rps", "50", "--peak-rps", "2000",
        "--chart-values-out", str(values_file), "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "autoscaling of the model servers:" in printed.out
    report = json.loads((out / "report.json").read_text())
    auto = report["autoscaling"]
    held = report["step"]["max_rate_held_rps"]
    assert held and auto["capacity_per_replica_rps"] == pytest.approx(held / 2, rel=1e-3)
    # The stated rule, from the measured capacity.
    target = auto["target_rps_per_pod"]
    assert target == int(held / 2 * 0.7)
    assert auto["max_replicas"] == max(-(-2000 // target), auto["min_replicas"])
    written = yaml.safe_load(values_file.read_text())["modelServer"]["autoscaling"]
    assert written["targetPredictsPerSecondPerPod"] == target
    assert written["targetInFlightPerPod"] == auto["target_in_flight_per_pod"] >= 1

    values = yaml.safe_load(values_file.read_text())
    values["ranker"] = CLAIMS["ranker"]
    # The stack's model servers are rankserve's: metric auto becomes inFlight.
    values["modelServer"].update(CLAIMS["modelServer"], runtime="rankserve")
    objs = objects(render(values))
    validate(objs)
    (hpa,) = find(objs, "HorizontalPodAutoscaler", "model-server")
    assert hpa["spec"]["minReplicas"] == written["minReplicas"]
    assert hpa["spec"]["maxReplicas"] == written["maxReplicas"]
    pods = hpa["spec"]["metrics"][0]["pods"]
    assert pods["metric"]["name"] == "rankserve_model_server_predicts_in_flight"
    assert float(pods["target"]["averageValue"]) == written["targetInFlightPerPod"]
