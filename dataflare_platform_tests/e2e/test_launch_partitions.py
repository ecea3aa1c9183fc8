"""``dataflare launch`` and ``DataflareClient`` check the partition key against a real
web server before launching: missing, unknown, malformed and unexpected keys are refused
with one line (exit 2 from the CLI, a typed ``PartitionError`` from the client) and no run
is created; a valid key launches. One web server (no daemon) for the module: launched
runs stay QUEUED and are terminated."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from typer.testing import CliRunner

from dataflare_platform.cli import app
from dataflare_platform.client import (
    PARTITION_TAG,
    DataflareClient,
    MalformedPartitionError,
    MissingPartitionError,
    NotPartitionedError,
    UnknownPartitionError,
)

pytestmark = pytest.mark.e2e

DAILY_JOB = "nexmark_daily_stats_job"  # daily partitions from 2026-01-01, UTC
TODAY = datetime.now(UTC).date()


@pytest.fixture(scope="module")
def server(module_webserver):
    port, _home = module_webserver
    return port


@pytest.fixture(scope="module")
def client(server):
    return DataflareClient(port=server, timeout_s=60)


def _run_count() -> int:
    return len(dg.DagsterInstance.get().get_run_records())


def _cli(server: int, *args: str):
    return CliRunner().invoke(app, ["launch", *args, "--no-wait", "--port", str(server)])


def test_the_server_shows_the_one_location_name(client):
    assert {ref.location for ref in client.jobs()} == {"dataflare_platform"}


def test_client_refuses_bad_partitions_before_launching(client, module_webserver):
    before = _run_count()
    with pytest.raises(MissingPartitionError, match="needs a partition key") as missing:
        client.launch_job(DAILY_JOB)
    assert "2026-01-01" in str(missing.value)
    with pytest.raises(UnknownPartitionError) as unknown:
        client.launch_job(DAILY_JOB, partition="2025-12-30")
    assert unknown.value.nearest == ["2026-01-01", "2026-01-02", "2026-01-03"]
    future = (TODAY + timedelta(days=40)).isoformat()
    with pytest.raises(UnknownPartitionError) as late:
        client.launch_job(DAILY_JOB, partition=future)
    assert (TODAY - timedelta(days=1)).isoformat() in late.value.nearest
    with pytest.raises(MalformedPartitionError, match="expected format %Y-%m-%d"):
        client.launch_job(DAILY_JOB, partition="yesterday")
    with pytest.raises(NotPartitionedError, match="'nexmark_ingest_job' is not partitioned"):
        client.launch_job("nexmark_ingest_job", partition="2026-01-05")
    # Asset materializations are checked against the asset's own partitions.
    with pytest.raises(MalformedPartitionError):
        client.materialize(["nexmark/daily_seller_stats"], partition="2026-02-30")
    with pytest.raises(MissingPartitionError):
        client.materialize(["nexmark/daily_seller_stats"])
    with pytest.raises(NotPartitionedError):
        client.materialize(["nexmark/bids"], partition="2026-01-05")
    assert _run_count() == before  # nothing was launched


def test_valid_partition_launches_with_its_tag(client):
    run_id = client.launch_job(DAILY_JOB, partition="2026-01-02")
    try:
        run = dg.DagsterInstance.get().get_run_by_id(run_id)
        assert run.tags[PARTITION_TAG] == "2026-01-02"
        assert client.status(run_id) == "QUEUED"  # no daemon in this module
    finally:
        client.terminate(run_id)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((DAILY_JOB,), f"job '{DAILY_JOB}' is partitioned and needs a partition key"),
        ((DAILY_JOB, "--partition", "2026-1-5"), "'2026-1-5' is not a partition key of job"),
        ((DAILY_JOB, "--partition", "not-a-date"), "expected format %Y-%m-%d"),
        ((DAILY_JOB, "--partition", "2025-12-31"), "nearest: 2026-01-01, 2026-01-02"),
        (("nexmark_ingest_job", "--partition", "2026-01-05"), "is not partitioned"),
        (
            ("assets", "--asset", "nexmark/daily_seller_stats", "--partition", "2026-13-01"),
            "expected format %Y-%m-%d",
        ),
    ],
)
def test_cli_answers_bad_partitions_with_one_error_line(server, args, expected):
    before = _run_count()
    result = _cli(server, *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: partition: "), result.stderr
    assert expected in lines[0]
    assert "PythonError" not in result.output and "Traceback" not in result.output
    assert _run_count() == before


def test_cli_launches_a_valid_partition(server, client):
    day = (TODAY - timedelta(days=1)).isoformat()
    result = _cli(server, DAILY_JOB, "--partition", day)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["status"] == "QUEUED"
    assert dg.DagsterInstance.get().get_run_by_id(printed["run_id"]).tags[PARTITION_TAG] == day
    client.terminate(printed["run_id"])
