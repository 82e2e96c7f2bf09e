"""Making a rename durable: the directory entry is on disk only once the directory is synced.

Publishing by write-aside-then-rename (embeddings, feature tables) needs the directory synced
after the rename, or a crash can lose the rename and leave readers on nothing.
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
