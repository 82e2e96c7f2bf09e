"""The wheel the images install: built from the checkout, installed into a clean virtual
environment (core dependencies only, as in the ranker image), and its entry points run there.

No image can be built on this machine, so this is what the Dockerfiles' install step does.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.chart import REPO

pytestmark = pytest.mark.slow
SUBCOMMANDS = ("demo", "up", "rank", "model-server", "ranker", "embeddings", "features", "models",
               "spec", "loadtest")


def run(*cmd: str, cwd: Path | None = None, timeout: float = 300) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(tmp / "dist"),
        str(REPO))
    (wheel,) = (tmp / "dist").glob("rankserve-*.whl")
    env_dir = tmp / "venv"
    run(sys.executable, "-m", "venv", str(env_dir))
    run(str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel), timeout=600)
    return wheel, env_dir


def test_wheel_ships_generated_protos_and_no_tests(venv: tuple[Path, Path]) -> None:
    wheel, _ = venv
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("rankserve/ranking/v1/ranking_pb2.py",
                   "rankserve/ranking/v1/ranking_pb2_grpc.py",
                   "rankserve/ranking/v1/ranking.proto",
                   "rankserve/tfserving/v1/predict_pb2.py"):
        assert module in names, f"{module} missing from {wheel.name}"
    assert not any(n.startswith(("tests/", "deploy/", "bench/")) for n in names)


def test_wheel_installs_one_top_level_package(venv: tuple[Path, Path]) -> None:
    """Everything imports as rankserve.<...>: no `server` or `ranker` beside other packages."""
    wheel, env_dir = venv
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"rankserve"}
    top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["rankserve"]
    # Every hand-written package directory of the checkout is in the wheel, under its new name.
    for source, package in (("ranker", "rankserve/ranker"), ("server", "rankserve/server"),
                            ("demo", "rankserve/demo"), ("loadtest", "rankserve/loadtest"),
                            ("tools", "rankserve/tools")):
        for init in (REPO / source).rglob("__init__.py"):
            inside = init.relative_to(REPO / source).as_posix()
            assert f"{package}/{inside}" in names, f"{source}/{inside} missing from the wheel"
    out = run(str(env_dir / "bin" / "python"), "-c",
              "import rankserve.ranker, rankserve.server.common, rankserve.tools.cli;"
              "print(rankserve.ranker.__name__)", cwd=env_dir)
    assert out.strip() == "rankserve.ranker"


def test_console_script_and_every_subcommand_help(venv: tuple[Path, Path]) -> None:
    _, env_dir = venv
    rankserve = str(env_dir / "bin" / "rankserve")
    top = run(rankserve, "--help", cwd=env_dir)
    for sub in SUBCOMMANDS:
        assert sub in top
        text = run(rankserve, sub, "--help", cwd=env_dir)
        assert "usage: rankserve " + sub in text


def test_ranker_imports_without_tensorflow(venv: tuple[Path, Path]) -> None:
    """The ranker image has no TensorFlow: its server and protos import without it."""
    _, env_dir = venv
    out = run(str(env_dir / "bin" / "python"), "-c",
              "import importlib.util, rankserve.server.ranking.app;"
              "import rankserve.tfserving.v1.predict_pb2;"
              "print(importlib.util.find_spec('tensorflow') is None)", cwd=env_dir)
    assert out.strip() == "True"


def test_embedding_refresh_job_runs_without_tensorflow(venv: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    """The chart's refresh job runs `rankserve embeddings publish` from the ranker image."""
    from tests.support.catalog import make_catalog

    _, env_dir = venv
    catalog = make_catalog(tmp_path / "catalog", num_items=200)
    out = run(str(env_dir / "bin" / "rankserve"), "embeddings", "publish", "--catalog-dir",
              str(catalog), "--root", str(tmp_path / "embeddings"), "--model", "retrieval",
              "--version", "1", "--bulk", cwd=env_dir)
    assert "published items+tower+users of version 1 (bulk): 200 items" in out
