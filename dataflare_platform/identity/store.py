"""Where identities live: one SQLite file under ``<home>/security/`` that only the owner
can read (directory 0700, file 0600), holding password hashes, TOTP secrets, token
hashes and the front's browser sessions (by hash of the session id). Never a secret in
clear: passwords are argon2 hashes, tokens and session ids SHA-256 hashes of random
secrets (TOTP secrets must stay readable to check codes, hence the file mode)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dataflare_platform.access.principal import (
    NAME_PATTERN,
    PLUGIN_ROLES,
    ROLES,
    is_assignable_role,
)
from dataflare_platform.errors import InvalidInputError

SECURITY_DIRNAME = "security"
DB_FILENAME = "identity.db"
# The service token `dataflare ui` creates on a fresh home, for the client and tests.
TOKEN_FILENAME = "service-token"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    totp_secret TEXT,
    roles TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE TABLE IF NOT EXISTS tokens (
    token_id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    roles TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    revoked_at TEXT
);
-- Browser sessions of the front (gateway/sessions.py): keyed by the SHA-256 of the
-- session id, never the id; expires_at in wall-clock seconds.
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,
    principal_id TEXT NOT NULL,
    principal TEXT NOT NULL,
    csrf TEXT NOT NULL,
    expires_at REAL NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE INDEX IF NOT EXISTS sessions_by_principal ON sessions (principal_id);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_at);
-- Password sign-in attempts per user name (gateway/sessions.py LoginFailures), shared by
-- every front process: by SHA-256 of the name typed, at in wall-clock seconds.
CREATE TABLE IF NOT EXISTS login_failures (
    name_hash TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_by_name ON login_failures (name_hash, at);
CREATE INDEX IF NOT EXISTS login_failures_by_time ON login_failures (at);
-- Redirect sign-ins in flight (OIDC state, nonce, PKCE verifier), taken once.
CREATE TABLE IF NOT EXISTS pending_logins (
    id_hash TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    kept TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""


def security_dir(home_root: Path) -> Path:
    """``<home>/security``, created 0700 (and re-tightened if it was widened)."""
    directory = Path(home_root) / SECURITY_DIRNAME
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    return directory


def write_secret_file(path: Path, text: str) -> None:
    """Write ``text`` to a file only the owner can read; created 0600 from the start (no
    window where it is world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    Path(path).chmod(0o600)


def check_name(name: str, what: str = "name") -> str:
    if not NAME_PATTERN.match(name or ""):
        raise InvalidInputError(
            f"{what} {name[:40]!r}: 1-128 letters, digits and _.@+- starting with a letter or digit"
        )
    return name


def check_roles(roles: frozenset[str] | set[str] | list[str]) -> frozenset[str]:
    unknown = sorted(r for r in roles if not is_assignable_role(r))
    if unknown or not roles:
        known = [*ROLES, *(r for r in PLUGIN_ROLES if r != "publisher"), "publisher@<namespace>"]
        raise InvalidInputError(
            f"roles must be some of {', '.join(known)} (got {', '.join(sorted(roles)) or 'none'})"
        )
    return frozenset(roles)


def revoke_sessions(conn: sqlite3.Connection, principal_id: str) -> int:
    """Delete every browser session of ``principal_id`` (``Principal.id``) inside the
    caller's transaction: a changed password or a removed account signs out everywhere."""
    return conn.execute("DELETE FROM sessions WHERE principal_id = ?", (principal_id,)).rowcount


class IdentityStore:
    """The identity database of one home."""

    def __init__(self, home_root: Path) -> None:
        self.path = security_dir(home_root) / DB_FILENAME
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.path.chmod(0o600)
        with self.connect() as conn:
            conn.executescript(_SCHEMA)

    @property
    def token_file(self) -> Path:
        return self.path.parent / TOKEN_FILENAME

    @contextmanager
    def connect(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        """A transaction on the database (committed on exit); ``immediate`` takes the
        write lock up front, so a read-then-write is atomic across processes."""
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            if immediate:
                conn.execute("BEGIN IMMEDIATE")
            with conn:
                yield conn
        finally:
            conn.close()
