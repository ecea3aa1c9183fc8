"""``dataflare ui`` with metrics on starts the Dagster instance exporter beside the daemon;
its series go when the UI stops."""

from __future__ import annotations

import os

import pytest

from dataflare_platform.gateway.process import running_front
from dataflare_platform.observability.prometheus import exposition
from dataflare_platform_tests.observability.scrape import value
from dataflare_platform_tests.waits import wait_until

CEILING_S = 180


@pytest.mark.e2e
def test_the_ui_runs_the_instance_exporter_when_metrics_are_on(home, tmp_path):
    directory = tmp_path / "metrics"
    env = {**os.environ, "DATAFLARE_METRICS": "1", "PROMETHEUS_MULTIPROC_DIR": str(directory)}

    def heartbeats() -> bool:
        text = exposition(directory) if directory.exists() else b""
        return (
            value(text, "dataflare_dagster_runs", status="QUEUED") == 0
            and value(text, "dataflare_dagster_daemon_heartbeat_age_seconds", daemon="SENSOR")
            is not None
        )

    with running_front(home, tmp_path / "front.log", env=env):
        wait_until(
            "the instance metrics with the daemon's heartbeats", heartbeats, CEILING_S, poll_s=0.5
        )
    wait_until(
        "the exporter's gauges gone once the UI stopped",
        lambda: value(exposition(directory), "dataflare_dagster_runs", status="QUEUED") is None,
        CEILING_S,
        poll_s=0.5,
    )
