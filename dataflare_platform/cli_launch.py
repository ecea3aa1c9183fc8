"""``dataflare launch``: launch a job (or materialize assets) on a running Dagster web
server through its GraphQL API, wait for the run and print its id and final status.

Kept out of ``cli.py`` so the command can be wired in with one line:
``app.command("launch")(launch)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from dataflare_platform.errors import DataflareError

console = Console(stderr=True)

ASSETS_ONLY = ("assets", "__ASSET_JOB")


class _UsageError(DataflareError):
    pass


def _tags(values: list[str]) -> dict[str, str]:
    tags = {}
    for value in values:
        key, sep, tag_value = value.partition("=")
        if not sep or not key:
            raise _UsageError(f"--tag takes KEY=VALUE, got {value!r}")
        tags[key] = tag_value
    return tags


def _run_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as err:
        raise _UsageError(f"cannot read --config {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise _UsageError(f"--config {path} is not valid YAML: {err}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise _UsageError(f"--config {path} must hold a mapping (the run config), not a list")
    return loaded


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
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Run tag KEY=VALUE (repeatable).")
    ] = None,
    asset: Annotated[
        list[str] | None,
        typer.Option("--asset", help="Asset key a/b to materialize (repeatable)."),
    ] = None,
    partition: Annotated[
        str | None, typer.Option("--partition", help="Partition key of a partitioned job.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the run to end.")] = True,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the run before giving up.")
    ] = 600.0,
    host: Annotated[str, typer.Option("--host", help="Dagster web server host.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Dagster web server port.")] = 3000,
) -> None:
    """Launch JOB (or materialize --asset keys) on the Dagster web server at --host/--port.

    Prints JSON: the run id and its final status (with --no-wait, its status at launch).

    Exit code 1 if the run did not succeed; 2 on an error (bad job, config, server, timeout).
    """
    from dataflare_platform.client import DataflareClient, RunTimeoutError

    client = DataflareClient(host=host, port=port)
    run_id = None
    try:
        tags = _tags(tag or [])
        run_config = _run_config(config)
        if job in ASSETS_ONLY:
            if not asset:
                raise _UsageError(f"`launch {job}` needs at least one --asset KEY")
            run_id = client.materialize(
                asset, partition=partition, tags=tags, run_config=run_config
            )
        else:
            run_id = client.launch_job(
                job,
                run_config=run_config,
                tags=tags,
                asset_selection=asset or None,
                partition=partition,
            )
        status = client.wait(run_id, timeout_s=timeout) if wait else client.status(run_id)
    except RunTimeoutError as err:
        print(json.dumps({"run_id": run_id, "job": job, "status": err.status}))
        console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(code=2) from None
    except DataflareError as err:
        if run_id is not None:
            print(json.dumps({"run_id": run_id, "job": job, "status": None}))
        console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(code=2) from None
    print(json.dumps({"run_id": run_id, "job": job, "status": status}))
    if wait and status != "SUCCESS":
        console.print(f"[bold red]run {run_id} ended {status}[/]; see its logs in the UI")
        raise typer.Exit(code=1)
