"""Ready files: how a parent process (tests, the local stack) learns a child's real port."""

from __future__ import annotations

import json
import logging
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


def announce_ready(
    log: logging.Logger, name: str, address: str, *, metrics_address: str,
    ready_file: str | os.PathLike[str] | None = None, detail: str = "", **extra: str,
) -> None:
    """Logs ``NAME serving on ADDRESS (DETAIL; metrics http://.../metrics)``, then writes the
    ready file if one is asked for: a parent that finds the file also finds the banner.
    ``extra``: further addresses for the ready file, e.g. ``profiler_address``."""
    about = f"{detail}; " if detail else ""
    log.info("%s serving on %s (%smetrics http://%s/metrics)", name, address, about,
             metrics_address)
    if ready_file:
        write_ready_file(ready_file, address, os.getpid(), metrics_address=metrics_address,
                         **extra)
