"""Headless Chromium (Debian's package; `make test` installs it when missing)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise RuntimeError("chromium is not installed: run `make test` (it installs Debian's chromium) or apt-get install chromium")
    return exe


def screenshot(url: str, png: Path, width: int, height: int, profile: Path) -> Path:
    subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--screenshot={png}", url],
        check=True, capture_output=True, timeout=120,
    )
    return png


def dump_dom(url: str, profile: Path) -> str:
    res = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                         check=True, capture_output=True, timeout=120, text=True)
    return res.stdout
