"""Lays out the `rankserve` import root as a tree of links, for mypy.

setuptools maps directories into one import root (`[tool.setuptools.package-dir]`: ranker/ ->
rankserve.ranker, protos/rankserve -> rankserve, ...), and the editable install resolves that
with an import hook that mypy does not run. mypy finds modules by path only, so this builds
`<dest>/rankserve/...` with one link per mapped directory, read from pyproject.toml, and mypy's
`mypy_path` points there. The tree is rebuilt on every run: links only, nothing is copied.

Usage: python scripts/typecheck_tree.py [DEST]   (default build/typecheck)
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(dest: Path) -> None:
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"]
    shutil.rmtree(dest, ignore_errors=True)
    # Parents before children: the root package's directory holds the links of the others.
    for name, source in sorted(mapping.items(), key=lambda kv: kv[0].count(".")):
        src = (ROOT / source).resolve()
        target = dest.joinpath(*name.split("."))
        if "." in name:
            target.symlink_to(src, target_is_directory=True)
            continue
        target.mkdir(parents=True)
        for child in src.iterdir():
            if child.name != "__pycache__":
                (target / child.name).symlink_to(child)


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build" / "typecheck")
