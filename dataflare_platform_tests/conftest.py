"""Shared fixtures: every test gets its own project home; nothing touches ./.dataflare."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataflare_platform.datagen import NexmarkConfig, write_nexmark
from dataflare_platform.home import ProjectHome

REPO_ROOT = Path(__file__).resolve().parents[1]

# 40k events at 0.3 events/s of event time: ~1.5 days, so two daily partitions.
SMALL_CONFIG = NexmarkConfig(events=40_000, chunk_events=15_000, events_per_second=0.3)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ProjectHome:
    project = ProjectHome.resolve(tmp_path / "home").ensure()
    for key, value in project.environ().items():
        monkeypatch.setenv(key, value)
    return project


@pytest.fixture
def landed_home(home: ProjectHome) -> ProjectHome:
    """A home with SMALL_CONFIG's Nexmark files landed (not yet loaded)."""
    write_nexmark(SMALL_CONFIG, home.nexmark_dir)
    return home
