"""Rollout on the real stack: a second model version warmed with synthesized requests, labels
moved by editing the model config under load, experiments and versioned embeddings through the
ranker process, two model servers behind Envoy."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import grpc
import pytest

from rankserve.demo.build import DemoPaths, export_version, model_config_text
from rankserve.ranker.catalog import Catalog
from rankserve.ranker.embedding_store import EmbeddingStore
from rankserve.ranking.v1 import ranking_pb2, ranking_pb2_grpc
from rankserve.server.embeddings.publish import publish
from rankserve.tools.stack.local import LocalStack, StackInputs
from rankserve.tools.stack.settings import StackSettings
from rankserve.tools.warmup_file import synthesize

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROUTING = """\
default: {model: ranker, label: stable}
rules:
  - name: personalized
    when: {user_known: true}
    experiment: next-ranker
experiments:
  next-ranker:
    salt: e2e
    arms:
      - {name: control, model: ranker, label: stable, weight: 1}
      - {name: treatment, model: ranker, label: canary, weight: 1}
"""


def _config(base: Path, stable: int) -> str:
    """The demo's model config serving versions 1 and 2, with stable -> ``stable``."""
    text = model_config_text(base)
    text = text.replace("latest {\n        num_versions: 2\n      }",
                        "specific {\n        versions: 1\n        versions: 2\n      }")
    text = text.replace('key: "stable"\n      value: 1',
                        f'key: "stable"\n      value: {stable}')
    return text.replace("    }\n  }\n}", '    }\n    version_labels {\n      key: "canary"\n'
                        '      value: 2\n    }\n  }\n}')


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture(scope="module")
def rollout_dir(demo_paths: DemoPaths, tmp_path_factory) -> DemoPaths:
    """A private copy of the demo's models (the shared cache is never modified), with a
    version 2 trained beside version 1 and warm-up requests in its assets.extra."""
    root = tmp_path_factory.mktemp("rollout")
    (root / "catalog").symlink_to(demo_paths.catalog_dir)
    (root / "train_lists.npz").symlink_to(demo_paths.root / "train_lists.npz")
    paths = DemoPaths.at(root)
    paths.model_base_path.mkdir(parents=True)
    shutil.copytree(demo_paths.version_dir(1), paths.version_dir(1))
    export_version(paths, 2, seed=23, epochs=3, progress=lambda _m: None)
    from rankserve.server.modelserver.warmup import write_warmup

    write_warmup(paths.version_dir(2),
                 synthesize(str(paths.catalog_dir), "ranker", 8, [25, 10]))
    _write(paths.model_config_file, _config(paths.model_base_path, stable=1))
    publish(Catalog.open(paths.catalog_dir), EmbeddingStore(root / "embeddings", "retrieval"), 1)
    _write(root / "routing.yaml", ROUTING)
    return paths


def _request(i: int, **kw) -> ranking_pb2.RankRequest:
    words = ["red leather bag", "running shoes", "wooden desk lamp", "blue cotton shirt"]
    return ranking_pb2.RankRequest(request_id=f"rollout-{i}", query=words[i % len(words)],
                                   page_size=10, candidate_limit=200, **kw)


def test_label_move_under_load_switches_traffic_with_zero_failed_calls(rollout_dir, tmp_path):
    paths = rollout_dir
    stack = LocalStack(
        StackSettings(ranker_port=0, run_dir=tmp_path, grace_s=5),
        StackInputs(paths.catalog_dir, paths.model_config_file), out=lambda _l: None,
        extra_ranker_args=("--routing-config", str(paths.root / "routing.yaml"),
                           "--routing-check-s", "0.2",
                           "--embeddings-root", str(paths.root / "embeddings")),
        extra_model_server_args=("--poll-interval-s", "0.2"),
    )
    results: list[tuple[str, int]] = []
    lock = threading.Lock()
    stop = threading.Event()
    with stack:
        # Every model server replayed version 2's warm-up requests before serving it.
        for ms in stack.model_servers:
            assert "replayed 8 warm-up requests" in Path(ms.log_path).read_text()
        with grpc.insecure_channel(stack.ranker.address) as ch:
            stub = ranking_pb2_grpc.RankingServiceStub(ch)
            # Known users enter the experiment; each arm is scored by its label's version.
            arms = {}
            for i in range(12):
                resp = stub.Rank(_request(i, user=ranking_pb2.User(id=f"user-{i:06d}",
                                                                   known=True)), timeout=10)
                assert resp.experiment.name == "next-ranker"
                arms[resp.experiment.arm] = resp.model.version
                assert resp.embedding_version == 1
            assert arms == {"control": 1, "treatment": 2}

            def worker(first: int) -> None:
                i = first
                while not stop.is_set() and i < first + 100_000:
                    try:
                        resp = stub.Rank(_request(i), timeout=10)
                        outcome = ("OK" if not resp.degradation.degraded else "DEGRADED",
                                   resp.model.version)
                    except grpc.RpcError as err:
                        outcome = (err.code().name, 0)
                    with lock:
                        results.append(outcome)
                    i += 1

            def wait_for(version: int, run: int = 40, timeout: float = 60.0) -> None:
                """Until the last ``run`` responses all came from ``version``."""
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    with lock:
                        tail = results[-run:]
                    if len(tail) == run and all(v == version for _, v in tail):
                        return
                    time.sleep(0.05)
                raise AssertionError(f"traffic did not move to version {version}: {tail}")

            threads = [threading.Thread(target=worker, args=(k * 100_000,)) for k in range(3)]
            for t in threads:
                t.start()
            try:
                wait_for(1)
                _write(paths.model_config_file, _config(paths.model_base_path, stable=2))
                wait_for(2)
                moved_at = len(results)
                _write(paths.model_config_file, _config(paths.model_base_path, stable=1))
                wait_for(1)  # rollback is moving the label back
            finally:
                stop.set()
                for t in threads:
                    t.join(timeout=30)
    assert len(results) > 120
    failed = [r for r in results if r[0] != "OK"]
    assert failed == [], failed[:5]
    assert {v for _, v in results} == {1, 2} and moved_at > 40
