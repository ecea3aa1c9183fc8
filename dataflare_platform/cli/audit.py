"""``dataflare audit``: verify, read, sign and key the tamper-evident audit log.

``verify`` exits 0 when
the log and every checkpoint verify and 1 when anything was tampered with (naming the
first bad seq), so it can gate a cron job or CI step; bad usage exits 2.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dataflare_platform.cli._common import (
    FAILED_EXIT,
    HomeOption,
    JsonOption,
    command_group,
    err_console,
    print_json,
    table,
)
from dataflare_platform.errors import ConfigError, DataflareError

if TYPE_CHECKING:
    from dataflare_platform.compliance.audit import AuditLog
    from dataflare_platform.compliance.audit_keys import AuditSettings

audit_app = command_group(
    help="Tamper-evident audit log: verify the hash chain and signed checkpoints."
)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="SQLAlchemy URL of the log: sqlite:///path or postgresql+psycopg://..."
        " (default: sqlite:///<home>/audit.db).",
    ),
]
TrustedOption = Annotated[
    Path | None,
    typer.Option(
        "--trusted",
        help="File of pinned PEM public keys (default: $DATAFLARE_AUDIT_TRUSTED_KEYS, else"
        " what `audit init` provisioned).",
    ),
]
AnchorOption = Annotated[
    str | None,
    typer.Option(
        "--anchor",
        help="Anchor URL, postgresql://... or file:///... (default:"
        " $DATAFLARE_AUDIT_ANCHOR_URL, else what `audit init` provisioned).",
    ),
]


EntryKeyOption = Annotated[
    Path | None,
    typer.Option(
        "--entry-key",
        help="File of the entry key the log's entries are tagged with (default:"
        " $DATAFLARE_AUDIT_ENTRY_KEY, else what `audit init` provisioned).",
    ),
]


def _settings(
    url: str | None,
    home: Path | None,
    signing_key: Path | None = None,
    trusted: Path | None = None,
    anchor: str | None = None,
    entry_key: Path | None = None,
) -> AuditSettings:
    from dataflare_platform.compliance.audit_keys import AuditSettings

    return AuditSettings.resolve(
        url=url,
        home=home,
        signing_key=signing_key,
        trusted_keys=trusted,
        anchor_url=anchor,
        entry_key=entry_key,
    )


def _open_existing(settings: AuditSettings, url_given: bool, keyed: bool = True) -> AuditLog:
    """The log at ``settings.url``, with the entry key unless only read (``keyed``
    False); a missing SQLite file is an error, not a new empty log (an empty log
    verifies, which would hide a wrong path)."""
    from sqlalchemy.engine import make_url

    from dataflare_platform.compliance.audit import AuditLog

    parsed = make_url(settings.url)
    if parsed.get_backend_name() == "sqlite" and not Path(str(parsed.database)).is_file():
        option = "--url" if url_given else "--home"
        raise ConfigError("audit log", [(option, f"no audit log at {parsed.database}")])
    return AuditLog.open(settings) if keyed else AuditLog(settings.url)


@contextmanager
def _database_errors() -> Iterator[None]:
    """A database error as the driver's own first line (e.g. "connection refused"),
    without SQLAlchemy's statement dump and links, which say nothing to an operator."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except SQLAlchemyError as err:
        cause = getattr(err, "orig", None) or err
        lines = str(cause).strip().splitlines()
        first = lines[0] if lines else type(cause).__name__
        raise DataflareError(f"audit database: {first}") from None


@audit_app.command("verify")
def verify(
    url: UrlOption = None,
    trusted: TrustedOption = None,
    anchor: AnchorOption = None,
    home: HomeOption = None,
    entry_key: EntryKeyOption = None,
    allow_unanchored_tail: Annotated[
        bool,
        typer.Option(
            "--allow-unanchored-tail",
            help="Accept any number of entries after the last checkpoint (still reported).",
        ),
    ] = False,
    max_unanchored_minutes: Annotated[
        int,
        typer.Option(
            "--max-unanchored-minutes",
            min=1,
            help="Oldest entry after the last checkpoint may be this old (default: the"
            " hourly checkpoint interval + 15).",
        ),
    ] = 75,
    as_json: JsonOption = False,
) -> None:
    """Recompute every hash, check every entry's authenticator with the entry key and every
    checkpoint (of the log and of the anchor) with the pinned keys; exit 1 if anything was
    forged, tampered, truncated, emptied or left unsigned."""
    from datetime import timedelta

    from rich.markup import escape

    from dataflare_platform.compliance.audit_anchor import AnchorError, open_anchor

    settings = _settings(url, home, trusted=trusted, anchor=anchor, entry_key=entry_key)
    with _database_errors(), _open_existing(settings, url is not None) as log:
        public_keys = settings.trusted()
        try:
            anchored = open_anchor(settings.anchor_url).checkpoints() if settings.anchor_url else []
        except AnchorError as err:  # a deleted or unreadable anchor fails verification
            err_console().print(f"[bold red]anchor:[/] {escape(str(err))}", highlight=False)
            raise typer.Exit(code=FAILED_EXIT) from None
        report = log.verify(
            public_keys,
            anchored=anchored,
            allow_unanchored_tail=allow_unanchored_tail,
            max_unanchored_age=timedelta(minutes=max_unanchored_minutes),
        )
    if as_json:
        print_json({"ok": report.ok, **report.model_dump(mode="json")})
    elif report.ok:
        print(report.summary())
    else:
        err_console().print(f"[bold red]{escape(report.summary())}[/]", highlight=False)
    if not report.ok:
        raise typer.Exit(code=FAILED_EXIT)


@audit_app.command("init")
def init(
    home: HomeOption = None,
    anchor: AnchorOption = None,
) -> None:
    """Provision the embedded default: a signing key, its pinned public key and an anchor
    for this home, in a per-user directory outside it ($XDG_CONFIG_HOME/dataflare/<hash>,
    0700). Idempotent; a provisioned key that has gone missing is an error."""
    from dataflare_platform.compliance.audit_anchor import FileAnchor, open_anchor
    from dataflare_platform.compliance.audit_keys import provision
    from dataflare_platform.home import ProjectHome

    config = provision(ProjectHome.resolve(home).ensure().root, anchor_url=anchor)
    target = open_anchor(config["anchor_url"])
    if isinstance(target, FileAnchor):
        target.create()  # from now on, a missing file means a deleted anchor
    print_json(config)


@audit_app.command("tail")
def tail(
    n: Annotated[int, typer.Option("-n", "--lines", min=1, help="Entries to show.")] = 10,
    url: UrlOption = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the newest entries, oldest first (--json: one JSON object per line)."""
    settings = _settings(url, home)
    with _database_errors(), _open_existing(settings, url is not None, keyed=False) as log:
        entries = log.tail(n)
    if as_json:
        for entry in entries:
            print_json(entry.model_dump(mode="json"))
        return
    table(
        "audit log",
        ("seq", "at", "actor", "action", "subject", "details", "hash"),
        [
            (e.seq, e.at.isoformat(), e.actor, e.action, e.subject, e.details, e.hash[:16])
            for e in entries
        ],
    )


@audit_app.command("keygen")
def keygen(
    keys: Annotated[Path, typer.Option("--keys", help="Directory for the new key pair.")],
) -> None:
    """Create an Ed25519 key pair (<id>.key mode 0600, <id>.pub) for signing checkpoints."""
    from dataflare_platform.compliance.audit_keys import PRIVATE_SUFFIX, generate_key_pair

    kid = generate_key_pair(keys)
    print_json({"key_id": kid, "private_key": str(keys / f"{kid}{PRIVATE_SUFFIX}")})


@audit_app.command("anchor-setup")
def anchor_setup(
    owner_url: Annotated[
        str,
        typer.Option("--owner-url", help="postgresql:// URL connecting as the anchor's owner."),
    ],
    writer: Annotated[
        str, typer.Option("--writer", help="Role the platform writes checkpoints as.")
    ],
) -> None:
    """Create the append-only anchor table (owner: the connecting role; the writer may
    only INSERT and SELECT; triggers refuse UPDATE, DELETE and TRUNCATE)."""
    import psycopg

    from dataflare_platform.compliance.audit_anchor import ANCHOR_TABLE, setup_postgres_anchor
    from dataflare_platform.sql_names import quote_identifier

    quote_identifier(writer)  # refuses a name that is not a plain SQL identifier
    try:
        setup_postgres_anchor(owner_url.replace("+psycopg", ""), writer)
    except psycopg.Error as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataflareError(f"audit anchor database: {first}") from None
    print_json({"table": ANCHOR_TABLE, "writer": writer})


@audit_app.command("public-key")
def public_key(home: HomeOption = None) -> None:
    """Print the configured signing key's public key (PEM), to pin it in the deployment's
    trusted keys file ($DATAFLARE_AUDIT_TRUSTED_KEYS)."""
    from dataflare_platform.compliance.audit_keys import public_pem

    signer = _settings(None, home).signer()
    print(public_pem(signer.public_key).decode(), end="")


@audit_app.command("checkpoint")
def checkpoint(
    url: UrlOption = None,
    home: HomeOption = None,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            help="PEM private key file (default: $DATAFLARE_AUDIT_SIGNING_KEY or the"
            " PKCS#11 token configured by $DATAFLARE_AUDIT_PKCS11_*, else `audit init`'s).",
        ),
    ] = None,
    anchor: AnchorOption = None,
) -> None:
    """Sign the current chain head and count (after checking the entries since the last
    checkpoint) and write the checkpoint to the anchor too."""
    from rich.markup import escape

    from dataflare_platform.compliance.audit import AuditTamperedError
    from dataflare_platform.compliance.audit_anchor import open_anchor

    settings = _settings(url, home, signing_key=key, anchor=anchor)
    signer = settings.signer()
    target = open_anchor(settings.anchor_url) if settings.anchor_url else None
    try:
        with _database_errors(), _open_existing(settings, url is not None) as log:
            cp = log.checkpoint(signer, anchor=target)
    except AuditTamperedError as err:  # the same exit code as a failed verify
        err_console().print(f"[bold red]tampered:[/] {escape(str(err))}", highlight=False)
        raise typer.Exit(code=FAILED_EXIT) from None
    print_json(cp.model_dump(mode="json"))


@audit_app.command("upgrade")
def upgrade(
    url: UrlOption = None,
    home: HomeOption = None,
    trusted: TrustedOption = None,
    anchor: AnchorOption = None,
) -> None:
    """Adopt a log written before entries carried authenticators: verify it, sign a
    checkpoint over it with the configured key and append an authenticated marker below
    which entries may lack a tag. Run once, after `audit init` (or setting
    $DATAFLARE_AUDIT_ENTRY_KEY); exit 1 if the log does not verify (nothing written)."""
    from rich.markup import escape

    from dataflare_platform.compliance.audit import AuditTamperedError
    from dataflare_platform.compliance.audit_anchor import open_anchor

    settings = _settings(url, home, trusted=trusted, anchor=anchor)
    signer = settings.signer()
    target = open_anchor(settings.anchor_url) if settings.anchor_url else None
    try:
        with _database_errors(), _open_existing(settings, url is not None) as log:
            legacy_through = log.upgrade(signer, settings.trusted(), anchor=target)
    except AuditTamperedError as err:
        err_console().print(f"[bold red]tampered:[/] {escape(str(err))}", highlight=False)
        raise typer.Exit(code=FAILED_EXIT) from None
    print_json({"legacy_through": legacy_through, "upgraded": legacy_through > 0})
