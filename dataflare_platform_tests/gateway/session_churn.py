"""A front-like process for the concurrency test of durable sessions, in its own small
module so that a spawned process imports little more than the session store."""

from __future__ import annotations

from pathlib import Path

from dataflare_platform.access.principal import Principal
from dataflare_platform.gateway.sessions import SessionStore
from dataflare_platform.identity.store import IdentityStore

VIEWER = Principal(name="u", kind="user", via="local", roles=frozenset({"viewer"}))


def churn(home: str, shared_id: str, rounds: int) -> tuple[str, int]:
    """One front-like process: sign-ins, reads and sign-outs on the shared home, plus a
    read of the session another process created. Returns who that session is and how
    many of its own sessions behaved wrongly."""
    sessions = SessionStore(IdentityStore(Path(home)))
    wrong = 0
    for _ in range(rounds):
        session_id, _ = sessions.create(VIEWER)
        wrong += sessions.get(session_id) is None
        sessions.drop(session_id)
        wrong += sessions.get(session_id) is not None
    shared = sessions.get(shared_id)
    return (shared.principal.id if shared else "gone"), wrong


def attempt_logins(home: str, username: str, tries: int) -> int:
    """One front-like process reserving ``tries`` password attempts for ``username`` on
    the shared home, all failing; returns how many it was allowed to make."""
    from dataflare_platform.gateway.sessions import LoginFailures

    failures = LoginFailures(IdentityStore(Path(home)))
    return sum(failures.reserve(username) for _ in range(tries))
