"""Installs a SavedModel as a new version under a model base path, atomically.

A model server (this one or TF Serving) loads ``<base>/<N>`` as soon as ``<N>/saved_model.pb``
is there. A plain copy can write that file before ``variables/`` is complete, and the server
then loads half a version. So the copy goes to a hidden directory inside the base path (same
filesystem, a name that is not a number, which no server takes for a version), every file and
directory is synced, and one rename makes ``<N>`` appear whole. A copy killed at any point
leaves only the hidden directory, which the next push on the same host removes.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

SAVED_MODEL = "saved_model.pb"
# Temporary names say who made them: ``.push@<host>@<pid>@<random>`` (hostnames hold no "@").
_TMP = ".push@"
#: A temporary copy of another host (whose pids this one cannot check) untouched this long
#: belongs to a push that died.
_ABANDONED_S = 24 * 3600.0


class PushError(Exception):
    """The source is not a SavedModel, or the version cannot be installed as asked."""


@dataclass(frozen=True)
class PushResult:
    source: Path
    target: Path
    version: int
    files: int
    bytes: int
    removed_leftovers: int
    seconds: float

    def __str__(self) -> str:
        extra = (f"; removed {self.removed_leftovers} leftover(s) of killed pushes"
                 if self.removed_leftovers else "")
        return (f"pushed {self.source} as version {self.version}: {self.target}"
                f" ({self.files} files, {self.bytes / 2**20:.1f} MiB, {self.seconds:.2f} s)"
                f"{extra}")


def versions_on_disk(base: Path) -> list[int]:
    """Every numeric entry under ``base``, complete or not: a new version may take none."""
    try:
        return sorted(int(e.name) for e in base.iterdir()
                      if e.name.isascii() and e.name.isdigit())
    except FileNotFoundError:
        return []


def push(source: str | os.PathLike[str], base: str | os.PathLike[str],
         version: int | None = None) -> PushResult:
    """Copies the SavedModel ``source`` to ``base/<version>`` (default: the highest + 1)."""
    t0 = time.perf_counter()
    src, base = Path(source), Path(base)
    if not src.is_dir():
        raise PushError(f"{src} is not a directory: give a SavedModel directory (the one"
                        f" holding {SAVED_MODEL} and variables/)")
    if not (src / SAVED_MODEL).is_file():
        raise PushError(f"{src} holds no {SAVED_MODEL}: not a SavedModel directory")
    if version is not None and version < 1:
        raise PushError(f"version must be >= 1, got {version}")
    if not base.is_dir():
        base.mkdir(parents=True)
        _fsync_dir(base.parent)
    removed = _remove_stale(base)
    if version is None:
        version = max(versions_on_disk(base), default=0) + 1
    target = base / str(version)
    if target.exists() or target.is_symlink() or version in versions_on_disk(base):
        raise PushError(f"{target} exists: a version is never overwritten (a server may be"
                        " serving it); push under another --version, or omit it to take the"
                        " next free one")
    tmp = base / f"{_TMP}{socket.gethostname()}@{os.getpid()}@{secrets.token_hex(4)}"
    try:
        shutil.copytree(src, tmp, symlinks=False)
        files, size = _sync_tree(tmp)
        try:
            os.rename(tmp, target)  # the atomic step: <N> appears with everything in it
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise PushError(f"{target} appeared while copying (another push?); nothing"
                                " was changed") from None
            raise
        _fsync_dir(base)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PushResult(src, target, version, files, size, removed, time.perf_counter() - t0)


def _sync_tree(root: Path) -> tuple[int, int]:
    """fsyncs every file, then every directory bottom up; returns (files, bytes)."""
    files = size = 0
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                size += os.fstat(fd).st_size
            finally:
                os.close(fd)
            files += 1
        _fsync_dir(Path(dirpath))
    return files, size


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale(base: Path) -> int:
    """Removes the temporary copies of pushes that died; returns how many."""
    removed = 0
    for entry in base.iterdir():
        if entry.name.startswith(_TMP) and _stale(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed


def _stale(entry: Path) -> bool:
    host, _, rest = entry.name[len(_TMP):].partition("@")
    pid_text = rest.partition("@")[0]
    if host == socket.gethostname() and pid_text.isascii() and pid_text.isdigit():
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    try:
        return time.time() - entry.stat().st_mtime > _ABANDONED_S
    except OSError:
        return False
