"""Making a rename durable: the directory entry is on disk only once the directory is synced.

Publishing by write-aside-then-rename (embeddings, feature tables) needs the files synced before
the rename and the directory after it, or a crash can lose the rename and leave readers on
nothing. A publisher killed midway leaves its aside copy, named for its pid, which the next one
removes once that process is gone.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Flushes ``path``'s directory entries (a rename into it, a new file in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flushes a written file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def process_alive(pid: int) -> bool:
    """Whether a process of this host with ``pid`` still runs (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
