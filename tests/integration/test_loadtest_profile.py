"""Op profiles in the load test, against real model servers run with --profiler-port 0.

Two SavedModels with one signature: "fast" scores the candidates; "slow" first pushes them
through a string round trip (as_string then to_number, a badly written in-graph feature
transformation) under the name scope expensive_transform. A short load with --profile against
each must name that transformation as the slow model's top cost, and `compare` must mark it as
grown. The profiler service also writes where TensorBoard's capture expects the trace.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re

import grpc
import numpy as np
import pytest

from rankserve.loadtest.report.files import flatten
from rankserve.tfserving.v1 import profiler_pb2, xplane_pb2
from rankserve.tools.cli import main as rankserve_main
from tests.integration.modelserver_support import ServerProcess
from tests.support.catalog import make_catalog
from tests.support.chromium import screenshot

pytestmark = pytest.mark.timeout(240)

F = 32  # item features per candidate
METHOD = "/tensorflow.ProfilerService/Profile"


def context_width(catalog_dir) -> int:
    """Width of the per-request input the synthetic traffic of this catalog sends."""
    from rankserve.loadtest.sources import synthesize
    from rankserve.tfserving.v1 import predict_pb2

    one = synthesize("predict", catalog_dir, requests=1, batch_size=5).items[0]
    return predict_pb2.PredictRequest.FromString(one).inputs["context"].tensor_shape.dim[1].size


def build(path, slow: bool, context: int):
    import tensorflow as tf

    class Scorer(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(np.linspace(0.1, 1.0, F, dtype=np.float32))

        @tf.function(input_signature=[tf.TensorSpec([1, context], tf.float32, name="context"),
                                      tf.TensorSpec([None, F], tf.float32, name="candidates")])
        def serve(self, context, candidates):
            x = candidates
            if slow:
                with tf.name_scope("expensive_transform"):
                    for _ in range(4):
                        x = tf.strings.to_number(tf.strings.as_string(x, precision=6))
            return {"scores": tf.linalg.matvec(x, self.w) + tf.reduce_sum(context)}

    scorer = Scorer()
    tf.saved_model.save(scorer, str(path), signatures={"serving_default": scorer.serve})


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory):
    return make_catalog(tmp_path_factory.mktemp("catalog") / "c", num_items=300,
                        num_features=F)


@pytest.fixture(scope="module")
def servers(tmp_path_factory, catalog_dir):
    """{"fast": info, "slow": info} of two model servers serving `ranker`, each with its
    ready file's addresses; stopped after the module."""
    root = tmp_path_factory.mktemp("profile-models")
    procs = {}
    context = context_width(catalog_dir)
    try:
        for name in ("fast", "slow"):
            build(root / name / "ranker" / "1", slow=name == "slow", context=context)
            procs[name] = ServerProcess(root, "--model-name", "ranker", "--model-base-path",
                                        str(root / name / "ranker"), "--profiler-port", "0",
                                        "--intra-op-threads", "1", "--inter-op-threads", "1")
        out = {}
        for name, proc in procs.items():
            proc.wait_ready()
            out[name] = {**json.loads(proc.ready_file.read_text()), "proc": proc}
        yield out
    finally:
        for proc in procs.values():
            proc.kill()


def load(servers, catalog_dir, out, name, *extra: str) -> int:
    s = servers[name]
    return rankserve_main([
        "loadtest", "run", "--target", s["address"], "--kind", "predict", "--catalog-dir",
        str(catalog_dir), "--requests-pool", "2", "--rate", "40", "--duration", "3",
        "--warmup", "1", "--timeout-ms", "3000", "--no-progress", "--out", str(out),
        "--name", name, "--profile", s["profiler_address"], "--profile-seconds", "2",
        "--profile-metrics", s["metrics_address"], *extra])


@pytest.fixture(scope="module")
def reports(servers, catalog_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("profile-reports")
    for name in ("fast", "slow"):
        assert load(servers, catalog_dir, out, name) == 0
    return out


def test_the_slow_models_top_op_is_its_string_transformation(reports):
    docs = {n: json.loads((reports / f"{n}.json").read_text()) for n in ("fast", "slow")}
    slow, fast = docs["slow"]["profile"], docs["fast"]["profile"]
    assert slow["available"] and fast["available"], (slow.get("reason"), fast.get("reason"))
    top = slow["ops"][0]
    print("slow top:", top["name"], top["type"], top["share"], "fast top:",
          fast["ops"][0]["name"], fast["ops"][0]["type"], fast["ops"][0]["share"])
    assert "expensive_transform" in top["name"], slow["ops"][:5]
    assert top["type"] in ("AsString", "StringToNumber"), slow["ops"][:5]
    transform = sum(o["share"] for o in slow["ops"] if "expensive_transform" in o["name"])
    assert transform > 0.5, slow["ops"][:5]
    assert not any("expensive_transform" in o["name"] for o in fast["ops"])
    assert slow["op_us_per_row"] > 2 * fast["op_us_per_row"]
    for p in (slow, fast):
        assert p["predicts"] > 0 and p["rows"] > 0 and p["model_calls"] > 0
        assert p["time_split"]["available"], p["time_split"]
        split = p["time_split"]
        assert split["server_ms_per_predict"] >= split["model_call_ms_per_predict"] > 0
        assert p["model_size"]["parameters"] == F
        assert p["model_size"]["saved_model_bytes"] > 1000
        trace = p["replicas"][0]["trace"]
        assert re.search(r"\.profile/plugins/profile/\d{4}(_\d\d){5}/127\.0\.0\.1_\d+\.xplane\.pb$",
                         trace), trace
        assert xplane_pb2.XSpace.FromString(open(trace, "rb").read()).planes


def test_compare_marks_the_transformation_as_grown(reports, capsys, tmp_path):
    html = tmp_path / "compare.html"
    code = rankserve_main(["loadtest", "compare", str(reports / "fast.json"),
                           str(reports / "slow.json"), "--html", str(html)])
    out = capsys.readouterr().out
    assert code == 0
    slow = json.loads((reports / "slow.json").read_text())["profile"]["ops"][0]
    line = next(ln for ln in out.splitlines()
                if ln.startswith(f"op share of op time: {slow['name']}"))
    assert "REGRESSION" in line, out
    assert re.search(r"op us per row: .*expensive_transform.*REGRESSION", out), out
    assert "expensive_transform" in html.read_text()


def test_json_csv_and_html_carry_the_profile(reports, tmp_path):
    doc = json.loads((reports / "slow.json").read_text())
    with open(reports / "slow.csv") as fh:
        rows = {r["key"]: r["value"] for r in csv.DictReader(fh)}
    want = {k: v for k, v in flatten(doc) if k.startswith("profile.")}
    assert want and all(rows[k] == ("" if v == "" else str(v if not isinstance(v, bool)
                                                           else json.dumps(v)))
                        for k, v in want.items())
    html = (reports / "slow.html").read_text()
    assert "Op profile" in html and "expensive_transform" in html
    png = screenshot(reports / "slow.html", tmp_path / "slow.png", tmp_path / "chrome")
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB")).astype(np.int16)
    top = img[:1500]  # the profile section comes first on a run's page
    assert (top.min(axis=2) < 235).mean() > 0.02


def test_a_server_without_the_profiler_stops_the_command_before_the_load(
        servers, catalog_dir, tmp_path, capsys):
    s = servers["fast"]
    code = rankserve_main([
        "loadtest", "run", "--target", s["address"], "--catalog-dir", str(catalog_dir),
        "--duration", "2", "--no-progress", "--out", str(tmp_path), "--profile", s["address"]])
    err = capsys.readouterr().err
    assert code == 2
    assert "answers no profiler service" in err and "--profiler-port" in err, err
    assert not (tmp_path / "report.json").exists()


def test_an_unreachable_profiler_stops_the_command_before_the_load(
        servers, catalog_dir, tmp_path, capsys):
    code = rankserve_main([
        "loadtest", "run", "--target", servers["fast"]["address"], "--catalog-dir",
        str(catalog_dir), "--duration", "2", "--no-progress", "--out", str(tmp_path),
        "--connect-timeout", "1", "--profile", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2 and "no profiler answered at 127.0.0.1:1 within 1 s" in err, err
    assert not (tmp_path / "report.json").exists()


def test_a_capture_that_fails_during_the_run_leaves_a_report_that_says_why(
        servers, catalog_dir, tmp_path, capsys):
    """Another capture holds the server's profiler: the run completes, its profile section
    says it is missing and why (ABORTED: one capture at a time)."""
    s = servers["fast"]

    async def both() -> int:
        async with grpc.aio.insecure_channel(s["profiler_address"]) as channel:
            other = asyncio.ensure_future(channel.unary_unary(METHOD)(
                profiler_pb2.ProfileRequest(duration_ms=4000, emit_xspace=True).SerializeToString(),
                timeout=30))
            await asyncio.sleep(0.5)
            code = await asyncio.to_thread(load, servers, catalog_dir, tmp_path, "fast",
                                           "--warmup", "0.2")
            await other
            return code

    assert asyncio.run(both()) == 0
    doc = json.loads((tmp_path / "fast.json").read_text())
    p = doc["profile"]
    assert not p["available"] and "ABORTED" in p["reason"], p
    assert "already being captured" in p["reason"]
    assert doc["runs"][0]["status_codes"] == {"OK": 120}
    assert "Profile missing" in (tmp_path / "fast.html").read_text()
    assert "profile missing" in capsys.readouterr().err


def test_step_profiles_an_extra_run_at_the_rate_that_held(servers, catalog_dir, tmp_path):
    s = servers["fast"]
    code = rankserve_main([
        "loadtest", "step", "--target", s["address"], "--catalog-dir", str(catalog_dir),
        "--requests-pool", "2", "--budget-p99-ms", "500", "--start-rate", "20", "--max-rate",
        "20", "--duration", "2", "--warmup", "0.5", "--no-progress", "--out", str(tmp_path),
        "--profile", s["profiler_address"], "--profile-seconds", "1"])
    assert code == 0
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["step"]["max_rate_held_rps"] == 20 and len(doc["runs"]) == 1
    p = doc["profile"]
    assert p["available"] and p["load"]["rate_rps"] == 20, p
    assert p["ops"] and p["predicts"] > 0
    assert not p["time_split"]["available"] and "--profile-metrics" in p["time_split"]["reason"]


def test_the_service_writes_where_tensorboard_reads_and_answers_bad_requests(servers, tmp_path):
    address = servers["fast"]["profiler_address"]

    async def call(request):
        async with grpc.aio.insecure_channel(address) as channel:
            raw = await channel.unary_unary(METHOD)(request.SerializeToString(), timeout=30)
            return profiler_pb2.ProfileResponse.FromString(raw)

    # What TensorBoard's capture sends: options with the duration, where to write, who it is.
    answer = asyncio.run(call(profiler_pb2.ProfileRequest(
        opts=profiler_pb2.ProfileOptions(version=1, host_tracer_level=2, duration_ms=200),
        repository_root=str(tmp_path / "plugins" / "profile"),
        session_id="2026_01_01_00_00_00", host_name="127.0.0.1:9", tools=["trace_viewer"])))
    written = tmp_path / "plugins" / "profile" / "2026_01_01_00_00_00" / "127.0.0.1_9.xplane.pb"
    assert written.is_file() and not answer.HasField("xspace")
    assert xplane_pb2.XSpace.FromString(written.read_bytes()).planes
    for bad, says in ((profiler_pb2.ProfileRequest(emit_xspace=True), "duration"),
                      (profiler_pb2.ProfileRequest(duration_ms=100), "repository_root")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            asyncio.run(call(bad))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert says in err.value.details()
