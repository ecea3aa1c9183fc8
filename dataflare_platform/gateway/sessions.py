"""Browser sessions of the front: a random id in an HttpOnly, SameSite=Strict cookie
(Secure under TLS) pointing at server-side state, with a per-session CSRF token that every
cookie-authenticated state-changing request must echo in a header or form field.

Sessions live in the front's memory: a restart logs everyone out, which is the safe
direction. Expiry is absolute (no sliding renewal): a stolen cookie is useful for at most
``ttl_s``."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from dataflare_platform.access.principal import Principal

SESSION_COOKIE = "dataflare_session"
CSRF_HEADER = "x-dataflare-csrf"
CSRF_FIELD = "csrf"
DEFAULT_TTL_S = 12 * 3600.0


@dataclass
class Session:
    principal: Principal
    csrf: str
    expires_at: float

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf, presented or "")


class SessionStore:
    def __init__(self, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, principal: Principal) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        session = Session(principal, secrets.token_urlsafe(32), time.monotonic() + self.ttl_s)
        with self._lock:
            self._prune()
            self._sessions[session_id] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and session.expires_at < time.monotonic():
                del self._sessions[session_id]
                return None
            return session

    def drop(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(session_id or "", None)

    def _prune(self) -> None:
        now = time.monotonic()
        for key in [k for k, s in self._sessions.items() if s.expires_at < now]:
            del self._sessions[key]


class PendingLogins:
    """State of redirect logins in flight (OIDC state, nonce, PKCE verifier), keyed by a
    random id in a short-lived cookie; each is taken once."""

    TTL_S = 600.0

    def __init__(self) -> None:
        self._pending: dict[str, tuple[float, str, dict[str, str]]] = {}
        self._lock = threading.Lock()

    def put(self, provider: str, kept: dict[str, str]) -> str:
        flow_id = secrets.token_urlsafe(24)
        with self._lock:
            now = time.monotonic()
            for key in [k for k, v in self._pending.items() if v[0] < now]:
                del self._pending[key]
            self._pending[flow_id] = (now + self.TTL_S, provider, kept)
        return flow_id

    def take(self, flow_id: str | None, provider: str) -> dict[str, str] | None:
        with self._lock:
            item = self._pending.pop(flow_id or "", None)
        if item is None or item[0] < time.monotonic() or item[1] != provider:
            return None
        return item[2]
