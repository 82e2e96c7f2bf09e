"""Fixtures for tests of the whole local stack: the demo artifacts and a running stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rankserve.demo.build import DemoPaths, ensure_demo
from rankserve.tools.stack.local import LocalStack, StackInputs
from rankserve.tools.stack.settings import StackSettings


@pytest.fixture(scope="session")
def demo_paths() -> DemoPaths:
    # Built once per machine and cached (RANKSERVE_HOME or ~/.cache/rankserve).
    return ensure_demo()


def make_stack(demo_paths: DemoPaths, run_dir: Path, **settings: object) -> LocalStack:
    return LocalStack(
        StackSettings(ranker_port=0, run_dir=run_dir, grace_s=5, **settings),
        StackInputs(demo_paths.catalog_dir, demo_paths.model_config_file),
        out=lambda _line: None,
    )


@pytest.fixture(scope="module")
def stack(demo_paths: DemoPaths, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    s = make_stack(demo_paths, tmp_path_factory.mktemp("stack"))
    with s:
        yield s
