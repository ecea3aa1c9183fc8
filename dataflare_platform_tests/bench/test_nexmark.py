"""``dataflare bench nexmark --otel``: metrics and traces on against off in the same run,
as JSON."""

from __future__ import annotations

import json
import os

from click.testing import CliRunner

from dataflare_platform import observability
from dataflare_platform.cli import app
from dataflare_platform.datagen import NexmarkConfig, write_nexmark
from dataflare_platform.observability.tracing import tracer
from dataflare_platform_tests.measured import measured


def test_otel_flag_reports_both_sides_and_leaves_metrics_off(tmp_path, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("DATAFLARE_METRICS", raising=False)
    data = tmp_path / "nexmark"
    write_nexmark(NexmarkConfig(events=20_000, events_per_second=1_000.0), data)
    from typer.main import get_command

    result = CliRunner().invoke(
        get_command(app),
        ["bench", "nexmark", "--query", "q1", "--input", str(data / "bids"), "--otel"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    otel = report["otel"]
    assert otel["runs_per_side"] == 2
    assert measured(otel["events_per_s_off"]) and measured(otel["events_per_s_on"])
    assert measured(otel["ratio_cpu"]) and measured(otel["ratio_wall"])
    assert len(otel["load_average_before"]) == 3
    assert otel["telemetry_share_pct"] > 0  # the on runs exported something
    sides = otel["sides"]
    assert set(sides) == {"off", "metrics", "on", "traced"}
    assert otel["trace_sample_ratio"] == 0.01
    # Every traced run made its run span and one span per micro-batch; off made none.
    assert sides["traced"]["spans"] > 2 * 2 and sides["off"]["spans"] == 0
    assert sides["metrics"]["spans"] == 0
    # The bench switched metrics back off and left no directory or variable behind.
    assert observability.instruments() is None
    assert tracer() is None
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_cold_start_figures_are_reported(tmp_path):
    """The first committed output and the first 20 batches' p99 are reported for the
    process's first run and, apart, for the later (warm) ones; with the DuckDB sink the
    runs take checkpoints as they go."""
    data = tmp_path / "nexmark"
    write_nexmark(NexmarkConfig(events=20_000, events_per_second=1_000.0), data)
    from typer.main import get_command

    result = CliRunner().invoke(
        get_command(app),
        [
            "bench", "nexmark", "--query", "q5", "--input", str(data / "bids"),
            "--batch-rows", "100", "--checkpoint-every", "10", "--repeat", "2", "--duckdb",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    cold = report["cold_start"]
    assert report["checkpoint_every"] == 10 and report["sink"] == "duckdb"
    assert report["output_rows"] > 0
    assert measured(cold["first_commit_s"]) and measured(cold["warm_first_commit_s"])
    assert measured(cold["first_20_batches_p99_ms"])
    assert measured(cold["warm_first_20_batches_p99_ms"])
    assert cold["pandas_imported_by_runs"] is False
