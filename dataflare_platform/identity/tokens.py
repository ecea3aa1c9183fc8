"""Service accounts with revocable API tokens, for the Python client, ``dataflare
launch`` and automation.

A token reads ``dft_<id>_<secret>``: the id finds the row, the secret (32 random bytes) is
compared by its SHA-256 hash, the only thing stored, so the token is shown once and a
stolen database yields no usable token. A random 256-bit secret needs no slow hash; a
fast one keeps every request's check cheap."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from dataflare_platform.access.principal import Principal
from dataflare_platform.errors import AuthenticationError, NotFoundError
from dataflare_platform.identity.store import IdentityStore, check_name, check_roles

TOKEN_PREFIX = "dft_"
_REFUSED = "unknown or revoked token"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ServiceTokens:
    """Create, list, revoke and check service-account tokens of one identity store."""

    def __init__(self, store: IdentityStore) -> None:
        self.store = store

    def create(self, account: str, roles: frozenset[str]) -> tuple[str, str]:
        """A new token for ``account``: returns ``(token_id, token)``; the token is not
        kept anywhere and cannot be shown again."""
        check_name(account, "service account")
        roles = check_roles(roles)
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        with self.store.connect() as conn:
            conn.execute(
                "INSERT INTO tokens (token_id, account, secret_hash, roles) VALUES (?,?,?,?)",
                (token_id, account, _digest(secret), ",".join(sorted(roles))),
            )
        return token_id, f"{TOKEN_PREFIX}{token_id}_{secret}"

    def list(self) -> list[dict[str, object]]:
        with self.store.connect() as conn:
            rows = conn.execute(
                "SELECT token_id, account, roles, created_at, revoked_at FROM tokens "
                "ORDER BY created_at, token_id"
            ).fetchall()
        return [
            {"id": i, "account": a, "roles": r.split(","), "created_at": c, "revoked_at": v}
            for i, a, r, c, v in rows
        ]

    def revoke(self, token_id: str) -> None:
        with self.store.connect() as conn:
            changed = conn.execute(
                "UPDATE tokens SET revoked_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') "
                "WHERE token_id = ? AND revoked_at IS NULL",
                (token_id,),
            ).rowcount
        if not changed:
            raise NotFoundError(f"no active token {token_id}")

    def current_roles(self, account: str) -> frozenset[str]:
        """The roles ``account`` holds now: those of its unrevoked tokens (empty once
        every token is revoked), for work it requested earlier (a backfill's runs)."""
        with self.store.connect() as conn:
            rows = conn.execute(
                "SELECT roles FROM tokens WHERE account = ? AND revoked_at IS NULL", (account,)
            ).fetchall()
        return frozenset(r for (roles,) in rows for r in roles.split(",") if r)

    def authenticate(self, token: str) -> Principal:
        """The service principal of a valid, unrevoked token."""
        body = token.strip().removeprefix(TOKEN_PREFIX) if token.startswith(TOKEN_PREFIX) else ""
        token_id, _, secret = body.partition("_")
        if not token_id or not secret:
            raise AuthenticationError(_REFUSED)
        with self.store.connect() as conn:
            row = conn.execute(
                "SELECT account, secret_hash, roles FROM tokens "
                "WHERE token_id = ? AND revoked_at IS NULL",
                (token_id,),
            ).fetchone()
        if row is None or not hmac.compare_digest(row[1], _digest(secret)):
            raise AuthenticationError(_REFUSED)
        return Principal(
            name=row[0], kind="service", via="token", roles=frozenset(row[2].split(","))
        )
