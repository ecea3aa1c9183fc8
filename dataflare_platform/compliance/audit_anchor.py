"""Where checkpoints are written besides the log itself, so that emptying or truncating
the log *with* its checkpoints is still caught by ``dataflare audit verify``.

- ``postgresql://...``: an append-only table ``dataflare_audit_anchor`` in a database the
  log's writers cannot rewrite. :func:`setup_postgres_anchor` (run by the anchor's owner
  role) creates it, gives the writer role INSERT and SELECT only (UPDATE, DELETE and
  TRUNCATE revoked) and adds a trigger refusing UPDATE, DELETE and TRUNCATE even to a role
  that was granted them by mistake.
  TLS: libpq's own parameters in the url (``?sslmode=verify-full&sslrootcert=/ca.pem``,
  plus ``sslcert``/``sslkey`` for mutual TLS), checked when the anchor opens with the
  connectors' rules (``dataflare_platform.tls``: files exist and are readable, the key is 0600,
  ``sslmode=require`` -- encryption without verification -- is logged as a warning). A
  host that is not loopback needs ``sslmode=verify-full`` or ``verify-ca``: checkpoints
  are what an auditor trusts, so they do not cross a network unprotected.
- ``file:///path``: JSON lines appended to a file outside the home (the embedded
  default). Append-only by convention only: whoever can write that file can rewrite it,
  which is a weaker guarantee than the PostgreSQL anchor; it still catches an attacker
  who has only the project home.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from dataflare_platform.compliance.audit import AuditCheckpoint
from dataflare_platform.errors import ConfigError, DataflareError
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform.tls import check_libpq_url

ANCHOR_TABLE = "dataflare_audit_anchor"
_COLUMNS = ("seq", "entries", "head_hash", "signed_at", "key_id", "algorithm", "signature")


class AnchorError(DataflareError):
    """The anchor could not be written or read."""


class Anchor(Protocol):
    def record(self, cp: AuditCheckpoint) -> None: ...

    def checkpoints(self) -> list[AuditCheckpoint]: ...


def _row(cp: AuditCheckpoint) -> dict[str, object]:
    return cp.model_dump(mode="json", include=set(_COLUMNS))


class FileAnchor:
    """JSON lines, opened O_APPEND, mode 0600."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def create(self) -> None:
        """Create the empty anchor file (mode 0600) if it does not exist."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
        except OSError as err:
            raise AnchorError(f"audit anchor {self.path}: {err.strerror}") from None

    def record(self, cp: AuditCheckpoint) -> None:
        line = json.dumps(_row(cp), sort_keys=True) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as out:
                out.write(line)
                out.flush()
                os.fsync(out.fileno())
        except OSError as err:
            raise AnchorError(f"audit anchor {self.path}: {err.strerror}") from None

    def checkpoints(self) -> list[AuditCheckpoint]:
        """Every anchored checkpoint; a missing file is an error, not an empty anchor
        (`audit init` creates it: deleting it with the log must not pass verify)."""
        if not self.path.exists():
            raise AnchorError(f"audit anchor {self.path} is missing (deleted?)")
        out = []
        try:
            lines = self.path.read_text().splitlines()
        except OSError as err:
            raise AnchorError(f"audit anchor {self.path}: {err.strerror}") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                out.append(AuditCheckpoint.model_validate(json.loads(line)))
            except ValueError as err:
                raise AnchorError(f"audit anchor {self.path} line {number}: {err}") from None
        return out


class PostgresAnchor:
    """Rows of ``dataflare_audit_anchor`` (see :func:`setup_postgres_anchor`)."""

    def __init__(self, url: str) -> None:
        self.dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
        check_libpq_url(self.dsn, "audit anchor", "anchor_url")

    def _connect(self):
        import psycopg

        try:
            return psycopg.connect(self.dsn, connect_timeout=10, autocommit=True)
        except psycopg.Error as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise AnchorError(f"audit anchor database: {first}") from None

    def record(self, cp: AuditCheckpoint) -> None:
        import psycopg

        row = _row(cp)
        columns = ", ".join(_COLUMNS)
        marks = ", ".join(f"%({c})s" for c in _COLUMNS)
        with self._connect() as conn:
            try:
                conn.execute(f"INSERT INTO {ANCHOR_TABLE} ({columns}) VALUES ({marks})", row)
            except psycopg.Error as err:
                raise AnchorError(f"audit anchor: {str(err).strip().splitlines()[0]}") from None

    def checkpoints(self) -> list[AuditCheckpoint]:
        import psycopg
        from psycopg.rows import dict_row

        with self._connect() as conn:
            try:
                rows = conn.cursor(row_factory=dict_row).execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM {ANCHOR_TABLE} ORDER BY id"
                )
                return [AuditCheckpoint.model_validate(r) for r in rows.fetchall()]
            except psycopg.Error as err:
                raise AnchorError(f"audit anchor: {str(err).strip().splitlines()[0]}") from None


def open_anchor(url: str) -> Anchor:
    """The anchor at ``url`` (``postgresql://`` or ``file:///``)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path:
            raise ConfigError("audit anchor", [("anchor_url", "use file:///absolute/path")])
        return FileAnchor(Path(unquote(parsed.path)))
    if parsed.scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        return PostgresAnchor(url)
    raise ConfigError(
        "audit anchor", [("anchor_url", f"scheme {parsed.scheme!r}: use postgresql or file")]
    )


def setup_postgres_anchor(owner_dsn: str, writer_role: str) -> None:
    """Create the anchor table as the connecting (owner) role, grant ``writer_role``
    INSERT and SELECT only, and refuse UPDATE/DELETE/TRUNCATE by trigger."""
    import psycopg

    writer = quote_identifier(writer_role)
    with psycopg.connect(owner_dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {ANCHOR_TABLE} (
                id BIGSERIAL PRIMARY KEY,
                seq BIGINT NOT NULL, entries BIGINT, head_hash TEXT NOT NULL,
                signed_at TIMESTAMPTZ NOT NULL, key_id TEXT NOT NULL, algorithm TEXT,
                signature TEXT NOT NULL, anchored_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
        )
        conn.execute(
            """CREATE OR REPLACE FUNCTION dataflare_audit_anchor_append_only()
               RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION 'dataflare_audit_anchor is append-only'; END $$"""
        )
        conn.execute(f"DROP TRIGGER IF EXISTS append_only ON {ANCHOR_TABLE}")
        conn.execute(
            f"CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON {ANCHOR_TABLE}"
            " FOR EACH ROW EXECUTE FUNCTION dataflare_audit_anchor_append_only()"
        )
        conn.execute(f"DROP TRIGGER IF EXISTS append_only_truncate ON {ANCHOR_TABLE}")
        conn.execute(
            f"CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON {ANCHOR_TABLE}"
            " FOR EACH STATEMENT EXECUTE FUNCTION dataflare_audit_anchor_append_only()"
        )
        conn.execute(f"REVOKE ALL ON {ANCHOR_TABLE} FROM PUBLIC")
        conn.execute(f"REVOKE ALL ON {ANCHOR_TABLE} FROM {writer}")
        conn.execute(f"GRANT INSERT, SELECT ON {ANCHOR_TABLE} TO {writer}")
        conn.execute(f"GRANT USAGE ON SEQUENCE {ANCHOR_TABLE}_id_seq TO {writer}")
