"""``dataflare alerts``: list alerts, acknowledge them, silence a rule.

These commands work on the alert state alone (no rules file): an operator acknowledging
at 3 a.m. should not need the deploy's configuration at hand. The current time is read
here, at the edge; the alerting library itself only ever receives it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dataflare_platform.errors import ConfigError, DataflareError
from dataflare_platform.home import HOME_ENV_VAR, ProjectHome

if TYPE_CHECKING:
    from dataflare_platform.alerting.state import AlertStore

alerts_app = typer.Typer(
    help="Alerts: list them, acknowledge one (stops escalation), silence a rule.",
    no_args_is_help=True,
)
console = Console(stderr=True)

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help=f"Project home (default: ${HOME_ENV_VAR} or ./.dataflare)."),
]
StateOption = Annotated[
    str | None,
    typer.Option("--state-url", help="SQLAlchemy URL (default: sqlite:///<home>/alerts.db)."),
]
ByOption = Annotated[str, typer.Option("--by", help="Who is doing this (recorded).")]

_ERRORS = (DataflareError, LookupError, ValueError, OSError)


def _fail(err: BaseException) -> NoReturn:
    console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
    raise typer.Exit(code=2)


def _store(home: Path | None, state_url: str | None) -> AlertStore:
    from dataflare_platform.alerting.state import AlertStore, default_state_url

    url = state_url if state_url is not None else default_state_url(ProjectHome.resolve(home).root)
    return AlertStore(url)


@alerts_app.command("list")
def list_alerts(
    home: HomeOption = None,
    state_url: StateOption = None,
    status: Annotated[
        str | None, typer.Option(help="Only firing, acknowledged or resolved alerts.")
    ] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Include resolved alerts.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Open alerts (firing and acknowledged), oldest first."""
    if status is not None and status not in ("firing", "acknowledged", "resolved"):
        _fail(ConfigError("--status", [("--status", "one of firing, acknowledged, resolved")]))
    try:
        store = _store(home, state_url)
        alerts = store.alerts(status)
    except _ERRORS as err:
        _fail(err)
    if status is None and not show_all:
        alerts = [a for a in alerts if a.status != "resolved"]
    if as_json:
        print(json.dumps([a.model_dump(mode="json") for a in alerts]))
        return
    table = Table(title=f"{len(alerts)} alert(s)")
    columns = ("id", "fingerprint", "severity", "status", "tier", "count", "last seen", "error")
    for column in columns:
        table.add_column(column, overflow="fold")
    for a in alerts:
        table.add_row(
            str(a.id),
            a.fingerprint,
            a.severity,
            a.status,
            str(a.tier),
            str(a.occurrences),
            a.last_seen.isoformat(timespec="seconds"),
            a.last_error or "",
        )
    Console().print(table)


@alerts_app.command("ack")
def ack_alert(
    ref: Annotated[str, typer.Argument(help="Alert id or fingerprint (see `alerts list`).")],
    by: ByOption,
    note: Annotated[str, typer.Option(help="Why, or what is being done.")] = "",
    home: HomeOption = None,
    state_url: StateOption = None,
) -> None:
    """Acknowledge an alert: its escalation and repeat notifications stop."""
    try:
        alert = _store(home, state_url).acknowledge(ref, by, datetime.now(UTC), note)
    except _ERRORS as err:
        _fail(err)
    print(json.dumps({"id": alert.id, "fingerprint": alert.fingerprint, "status": alert.status}))


@alerts_app.command("silence")
def silence_rule(
    rule: Annotated[str, typer.Option("--rule", help="Rule name to silence.")],
    duration: Annotated[str, typer.Option("--for", help="How long, e.g. 30m, 2h, 1d.")],
    by: ByOption,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")],
    group: Annotated[
        str | None, typer.Option("--group", help="Only this group key (e.g. asset=a/b).")
    ] = None,
    home: HomeOption = None,
    state_url: StateOption = None,
) -> None:
    """Suppress a rule's notifications (recorded as suppressed) until the silence ends."""
    from dataflare_platform.alerting.rules import parse_duration

    try:
        length = parse_duration(duration)
    except ValueError as err:
        _fail(ConfigError("--for", [("--for", str(err))]))
    now = datetime.now(UTC)
    try:
        silence = _store(home, state_url).silence(rule, now + length, by, reason, now, group)
    except _ERRORS as err:
        _fail(err)
    print(
        json.dumps(
            {
                "silence": silence.id,
                "rule": silence.rule,
                "group": silence.group_key,
                "expires_at": silence.expires_at.isoformat(),
            }
        )
    )
