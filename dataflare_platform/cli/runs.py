"""``dataflare runs``: list, show, wait for and terminate runs on a Dagster web server,
through the GraphQL client (the web server's address as for ``launch``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from dataflare_platform.cli._common import (
    JsonOption,
    WebserverHost,
    WebserverPort,
    client,
    command_group,
    print_json,
    table,
)
from dataflare_platform.cli.launch import report_failed_run

runs_app = command_group(help="Runs on the Dagster web server: list, show, wait, terminate.")

RunIdArgument = Annotated[str, typer.Argument(help="Run id (see `runs list`).")]


def _when(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


@runs_app.command("list")
def list_runs(
    job: Annotated[str | None, typer.Option("--job", help="Only runs of this job.")] = None,
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help="Only runs in this status, e.g. FAILURE (repeatable)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Newest runs to show.")] = 20,
    as_json: JsonOption = False,
    host: WebserverHost = "127.0.0.1",
    port: WebserverPort = 3000,
) -> None:
    """The newest runs, newest first."""
    runs = client(host, port).runs(limit=limit, job=job, statuses=status)
    if as_json:
        print_json([r.as_dict() for r in runs])
        return
    table(
        f"{len(runs)} run(s)",
        ("run id", "job", "status", "partition", "created", "ended"),
        [(r.run_id, r.job, r.status, r.partition, _when(r.created), _when(r.ended)) for r in runs],
    )


@runs_app.command("show")
def show_run(
    run_id: RunIdArgument,
    logs: Annotated[int, typer.Option("--logs", min=0, help="Also its first N log events.")] = 0,
    host: WebserverHost = "127.0.0.1",
    port: WebserverPort = 3000,
) -> None:
    """One run as JSON: job, status, partition, times, tags (and log events with --logs)."""
    dagster = client(host, port)
    shown = dagster.run(run_id).as_dict()
    if logs:
        shown["logs"] = dagster.logs(run_id, limit=logs)
    print_json(shown)


@runs_app.command("wait")
def wait_run(
    run_id: RunIdArgument,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait before giving up.")
    ] = 600.0,
    host: WebserverHost = "127.0.0.1",
    port: WebserverPort = 3000,
) -> None:
    """Wait for the run to end; print its status. Exit 1 unless SUCCESS, 2 on a timeout."""
    status = client(host, port).wait(run_id, timeout_s=timeout)
    print_json({"run_id": run_id, "status": status})
    if status != "SUCCESS":
        report_failed_run(run_id, status)


@runs_app.command("terminate")
def terminate_run(
    run_id: RunIdArgument,
    host: WebserverHost = "127.0.0.1",
    port: WebserverPort = 3000,
) -> None:
    """Ask the run to stop (the UI's Terminate button); print its status after asking."""
    dagster = client(host, port)
    dagster.terminate(run_id)
    print_json({"run_id": run_id, "status": dagster.status(run_id)})
