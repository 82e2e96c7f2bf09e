"""Start a test helper process that writes a ready file, and stop it by its pid."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def predict_process(run_dir: Path, *args: str, timeout_s: float = 30.0) -> Iterator[dict]:
    """``tests.support.predict_process`` on a loopback port; yields {"address", "pid"}."""
    ready = run_dir / f"predict-{time.monotonic_ns()}.ready"
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.predict_process",
                             "--ready-file", str(ready), *args])
    try:
        deadline = time.monotonic() + timeout_s
        while not ready.is_file():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"predict process did not start (exit {proc.poll()})")
            time.sleep(0.05)
        yield json.loads(ready.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
