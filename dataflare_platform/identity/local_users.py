"""Local user accounts: argon2id password hashes and a TOTP second factor, required for
any account holding the admin role (an admin's password alone never logs in)."""

from __future__ import annotations

import secrets

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from dataflare_platform.access.principal import Principal
from dataflare_platform.errors import AuthenticationError, InvalidInputError, NotFoundError
from dataflare_platform.identity.store import (
    IdentityStore,
    check_name,
    check_roles,
    revoke_sessions,
)

MIN_PASSWORD_LENGTH = 12
TOTP_ISSUER = "DataFlare"
_HASHER = PasswordHasher()
# Verified against when the user does not exist, so a wrong name costs what a wrong
# password costs (no user enumeration by timing).
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))
_REFUSED = "unknown user, wrong password or wrong code"


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInputError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
    return password


def _local_id(name: str) -> str:
    """``Principal.id`` of the local user ``name`` (what its sessions are filed under)."""
    return f"user:{name}"


class LocalUsers:
    """Add, list, change and check local users of one identity store."""

    def __init__(self, store: IdentityStore) -> None:
        self.store = store

    def add(
        self, name: str, password: str, roles: frozenset[str], totp: bool = False
    ) -> str | None:
        """Create a user; returns the TOTP secret (to show once, for an authenticator app)
        when the account has a second factor, which every admin account has."""
        check_name(name, "user name")
        roles = check_roles(roles)
        check_password(password)
        secret = pyotp.random_base32() if (totp or "admin" in roles) else None
        with self.store.connect() as conn:
            if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise InvalidInputError(f"user {name} exists")
            conn.execute(
                "INSERT INTO users (name, password_hash, totp_secret, roles) VALUES (?,?,?,?)",
                (name, _HASHER.hash(password), secret, ",".join(sorted(roles))),
            )
        return secret

    def list(self) -> list[dict[str, object]]:
        with self.store.connect() as conn:
            rows = conn.execute(
                "SELECT name, roles, totp_secret IS NOT NULL, created_at FROM users ORDER BY name"
            ).fetchall()
        return [
            {"name": n, "roles": r.split(","), "totp": bool(t), "created_at": c}
            for n, r, t, c in rows
        ]

    def set_password(self, name: str, password: str) -> None:
        """Set a new password and sign the user out of every session (in the same
        transaction): whoever knew the old password must not stay signed in with it."""
        check_password(password)
        with self.store.connect() as conn:
            changed = conn.execute(
                "UPDATE users SET password_hash = ? WHERE name = ?",
                (_HASHER.hash(password), name),
            ).rowcount
            if changed:
                revoke_sessions(conn, _local_id(name))
        if not changed:
            raise NotFoundError(f"no user {name}")

    def remove(self, name: str) -> None:
        with self.store.connect() as conn:
            if not conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount:
                raise NotFoundError(f"no user {name}")
            revoke_sessions(conn, _local_id(name))

    def current(self, name: str) -> Principal | None:
        """The user's principal as the store has it now (``None`` once removed), so a
        signed-in session follows role changes and removals."""
        with self.store.connect() as conn:
            row = conn.execute("SELECT roles FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        return Principal(name=name, kind="user", via="local", roles=frozenset(row[0].split(",")))

    def set_roles(self, name: str, roles: frozenset[str]) -> None:
        """Replace a user's roles. Admin only for an account with a TOTP secret: every
        sign-in of such an account checked a code, so no session of it, open or new,
        holds admin on a password alone."""
        roles = check_roles(roles)
        with self.store.connect() as conn:
            row = conn.execute("SELECT totp_secret FROM users WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] is None and "admin" in roles:
                raise InvalidInputError(
                    f"user {name} has no second factor: an admin needs one (remove the user "
                    "and add it again as admin, or with --totp)"
                )
            changed = conn.execute(
                "UPDATE users SET roles = ? WHERE name = ?", (",".join(sorted(roles)), name)
            ).rowcount
        if not changed:
            raise NotFoundError(f"no user {name}")

    def provisioning_uri(self, name: str, secret: str) -> str:
        return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=TOTP_ISSUER)

    def authenticate(self, name: str, password: str, code: str | None) -> Principal:
        """The user's principal when the password (and the TOTP code, for accounts with a
        second factor) are right; ``AuthenticationError`` otherwise, saying not which."""
        with self.store.connect() as conn:
            row = conn.execute(
                "SELECT password_hash, totp_secret, roles FROM users WHERE name = ?", (name,)
            ).fetchone()
        stored, secret, roles = row if row else (_DUMMY_HASH, None, "")
        try:
            _HASHER.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            raise AuthenticationError(_REFUSED) from None
        if row is None:
            raise AuthenticationError(_REFUSED)
        if secret is not None and not pyotp.TOTP(secret).verify(
            (code or "").strip(), valid_window=1
        ):
            raise AuthenticationError(_REFUSED)
        if secret is None and "admin" in roles.split(","):
            raise AuthenticationError("an admin account needs a second factor (TOTP)")
        if _HASHER.check_needs_rehash(stored):
            with self.store.connect() as conn:
                conn.execute(
                    "UPDATE users SET password_hash = ? WHERE name = ?",
                    (_HASHER.hash(password), name),
                )
        return Principal(name=name, kind="user", via="local", roles=frozenset(roles.split(",")))
