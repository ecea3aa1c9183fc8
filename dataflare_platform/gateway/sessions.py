"""Browser sessions of the front: a random id in an HttpOnly, SameSite=Strict cookie
(Secure under TLS) pointing at server-side state, with a per-session CSRF token that every
cookie-authenticated state-changing request must echo in a header or form field.

Sessions are kept in the home's identity database (``<home>/security/identity.db``,
directory 0700, file 0600), not in the front's memory, so that

- a restart of the front does not sign everyone out, and several front processes on one
  home (workers, a rolling restart) all know every session;
- a sign-out, and the revocations ``LocalUsers`` makes when a password is changed or an
  account removed, take effect in every process from the next request.

The database holds only the SHA-256 of each session id (the id itself is 256 random bits,
so a plain hash cannot be reversed or guessed): whoever reads the file learns who is
signed in, not a cookie that would sign them in. Besides the hash: the CSRF token (useless
without the cookie), the principal, and an absolute expiry in wall-clock seconds (no
sliding renewal: a stolen cookie is good for at most ``ttl_s``; wall clock, not monotonic,
because it must mean the same in every process and after a restart). Expired rows are
refused on read and pruned on each new sign-in. SQLite's own locking makes each statement
atomic across processes; the take of a pending login is one ``DELETE ... RETURNING``, so
a flow is completed at most once whichever process receives the callback.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from dataflare_platform.access.principal import Principal
from dataflare_platform.identity.store import IdentityStore, revoke_sessions

SESSION_COOKIE = "dataflare_session"
CSRF_HEADER = "x-dataflare-csrf"
CSRF_FIELD = "csrf"
DEFAULT_TTL_S = 12 * 3600.0
Clock = Callable[[], float]


def hash_session_id(session_id: str) -> str:
    """What the database keys a session by: never the id itself."""
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


@dataclass
class Session:
    principal: Principal
    csrf: str
    expires_at: float  # wall-clock seconds since the epoch

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf, presented or "")


class SessionStore:
    """The sessions of one home, shared by every front process serving it."""

    def __init__(
        self, store: IdentityStore, ttl_s: float = DEFAULT_TTL_S, clock: Clock = time.time
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._clock = clock

    def create(self, principal: Principal) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(principal, secrets.token_urlsafe(32), now + self.ttl_s)
        with self.store.connect() as conn:
            conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            conn.execute(
                "INSERT INTO sessions (id_hash, principal_id, principal, csrf, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    hash_session_id(session_id),
                    principal.id,
                    principal.model_dump_json(),
                    session.csrf,
                    session.expires_at,
                ),
            )
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of ``session_id``; ``None`` for an unknown, revoked or expired
        one (an expired row is deleted on the way)."""
        if not session_id:
            return None
        key = hash_session_id(session_id)
        with self.store.connect() as conn:
            row = conn.execute(
                "SELECT principal, csrf, expires_at FROM sessions WHERE id_hash = ?", (key,)
            ).fetchone()
            if row is None:
                return None
            if row[2] <= self._clock():
                conn.execute("DELETE FROM sessions WHERE id_hash = ?", (key,))
                return None
        return Session(Principal.model_validate_json(row[0]), row[1], row[2])

    def drop(self, session_id: str | None) -> None:
        """Revoke one session (sign-out), in every process from its next request."""
        if not session_id:
            return
        with self.store.connect() as conn:
            conn.execute("DELETE FROM sessions WHERE id_hash = ?", (hash_session_id(session_id),))

    def drop_principal(self, principal_id: str) -> int:
        """Revoke every session of one principal (``kind:name``, as ``Principal.id``)."""
        with self.store.connect() as conn:
            return revoke_sessions(conn, principal_id)

    def prune(self) -> int:
        """Delete expired sessions and pending logins; returns the sessions deleted."""
        now = self._clock()
        with self.store.connect() as conn:
            conn.execute("DELETE FROM pending_logins WHERE expires_at <= ?", (now,))
            return conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,)).rowcount


class PendingLogins:
    """State of redirect logins in flight (OIDC state, nonce, PKCE verifier), keyed by a
    random id in a short-lived cookie; each is taken once. Kept in the same database as
    the sessions (hashed flow id, 0600 file) so the provider's callback may reach another
    front process, or the same one after a restart, than the one that started the flow."""

    TTL_S = 600.0

    def __init__(self, store: IdentityStore, clock: Clock = time.time) -> None:
        self.store = store
        self._clock = clock

    def put(self, provider: str, kept: dict[str, str]) -> str:
        flow_id = secrets.token_urlsafe(24)
        now = self._clock()
        with self.store.connect() as conn:
            conn.execute("DELETE FROM pending_logins WHERE expires_at <= ?", (now,))
            conn.execute(
                "INSERT INTO pending_logins (id_hash, provider, kept, expires_at) "
                "VALUES (?, ?, ?, ?)",
                (hash_session_id(flow_id), provider, json.dumps(kept), now + self.TTL_S),
            )
        return flow_id

    def take(self, flow_id: str | None, provider: str) -> dict[str, str] | None:
        if not flow_id:
            return None
        with self.store.connect() as conn:
            row = conn.execute(
                "DELETE FROM pending_logins WHERE id_hash = ? RETURNING provider, kept, expires_at",
                (hash_session_id(flow_id),),
            ).fetchone()
        if row is None or row[2] <= self._clock() or row[0] != provider:
            return None
        kept = json.loads(row[1])
        return {str(k): str(v) for k, v in kept.items()} if isinstance(kept, dict) else None


class LoginFailures:
    """Password sign-in attempts per user name, counted in the home's identity database so
    that every front process on the home shares one count (a per-process count would give
    an attacker ``limit`` tries per worker, and a restart would reset it).

    An attempt is *reserved* before the password is checked: in one ``BEGIN IMMEDIATE``
    transaction the recent rows of the name are counted and, below ``limit``, a row is
    added. Concurrent attempts from several processes therefore can never exceed
    ``limit`` within ``window_s`` together. A successful sign-in deletes the name's rows;
    a failed one leaves its row. Names are stored as their SHA-256 (a password typed
    into the name field by mistake is not kept in clear); rows older than the window are
    pruned on each reservation, so made-up names cannot grow the table beyond the attempts
    of one window. Times are wall-clock seconds: the same in every process.
    """

    def __init__(
        self,
        store: IdentityStore,
        limit: int = 10,
        window_s: float = 300.0,
        clock: Clock = time.time,
    ) -> None:
        self.store = store
        self.limit = limit
        self.window_s = window_s
        self._clock = clock

    def reserve(self, username: str) -> bool:
        """Count one attempt for ``username``; False (nothing counted) when ``limit``
        attempts were already made within the window: refuse it without checking."""
        now = self._clock()
        horizon = now - self.window_s
        key = hash_session_id(username)
        with self.store.connect(immediate=True) as conn:
            conn.execute("DELETE FROM login_failures WHERE at <= ?", (horizon,))
            (recent,) = conn.execute(
                "SELECT COUNT(*) FROM login_failures WHERE name_hash = ? AND at > ?",
                (key, horizon),
            ).fetchone()
            if recent >= self.limit:
                return False
            conn.execute("INSERT INTO login_failures (name_hash, at) VALUES (?, ?)", (key, now))
        return True

    def succeeded(self, username: str) -> None:
        """A sign-in as ``username`` succeeded: its count starts again from zero."""
        with self.store.connect() as conn:
            conn.execute(
                "DELETE FROM login_failures WHERE name_hash = ?", (hash_session_id(username),)
            )

    def recent(self, username: str) -> int:
        """Attempts counted for ``username`` within the window (for tests and tools)."""
        horizon = self._clock() - self.window_s
        with self.store.connect() as conn:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM login_failures WHERE name_hash = ? AND at > ?",
                (hash_session_id(username), horizon),
            ).fetchone()
        return int(count)
