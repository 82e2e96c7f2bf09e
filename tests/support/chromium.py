"""Headless Chromium for rendering checks: find it, or fail under CI and skip elsewhere."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.tools import require_program

INSTALL_HINT = ("install Chromium: `sudo apt-get install -y --no-install-recommends chromium`"
                " (make test does it when run as root)")


def find_chromium() -> str:
    return require_program("chromium", INSTALL_HINT, also=("chromium-browser", "google-chrome"))


def screenshot(html: Path, png: Path, profile_dir: Path, size: str = "1400,3000") -> Path:
    """Renders ``html`` headless (no network, no profile state) into ``png``."""
    return screenshot_url(f"file://{html}", png, profile_dir, size)


def screenshot_url(url: str, png: Path, profile_dir: Path, size: str = "1400,3000") -> Path:
    """Renders ``url`` (a file:// page, or one a local test server serves) into ``png``."""
    profile_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile_dir}", f"--screenshot={png}",
         f"--window-size={size}", url],
        capture_output=True, timeout=90, check=True)
    return png
