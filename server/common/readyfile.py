"""Ready files: how a parent process (tests, the local stack) learns a child's real port."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_ready_file(path: str | os.PathLike[str], address: str, pid: int | None = None) -> None:
    """Writes ``{"address": ..., "pid": ...}`` atomically: a reader never sees half a file."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"address": address, "pid": os.getpid() if pid is None else pid}))
    os.replace(tmp, target)
