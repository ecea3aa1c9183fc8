"""Least exposure: the project home is its owner's alone (0700, files 0600)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dataflare_platform.deployment_settings import DEPLOYMENT_SETTINGS
from dataflare_platform.home import (
    HOME_ENV_VAR,
    PRIVATE_UMASK,
    ProjectHome,
)

CLI = (sys.executable, "-m", "dataflare_platform.cli")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def wide_umask():
    """The umask most shells start with (0022): files would be 0644 without the home's
    own care."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_a_new_home_is_private_whatever_the_umask(tmp_path, wide_umask):
    home = ProjectHome.resolve(tmp_path / "h").ensure()
    assert _mode(home.root) == 0o700
    assert _mode(home.dagster_home / "dagster.yaml") == 0o600
    assert _mode(home.write_workspace()) == 0o600


def test_an_existing_wide_home_is_tightened_with_a_warning(tmp_path, wide_umask):
    root = tmp_path / "h"
    old = ProjectHome.resolve(root).ensure()
    root.chmod(0o755)
    (old.dagster_home / "dagster.yaml").chmod(0o644)  # as homes were written before
    with pytest.warns(UserWarning, match="was mode 0755.*tightened to 0700"):
        ProjectHome.resolve(root).ensure()
    assert _mode(root) == 0o700
    assert _mode(old.dagster_home / "dagster.yaml") == 0o600
    # a private home is left alone, silently
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ProjectHome.resolve(root).ensure()


def test_the_umask_constant_is_owner_only():
    from dataflare_platform.cli import main

    assert PRIVATE_UMASK == main.PRIVATE_UMASK == 0o077
    assert DEPLOYMENT_SETTINGS["dataflare"]["path"] == HOME_ENV_VAR


@pytest.mark.e2e
def test_nothing_in_a_demo_home_is_reachable_by_others(tmp_path):
    """A real ``dataflare demo`` (warehouse, event log, audit db and keys, checkpoints,
    Dagster's SQLite storages and compute logs) started from a 0022 shell."""
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump({"events": 30_000, "events_per_second": 0.3}))
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in (HOME_ENV_VAR, "DAGSTER_HOME")}
    result = subprocess.run(
        [*CLI, "demo", "--config", str(config), "--home", str(home)],
        cwd=tmp_path,
        # The demo provisions its audit key in the per-user config dir: a tmp one here.
        env={**env, "COLUMNS": "200", "XDG_CONFIG_HOME": str(tmp_path / "xdg")},
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=lambda: os.umask(0o022),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    files = [p for p in home.rglob("*")]
    assert len(files) > 20  # the demo wrote the home's whole layout
    assert {p.name for p in home.iterdir()} >= {"warehouse.duckdb", "audit.db", "dagster_home"}
    exposed = subprocess.run(
        ["find", str(home), "-perm", "/077"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert exposed == []
