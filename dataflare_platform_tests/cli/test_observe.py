"""``dataflare observe`` (``make observe``): without Debian's packages it says how to
install them and exits non-zero; with them, ``--check`` validates the shipped files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

from dataflare_platform_tests.observability.alertmanager_support import (
    ALERTMANAGER,
    PROMTOOL,
    need,
    requires_alertmanager,
    requires_promtool,
)


def _observe(home, *args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "dataflare_platform.cli", "observe", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_without_the_binaries_it_says_how_to_install_them(home, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    done = _observe(home, path=str(empty))
    assert done.returncode == 2
    assert "apt-get install prometheus prometheus-alertmanager" in done.stderr
    assert not (home.root / "observe").exists()  # nothing started, nothing written


@requires_promtool
@requires_alertmanager
def test_check_validates_the_shipped_configuration_and_makes_a_private_token(home):
    need(PROMTOOL, "prometheus")
    need(ALERTMANAGER, "prometheus-alertmanager")
    done = _observe(home, "--check")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["config"].endswith("deployments/observe")
    token = home.root / "observe" / "alert-receiver.token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert len(token.read_text().strip()) >= 32
    assert (home.root / "observe" / "alertmanager.yml").is_file()
