"""``dataflare bench restart``: a pipeline's first start and its restart from that
start's checkpoint, each in a fresh process, reported side by side as JSON."""

from __future__ import annotations

import json

from click.testing import CliRunner
from typer.main import get_command

from dataflare_platform.cli import app
from dataflare_platform_tests.measured import measured

FIELDS = {
    "first_commit_s",
    "first_commit_s_from_spawn",
    "first_20_batches_p99_ms",
    "events_in",
    "resumed_events_in",
    "events_out",
    "seconds",
    "pandas_imported",
}


def test_restart_reports_both_starts_and_resumes_from_the_checkpoint():
    result = CliRunner().invoke(
        get_command(app),
        ["bench", "restart", "--events", "40000", "--batch-rows", "500"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["benchmark"] == "restart" and report["checkpoint_every"] == 2
    first, restart = report["first_start"], report["restart"]
    assert set(first) == set(restart) == FIELDS
    # The first start begins from nothing and stops at a checkpoint part-way; the
    # restart carries on from exactly there (its counters restored) to the end.
    assert first["resumed_events_in"] == 0 and first["events_in"] > 0
    assert restart["resumed_events_in"] == first["events_in"]
    assert restart["events_in"] > first["events_in"]
    assert first["events_out"] + restart["events_out"] > 0
    for start in (first, restart):
        assert measured(start["first_commit_s"]) and measured(start["first_20_batches_p99_ms"])
        assert start["first_commit_s_from_spawn"] >= start["first_commit_s"]
        assert start["pandas_imported"] is False
