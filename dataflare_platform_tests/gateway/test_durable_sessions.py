"""Sessions kept in the home's identity database: two fronts on one home (what a restart
or a second worker is) share every session and every sign-out; expiry is wall-clock and
absolute; the file is 0600 and holds hashes of session ids, never an id; a changed
password or a removed account ends that user's sessions everywhere; a pending OIDC flow
is taken once, whichever front receives the callback; failed sign-ins are counted per
user name across every front and process on the home."""

from __future__ import annotations

import multiprocessing
import re
import sqlite3
import stat

from dataflare_platform.gateway.sessions import (
    SESSION_COOKIE,
    LoginFailures,
    PendingLogins,
    SessionStore,
    hash_session_id,
)
from dataflare_platform.identity.local_users import LocalUsers
from dataflare_platform.identity.store import IdentityStore
from dataflare_platform_tests.gateway.conftest import BASE, PASSWORD, Front
from dataflare_platform_tests.gateway.session_churn import VIEWER, attempt_logins, churn

VERSION = "{ version }"


class Clock:
    """A wall clock the test moves (expiry is checked against wall-clock time)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _second_front(front: Front):
    """Another front process on the same home, as after a restart or in another worker:
    nothing shared with the first but the home."""
    from dataflare_platform.gateway.serve import build_front
    from dataflare_platform.gateway.settings import FrontSettings

    app = build_front(front.webserver_app, FrontSettings(port=3000), front.project, front.instance)
    return Front(
        app, front.project, front.tokens, front.totp_secret, front.instance, front.webserver_app
    )


def _post_login(client, user: str, password: str = PASSWORD):
    """The sign-in form, as a browser fills it in: its CSRF field, then the post."""
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    return client.post(
        "/login",
        data={"csrf": csrf, "next": "/", "username": user, "password": password},
        headers={"Origin": BASE},
        follow_redirects=False,
    )


def _sign_in(client, user: str) -> str:
    answer = _post_login(client, user)
    assert answer.status_code == 303, answer.text
    return client.cookies[SESSION_COOKIE]


def _version(front: Front, session_id: str) -> int:
    """A query with the session cookie alone, from a fresh client of ``front``."""
    client = front.client(cookies={SESSION_COOKIE: session_id})
    return client.get("/graphql", params={"query": VERSION}).status_code


def test_a_session_works_on_another_front_and_sign_out_ends_it_on_both(front: Front):
    second = _second_front(front)
    session_id = _sign_in(front.client(), "victor")
    assert _version(second, session_id) == 200
    # Sign out on the second front: the first refuses the cookie from its next request.
    other = second.client(cookies={SESSION_COOKIE: session_id})
    page = other.get("/logout")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    assert "user:victor" in page.text
    out = other.post(
        "/logout", data={"csrf": csrf}, headers={"Origin": BASE}, follow_redirects=False
    )
    assert out.status_code == 303
    assert _version(front, session_id) == 401
    assert _version(_second_front(front), session_id) == 401
    logout = next(e for e in reversed(front.audit_entries()) if e.action == "logout")
    assert logout.actor == "user:victor"


def test_the_database_is_0600_and_holds_only_hashes_of_session_ids(front: Front):
    session_id = _sign_in(front.client(), "victor")
    path = IdentityStore(front.project.root).path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT id_hash, principal_id FROM sessions").fetchall()
    assert (hash_session_id(session_id), "user:victor") in rows
    assert session_id.encode() not in path.read_bytes()


def test_expiry_is_absolute_wall_clock_and_expired_rows_are_pruned(tmp_path):
    store, clock = IdentityStore(tmp_path), Clock()
    sessions = SessionStore(store, ttl_s=60.0, clock=clock)
    session_id, session = sessions.create(VIEWER)
    # Another store (another process) reading the same row sees the same session.
    again = SessionStore(store, ttl_s=60.0, clock=clock).get(session_id)
    assert again is not None and again.principal == VIEWER and again.csrf == session.csrf
    assert not session.csrf_ok(None) and not session.csrf_ok("x") and session.csrf_ok(session.csrf)
    assert sessions.get("forged") is None and sessions.get(None) is None
    clock.now += 59.0
    assert sessions.get(session_id) is not None  # reads do not extend the expiry
    clock.now += 1.0
    assert sessions.get(session_id) is None
    stale, _ = sessions.create(VIEWER)
    clock.now += 61.0
    fresh, _ = sessions.create(VIEWER)  # each sign-in prunes what has expired
    with store.connect() as conn:
        kept = {row[0] for row in conn.execute("SELECT id_hash FROM sessions")}
    assert kept == {hash_session_id(fresh)}
    assert sessions.get(stale) is None


def test_a_password_change_or_removal_signs_the_user_out_everywhere(front: Front):
    users = LocalUsers(IdentityStore(front.project.root))
    users.add("paula", PASSWORD, frozenset({"viewer"}))
    users.add("quentin", PASSWORD, frozenset({"viewer"}))
    paula = [_sign_in(front.client(), "paula") for _ in range(2)]
    quentin = _sign_in(front.client(), "quentin")
    users.set_password("paula", PASSWORD + " changed")
    assert [_version(front, s) for s in paula] == [401, 401]
    assert _version(front, quentin) == 200  # another user keeps theirs
    users.remove("quentin")
    with IdentityStore(front.project.root).connect() as conn:
        left = conn.execute(
            "SELECT count(*) FROM sessions WHERE principal_id = 'user:quentin'"
        ).fetchone()[0]
    assert left == 0 and _version(front, quentin) == 401


def test_a_pending_login_is_taken_once_by_any_process_and_expires(tmp_path):
    store, clock = IdentityStore(tmp_path), Clock()
    one, two = PendingLogins(store, clock=clock), PendingLogins(store, clock=clock)
    flow = one.put("oidc", {"pending": "{}", "next": "/runs"})
    assert two.take(flow, "ldap") is None  # another provider's callback: gone, not kept
    flow = one.put("oidc", {"pending": "{}", "next": "/runs"})
    assert two.take(flow, "oidc") == {"pending": "{}", "next": "/runs"}
    assert one.take(flow, "oidc") is None
    late = one.put("oidc", {"pending": "{}"})
    clock.now += PendingLogins.TTL_S
    assert two.take(late, "oidc") is None
    with store.connect() as conn:
        stored = [row[0] for row in conn.execute("SELECT id_hash FROM pending_logins")]
    assert flow not in stored and late not in stored


def test_concurrent_processes_share_sessions_without_losing_any(tmp_path):
    store = IdentityStore(tmp_path)
    shared_id, _ = SessionStore(store).create(VIEWER)
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        results = pool.starmap(churn, [(str(tmp_path), shared_id, 100)] * 4)
    assert results == [("user:u", 0)] * 4
    with store.connect() as conn:
        left = conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
    assert left == 1  # the shared one; every process's own were dropped


def _try_password(front: Front, user: str, password: str) -> int:
    return _post_login(front.client(), user, password).status_code


def test_failed_sign_ins_are_counted_across_two_fronts_on_one_home(front: Front):
    """Ten wrong passwords spread over two fronts lock the name on both: each front alone
    saw only five (a per-process count would still let the next one in)."""
    LocalUsers(IdentityStore(front.project.root)).add("walter", PASSWORD, frozenset({"viewer"}))
    second = _second_front(front)
    codes = [_try_password((front, second)[n % 2], "walter", "wrong") for n in range(10)]
    assert codes == [401] * 10
    # The right password is now refused too, on either front, and the refusal audited.
    assert _try_password(front, "walter", PASSWORD) == 429
    assert _try_password(second, "walter", PASSWORD) == 429
    refused = [e for e in front.audit_entries() if e.action == "login_refused"]
    assert refused and refused[-1].subject == "user:walter"
    assert "too many failures" in refused[-1].details
    # Another name is untouched; the name's count is kept hashed, not in clear.
    assert _try_password(second, "victor", PASSWORD) == 303
    path = IdentityStore(front.project.root).path
    with sqlite3.connect(path) as conn:
        names = {row[0] for row in conn.execute("SELECT name_hash FROM login_failures")}
    assert hash_session_id("walter") in names and "walter" not in names


def test_a_success_resets_the_count_and_the_window_is_wall_clock(tmp_path):
    store, clock = IdentityStore(tmp_path), Clock()
    one = LoginFailures(store, limit=3, window_s=60.0, clock=clock)
    two = LoginFailures(store, limit=3, window_s=60.0, clock=clock)  # another process
    assert [one.reserve("ann"), two.reserve("ann")] == [True, True]
    two.succeeded("ann")
    assert one.recent("ann") == 0
    assert [one.reserve("ann") for _ in range(3)] == [True, True, True]
    assert not two.reserve("ann") and not one.reserve("ann")
    assert two.reserve("bob")  # per name
    clock.now += 60.0  # the window passes: old attempts no longer count, and are pruned
    assert two.reserve("ann")
    with store.connect() as conn:
        assert conn.execute("SELECT count(*) FROM login_failures").fetchone()[0] == 1


def test_concurrent_processes_never_get_more_attempts_than_the_limit(tmp_path):
    IdentityStore(tmp_path)
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        allowed = pool.starmap(attempt_logins, [(str(tmp_path), "alice", 10)] * 4)
    assert sum(allowed) == 10  # four processes, 40 tries, one shared limit
    assert LoginFailures(IdentityStore(tmp_path)).recent("alice") == 10
