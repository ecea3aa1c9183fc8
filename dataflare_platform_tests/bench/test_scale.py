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


def test_bench_scale_pin_cores_runs_each_worker_on_a_core_of_its_own():
    """``--pin-cores``: the pinned mode beside the free one, in one invocation, on a tiny
    input. Correctness only: every run of both modes gives the same output and reads each
    event once; a pinned worker's threads may use one core, a core of its own, with one
    Polars thread; each mode has its ratio."""
    result = CliRunner().invoke(
        get_command(app),
        ["bench", "scale", "--events", "50000", "--query", "q1", "--no-recovery", "--pin-cores"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["recovery"] is None
    assert report["pinning"]["env"]["POLARS_MAX_THREADS"] == "1"
    cores = report["pinning"]["cores"]
    assert len(cores) == 2 and all(len(c) == 1 for c in cores) and cores[0] != cores[1]
    (q1,) = report["queries"]
    assert q1["output_identical"] is True and q1["every_event_read_once"] is True
    assert q1["output_rows"] == report["bids"] > 0
    pinned = q1["pinned"]
    assert pinned["speedup"] == report["speedup_pinned"]["q1"] > 0
    assert report["speedup"]["q1"] == q1["speedup"] > 0
    for workers, want in (("1", [cores[0]]), ("2", cores)):
        (run,) = pinned["runs"][workers]
        assert run["pinned"] is True
        assert run["worker_cpus"] == want and run["worker_cpus_seen"] == want
        assert run["polars_threads"] == [1] * len(want)
        assert run["output"] == q1["runs"]["1"][0]["output"]  # same as the free runs
        assert set(run["engine"]) == {"0", "1", "2", "3"}
        assert sum(e["batches"] for e in run["engine"].values()) > 0
    for workers in ("1", "2"):
        (run,) = q1["runs"][workers]
        assert run["pinned"] is False
        assert all(len(cpus) >= 2 for cpus in run["worker_cpus"])  # not pinned
