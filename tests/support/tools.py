"""Finding the real programs a test needs (Prometheus, promtool, kubectl, Chromium).

Missing under CI=true is a failure: CI installs them (`make test` does), so their absence
means a check did not run. On a laptop the test skips and says how to install them.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

PROMETHEUS_HINT = (
    "install Debian's prometheus package (it ships prometheus and promtool): "
    "sudo apt-get install -y --no-install-recommends prometheus  (or run `make test` as root)"
)


def require_program(name: str, hint: str = PROMETHEUS_HINT, *, also: tuple[str, ...] = ()) -> str:
    """The program's path: beside this Python first (a console script of the virtual
    environment), then on PATH, under ``name`` or any name in ``also``. Missing, the test fails
    under CI=true and skips elsewhere, saying how to install it."""
    for candidate in (name, *also):
        beside = Path(sys.executable).with_name(candidate)
        if beside.is_file():
            return str(beside)
        path = shutil.which(candidate)
        if path:
            return path
    message = f"{name} is not installed: {hint}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)
