"""Headless Chromium for rendering checks: find it, or fail under CI and skip elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

INSTALL_HINT = ("install Chromium: `sudo apt-get install -y --no-install-recommends chromium`"
                " (make test does it when run as root)")


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI") == "true":
        pytest.fail(f"no Chromium binary on PATH: {INSTALL_HINT}")
    pytest.skip(f"no Chromium binary on PATH: {INSTALL_HINT}")


def screenshot(html: Path, png: Path, profile_dir: Path, size: str = "1400,3000") -> Path:
    """Renders ``html`` headless (no network, no profile state) into ``png``."""
    profile_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile_dir}", f"--screenshot={png}",
         f"--window-size={size}", f"file://{html}"],
        capture_output=True, timeout=90, check=True)
    return png
