"""Fixtures shared by the connector tests (the contract suite's among them)."""

from __future__ import annotations

import pytest

from dataflare_platform.datagen import NexmarkConfig, write_nexmark


@pytest.fixture(scope="session")
def crash_input(tmp_path_factory):
    """Nexmark files for the SIGKILL tests: 120k events over about 2.8 days of event
    time (several daily partitions, each touched by several commits), made once."""
    data = tmp_path_factory.mktemp("crash") / "nexmark"
    write_nexmark(NexmarkConfig(events=120_000, events_per_second=0.5, format="ipc"), data)
    return data
