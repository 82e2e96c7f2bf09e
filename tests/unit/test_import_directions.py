"""Imports point one way: from tools down to the deployables, from the deployables down to the
ranking core and the generated protos, never back up and never between the two servers.

Every import counts, also one deferred inside a function: a lazy import is still a dependency.
The layers are described in docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Source directory -> the package it installs as (pyproject.toml [tool.setuptools.package-dir]).
ROOTS = {
    "protos/rankserve": "rankserve",
    "ranker": "rankserve.ranker",
    "server": "rankserve.server",
    "demo": "rankserve.demo",
    "loadtest": "rankserve.loadtest",
    "tools": "rankserve.tools",
}
GENERATED = ("rankserve.ranking", "rankserve.tfserving", "rankserve.capture")

# Component -> the components it may import (itself always). The first matching prefix names a
# module's component, so the list goes from specific to general.
COMPONENTS = [
    "rankserve.server.common",
    "rankserve.server.telemetry",
    "rankserve.server.ranking",
    "rankserve.server.modelserver",
    "rankserve.server.embeddings",
    "rankserve.server.features",
    "rankserve.server",
    "rankserve.ranker",
    "rankserve.demo",
    "rankserve.loadtest",
    "rankserve.tools",
    "generated",
]
SERVER_PARTS = {"rankserve.server.common", "rankserve.server.telemetry"}
ALLOWED = {
    "generated": set(),
    "rankserve.ranker": {"generated"},
    "rankserve.server.common": set(),
    "rankserve.server.telemetry": {"rankserve.server.common"},
    "rankserve.server.ranking": SERVER_PARTS | {"rankserve.ranker", "generated"},
    "rankserve.server.modelserver": SERVER_PARTS | {"generated"},
    "rankserve.server.embeddings": SERVER_PARTS | {"rankserve.ranker"},
    "rankserve.server.features": SERVER_PARTS | {"rankserve.ranker"},
    "rankserve.server": set(),
    "rankserve.demo": {"rankserve.ranker", "generated"},
    # Replay reads the ranking server's capture files; the load generator may trace its calls.
    "rankserve.loadtest": {"rankserve.ranker", "rankserve.demo", "rankserve.server.ranking",
                           "rankserve.server.telemetry", "rankserve.server.common",
                           "generated"},
    "rankserve.tools": set(COMPONENTS),
}


def component(module: str) -> str | None:
    if module.startswith(GENERATED) or module == "rankserve":
        return "generated"
    for name in COMPONENTS:
        if module == name or module.startswith(name + "."):
            return name
    return None


def modules() -> dict[str, Path]:
    found = {}
    for source, package in ROOTS.items():
        for path in (REPO / source).rglob("*.py"):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")) and source != "protos/rankserve":
                continue
            parts = list(path.relative_to(REPO / source).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imports_of(module: str, path: Path) -> set[str]:
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            # `from pkg import sub` may import a submodule: count it as pkg.sub.
            out.update(f"{target}.{alias.name}" for alias in node.names)
    return out


def violations() -> list[str]:
    known = modules()
    found = []
    for module, path in sorted(known.items()):
        mine = component(module)
        assert mine is not None, f"{module} belongs to no component: add it to COMPONENTS"
        for target in sorted(imports_of(module, path)):
            if not (target == "rankserve" or target.startswith("rankserve.")):
                continue
            if target not in known and target.rsplit(".", 1)[0] in known:
                continue  # `from pkg.mod import name`: the name is no module, pkg.mod counted
            theirs = component(target)
            if theirs == mine or theirs in ALLOWED[mine]:
                continue
            found.append(f"{path.relative_to(REPO)}: {mine} -> {target} ({theirs})")
    return found


def test_imports_point_only_down_the_layers() -> None:
    assert violations() == []


def test_the_check_sees_deferred_and_relative_imports(tmp_path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from rankserve.tools import cli\n"
                      "from ..common import errors\n")
    found = imports_of("rankserve.server.ranking.app", source)
    assert "rankserve.tools.cli" in found
    assert "rankserve.server.common.errors" in found
    assert component("rankserve.tools.cli") not in ALLOWED["rankserve.server.ranking"]


def test_every_module_of_the_tree_is_seen() -> None:
    known = modules()
    for expected in ("rankserve.ranker.pipeline", "rankserve.server.modelserver.app",
                     "rankserve.tools.cli", "rankserve.ranking.v1.ranking_pb2",
                     "rankserve.loadtest.k8s.cluster"):
        assert expected in known
