"""Ready files: how a parent process (tests, the local stack) learns a child's real port."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_ready_file(
    path: str | os.PathLike[str], address: str, pid: int | None = None, **extra: str
) -> None:
    """Writes ``{"address": ..., "pid": ..., **extra}`` atomically: a reader never sees half a
    file. ``extra`` carries further addresses, e.g. ``metrics_address``."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    body = {"address": address, "pid": os.getpid() if pid is None else pid, **extra}
    tmp.write_text(json.dumps(body))
    os.replace(tmp, target)
