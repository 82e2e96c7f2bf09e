"""The demo build's cache key, paths and TF Serving model config, and where training lists
come from; none of it needs TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rankserve.demo import CandidateMaker, generate
from rankserve.demo.build import DemoPaths, _key, build_spec, default_home, model_config_text
from rankserve.demo.features import context_dim
from rankserve.demo.trainset import make_training_lists


def test_cache_key_follows_the_spec():
    assert _key(build_spec(50_000)) == _key(build_spec(50_000))
    assert _key(build_spec(50_000)) != _key(build_spec(2_000))
    assert build_spec(50_000)["sources"]  # code changes rebuild too


def test_default_home_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RANKSERVE_HOME", str(tmp_path))
    assert default_home() == tmp_path
    monkeypatch.delenv("RANKSERVE_HOME")
    assert default_home() == Path.home() / ".cache" / "rankserve"


def test_paths_follow_the_tf_serving_layout(tmp_path):
    p = DemoPaths.at(tmp_path)
    assert p.model_base_path == tmp_path / "models" / "ranker"
    assert p.version_dir(1) == tmp_path / "models" / "ranker" / "1"
    assert p.catalog_dir != p.truth_dir and p.truth_dir.parent == tmp_path


def test_model_config_text_is_what_the_model_server_reads(tmp_path):
    from rankserve.server.modelserver.config import read_config_file

    path = tmp_path / "models.config"
    path.write_text(model_config_text(tmp_path / "models" / "ranker"))
    [model] = read_config_file(path)
    assert (model.name, model.base_path) == ("ranker", (tmp_path / "models" / "ranker").resolve())
    assert model.policy.select([1, 2, 3]) == {2, 3}
    assert model.labels == {"stable": 1}


def test_training_lists_come_from_retrieval(tmp_path):
    world = generate(num_items=2_000, num_users=300, seed=3)
    world.write(tmp_path / "catalog", tmp_path / "truth", tmp_path / "titles.txt")
    maker = CandidateMaker.open(tmp_path / "catalog")
    lists = make_training_lists(maker, world.truth, num_requests=40, seed=1, k=200)
    assert lists.rows.shape == (40, 64) and lists.labels.shape == (40, 64)
    assert lists.contexts.shape == (40, context_dim(maker.catalog.manifest))
    from rankserve.demo.queries import random_requests

    reqs = random_requests(40, seed=1, num_items=2_000, num_users=300)
    for req, rows, ctx in zip(reqs, lists.rows, lists.contexts, strict=True):
        got = maker(req, 200)
        assert set(rows.tolist()) <= set(got.rows.tolist())
        np.testing.assert_array_equal(ctx, got.context)
    # Every list holds the best candidates it was drawn from.
    assert (lists.labels.max(axis=1) > 0).mean() > 0.5


def test_importing_demo_does_not_load_tensorflow():
    import subprocess
    import sys

    code = "import sys, demo, demo.build, demo.show; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
