"""``dataflare audit``: verify, read, sign and key the tamper-evident audit log.

Kept out of ``cli.py`` so the sub-app is wired in with one line. ``verify`` exits 0 when
the log and every checkpoint verify and 1 when anything was tampered with (naming the
first bad seq), so it can gate a cron job or CI step; bad usage exits 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dataflare_platform.errors import ConfigError, DataflareError
from dataflare_platform.home import HOME_ENV_VAR

if TYPE_CHECKING:
    from dataflare_platform.compliance.audit import AuditLog
    from dataflare_platform.compliance.audit_keys import AuditSettings

audit_app = typer.Typer(
    help="Tamper-evident audit log: verify the hash chain and signed checkpoints.",
    no_args_is_help=True,
)
console = Console(stderr=True)

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help=f"Project home (default: ${HOME_ENV_VAR} or ./.dataflare)."),
]
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="SQLAlchemy URL of the log: sqlite:///path or postgresql+psycopg://..."
        " (default: sqlite:///<home>/audit.db).",
    ),
]
KeysOption = Annotated[
    Path | None,
    typer.Option("--keys", help="Key directory (default: <home>/audit_keys)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _fail(err: BaseException) -> NoReturn:
    console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
    raise typer.Exit(code=2)


def _settings(url: str | None, keys: Path | None, home: Path | None) -> AuditSettings:
    from dataflare_platform.compliance.audit_keys import AuditSettings

    return AuditSettings.resolve(url=url, key_dir=keys, home=home)


def _open_existing(settings: AuditSettings, url_given: bool) -> AuditLog:
    """The log at ``settings.url``; a missing SQLite file is an error, not a new empty log
    (an empty log verifies, which would hide a wrong path)."""
    from sqlalchemy.engine import make_url

    from dataflare_platform.compliance.audit import AuditLog

    parsed = make_url(settings.url)
    if parsed.get_backend_name() == "sqlite" and not Path(str(parsed.database)).is_file():
        option = "--url" if url_given else "--home"
        raise ConfigError("audit log", [(option, f"no audit log at {parsed.database}")])
    return AuditLog(settings.url)


_ERRORS = (DataflareError, ValueError, OSError)


def _database_error(err: Exception) -> Exception:
    """The driver's own first line (e.g. "connection refused"), without SQLAlchemy's
    statement dump and links, which say nothing to an operator."""
    cause = getattr(err, "orig", None) or err
    lines = str(cause).strip().splitlines()
    return DataflareError(f"audit database: {lines[0] if lines else type(cause).__name__}")


@audit_app.command("verify")
def verify(
    url: UrlOption = None,
    keys: KeysOption = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute every hash and check every checkpoint; exit 1 if anything was tampered."""
    from sqlalchemy.exc import SQLAlchemyError

    from dataflare_platform.compliance.audit_keys import load_public_keys

    try:
        settings = _settings(url, keys, home)
        public_keys = load_public_keys(settings.key_dir) if settings.key_dir.is_dir() else {}
        with _open_existing(settings, url is not None) as log:
            report = log.verify(public_keys)
    except SQLAlchemyError as err:
        _fail(_database_error(err))
    except _ERRORS as err:
        _fail(err)
    if as_json:
        print(json.dumps({"ok": report.ok, **report.model_dump(mode="json")}))
    elif report.ok:
        print(report.summary())
    else:
        console.print(f"[bold red]{escape(report.summary())}[/]", highlight=False)
    if not report.ok:
        raise typer.Exit(code=1)


@audit_app.command("tail")
def tail(
    n: Annotated[int, typer.Option("-n", "--lines", min=1, help="Entries to show.")] = 10,
    url: UrlOption = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the newest entries, oldest first."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with _open_existing(_settings(url, None, home), url is not None) as log:
            entries = log.tail(n)
    except SQLAlchemyError as err:
        _fail(_database_error(err))
    except _ERRORS as err:
        _fail(err)
    if as_json:
        for entry in entries:
            print(json.dumps(entry.model_dump(mode="json")))
        return
    table = Table(title="audit log")
    for column in ("seq", "at", "actor", "action", "subject", "details", "hash"):
        table.add_column(column, overflow="fold")
    for e in entries:
        table.add_row(
            str(e.seq), e.at.isoformat(), e.actor, e.action, e.subject, e.details, e.hash[:16]
        )
    Console().print(table)


@audit_app.command("keygen")
def keygen(
    keys: Annotated[Path, typer.Option("--keys", help="Directory for the new key pair.")],
) -> None:
    """Create an Ed25519 key pair (<id>.key mode 0600, <id>.pub) for signing checkpoints."""
    from dataflare_platform.compliance.audit_keys import PRIVATE_SUFFIX, generate_key_pair

    try:
        kid = generate_key_pair(keys)
    except _ERRORS as err:
        _fail(err)
    print(json.dumps({"key_id": kid, "private_key": str(keys / f"{kid}{PRIVATE_SUFFIX}")}))


@audit_app.command("checkpoint")
def checkpoint(
    url: UrlOption = None,
    keys: KeysOption = None,
    home: HomeOption = None,
    key_id: Annotated[
        str | None, typer.Option("--key-id", help="Key to sign with (if several).")
    ] = None,
) -> None:
    """Sign the current chain head (after checking the entries since the last checkpoint)."""
    from sqlalchemy.exc import SQLAlchemyError

    from dataflare_platform.compliance.audit import AuditTamperedError
    from dataflare_platform.compliance.audit_keys import load_signing_key

    try:
        settings = _settings(url, keys, home)
        signing_key = load_signing_key(settings.key_dir, key_id)
        with _open_existing(settings, url is not None) as log:
            cp = log.checkpoint(signing_key)
    except AuditTamperedError as err:  # the same exit code as a failed verify
        console.print(f"[bold red]tampered:[/] {escape(str(err))}", highlight=False)
        raise typer.Exit(code=1) from None
    except SQLAlchemyError as err:
        _fail(_database_error(err))
    except _ERRORS as err:
        _fail(err)
    print(json.dumps(cp.model_dump(mode="json")))
