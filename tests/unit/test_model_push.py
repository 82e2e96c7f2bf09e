"""`rankserve models push`: a SavedModel directory becomes the next version (or the one asked
for), whole; an existing version or a directory that is no SavedModel is refused with what to
do, and nothing under the base path changes."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from rankserve.server.modelserver.push import PushError, push
from rankserve.server.modelserver.versions import scan_versions
from rankserve.tools import cli

FILES = {"saved_model.pb": b"graph", "fingerprint.pb": b"fp",
         "variables/variables.index": b"index",
         "variables/variables.data-00000-of-00001": b"\x00" * 70_000,
         "assets/vocab.txt": b"red\nblue\n"}


def export(path: Path) -> Path:
    """A directory laid out as a SavedModel (push copies files; it does not parse them)."""
    for name, data in FILES.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


def contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_push_installs_the_next_version_whole(tmp_path, capsys) -> None:
    src = export(tmp_path / "export")
    base = tmp_path / "models" / "ranker"  # created by the first push
    assert cli.main(["models", "push", str(src), "--model-base", str(base)]) == 0
    assert f"pushed {src} as version 1: {base / '1'} (5 files," in capsys.readouterr().out
    assert push(src, base).version == 2
    assert push(src, base, version=7).version == 7
    assert push(src, base).version == 8  # one above the highest, not the first gap
    assert sorted(scan_versions(base)) == [1, 2, 7, 8]
    assert sorted(p.name for p in base.iterdir()) == ["1", "2", "7", "8"]  # nothing hidden left
    for version in ("1", "2", "7", "8"):
        assert contents(base / version) == FILES


def test_an_existing_version_is_refused_and_left_alone(tmp_path, capsys) -> None:
    src = export(tmp_path / "export")
    base = tmp_path / "ranker"
    push(src, base, version=3)
    (src / "saved_model.pb").write_bytes(b"another graph")
    code = cli.main(["models", "push", str(src), "--model-base", str(base), "--version", "3"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{base / '3'} exists: a version is never overwritten" in err
    assert contents(base / "3")["saved_model.pb"] == b"graph"
    (base / "04").mkdir()  # a server reads "04" as version 4 too
    with pytest.raises(PushError, match="exists"):
        push(src, base, version=4)
    assert sorted(p.name for p in base.iterdir()) == ["04", "3"]


def test_a_directory_that_is_not_a_saved_model_is_refused(tmp_path, capsys) -> None:
    src = tmp_path / "export"
    (src / "variables").mkdir(parents=True)
    base = tmp_path / "ranker"
    base.mkdir()
    code = cli.main(["models", "push", str(src), "--model-base", str(base)])
    assert code == 2
    assert f"{src} holds no saved_model.pb: not a SavedModel directory" in (
        capsys.readouterr().err)
    with pytest.raises(PushError, match="is not a directory"):
        push(tmp_path / "missing", base)
    assert list(base.iterdir()) == []


def test_the_copy_of_a_killed_push_is_removed_by_the_next(tmp_path) -> None:
    src = export(tmp_path / "export")
    base = tmp_path / "ranker"
    push(src, base)
    gone = 2**22 + 17  # above the largest pid_max Linux allows: no process has it
    assert not _alive(gone)
    host = socket.gethostname()
    leftover = base / f".push@{host}@{gone}@dead"
    export(leftover)
    live = base / f".push@{host}@{os.getpid()}@live"  # a push still running here
    live.mkdir()
    other_host = base / ".push@elsewhere@1@beef"  # its pids cannot be checked from here
    other_host.mkdir()
    result = push(src, base)
    assert (result.version, result.removed_leftovers) == (2, 1)
    assert "removed 1 leftover(s) of killed pushes" in str(result)
    assert not leftover.exists() and live.is_dir() and other_host.is_dir()
    assert sorted(scan_versions(base)) == [1, 2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
