"""Debian's ``prometheus-alertmanager`` (and ``promtool``/``amtool``) for the alert tests.

CI (.ci/run) installs ``prometheus`` and ``prometheus-alertmanager`` and sets
DATAFLARE_REQUIRE_PROMETHEUS=1 / DATAFLARE_REQUIRE_ALERTMANAGER=1: a missing binary
fails there instead of skipping.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"


def _executable(path: str) -> bool:
    return Path(path).is_file() and os.access(path, os.X_OK)


def need(path: str, package: str) -> None:
    """Fail (not skip) when a required binary is missing: called inside the tests, so a
    CI run with the DATAFLARE_REQUIRE_* flag reports the missing package."""
    if not _executable(path):
        pytest.fail(f"{path} is missing: apt-get install {package}")


requires_promtool = pytest.mark.skipif(
    not _executable(PROMTOOL) and os.environ.get("DATAFLARE_REQUIRE_PROMETHEUS") != "1",
    reason="promtool (Debian's prometheus package) is not installed; CI requires it",
)
requires_alertmanager = pytest.mark.skipif(
    not (_executable(ALERTMANAGER) and _executable(AMTOOL))
    and os.environ.get("DATAFLARE_REQUIRE_ALERTMANAGER") != "1",
    reason="Debian's prometheus-alertmanager is not installed; CI requires it",
)
