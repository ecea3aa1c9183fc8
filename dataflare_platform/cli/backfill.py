"""``dataflare backfill``: launch a backfill of a partitioned job or of assets over a
partition range or list, and follow it (the web server's address as for ``launch``).

The daemon submits one run per partition: a backfill stays REQUESTED until
``dagster-daemon`` runs next to the web server (``make ui`` starts both)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from dataflare_platform.cli._common import (
    FAILED_EXIT,
    TagOption,
    UsageError,
    WebserverHost,
    WebserverPort,
    client,
    command_group,
    err_console,
    parse_tags,
    print_json,
)

if TYPE_CHECKING:
    from dataflare_platform.client import BackfillStatus

backfill_app = command_group(help="Backfills over partitions: launch, status, wait.")

BackfillIdArgument = Annotated[str, typer.Argument(help="Backfill id (printed by launch).")]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait before giving up.")
]
SUCCEEDED = frozenset({"COMPLETED", "COMPLETED_SUCCESS"})


def _as_dict(status: BackfillStatus) -> dict[str, Any]:
    return {
        "backfill_id": status.backfill_id,
        "status": status.status,
        "done": status.done,
        "partitions": status.partitions,
        "runs": {p: {"run_id": r, "status": s} for p, (r, s) in sorted(status.runs.items())},
        "error": status.error,
    }


def _report(status: BackfillStatus) -> None:
    print_json(_as_dict(status))
    if status.status not in SUCCEEDED:
        err_console().print(f"[bold red]backfill {status.backfill_id} ended {status.status}[/]")
        raise typer.Exit(code=FAILED_EXIT)


@backfill_app.command("launch")
def launch_backfill(
    job: Annotated[
        str | None, typer.Argument(help="Partitioned job (or give --asset keys instead).")
    ] = None,
    asset: Annotated[
        list[str] | None, typer.Option("--asset", help="Asset key a/b (repeatable).")
    ] = None,
    partition: Annotated[
        list[str] | None, typer.Option("--partition", help="Partition key (repeatable).")
    ] = None,
    first: Annotated[
        str | None, typer.Option("--from", help="First partition of a range (inclusive).")
    ] = None,
    last: Annotated[
        str | None, typer.Option("--to", help="Last partition of a range (inclusive).")
    ] = None,
    tag: TagOption = None,
    title: Annotated[str | None, typer.Option(help="Title shown in the UI.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for the backfill to end.")
    ] = False,
    timeout: TimeoutOption = 1800.0,
    host: WebserverHost = "127.0.0.1",
    port: WebserverPort = 3000,
) -> None:
    """Launch a backfill of JOB (or of --asset keys) over --partition keys or --from/--to.

    Prints JSON with the backfill id; with --wait, its final status (exit 1 unless it
    completed successfully)."""
    if (job is None) == (not asset):
        raise UsageError("give a JOB or --asset keys (not both)")
    ranged = first is not None or last is not None
    if ranged == bool(partition):
        raise UsageError("give --partition keys or a range --from/--to (not both)")
    if ranged and (first is None or last is None):
        raise UsageError("a range needs both --from and --to")
    dagster = client(host, port, timeout_s=120.0)
    backfill_id = dagster.backfill(
        job,
        partitions=partition or None,
        partition_range=(first, last) if ranged else None,  # type: ignore[arg-type]
        asset_selection=asset or None,
        tags=parse_tags(tag or []),
        title=title,
    )
    if not wait:
        print_json({"backfill_id": backfill_id})
        return
    _report(dagster.wait_backfill(backfill_id, timeout_s=timeout))


@backfill_app.command("status")
def backfill_status(
    backfill_id: BackfillIdArgument,
    host: WebserverHost = "127.0.0.1",
    port: WebserverPort = 3000,
) -> None:
    """Where the backfill stands, as JSON: its status, partitions and each one's run."""
    print_json(_as_dict(client(host, port, timeout_s=120.0).backfill_status(backfill_id)))


@backfill_app.command("wait")
def wait_backfill(
    backfill_id: BackfillIdArgument,
    timeout: TimeoutOption = 1800.0,
    host: WebserverHost = "127.0.0.1",
    port: WebserverPort = 3000,
) -> None:
    """Wait for the backfill to end; print its status. Exit 1 unless it completed
    successfully, 2 on a timeout."""
    _report(client(host, port, timeout_s=120.0).wait_backfill(backfill_id, timeout_s=timeout))
