"""``dataflare alerts``: list alerts, acknowledge them, silence a rule.

These commands work on the alert state alone (no rules file): an operator acknowledging
at 3 a.m. should not need the deploy's configuration at hand. The current time is read
here, at the edge; the alerting library itself only ever receives it.

An acknowledgement stops escalation and a silence hides notifications, so both are
audited (``alert_acknowledged``, ``alert_silenced``; actor ``system:cli``, with the
``--by`` name as claimed and the operating-system user who ran the command). The audit
log is opened before anything changes: without the home's audit keys nothing is done.
"""

from __future__ import annotations

import contextlib
import getpass
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dataflare_platform.cli._common import (
    HomeOption,
    JsonOption,
    LoopbackPortOption,
    command_group,
    print_json,
    table,
)
from dataflare_platform.errors import ConfigError

if TYPE_CHECKING:
    from dataflare_platform.alerting.state import AlertStore

alerts_app = command_group(
    help="Alerts: list them, acknowledge one (stops escalation), silence a rule."
)

StateOption = Annotated[
    str | None,
    typer.Option("--state-url", help="SQLAlchemy URL (default: sqlite:///<home>/alerts.db)."),
]
ByOption = Annotated[str, typer.Option("--by", help="Who is doing this (recorded).")]


CLI_ACTOR = "system:cli"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return f"uid:{os.getuid()}"


@contextlib.contextmanager
def _audited(home: Path | None):
    """The deployment's audit log (``$DATAFLARE_AUDIT_URL`` or the home's), opened (keys
    checked) before the change is made."""
    from dataflare_platform.compliance.override_refusals import deployment_audit_log
    from dataflare_platform.home import ProjectHome

    with deployment_audit_log(ProjectHome.resolve(home).root) as log:
        yield log


def _store(home: Path | None, state_url: str | None) -> AlertStore:
    from dataflare_platform.alerting.state import AlertStore, default_state_url
    from dataflare_platform.home import ProjectHome

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
    as_json: JsonOption = False,
) -> None:
    """Open alerts (firing and acknowledged), oldest first."""
    if status is not None and status not in ("firing", "acknowledged", "resolved"):
        raise ConfigError("--status", [("--status", "one of firing, acknowledged, resolved")])
    alerts = _store(home, state_url).alerts(status)
    if status is None and not show_all:
        alerts = [a for a in alerts if a.status != "resolved"]
    if as_json:
        print_json([a.model_dump(mode="json") for a in alerts])
        return
    table(
        f"{len(alerts)} alert(s)",
        ("id", "fingerprint", "severity", "status", "tier", "count", "last seen", "error"),
        [
            (
                a.id,
                a.fingerprint,
                a.severity,
                a.status,
                a.tier,
                a.occurrences,
                a.last_seen.isoformat(timespec="seconds"),
                a.last_error,
            )
            for a in alerts
        ],
    )


@alerts_app.command("ack")
def ack_alert(
    ref: Annotated[str, typer.Argument(help="Alert id or fingerprint (see `alerts list`).")],
    by: ByOption,
    note: Annotated[str, typer.Option(help="Why, or what is being done.")] = "",
    home: HomeOption = None,
    state_url: StateOption = None,
) -> None:
    """Acknowledge an alert: its escalation and repeat notifications stop (audited)."""
    with _audited(home) as audit:
        alert = _store(home, state_url).acknowledge(ref, by, datetime.now(UTC), note)
        audit.append(
            CLI_ACTOR,
            "alert_acknowledged",
            f"alert:{alert.fingerprint}",
            {"id": alert.id, "by": by, "os_user": _os_user(), "note": note},
        )
    print_json({"id": alert.id, "fingerprint": alert.fingerprint, "status": alert.status})


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
        raise ConfigError("--for", [("--for", str(err))]) from None
    now = datetime.now(UTC)
    with _audited(home) as audit:
        silence = _store(home, state_url).silence(rule, now + length, by, reason, now, group)
        audit.append(
            CLI_ACTOR,
            "alert_silenced",
            f"rule:{silence.rule}",
            {
                "silence": silence.id,
                "group": silence.group_key,
                "expires_at": silence.expires_at.isoformat(),
                "by": by,
                "os_user": _os_user(),
                "reason": reason,
            },
        )
    print_json(
        {
            "silence": silence.id,
            "rule": silence.rule,
            "group": silence.group_key,
            "expires_at": silence.expires_at.isoformat(),
        }
    )


@alerts_app.command("receive")
def receive(
    port: LoopbackPortOption = 9465,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="Bearer token file, 0600 (default: $DATAFLARE_ALERT_RECEIVER_TOKEN_FILE, "
            "else <home>/observe/alert-receiver.token); Alertmanager reads the same file.",
        ),
    ] = None,
    max_bytes: Annotated[
        int, typer.Option("--max-bytes", help="Largest request body accepted.")
    ] = 256 * 1024,
    home: HomeOption = None,
) -> None:
    """Receive Alertmanager's webhook on 127.0.0.1 and feed its alerts into the
    platform's alerting (rules of kind prometheus_alert) and audit log.

    Prints one JSON line with the URL, then serves until interrupted."""
    import os

    from dataflare_platform.compliance.alert_receiver import (
        TOKEN_FILE_ENV,
        default_token_file,
        receiver_for_home,
    )
    from dataflare_platform.home import ProjectHome
    from dataflare_platform.secrets import SecretRef

    root = ProjectHome.resolve(home).root
    chosen = token_file or Path(os.environ.get(TOKEN_FILE_ENV) or default_token_file(root))
    server = receiver_for_home(
        root, SecretRef(file=chosen.absolute()), port=port, max_bytes=max_bytes
    )
    print_json({"url": server.url, "token_file": str(chosen.absolute())})
    server.serve_until_interrupted()
