"""`rankserve up` for a team's own model: flags to settings, the model servers' config, the
ranker's data flags. No process is started."""

from __future__ import annotations

from pathlib import Path

import pytest

from rankserve.server.modelserver.config import read_config_file
from rankserve.tools.cli import build_parser
from rankserve.tools.stack.local import (
    LocalStack,
    StackInputs,
    check_model_base,
    model_config_text,
)
from rankserve.tools.stack.processes import Child, StartError
from rankserve.tools.stack.up import resolve_inputs, stack_settings


def _base(tmp_path: Path) -> Path:
    base = tmp_path / "marketplace"
    (base / "3").mkdir(parents=True)
    (base / "3" / "saved_model.pb").write_bytes(b"")
    return base


def _settings(*argv: str):
    return stack_settings(build_parser().parse_args(["up", *argv]))


def test_model_base_names_the_model_after_its_directory_unless_told(tmp_path: Path) -> None:
    base = _base(tmp_path)
    assert _settings("--model-base", str(base), "--spec", "s.yaml").model_name == "marketplace"
    told = _settings("--model-base", str(base), "--spec", "s.yaml", "--model-name", "m2")
    assert told.model_name == "m2"
    assert _settings().model_name == "ranker"  # the demo, as before


def test_own_model_needs_no_demo_and_no_catalog(tmp_path: Path) -> None:
    settings = _settings("--model-base", str(_base(tmp_path)), "--spec", "s.yaml")
    assert resolve_inputs(settings, tmp_path / "home") == StackInputs(None, None)
    assert not (tmp_path / "home").exists()


def test_model_config_and_base_checks(tmp_path: Path) -> None:
    base = _base(tmp_path)
    path = tmp_path / "models.config"
    path.write_text(model_config_text("marketplace", base))
    [model] = read_config_file(path)
    assert (model.name, model.base_path, model.labels) == ("marketplace", base.resolve(), {})
    assert model.policy.select([1, 3]) == {3}
    check_model_base(base)
    with pytest.raises(StartError, match="version directory; give the directory above it"):
        check_model_base(base / "3")
    with pytest.raises(StartError, match="no <version>/saved_model.pb"):
        check_model_base(tmp_path / "missing")


def test_ranker_data_flags(tmp_path: Path) -> None:
    settings = _settings("--model-base", str(_base(tmp_path)), "--spec", "s.yaml", "--redis",
                         "--user-features", "/srv/users", "--run-dir", str(tmp_path / "run"))
    stack = LocalStack(settings, StackInputs(None, None), out=lambda _l: None)
    stack.redis = Child("redis", [], tmp_path / "redis.log", address="unix:///r/redis.sock")
    assert stack._data_args() == ["--spec", "s.yaml", "--item-features", "unix:///r/redis.sock",
                                  "--user-features", "/srv/users"]
    demo = LocalStack(_settings("--run-dir", str(tmp_path / "run2")),
                      StackInputs(tmp_path / "catalog", tmp_path / "models.config"),
                      out=lambda _l: None)
    assert demo._data_args() == ["--catalog-dir", str(tmp_path / "catalog")]
    config = stack._model_config_file()
    assert config.read_text() == model_config_text("marketplace", tmp_path / "marketplace")
