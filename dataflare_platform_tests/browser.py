"""Headless Chromium for tests that must prove a page renders (Debian's chromium)."""

import shutil
import subprocess
from pathlib import Path

import pytest


def chromium_binary() -> str:
    """The browser binary; its absence is a failure, not a skip: this test is the only
    proof that the page renders, and CI installs the browser."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "chromium is not installed: run `apt-get install -y chromium` (Debian; .ci/run"
            " does this in CI) to render pages in a headless browser",
            pytrace=False,
        )
    return found


def run_chromium(binary: str, profile: Path, url: str, *extra: str) -> str:
    """One headless Chromium run, flags as in e2e/test_ui_browser (root, closed network)."""
    result = subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout
