"""The `dataflare` command as a user runs it: a subprocess, in a fresh directory."""

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dataflare_platform_tests.conftest import REPO_ROOT

pytestmark = pytest.mark.e2e


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 300):
    base = {k: v for k, v in os.environ.items() if k not in ("DATAFLARE_HOME", "DAGSTER_HOME")}
    return subprocess.run(
        [sys.executable, "-m", "dataflare_platform.cli", *args],
        cwd=cwd,
        env={**base, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["generate"],
        ["demo"],
        ["ui"],
        ["bench"],
        ["bench", "datagen"],
        ["bench", "nexmark"],
        ["nexmark"],
        ["nexmark", "run"],
        ["pipeline"],
        ["pipeline", "validate"],
        ["pipeline", "run"],
        ["bench", "cli"],
        ["bench", "pipeline"],
        ["runs"],
        ["runs", "list"],
        ["runs", "wait"],
        ["backfill"],
        ["backfill", "launch"],
        ["topics", "list"],
        ["plugin", "list"],
        ["users"],
        ["users", "add"],
        ["tokens"],
        ["tokens", "create"],
        ["bench", "gateway"],
    ],
)
def test_every_command_has_help(tmp_path, command):
    result = run_cli(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def _table_row(stdout: str, name: str) -> list[str]:
    """The cells of the summary row that starts with ``name`` (rich box characters split)."""
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.replace("│", "|").split("|") if c.strip()]
        if cells and cells[0] == name:
            return cells
    raise AssertionError(f"no row {name!r} in:\n{stdout}")


def test_demo_runs_green_in_a_fresh_directory_and_leaves_user_home_alone(tmp_path, monkeypatch):
    import dagster as dg
    import yaml

    from dataflare_platform.home import LOCATION_NAME

    user_home = tmp_path / "user-home"
    user_home.mkdir()
    workdir = tmp_path / "work"
    workdir.mkdir()
    # 30 k events over ~28 h of event time ending now: yesterday's partition has data.
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump({"events": 30_000, "events_per_second": 0.3}))
    env = {"HOME": str(user_home), "XDG_CONFIG_HOME": ""}  # the default: ~/.config
    started = datetime.now(UTC)
    result = run_cli("demo", "--config", str(config), cwd=workdir, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo OK" in result.stdout
    for name in (
        "nexmark/bids",
        "nexmark/daily_seller_stats",
        "daily_seller_stats_rules",
        "topics/nexmark.bids",
        "streams/hot_items",
        "streams/highest_bid_eur",
        "streams/masked_persons",
        "streams/sealed_persons",
        "streams/bidder_sessions",
        "topics/nexmark.persons",
        "hot_items_job",
    ):
        assert name in result.stdout
    assert "FAILED" not in result.stdout
    yesterday = (started - timedelta(days=1)).date().isoformat()
    assert yesterday in result.stdout  # the daily statistics of yesterday's partition
    home = workdir / ".dataflare"
    assert (home / "dagster_home" / "dagster.yaml").exists()
    assert (home / "warehouse.duckdb").exists()
    assert (home / "events" / "nexmark" / "bids").is_dir()
    # The one thing outside the project: the keys, kept out of the home on purpose, in
    # the per-user config dir: the audit keys the demo provisions (`dataflare audit
    # init`: signing and entry key), the key signing the plugin lock (the shipped samples
    # pin themselves), and the keyring of sealed_persons' encrypt step (key name persons,
    # version 1).
    written = sorted(p.relative_to(user_home) for p in user_home.rglob("*") if p.is_file())
    assert {p.parts[:2] for p in written} == {(".config", "dataflare")}, written
    assert sorted(str(Path(*p.parts[3:])) for p in written) == [
        "anchor.jsonl",
        "audit.json",
        "entry.key",
        "keyring/persons/state.json",
        "keyring/persons/v1.kek",
        "plugins-lock.key",
        "signing.key",
        "trusted.pem",
    ]
    # Event times end now: the newest bid is within the hour before the run started.
    newest = max(
        pc.max(pq.read_table(f, columns=["date_time"])["date_time"]).as_py()
        for f in (home / "events" / "nexmark" / "bids").glob("*.parquet")
    )
    newest = newest if newest.tzinfo else newest.replace(tzinfo=UTC)
    assert started - timedelta(hours=2) < newest <= started
    # A first run adds what it holds.
    hot = _table_row(result.stdout, "streams/hot_items")
    assert hot[1] == hot[2] and int(hot[1].replace(",", "")) > 0, hot

    # Idempotent: a second run reuses the data and is green again; its summary shows the
    # rows each table holds, and that it added none to the streams.
    again = run_cli("demo", "--config", str(config), cwd=workdir, env=env)
    assert again.returncode == 0, again.stderr
    assert "already in" in again.stderr
    hot_again = _table_row(again.stdout, "streams/hot_items")
    assert hot_again[1] == hot[1] and hot_again[2] == "0", hot_again
    topic = _table_row(again.stdout, "topics/nexmark.bids")
    assert int(topic[1].replace(",", "")) > 0 and topic[2] == "0", topic

    # Every run carries the code location's origin (Overview timeline, job pages).
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster_home"))  # dagster.yaml reads it
    instance = dg.DagsterInstance.from_config(str(home / "dagster_home"))
    runs = instance.get_runs()
    jobs = {run.job_name for run in runs}
    assert {"nexmark_ingest_job", "nexmark_daily_stats_job", "hot_items_job"} <= jobs, jobs
    assert len(runs) >= 2 * len(jobs) and len(runs) % 2 == 0  # the same runs twice
    for run in runs:
        origin = run.remote_job_origin
        assert origin is not None, run.job_name
        assert origin.location_name == LOCATION_NAME
        assert origin.repository_origin.repository_name == "__repository__"
        assert origin.job_name == run.job_name
        assert run.job_code_origin is not None
    # The per-repository label the UI filters runs by (stored with the run's tags).
    label = {".dagster/repository": f"__repository__@{LOCATION_NAME}"}
    labelled = instance.get_runs(filters=dg.RunsFilter(tags=label))
    assert {r.run_id for r in labelled} == {r.run_id for r in runs}


def test_generate_writes_files_and_refuses_bad_config(tmp_path):
    ok = run_cli(
        "generate",
        "--out",
        str(tmp_path / "out"),
        "--events",
        "5000",
        "--format",
        "ipc",
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert len(list((tmp_path / "out" / "bids").glob("*.arrow"))) == 1
    bad = run_cli("generate", "--out", str(tmp_path / "o2"), "--events", "-3", cwd=tmp_path)
    assert bad.returncode == 2
    assert "events" in bad.stderr and "greater than 0" in bad.stderr
    config = tmp_path / "gen.yaml"
    config.write_text("events: 100\nchunk_size: 10\n")
    unknown = run_cli("generate", "--config", str(config), cwd=tmp_path)
    assert unknown.returncode == 2
    assert "chunk_size" in unknown.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    unwritable = run_cli("demo", "--home", str(blocker / "home"), cwd=tmp_path)
    assert unwritable.returncode == 2
    assert "home" in unwritable.stderr and "not a directory" in unwritable.stderr


def test_dagster_validates_the_workspace(tmp_path):
    env = {
        "DATAFLARE_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path),
    }
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    dagster = Path(sys.executable).with_name("dagster")
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr


def test_nexmark_bench_prints_json_with_a_baseline_ratio(tmp_path):
    import json

    data = tmp_path / "data"
    gen = run_cli(
        "generate", "--out", str(data), "--events", "20000", "--format", "ipc", cwd=tmp_path
    )
    assert gen.returncode == 0, gen.stderr
    result = run_cli(
        "bench",
        "nexmark",
        "--query",
        "q5",
        "--input",
        str(data / "bids"),
        "--batch-rows",
        "2000",
        "--output",
        str(tmp_path / "q5.parquet"),
        "--repeat",
        "2",
        "--json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for key in (
        "query",
        "events",
        "seconds",
        "events_per_s",
        "p50_ms",
        "p99_ms",
        "peak_rss_mb",
        "late_events",
        "baseline_events_per_s",
        "ratio",
    ):
        assert key in report
    assert report["events"] == 18_400
    assert report["output_rows"] == report["baseline_rows"] > 0
    written = pq.read_table(tmp_path / "q5.parquet")
    assert written.num_rows == report["output_rows"]
    assert written.column_names == ["window_start", "window_end", "auction", "num"]
    bad = run_cli("bench", "nexmark", "--query", "q6", "--input", str(data / "bids"), cwd=tmp_path)
    assert bad.returncode == 2 and "q6" not in bad.stdout


def test_pipeline_bench_measures_both_modes_under_the_real_front(tmp_path):
    """The benchmark's own run (no timing asserted): one JSON line per mode, each sample
    seen through a sensor-launched run or the continuous run; the bench itself fails if
    the output file's checkpoint does not cover every event it produced."""
    import json

    result = run_cli(
        *("bench", "pipeline", "--samples", "2", "--events", "300", "--timeout", "600"),
        cwd=tmp_path,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    micro, continuous = (json.loads(line) for line in result.stdout.splitlines())
    assert micro["mode"] == "micro_batch" and continuous["mode"] == "continuous"
    assert micro["runs"] == 2  # one run per produced sample, none empty
    for report in (micro, continuous):
        latency = report["produce_to_visible_s"]
        assert 0 < latency["min"] <= latency["median"] <= latency["max"]
        assert report["baseline_s"]["median"] > 0 and report["code_location_load_s"] > 0
    overhead = micro["run_overhead_s"]
    assert overhead["step_s"]["median"] > 0
    assert overhead["run_total_s"]["median"] >= overhead["step_s"]["median"]
    assert continuous["end_status"] == "SUCCESS"  # a graceful stop: the step returns


def test_pipeline_validate_names_the_bad_field(tmp_path):
    spec = tmp_path / "p.yaml"
    spec.write_text(
        "name: x\nsources: {bids: {path: b}}\n"
        "streams: {s: {from: bids, steps: [{window: {tumbling: 10 seconds, agg: {n: count}}}]}}\n"
        "output: s\nsink: {discard: {}}\n"
    )
    result = run_cli("pipeline", "validate", str(spec), cwd=tmp_path)
    assert result.returncode == 2
    assert "not a duration" in result.stderr
