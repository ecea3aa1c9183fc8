"""The whole catalog against a committed snapshot (``catalog_snapshot.json``), as
dagster-open-platform does: an accidental change to the asset graph (a key, a dependency,
a check that stops blocking, a lost sensor) fails here and shows in review as a diff of
the snapshot file.

A deliberate change: regenerate the snapshot with one command and commit it with the
change::

    make catalog-snapshot
    # or: DATAFLARE_UPDATE_SNAPSHOT=1 .venv/bin/pytest dataflare_platform_tests/defs/test_catalog.py
"""

import json
import os
from pathlib import Path

import pytest

from dataflare_platform.definitions import build_definitions
from dataflare_platform.defs.streams.intervals import SENSOR_INTERVAL_ENV_VAR
from dataflare_platform_tests.defs.catalog import catalog

SNAPSHOT = Path(__file__).with_name("catalog_snapshot.json")
UPDATE_ENV_VAR = "DATAFLARE_UPDATE_SNAPSHOT"


def _render(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def test_the_catalog_matches_its_snapshot(monkeypatch: pytest.MonkeyPatch):
    # The intervals as the files declare them, whatever the environment overrides.
    monkeypatch.delenv(SENSOR_INTERVAL_ENV_VAR, raising=False)
    current = _render(catalog(build_definitions()))
    if os.environ.get(UPDATE_ENV_VAR) == "1":
        SNAPSHOT.write_text(current)
    assert SNAPSHOT.exists(), f"no snapshot yet: run with {UPDATE_ENV_VAR}=1"
    committed = SNAPSHOT.read_text()
    assert current == committed, (
        f"the catalog differs from {SNAPSHOT.name}; if the change is meant, run "
        f"`make catalog-snapshot` (or {UPDATE_ENV_VAR}=1 pytest {Path(__file__).name}) "
        "and commit the snapshot"
    )


def test_the_snapshot_covers_every_kind_of_definition():
    """What the snapshot holds, so it cannot silently shrink to nothing."""
    data = json.loads(SNAPSHOT.read_text())
    assert {"assets", "jobs", "sensors", "schedules"} == set(data)
    assert "streams/hot_items" in data["assets"]
    assert data["assets"]["nexmark/bids"]["checks"]["bids_valid"] == {"blocking": True}
    assert data["assets"]["streams/hot_items"]["deps"] == ["topics/nexmark.bids"]
    assert {"hot_items_job", "hot_items_continuous"} <= set(data["jobs"])
    assert {"hot_items_sensor", "audit_trail", "freshness_checks_sensor"} <= set(data["sensors"])
    assert "nexmark_daily_stats_job_schedule" in data["schedules"]
