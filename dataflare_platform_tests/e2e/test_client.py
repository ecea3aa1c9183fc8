"""The Python client and ``dataflare launch`` against a real web server and daemon.

The instance in the temporary DAGSTER_HOME uses Dagster's default (queued) run
coordinator, as ``deployments/local/dagster.yaml`` does: a launched run stays QUEUED until
``dagster-daemon`` dequeues it, so these tests start the daemon next to the web server,
as ``dagster dev`` (``make ui``) does.
"""

import json

import dagster as dg
import pytest
import typer
import yaml
from typer.testing import CliRunner

from dataflare_platform.access.principal import PRINCIPAL_TAG
from dataflare_platform.cli import app as dataflare_app
from dataflare_platform.cli._common import WEBSERVER_PORT_ENV_VAR
from dataflare_platform.client import (
    ASSET_JOB,
    CLIENT_TAG,
    DataflareClient,
    RunConfigError,
    RunNotFoundError,
    ServerUnreachableError,
    UnknownAssetError,
    UnknownJobError,
)
from dataflare_platform.gateway.process import free_port
from dataflare_platform.identity.bootstrap import SERVICE_ACCOUNT
from dataflare_platform.warehouse.connection import connect
from dataflare_platform.warehouse.stats import event_days

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_S = 600  # a ceiling, not a target: runs took up to 2 min each under load 7


def _cli() -> typer.Typer:
    return dataflare_app  # the real `dataflare` app, with its error boundary


def test_launched_job_succeeds_with_logs_and_metadata(webserver, daemon, landed_home):
    client = DataflareClient(port=webserver)
    run_id = client.launch_job("nexmark_ingest_job", tags={"launched_by": "test_client"})
    assert client.status(run_id) in {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "SUCCESS"}
    assert client.wait(run_id, timeout_s=RUN_TIMEOUT_S) == "SUCCESS"
    tags = dg.DagsterInstance.get().get_run_by_id(run_id).tags
    assert tags["launched_by"] == "test_client"
    # No caller claim of identity: the run coordinator wrote who launched, the service
    # account of the home's token the client sent to the front.
    assert CLIENT_TAG not in tags
    assert tags[PRINCIPAL_TAG] == f"service:{SERVICE_ACCOUNT}"

    logs = client.logs(run_id)
    types = [event["event_type"] for event in logs]
    assert {"RUN_ENQUEUED", "RUN_START"} <= set(types)
    assert "RUN_SUCCESS" in types and "RUN_FAILURE" not in types
    assert "ASSET_MATERIALIZATION" in types
    assert len(client.logs(run_id, limit=3)) == 3

    bids = client.asset_metadata("nexmark/bids")
    assert isinstance(bids["dagster/row_count"], int) and bids["dagster/row_count"] > 0
    assert client.asset_metadata(["nexmark", "daily_seller_stats"]) == {}

    # One partition of the daily statistics through the implicit asset job.
    with connect(landed_home.warehouse_path) as conn:
        day = event_days(conn)[0].isoformat()
    stats_run = client.materialize(["nexmark/daily_seller_stats"], partition=day)
    assert client.wait(stats_run, timeout_s=RUN_TIMEOUT_S) == "SUCCESS"
    assert client.asset_metadata("nexmark/daily_seller_stats", partition=day) != {}

    # The CLI: launches, waits, prints the run id and final status as JSON; the web
    # server's port comes from the environment here.
    result = CliRunner().invoke(
        _cli(),
        ["launch", "nexmark_ingest_job", "--tag", "via=cli"],
        env={WEBSERVER_PORT_ENV_VAR: str(webserver)},
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["status"] == "SUCCESS"
    assert client.status(printed["run_id"]) == "SUCCESS"

    # `dataflare runs`: the runs are listed (newest first), shown and waited for.
    def cli_json(*args: str):
        got = CliRunner().invoke(_cli(), [*args, "--port", str(webserver)])
        assert got.exit_code == 0, got.output
        return json.loads(got.stdout)

    listed = cli_json("runs", "list", "--json", "--job", "nexmark_ingest_job")
    assert [r["run_id"] for r in listed] == [printed["run_id"], run_id]
    assert {r["status"] for r in listed} == {"SUCCESS"}
    assert listed[0]["tags"]["via"] == "cli" and listed[0]["ended"] >= listed[0]["created"]
    # Automation may have materialized other partitions through the asset job too.
    asset_runs = {r["run_id"]: r for r in cli_json("runs", "list", "--json", "--job", ASSET_JOB)}
    assert asset_runs[stats_run]["partition"] == day
    shown = cli_json("runs", "show", run_id, "--logs", "3")
    assert (shown["run_id"], shown["job"], shown["status"]) == (
        run_id,
        "nexmark_ingest_job",
        "SUCCESS",
    )
    assert shown["tags"]["launched_by"] == "test_client"
    assert [e["event_type"] for e in shown["logs"]] == types[:3]
    assert cli_json("runs", "wait", run_id) == {"run_id": run_id, "status": "SUCCESS"}
    table = CliRunner().invoke(_cli(), ["runs", "list", "--port", str(webserver)])
    assert table.exit_code == 0 and run_id[:8] in table.stdout  # rich folds the long id


def test_bad_launches_fail_with_readable_errors(webserver, tmp_path):
    client = DataflareClient(port=webserver)

    with pytest.raises(RunConfigError) as bad_config:
        client.launch_job(
            "nexmark_ingest_job", run_config={"ops": {"not_an_op": {"config": {"x": 1}}}}
        )
    message = str(bad_config.value)
    assert "nexmark_ingest_job" in message and "not_an_op" in message
    (problem,) = bad_config.value.problems
    assert problem.path == "root:ops:not_an_op"
    assert "Expected fields:" in problem.message and "nexmark__bids" in problem.message

    with pytest.raises(RunConfigError) as bad_value:
        client.launch_job(
            "nexmark_ingest_job",
            run_config={"resources": {"plugins": {"config": {"memory_mb": [1]}}}},
        )
    (problem,) = bad_value.value.problems
    assert problem.path == "root:resources:plugins:config:memory_mb", problem

    with pytest.raises(UnknownJobError) as unknown:
        client.launch_job("no_such_job")
    assert "no_such_job" in str(unknown.value)
    assert {"nexmark_ingest_job", "nexmark_daily_stats_job"} <= set(unknown.value.available)
    assert "nexmark_daily_stats_job" in str(unknown.value)

    with pytest.raises(UnknownAssetError, match="nexmark/nope"):
        client.materialize(["nexmark/nope"])
    with pytest.raises(RunNotFoundError):
        client.status("00000000-0000-0000-0000-000000000000")

    # The same failures through the CLI: exit 2 and the readable error, no traceback.
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"ops": {"not_an_op": {"config": {"x": 1}}}}))
    runner = CliRunner()
    port = ["--port", str(webserver)]
    result = runner.invoke(_cli(), ["launch", "nexmark_ingest_job", "--config", str(config), *port])
    assert result.exit_code == 2
    assert "invalid run config" in result.output
    assert "root:ops:not_an_op: Received unexpected config entry" in result.output
    result = runner.invoke(_cli(), ["launch", "no_such_job", *port])
    assert result.exit_code == 2
    assert "unknown job 'no_such_job'" in result.output and "nexmark_ingest_job" in result.output
    result = runner.invoke(_cli(), ["launch", "nexmark_ingest_job", "--tag", "novalue", *port])
    assert result.exit_code == 2 and "KEY=VALUE" in result.output
    missing = "00000000-0000-0000-0000-000000000000"
    for command in (["runs", "show", missing], ["runs", "wait", missing]):
        result = runner.invoke(_cli(), [*command, *port])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(f"error: no run with id '{missing}'")
    result = runner.invoke(_cli(), ["runs", "list", "--status", "NOPE", *port])
    assert result.exit_code == 2 and "unknown run status(es) NOPE" in result.output


def test_queued_run_times_out_with_a_hint_then_is_terminated(webserver):
    """No daemon here: the launched run stays QUEUED."""
    client = DataflareClient(port=webserver)
    result = CliRunner().invoke(
        _cli(), ["launch", "nexmark_ingest_job", "--no-wait", "--port", str(webserver)]
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    run_id = printed["run_id"]
    assert printed["status"] == "QUEUED"
    with pytest.raises(TimeoutError) as timeout:
        client.wait(run_id, timeout_s=1)
    assert run_id in str(timeout.value) and "dagster-daemon" in str(timeout.value)
    port = ["--port", str(webserver)]
    waited = CliRunner().invoke(_cli(), ["runs", "wait", run_id, "--timeout", "1", *port])
    assert waited.exit_code == 2
    assert waited.stderr.startswith(f"error: run {run_id} still QUEUED")
    # Terminated through the CLI: `runs wait` then reports CANCELED, exit 1.
    stopped = CliRunner().invoke(_cli(), ["runs", "terminate", run_id, *port])
    assert stopped.exit_code == 0, stopped.output
    assert json.loads(stopped.stdout)["run_id"] == run_id
    assert client.wait(run_id, timeout_s=120) == "CANCELED"
    ended = CliRunner().invoke(_cli(), ["runs", "wait", run_id, *port])
    assert ended.exit_code == 1
    assert json.loads(ended.stdout) == {"run_id": run_id, "status": "CANCELED"}


def test_unreachable_server_fails_fast_with_a_hint():
    port = free_port()  # nothing listens there
    client = DataflareClient(port=port, timeout_s=5)
    for call in (
        lambda: client.launch_job("nexmark_ingest_job"),
        lambda: client.status("some-run"),
        lambda: client.terminate("some-run"),
    ):
        with pytest.raises(ServerUnreachableError) as err:
            call()
        assert f"127.0.0.1:{port}" in str(err.value) and "make ui" in str(err.value)
        # Refused at once, not waited out: the error says which (no timing asserted).
        assert "refused the connection" in str(err.value)

    result = CliRunner().invoke(_cli(), ["launch", "nexmark_ingest_job", "--port", str(port)])
    assert result.exit_code == 2
    assert f"127.0.0.1:{port}" in result.output and "make ui" in result.output
