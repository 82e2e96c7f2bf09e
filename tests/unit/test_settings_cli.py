"""Flags derived from a settings class: one per field kind, env < flag, errors, help lines."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from rankserve.server.common.settings_cli import (
    add_settings_flags,
    run_with_settings,
    settings_from_args,
)


class DemoSettings(BaseSettings):
    """One field of every kind the helper turns into a flag."""

    model_config = SettingsConfigDict(env_prefix="RANKSERVE_DEMO_", extra="forbid")

    name: str = Field("ranker", description="A name.")
    port: int = Field(8080, ge=0, le=65535, description="A port.")
    wait_ms: float = Field(1.5, ge=0, description="A wait, 100% in ms.")
    verbose: bool = Field(False, description="Say more.")
    root: Path = Field(Path("/srv"), description="A directory.")
    ready_file: Path | None = Field(None, description="A file, or none.")
    label: str | None = Field(None, description="A label, or none.")
    mode: Literal["fast", "safe"] = Field("safe", description="How to run.")


def parser(**options) -> argparse.ArgumentParser:
    return add_settings_flags(argparse.ArgumentParser(prog="demo"), DemoSettings, **options)


def load(*argv: str, **options) -> DemoSettings:
    return settings_from_args(DemoSettings, parser(**options).parse_args(argv))


def test_no_flags_keep_the_defaults_and_every_field_has_a_dest():
    args = parser().parse_args([])
    assert all(getattr(args, name) is None for name in DemoSettings.model_fields)
    assert load() == DemoSettings()


def test_a_flag_for_each_field_kind():
    s = load("--name", "m", "--port", "0", "--wait-ms", "0.25", "--verbose", "--root", "/data",
             "--ready-file", "/tmp/r.json", "--label", "stable", "--mode", "fast")
    assert (s.name, s.port, s.wait_ms, s.verbose) == ("m", 0, 0.25, True)
    assert (s.root, s.ready_file, s.label, s.mode) == (
        Path("/data"), Path("/tmp/r.json"), "stable", "fast")
    assert load("--no-verbose").verbose is False


def test_an_empty_optional_value_means_none(monkeypatch):
    monkeypatch.setenv("RANKSERVE_DEMO_LABEL", "canary")
    assert load().label == "canary"
    assert load("--label", "").label is None
    assert load("--name", "").name == ""  # not optional: empty stays a value


def test_a_literal_field_offers_its_values_as_choices(capsys):
    with pytest.raises(SystemExit) as exit_:
        load("--mode", "reckless")
    assert exit_.value.code == 2
    assert "invalid choice: 'reckless'" in capsys.readouterr().err


def test_flags_override_the_environment_which_overrides_defaults(monkeypatch):
    monkeypatch.setenv("RANKSERVE_DEMO_PORT", "9000")
    monkeypatch.setenv("RANKSERVE_DEMO_NAME", "from-env")
    monkeypatch.setenv("RANKSERVE_DEMO_VERBOSE", "true")
    s = load("--port", "1")
    assert (s.port, s.name, s.verbose, s.mode) == (1, "from-env", True, "safe")
    assert load("--no-verbose").verbose is False


def test_only_given_flags_count_as_set():
    assert load("--port", "1").model_fields_set == {"port"}


def test_an_alias_keeps_an_old_spelling_working():
    assert load("--wait_ms", "3", aliases={"wait_ms": ["--wait_ms"]}).wait_ms == 3.0
    assert load("--wait-ms", "4", aliases={"wait_ms": ["--wait_ms"]}).wait_ms == 4.0


@pytest.mark.parametrize(
    ("argv", "env", "field"),
    [
        (["--port", "70000"], {}, "port"),
        (["--port", "eighty"], {}, "port"),
        ([], {"RANKSERVE_DEMO_WAIT_MS": "-1"}, "wait_ms"),
    ],
)
def test_an_invalid_value_exits_2_naming_the_field(monkeypatch, capsys, argv, env, field):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ran = []
    code = run_with_settings(DemoSettings, parser().parse_args(argv), "demo", ran.append)
    err = capsys.readouterr().err
    assert code == 2 and not ran
    assert err.startswith(f"demo: {field}: ") and "Traceback" not in err


def test_valid_settings_reach_main():
    code = run_with_settings(DemoSettings, parser().parse_args(["--port", "5"]), "demo",
                             lambda s: s.port)
    assert code == 5


def test_help_lines_show_description_default_and_env_var():
    text = " ".join(parser(metavars={"port": "PORT"}).format_help().split())
    assert "--port PORT A port. (default 8080; env RANKSERVE_DEMO_PORT)" in text
    assert "--wait-ms NUM A wait, 100% in ms. (default 1.5; env RANKSERVE_DEMO_WAIT_MS)" in text
    assert "--verbose, --no-verbose Say more. (default False; env RANKSERVE_DEMO_VERBOSE)" in text
    assert "--root PATH A directory. (default '/srv'; env RANKSERVE_DEMO_ROOT)" in text
    assert ("--ready-file PATH A file, or none. (default None; empty for none;"
            " env RANKSERVE_DEMO_READY_FILE)") in text
    assert "--mode {fast,safe} How to run. (default 'safe'; env RANKSERVE_DEMO_MODE)" in text


def test_a_field_of_an_unsupported_kind_fails_when_the_parser_is_built():
    class Odd(BaseSettings):
        tags: list[str] = Field(default_factory=list, description="Tags.")

    with pytest.raises(TypeError, match="Odd.tags"):
        add_settings_flags(argparse.ArgumentParser(), Odd)
