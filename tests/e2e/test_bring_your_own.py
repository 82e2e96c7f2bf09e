"""A team's own model and data, not the demo: the marketplace example from Parquet through Redis
to a ranked page.

The example's data and both of its models (one tensor per input; serialized tf.Examples) are
made here; item and user features go into a real Redis with `rankserve features import`; a
model server process serves both models and ranking server processes rank caller-supplied
candidates with the examples' specs, no catalog. Every page must equal the model's own scores
of the same Parquet rows computed in this process, in order, whatever the batch size.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from rankserve.ranker.planner import plan_batches
from rankserve.ranking.v1 import ranking_pb2, ranking_pb2_grpc
from tests.integration.modelserver_support import REPO, ServerProcess
from tests.support.redis_server import RedisServer, redis_server

pytestmark = pytest.mark.timeout(300)

EXAMPLE = REPO / "examples" / "marketplace"
BATCH_SIZES = (5, 13, 25)
TOLERANCE = 1e-5


def _example(name: str):
    """A script of examples/marketplace as a module (the directory is not a package)."""
    spec = importlib.util.spec_from_file_location(f"marketplace_{name}", EXAMPLE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def import_features(store: str, data: Path, version: str) -> None:
    """`rankserve features import` of the example's items and users into ``store``."""
    for entity, name, key in (("item", "items.parquet", "item_id"),
                              ("user", "users.parquet", "user_id")):
        done = subprocess.run(
            [sys.executable, "-m", "rankserve.tools", "features", "import", "--entity", entity,
             "--input", str(data / name), "--key", key, "--store", store, "--version", version],
            capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert f"imported {entity} features version {version}" in done.stdout


class ParquetFeatures:
    """The example's feature files, read back as the model's inputs (the test's own reading,
    independent of the stores): unknown ids get the spec's defaults."""

    def __init__(self, data: Path) -> None:
        items = pq.read_table(data / "items.parquet").to_pydict()
        users = pq.read_table(data / "users.parquet").to_pydict()
        self.items = {item_id: {k: v[i] for k, v in items.items()}
                      for i, item_id in enumerate(items["item_id"])}
        self.users = {user_id: {k: v[i] for k, v in users.items()}
                      for i, user_id in enumerate(users["user_id"])}

    def inputs(self, ids: list[str], user: str, query: str, budget: float
               ) -> dict[str, np.ndarray]:
        default_item = {"price": 0.0, "category": "", "seller_rating": 0.0, "in_stock": False,
                        "embedding": [0.0] * 32}
        rows = [self.items.get(i, default_item) for i in ids]
        person = self.users.get(user, {"segment": 0, "embedding": [0.0] * 16})
        return {
            "price": np.array([r["price"] for r in rows], np.float32),
            "category": np.array([r["category"].encode() for r in rows], object),
            "seller_rating": np.array([r["seller_rating"] for r in rows], np.float32),
            "in_stock": np.array([r["in_stock"] for r in rows], bool),
            "item_embedding": np.array([r["embedding"] for r in rows], np.float32),
            "user_segment": np.full(len(ids), person["segment"], np.int64),
            "user_embedding": np.array([person["embedding"]], np.float32),
            "query": np.array([query.encode()], object),
            "budget": np.array([budget], np.float32),
        }


class InProcessModels:
    """Both SavedModels loaded in this process: the scores the pages must equal."""

    def __init__(self, paths: dict[str, Path]) -> None:
        import tensorflow as tf

        self.tf = tf
        self.tensors = tf.saved_model.load(str(paths["marketplace"])).signatures[
            "serving_default"]
        self.examples = tf.saved_model.load(str(paths["marketplace_tfx"])).signatures[
            "serving_default"]

    def score(self, x: dict[str, np.ndarray]) -> np.ndarray:
        tf = self.tf
        out = self.tensors(**{k: tf.constant(v) for k, v in x.items()})
        return out["score"].numpy()

    def score_examples(self, x: dict[str, np.ndarray]) -> np.ndarray:
        """Through the TFX-style model, with tf.Examples TensorFlow itself writes."""
        tf = self.tf
        once = {"user_embedding", "query", "budget"}  # [1, ...]: the same in every Example
        serialized = []
        for i in range(len(x["price"])):
            feature = {}
            for name, values in x.items():
                value = np.ravel(values[0] if name in once else values[i])
                if value.dtype.kind == "f":
                    feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=value))
                elif value.dtype.kind in "iub":
                    feature[name] = tf.train.Feature(
                        int64_list=tf.train.Int64List(value=value.astype(np.int64)))
                else:
                    feature[name] = tf.train.Feature(
                        bytes_list=tf.train.BytesList(value=list(value)))
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            serialized.append(example.SerializeToString())
        return self.examples(examples=tf.constant(serialized))["score"].numpy()


@dataclass
class World:
    root: Path
    data: Path
    models: Path
    redis: RedisServer
    model_server: str
    features: ParquetFeatures
    scorer: InProcessModels
    candidates: list[str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("marketplace")
    started = time.process_time()
    data = root / "data"
    _example("make_data").make_data(data, items=300, users=40, candidates=40)
    paths = _example("train").train(data, root / "models", steps=200)
    assert time.process_time() - started < 30, "data and training must stay cheap"
    config = root / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{name}" base_path: "{path.parent}" model_platform: "tensorflow" }}\n'
        for name, path in paths.items()) + "}\n")
    with redis_server() as redis:
        import_features(redis.url, data, "1")
        server = ServerProcess(root, "--model-config-file", str(config))
        try:
            address = server.wait_ready(120)
            yield World(root, data, root / "models", redis, address, ParquetFeatures(data),
                        InProcessModels(paths),
                        (data / "candidates.txt").read_text().split())
        finally:
            server.terminate()


class Ranker:
    """``python -m rankserve.server.ranking`` with a spec and Redis stores, no catalog."""

    def __init__(self, world: World, spec: Path, model: str, batch_size: int,
                 store: str | None = None) -> None:
        tag = f"{model}-{batch_size}-{time.monotonic_ns()}"
        self.ready = world.root / f"ranker-{tag}.ready"
        self.log_path = world.root / f"ranker-{tag}.log"
        store = store or world.redis.url
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rankserve.server.ranking", "--host", "127.0.0.1",
             "--port", "0", "--metrics-port", "0", "--ready-file", str(self.ready),
             "--spec", str(spec), "--item-features", store, "--user-features", store,
             "--model-target", world.model_server, "--model-name", model,
             "--batch-size", str(batch_size), "--grace-s", "1", "--drain-s", "0"],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        log.close()
        self.address = ""

    def wait_ready(self, timeout_s: float = 60.0) -> Ranker:
        deadline = time.monotonic() + timeout_s
        while not self.ready.is_file():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"ranker did not start (exit {self.proc.poll()}):\n"
                                     + self.log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.05)
        info = json.loads(self.ready.read_text())
        assert info["pid"] == self.proc.pid
        self.address = info["address"]
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@contextmanager
def rankers(world: World, *configs: tuple[Path, str, int]) -> Iterator[list[Ranker]]:
    """Ranking servers for (spec, model, batch size) each, started together, stopped by pid."""
    with ExitStack() as stack:
        started = []
        for spec, model, batch in configs:
            ranker = Ranker(world, spec, model, batch)
            stack.callback(ranker.stop)
            started.append(ranker)
        yield [r.wait_ready() for r in started]


def rank(address: str, ids: list[str], *, user: str, query: str, budget: float | None,
         request_id: str = "byo") -> ranking_pb2.RankResponse:
    features = {} if budget is None else {"budget": ranking_pb2.FeatureValue(float_value=budget)}
    request = ranking_pb2.RankRequest(
        request_id=request_id, query=query, user=ranking_pb2.User(id=user, known=True),
        candidates=[ranking_pb2.Candidate(id=i) for i in ids], page_size=len(ids),
        request_features=features)
    with grpc.insecure_channel(address) as channel:
        return ranking_pb2_grpc.RankingServiceStub(channel).Rank(request, timeout=20)


def assert_page(resp: ranking_pb2.RankResponse, ids: list[str], expected: np.ndarray) -> None:
    """Every candidate on the page with the model's own score, best first."""
    by_id = dict(zip(ids, expected.tolist(), strict=True))
    page = [item.item_id for item in resp.items]
    assert sorted(page) == sorted(ids)
    assert not any(item.fallback for item in resp.items)
    np.testing.assert_allclose([item.score for item in resp.items], [by_id[i] for i in page],
                               rtol=TOLERANCE, atol=TOLERANCE)
    for better, worse in zip(page, page[1:], strict=False):
        assert by_id[better] >= by_id[worse] - TOLERANCE, (better, worse)
    order = sorted(ids, key=lambda i: -by_id[i])
    gaps = np.diff(sorted(expected))
    if gaps.size and gaps.min() > 2 * TOLERANCE:
        assert page == order


# Two requests per ranker: the example's candidates.txt for a user whose query names a
# category, with a budget; 57 other ids in shuffled order for another user, no budget sent
# (the spec's default applies).
def _requests(world: World) -> list[dict]:
    rng = np.random.default_rng(3)
    others = [i for i in sorted(world.features.items) if i not in set(world.candidates)]
    return [
        {"ids": world.candidates, "user": "user-0007", "query": "Books", "budget": 45.0},
        {"ids": [str(i) for i in rng.permutation(others)[:57]], "user": "user-0031",
         "query": "garden", "budget": None},
    ]


@pytest.mark.parametrize("variant", ["tensors", "tf_example"])
def test_pages_equal_the_models_own_scores_for_every_batch_size(world: World,
                                                                variant: str) -> None:
    spec, model = ((EXAMPLE / "spec.yaml", "marketplace") if variant == "tensors"
                   else (EXAMPLE / "spec_tf_example.yaml", "marketplace_tfx"))
    with rankers(world, *[(spec, model, b) for b in BATCH_SIZES]) as started:
        for ranker, batch_size in zip(started, BATCH_SIZES, strict=True):
            for k, req in enumerate(_requests(world)):
                x = world.features.inputs(req["ids"], req["user"], req["query"],
                                          req["budget"] or 0.0)
                expected = world.scorer.score(x)
                if variant == "tf_example":
                    from_examples = world.scorer.score_examples(x)
                    np.testing.assert_allclose(from_examples, expected, rtol=1e-5, atol=1e-5)
                    expected = from_examples
                resp = rank(ranker.address, req["ids"], user=req["user"], query=req["query"],
                            budget=req["budget"], request_id=f"{variant}-{batch_size}-{k}")
                assert resp.model.name == model and resp.model.version == 1
                n = len(req["ids"])
                assert resp.candidates_scored == n
                d = resp.degradation
                assert not d.degraded, d.reasons
                assert d.total_batches == len(plan_batches(n, batch_size))
                assert (d.unknown_candidates, d.dropped_candidates) == (0, 0)
                # Only the budget of the request that does not send it is defaulted.
                assert d.missing_feature_values == (1 if req["budget"] is None else 0)
                assert_page(resp, req["ids"], expected)


def test_unknown_candidate_scored_with_defaults_or_dropped_as_the_spec_says(
        world: World, tmp_path: Path) -> None:
    drop = yaml.safe_load((EXAMPLE / "spec.yaml").read_text())
    drop["unknown_candidates"] = "drop"
    drop_spec = tmp_path / "spec_drop.yaml"
    drop_spec.write_text(yaml.safe_dump(drop))
    ids = world.candidates[:12] + ["no-such-item"] + world.candidates[12:20]
    x = world.features.inputs(ids, "user-0003", "toys", 30.0)
    expected = world.scorer.score(x)
    with rankers(world, (EXAMPLE / "spec.yaml", "marketplace", 13),
                 (drop_spec, "marketplace", 13)) as (defaults, dropping):
        resp = rank(defaults.address, ids, user="user-0003", query="toys", budget=30.0)
        d = resp.degradation
        assert (d.unknown_candidates, d.dropped_candidates) == (1, 0)
        # price, category, seller_rating, in_stock and the 32 embedding values.
        assert d.missing_feature_values == 36
        assert any("unknown to the item store" in r and "defaults" in r for r in d.reasons)
        assert not d.degraded
        assert resp.candidates_scored == len(ids)
        assert_page(resp, ids, expected)

        resp = rank(dropping.address, ids, user="user-0003", query="toys", budget=30.0)
        d = resp.degradation
        assert (d.unknown_candidates, d.dropped_candidates) == (1, 1)
        assert any("dropped" in r for r in d.reasons)
        kept = [i for i in ids if i != "no-such-item"]
        assert resp.candidates_scored == len(kept)
        assert_page(resp, kept, np.delete(expected, ids.index("no-such-item")))


class RankStream(threading.Thread):
    """Rank calls back to back until stopped; every answer or error with its time."""

    def __init__(self, address: str, ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.address, self.ids = address, ids
        self.results: list[tuple[float, ranking_pb2.RankResponse | grpc.RpcError]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        request = ranking_pb2.RankRequest(
            query="books", user=ranking_pb2.User(id="user-0007", known=True),
            candidates=[ranking_pb2.Candidate(id=i) for i in self.ids], page_size=len(self.ids),
            request_features={"budget": ranking_pb2.FeatureValue(float_value=45.0)})
        with grpc.insecure_channel(self.address) as channel:
            stub = ranking_pb2_grpc.RankingServiceStub(channel)
            while not self._halt.is_set():
                try:
                    result = stub.Rank(request, timeout=5)
                except grpc.RpcError as exc:
                    result = exc
                self.results.append((time.monotonic(), result))
                time.sleep(0.02)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def after(self, t: float) -> list[ranking_pb2.RankResponse | grpc.RpcError]:
        return [r for when, r in list(self.results) if when > t]

    def wait(self, since: float, predicate, what: str, count: int = 3,
             timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            seen = self.after(since)
            if sum(1 for r in seen if isinstance(r, ranking_pb2.RankResponse)
                   and predicate(r)) >= count:
                return
            time.sleep(0.05)
        raise AssertionError(f"no {count} answers {what} within {timeout_s} s")


def test_redis_stopped_mid_stream_degrades_and_restarted_recovers(world: World) -> None:
    ids = world.candidates
    expected = world.scorer.score(world.features.inputs(ids, "user-0007", "books", 45.0))
    with redis_server() as redis:
        import_features(redis.url, world.data, "1")
        ranker = Ranker(world, EXAMPLE / "spec.yaml", "marketplace", 25, store=redis.url)
        stream: RankStream | None = None
        try:
            stream = RankStream(ranker.wait_ready().address, ids)
            start = time.monotonic()
            stream.start()
            stream.wait(start, lambda r: not r.degradation.degraded, "undegraded at first")

            stopped = time.monotonic()
            redis.stop()
            # A call in flight at the stop may have read its features just before it.
            settled = stopped + 0.3
            stream.wait(settled, lambda r: r.degradation.degraded, "degraded with Redis down")

            restarted = time.monotonic()
            redis.start()  # empty: nothing is saved; the import job fills it again
            import_features(redis.url, world.data, "2")
            imported = time.monotonic()
            stream.wait(imported, lambda r: not r.degradation.degraded,
                        "recovered after the restart")
        finally:
            try:
                if stream is not None:
                    stream.stop()
            finally:
                ranker.stop()

    errors = [r for _, r in stream.results if isinstance(r, grpc.RpcError)]
    assert not errors, [f"{e.code().name}: {e.details()}" for e in errors[:3]]
    down = [r for t, r in stream.results if settled < t < restarted]
    assert down and all(r.degradation.degraded for r in down)
    for resp in down:
        assert resp.candidates_scored == len(ids) and len(resp.items) == len(ids)
        for entity in ("item", "user"):
            # The store's own error (its address) goes to the ranker's log, not to callers.
            assert (f"{entity} features unavailable: every {entity} feature took its default"
                    in resp.degradation.reasons)
    # The ranker was never restarted: the same process answers normally again.
    assert ranker.proc.returncode == 0
    recovered = [r for r in stream.after(imported) if not r.degradation.degraded]
    assert recovered
    assert_page(recovered[-1], ids, expected)


def test_redis_down_with_unknown_candidates_drop_still_scores_every_candidate(
        world: World, tmp_path: Path) -> None:
    drop = yaml.safe_load((EXAMPLE / "spec.yaml").read_text())
    drop["unknown_candidates"] = "drop"
    drop_spec = tmp_path / "spec_drop.yaml"
    drop_spec.write_text(yaml.safe_dump(drop))
    ids = world.candidates[:20]
    with redis_server() as redis:
        import_features(redis.url, world.data, "1")
        ranker = Ranker(world, drop_spec, "marketplace", 25, store=redis.url)
        try:
            ranker.wait_ready()
            redis.stop()
            resp = rank(ranker.address, ids, user="user-0007", query="books", budget=45.0)
        finally:
            ranker.stop()
    d = resp.degradation
    assert d.degraded
    # Nothing is known about the ids while the store cannot be read: none is "unknown".
    assert (d.unknown_candidates, d.dropped_candidates) == (0, 0)
    assert resp.candidates_scored == len(ids)


def test_up_serves_your_own_model_with_a_local_redis(world: World, tmp_path: Path) -> None:
    """The README's recipe: `rankserve up --spec --model-base --redis`, import into the Redis it
    printed, `rankserve rank --candidates FILE --feature NAME=VALUE`; Ctrl-C stops it all."""
    run_dir = Path(tempfile.mkdtemp(prefix="up-"))  # short: a unix socket path is <= 107 bytes
    cli = [sys.executable, "-m", "rankserve.tools"]
    env = dict(os.environ, RANKSERVE_HOME=str(tmp_path / "home"), TF_CPP_MIN_LOG_LEVEL="2")
    up = subprocess.Popen(
        [*cli, "up", "--spec", str(EXAMPLE / "spec.yaml"),
         "--model-base", str(world.models / "marketplace"), "--redis", "--run-dir", str(run_dir),
         "--replicas", "1", "--no-traces", "--ranker-port", "0", "--batch-size", "13"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(up.stdout.readline, "")),
                              daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while not any(line.startswith("stack ready") for line in lines):
            assert up.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        text = "".join(lines)
        target = re.search(r"--target (127\.0\.0\.1:\d+)", text).group(1)
        store = re.search(r"^redis +(unix://\S+) +pid (\d+)", text, re.M)
        assert store.group(1) == f"unix://{run_dir.resolve()}/redis.sock"
        assert "rankserve rank --candidates FILE" in text
        pids = [int(p) for p in re.findall(r" pid (\d+)", text)]
        assert len(pids) == 4  # ranker, envoy, one model server, redis
        import_features(store.group(1), world.data, "1")
        done = subprocess.run(
            [*cli, "rank", "books", "--target", target, "--candidates",
             str(world.data / "candidates.txt"), "--user", "user-0007", "--known-user",
             "--feature", "budget=45", "--page-size", "40", "--json"],
            capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stderr
        resp = json.loads(done.stdout)
        assert resp["model"]["name"] == "marketplace"
        assert not resp.get("degradation", {}).get("degraded"), resp.get("degradation")
        ids = world.candidates
        by_id = dict(zip(ids, world.scorer.score(
            world.features.inputs(ids, "user-0007", "books", 45.0)).tolist(), strict=True))
        page = [item["itemId"] for item in resp["items"]]
        assert sorted(page) == sorted(ids)
        np.testing.assert_allclose([item["score"] for item in resp["items"]],
                                   [by_id[i] for i in page], rtol=TOLERANCE, atol=TOLERANCE)
    finally:
        if up.poll() is None:
            os.kill(up.pid, signal.SIGINT)  # what Ctrl-C sends
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                os.kill(up.pid, signal.SIGKILL)
                up.wait()
        reader.join(5)
    assert up.returncode == 0, "".join(lines)
    for pid in pids:  # every child, Redis included, stopped with the stack
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not (run_dir / "redis.sock").exists()
    shutil.rmtree(run_dir, ignore_errors=True)
