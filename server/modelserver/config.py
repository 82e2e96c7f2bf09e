"""Which models to serve: from flags or from TF Serving's own model config file.

The config file is ``tensorflow.serving.ModelServerConfig`` in protobuf text format, the file
real TF Serving takes with ``--model_config_file``, so one file drives both servers. It is read
with rankserve's slim copy of that message, which declares every field TF Serving's does at the
levels read here (text format goes by field name). Everything is turned into plain
``ModelConfig`` values here; the rest of the server never sees protobuf.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from rankserve.tfserving.v1 import model_server_config_pb2

from .errors import ConfigError


@dataclass(frozen=True)
class VersionPolicy:
    """Which of the versions on disk to serve: the latest N, all, or specific ones."""

    kind: str = "latest"  # "latest" | "all" | "specific"
    num_versions: int = 1
    versions: frozenset[int] = frozenset()

    def select(self, on_disk: Iterable[int]) -> set[int]:
        """The versions this policy wants among those on disk."""
        present = sorted(set(on_disk))
        if self.kind == "all":
            return set(present)
        if self.kind == "specific":
            return set(present) & set(self.versions)
        return set(present[-self.num_versions :]) if self.num_versions > 0 else set()

    def describe(self) -> str:
        if self.kind == "specific":
            return "specific:" + ",".join(str(v) for v in sorted(self.versions))
        return "all" if self.kind == "all" else f"latest:{self.num_versions}"


def parse_policy(text: str) -> VersionPolicy:
    """``latest:N`` (``latest`` = latest:1), ``all`` or ``specific:1,3``."""
    kind, _, arg = text.strip().partition(":")
    kind = kind.strip().lower()
    try:
        if kind == "latest":
            n = int(arg) if arg.strip() else 1
            if n < 1:
                raise ValueError
            return VersionPolicy("latest", num_versions=n)
        if kind == "all" and not arg.strip():
            return VersionPolicy("all")
        if kind == "specific":
            versions = frozenset(int(v) for v in arg.split(",") if v.strip())
            if versions:
                return VersionPolicy("specific", versions=versions)
    except ValueError:
        pass
    raise ConfigError(
        f"version policy {text!r} is not one of 'latest:N' (N >= 1), 'all', 'specific:1,3'"
    )


@dataclass(frozen=True)
class ModelConfig:
    """One served model: where its versions live, which to serve, and version labels."""

    name: str
    base_path: Path
    policy: VersionPolicy = VersionPolicy()
    labels: dict[str, int] = field(default_factory=dict)


def from_flags(name: str, base_path: Path, policy: str) -> list[ModelConfig]:
    """A single model, as ``--model-name`` / ``--model-base-path`` describe it."""
    return [ModelConfig(name=name, base_path=Path(base_path), policy=parse_policy(policy))]


def read_config_file(path: Path) -> list[ModelConfig]:
    """Parse a TF Serving model config file; ConfigError says what is wrong and where."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read model config file {path}: {exc.strerror}") from exc
    try:
        proto = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as exc:
        raise ConfigError(f"model config file {path}: {exc}") from exc
    if proto.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"model config file {path} has no model_config_list")
    models = [_model(path, c) for c in proto.model_config_list.config]
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"model config file {path} names a model twice: {names}")
    return models


def _model(path: Path, config) -> ModelConfig:
    if not config.name or not config.base_path:
        raise ConfigError(f"model config file {path}: every config needs a name and a base_path")
    if config.model_platform not in ("", "tensorflow"):
        raise ConfigError(
            f"model '{config.name}' has model_platform {config.model_platform!r}; "
            "only 'tensorflow' is served"
        )
    return ModelConfig(
        name=config.name,
        base_path=Path(config.base_path),  # relative to the working directory, as TF Serving
        policy=_policy(config.model_version_policy),
        labels=dict(config.version_labels),
    )


def _policy(proto) -> VersionPolicy:
    which = proto.WhichOneof("policy_choice")
    if which == "all":
        return VersionPolicy("all")
    if which == "specific":
        return VersionPolicy("specific", versions=frozenset(proto.specific.versions))
    if which == "latest" and proto.latest.num_versions > 0:
        return VersionPolicy("latest", num_versions=proto.latest.num_versions)
    return VersionPolicy()
