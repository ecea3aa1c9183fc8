"""``dataflare launch``: launch a job (or materialize assets) on a running Dagster web
server through its GraphQL API, wait for the run and print its id and final status.

The server's address comes from --host/--port, else from $DATAFLARE_WEBSERVER_HOST /
$DATAFLARE_WEBSERVER_PORT (the same for ``runs`` and ``backfill``), else 127.0.0.1:3000.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dataflare_platform.cli._common import (
    FAILED_EXIT,
    TagOption,
    UsageError,
    WebserverHost,
    WebserverPort,
    client,
    err_console,
    parse_tags,
    print_json,
)

ASSETS_ONLY = ("assets", "__ASSET_JOB")


def _run_config(path: Path | None) -> dict[str, Any]:
    """The run config file, read as every YAML file of the platform is (duplicate keys,
    alias bombs and deep nesting refused, naming the file)."""
    if path is None:
        return {}
    from dataflare_platform.yaml_files import load_yaml_mapping

    return load_yaml_mapping(path, "--config")


def launch(
    job: Annotated[
        str,
        typer.Argument(
            help="Job to launch; `assets` materializes the --asset keys with the implicit "
            "asset job."
        ),
    ],
    config: Annotated[
        Path | None, typer.Option("--config", help="Run config as a YAML file.")
    ] = None,
    tag: TagOption = None,
    asset: Annotated[
        list[str] | None,
        typer.Option("--asset", help="Asset key a/b to materialize (repeatable)."),
    ] = None,
    partition: Annotated[
        str | None,
        typer.Option(
            "--partition",
            help="Partition key of a partitioned job (required there, refused elsewhere; "
            "checked against the server's partitions before launching).",
        ),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the run to end.")] = True,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the run before giving up.")
    ] = 600.0,
    host: WebserverHost = "127.0.0.1",
    port: WebserverPort = 3000,
) -> None:
    """Launch JOB (or materialize --asset keys) on the Dagster web server at --host/--port.

    Prints JSON: the run id and its final status (with --no-wait, its status at launch).

    Exit code 1 if the run did not succeed; 2 on an error (bad job, config, partition key,
    server, timeout). A missing, unknown (the nearest valid keys are listed) or malformed
    partition key is refused before anything is launched.
    """
    from dataflare_platform.client import RunTimeoutError
    from dataflare_platform.errors import DataflareError

    dagster = client(host, port)
    run_id = None
    try:
        tags = parse_tags(tag or [])
        run_config = _run_config(config)
        if job in ASSETS_ONLY:
            if not asset:
                raise UsageError(f"`launch {job}` needs at least one --asset KEY")
            run_id = dagster.materialize(
                asset, partition=partition, tags=tags, run_config=run_config
            )
        else:
            run_id = dagster.launch_job(
                job,
                run_config=run_config,
                tags=tags,
                asset_selection=asset or None,
                partition=partition,
            )
        status = dagster.wait(run_id, timeout_s=timeout) if wait else dagster.status(run_id)
    except DataflareError as err:
        # The run id is printed even so: the run exists and can be followed or stopped.
        if run_id is not None:
            last = err.status if isinstance(err, RunTimeoutError) else None
            print_json({"run_id": run_id, "job": job, "status": last})
        raise
    print_json({"run_id": run_id, "job": job, "status": status})
    if wait and status != "SUCCESS":
        report_failed_run(run_id, status)


def report_failed_run(run_id: str, status: str) -> None:
    """A run that ended but not in SUCCESS: not an error of the command (exit 1)."""
    err_console().print(f"[bold red]run {run_id} ended {status}[/]; see its logs in the UI")
    raise typer.Exit(code=FAILED_EXIT)
