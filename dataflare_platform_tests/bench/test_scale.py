"""``dataflare bench scale`` at a small size: the JSON has every side and the
correctness fields hold (same output with 1 and 2 worker processes, every event read
once, the table after a SIGKILLed worker equal to an uninterrupted run's). No timing is
asserted beyond being measured."""

from __future__ import annotations

import json

from click.testing import CliRunner
from typer.main import get_command

from dataflare_platform.cli import app


def test_bench_scale_reports_both_queries_both_sides_and_a_recovery(dsn):
    result = CliRunner().invoke(
        get_command(app),
        [
            "bench",
            "scale",
            "--events",
            "100000",
            "--recovery-events",
            "200000",
            "--postgres-url",
            dsn,
            "--timeout",
            "300",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["benchmark"] == "scale" and report["partitions"] == 4
    assert sum(report["partition_rows"].values()) == report["bids"] > 0
    assert [q["query"] for q in report["queries"]] == ["q1", "q5"]
    for q in report["queries"]:
        assert q["output_identical"] is True
        assert q["every_event_read_once"] is True
        assert q["events_per_s_1_worker"] > 0 and q["events_per_s_2_workers"] > 0
        assert q["speedup"] == report["speedup"][q["query"]] > 0
        one, two = q["runs"]["1"][0], q["runs"]["2"][0]
        assert len(one["worker_cpu_s"]) == 1 and len(two["worker_cpu_s"]) == 2
        # Each partition's output (count and digest) is the same however many workers.
        assert one["output"] == two["output"] and set(one["output"]) == {"0", "1", "2", "3"}
    q1, q5 = report["queries"]
    assert q1["output_rows"] == report["bids"]  # q1 maps every bid
    assert q5["output_rows"] > 0
    assert "top" in report["q5_shipped_refused"]
    recovery = report["recovery"]
    assert recovery["exactly_once"] is True
    assert recovery["rows"] == recovery["reference_rows"] > 0
    assert recovery["killed_partitions"] == [0, 2]
    # The replacement resumed where the killed worker had committed and reached the end.
    for p, offset in recovery["killed_after_commits_at"].items():
        assert 0 < offset < recovery["partition_ends"][p]
        assert recovery["replacement_first_commits"][p] > offset
    assert recovery["recovery_s"] > 0
    assert len(report["load_average_before"]) == 3
