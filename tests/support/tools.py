"""Finding the real programs a test needs (Prometheus, promtool).

Missing under CI=true is a failure: CI installs them (`make test` does), so their absence
means a check did not run. On a laptop the test skips and says how to install them.
"""

from __future__ import annotations

import os
import shutil

import pytest

PROMETHEUS_HINT = (
    "install Debian's prometheus package (it ships prometheus and promtool): "
    "sudo apt-get install -y --no-install-recommends prometheus  (or run `make test` as root)"
)


def require_program(name: str, hint: str = PROMETHEUS_HINT) -> str:
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed: {hint}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)
