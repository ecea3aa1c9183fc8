"""The front's checks against dagster-webserver's real app, in process."""

from __future__ import annotations

import json
import re

import pyotp
import pytest

from dataflare_platform_tests.gateway import recording
from dataflare_platform_tests.gateway.conftest import BASE, PASSWORD, Front

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""
LAUNCH_VARS = {
    "params": {
        "selector": {
            "repositoryLocationName": "tiny",
            "repositoryName": "__repository__",
            "jobName": "tiny_job",
        },
        "runConfigData": {},
    }
}
SET_CURSOR = """
mutation { setSensorCursor(sensorSelector: {repositoryLocationName: "tiny",
  repositoryName: "__repository__", sensorName: "tiny_sensor"}, cursor: "999999") {
  __typename } }"""
TERMINATE = 'mutation { terminateRun(runId: "RUN") { __typename } }'
VERSION = "{ version }"
WS = BASE.replace("http", "ws") + "/graphql"  # the test client's websockets ignore base_url


def _post(client, query, variables=None, **headers):
    return client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )


def test_no_credentials_is_401_and_a_browser_is_sent_to_login(front: Front):
    client = front.client()
    assert _post(client, VERSION).status_code == 401
    page = client.get("/runs", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/runs"
    deep = client.get("/runs?a=1&b=2", headers={"Accept": "text/html"}, follow_redirects=False)
    assert deep.headers["location"] == "/login?next=/runs%3Fa%3D1%26b%3D2"
    form = client.get(deep.headers["location"])
    assert 'name="next" value="/runs?a=1&amp;b=2"' in form.text
    assert client.get("/server_info").status_code == 401
    bad = _post(client, VERSION, Authorization="Bearer dft_nope_nope")
    assert bad.status_code == 401


def test_foreign_host_is_refused(front: Front):
    client = front.client()
    for host in ("evil.example:3000", "127.0.0.1:3001", "attacker.localhost:3000"):
        answer = client.post(
            "/graphql", json={"query": VERSION}, headers={**front.bearer("admin"), "Host": host}
        )
        assert answer.status_code == 421, host
    assert client.get("/login", headers={"Host": "evil.example"}).status_code == 421


def test_a_query_by_get_or_post_needs_view(front: Front):
    client = front.client()
    answer = _post(client, VERSION, **front.bearer("viewer"))
    assert answer.status_code == 200 and answer.json()["data"]["version"]
    by_get = client.get("/graphql", params={"query": VERSION}, headers=front.bearer("viewer"))
    assert by_get.status_code == 200 and by_get.json()["data"]["version"]


def test_a_mutation_by_get_is_405_whatever_the_role(front: Front):
    client = front.client()
    hidden = "mutation { ...F } fragment F on Mutation " + SET_CURSOR.strip()[len("mutation ") :]
    for query in (
        SET_CURSOR,
        hidden,
        "query Q { version } " + SET_CURSOR.replace("mutation", "mutation M"),
    ):
        answer = client.get("/graphql", params={"query": query}, headers=front.bearer("admin"))
        assert answer.status_code == 405, query
    # Dagster reads the query string of a form-encoded POST: refused before it gets there.
    form = client.post(
        "/graphql", params={"query": SET_CURSOR}, data={"x": "1"}, headers=front.bearer("admin")
    )
    assert form.status_code == 415
    # A body Dagster reads as JSON (the header names application/json somewhere) is judged
    # as JSON by the front too.
    smuggled = client.post(
        "/graphql",
        content=json.dumps({"query": SET_CURSOR}),
        headers={
            **front.bearer("launcher"),
            "Content-Type": "application/graphql; x=application/json",
        },
    )
    assert smuggled.json()["errors"][0]["extensions"]["permission"] == "set_cursor"


def test_foreign_origin_is_refused_for_writes(front: Front):
    client = front.client()
    for origin in ("http://evil.example", "http://127.0.0.1:3001", "null"):
        answer = _post(client, LAUNCH, LAUNCH_VARS, Origin=origin, **front.bearer("admin"))
        assert answer.status_code == 403, origin
    referer = _post(
        client, LAUNCH, LAUNCH_VARS, Referer="http://evil.example/x", **front.bearer("admin")
    )
    assert referer.status_code == 403


def test_wrong_role_is_refused_naming_the_permission_and_audited(front: Front):
    client = front.client()
    before = len(front.audit_entries())
    answer = _post(client, LAUNCH, LAUNCH_VARS, **front.bearer("viewer"))
    assert answer.status_code == 200
    (error,) = answer.json()["errors"]
    assert error["extensions"]["permission"] == "launch"
    assert "permission denied" in error["message"] and "'launch'" in error["message"]
    cursor = _post(client, SET_CURSOR, **front.bearer("launcher")).json()["errors"][0]
    assert cursor["extensions"]["permission"] == "set_cursor"
    entries = front.audit_entries()[before:]
    denied = [(e.actor, e.action, e.subject, e.payload()["action"]) for e in entries]
    assert ("service:viewer-bot", "access_denied", "job:tiny_job", "launch") in denied
    assert ("service:launcher-bot", "access_denied", "sensor:tiny_sensor", "set_cursor") in denied


def test_right_role_launches_and_the_coordinator_sees_the_principal(front: Front):
    client = front.client()
    # A caller's own principal header is dropped; the verified one replaces it.
    spoofed = {"X-Dataflare-Principal": "user:admin"}
    answer = _post(client, LAUNCH, LAUNCH_VARS, **front.bearer("launcher"), **spoofed)
    body = answer.json()
    assert answer.status_code == 200, body
    assert body["data"]["launchRun"]["__typename"] == "LaunchRunSuccess", body
    run_id = body["data"]["launchRun"]["run"]["runId"]
    # CURRENT_PRINCIPAL reached the resolver thread: the coordinator saw the token's account.
    assert (run_id, "service:launcher-bot") in recording.SEEN
    assert (run_id, "service:launcher-bot") in recording.HEADERS
    allowed = [e for e in front.audit_entries() if e.action == "access_allowed"]
    assert any(e.actor == "service:launcher-bot" and e.subject == "job:tiny_job" for e in allowed)
    # Terminating it: viewer refused (decided on the run, its location looked up), launcher ok.
    refused = _post(client, TERMINATE.replace("RUN", run_id), **front.bearer("viewer")).json()
    assert refused["errors"][0]["extensions"]["permission"] == "terminate"
    denial = next(e for e in reversed(front.audit_entries()) if e.subject == f"run:{run_id}")
    assert denial.payload()["resource"]["location"] == "tiny"
    done = _post(client, TERMINATE.replace("RUN", run_id), **front.bearer("launcher")).json()
    assert "errors" not in done, done


def test_unknown_mutation_needs_admin(front: Front):
    client = front.client()
    query = 'mutation { setConcurrencyLimit(concurrencyKey: "k", limit: 1) }'
    refused = _post(client, query, **front.bearer("editor")).json()
    assert refused["errors"][0]["extensions"]["permission"] == "admin"
    assert "errors" not in _post(client, query, **front.bearer("admin")).json()


def _login(client, user: str, password: str, code: str | None):
    form = client.get("/login")
    assert form.status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    return client.post(
        "/login",
        data={
            "csrf": csrf,
            "next": "/runs",
            "username": user,
            "password": password,
            "code": code or "",
            "provider": "local",
        },
        headers={"Origin": BASE},
        follow_redirects=False,
    )


def test_login_with_totp_sets_a_strict_cookie_and_writes_need_the_csrf_token(front: Front):
    client = front.client()
    assert _login(client, "alice", PASSWORD, None).status_code == 401  # admin: code required
    assert (
        _login(client, "alice", "wrong password!!", pyotp.TOTP(front.totp_secret).now()).status_code
        == 401
    )
    answer = _login(client, "alice", PASSWORD, pyotp.TOTP(front.totp_secret).now())
    assert answer.status_code == 303 and answer.headers["location"] == "/runs"
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith("dataflare_session=")
    )
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie  # plain HTTP here; the TLS test checks Secure
    page = client.get("/runs", headers={"Accept": "text/html"})
    assert page.status_code == 200
    token = re.search(r'var token="([^"]+)"', page.text).group(1)
    # Cookie-authenticated writes: Origin and the CSRF token both required.
    assert _post(client, VERSION).status_code == 403
    assert _post(client, VERSION, Origin=BASE).status_code == 403
    ok = _post(client, VERSION, Origin=BASE, **{"X-Dataflare-CSRF": token})
    assert ok.status_code == 200 and ok.json()["data"]["version"]
    assert (
        _post(
            client, VERSION, Origin="http://evil.example", **{"X-Dataflare-CSRF": token}
        ).status_code
        == 403
    )
    logins = [e for e in front.audit_entries() if e.action in ("login", "login_failed")]
    assert logins[-1].actor == "user:alice" and logins[-1].action == "login"
    assert any(e.action == "login_failed" and e.subject == "user:alice" for e in logins)
    out = client.post(
        "/logout", data={"csrf": token}, headers={"Origin": BASE}, follow_redirects=False
    )
    assert out.status_code == 303
    assert _post(client, VERSION, Origin=BASE, **{"X-Dataflare-CSRF": token}).status_code == 401


def test_login_refuses_a_foreign_origin_and_an_open_redirect(front: Front):
    client = front.client()
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    data = {
        "csrf": csrf,
        "next": "//evil.example/",
        "username": "victor",
        "password": PASSWORD,
        "provider": "local",
    }
    foreign = client.post("/login", data=data, headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403
    answer = client.post("/login", data=data, headers={"Origin": BASE}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/"


def test_websocket_needs_credentials_and_origin_and_carries_only_subscriptions(front: Front):
    from starlette.websockets import WebSocketDisconnect

    client = front.client()
    for headers in ({}, {**front.bearer("viewer"), "Origin": "http://evil.example"}):
        with (
            pytest.raises(WebSocketDisconnect),
            client.websocket_connect(WS, subprotocols=["graphql-ws"], headers=headers) as ws,
        ):
            ws.receive_json()
    with client.websocket_connect(
        WS, subprotocols=["graphql-ws"], headers=front.bearer("viewer")
    ) as ws:
        ws.send_json({"type": "connection_init", "payload": {}})
        assert ws.receive_json()["type"] == "connection_ack"
        ws.send_json({"type": "start", "id": "1", "payload": {"query": SET_CURSOR}})
        with pytest.raises(WebSocketDisconnect):
            ws.receive_json()


def test_every_schema_mutation_is_mapped_or_deliberately_admin():
    from dagster_graphql.schema import create_schema

    from dataflare_platform.gateway.mutations import MUTATION_ACTIONS

    fields = set(create_schema().graphql_schema.mutation_type.fields)
    assert set(MUTATION_ACTIONS) <= fields  # no misspelt name
    admin_only = fields - set(MUTATION_ACTIONS)
    assert admin_only == {
        "deleteAppManagedComponent",
        "deleteConcurrencyLimit",
        "deleteDynamicPartitions",
        "freeConcurrencySlots",
        "freeConcurrencySlotsForRun",
        "refreshComponentState",
        "setAppManagedComponent",
        "setConcurrencyLimit",
        "shutdownRepositoryLocation",
    }


def test_a_subscription_over_an_authenticated_websocket_is_served(front: Front):
    client = front.client()
    query = 'subscription { pipelineRunLogs(runId: "no-such-run") { __typename } }'
    with client.websocket_connect(
        WS, subprotocols=["graphql-ws"], headers={**front.bearer("viewer"), "Origin": BASE}
    ) as ws:
        ws.send_json({"type": "connection_init", "payload": {}})
        assert ws.receive_json()["type"] == "connection_ack"
        ws.send_json({"type": "start", "id": "1", "payload": {"query": query}})
        message = ws.receive_json()
        assert message["type"] == "data", message
        answer = message["payload"]["data"]["pipelineRunLogs"]["__typename"]
        assert answer == "PipelineRunLogsSubscriptionFailure"
        ws.send_json({"type": "connection_terminate"})


def test_sign_out_is_a_post_with_the_session_token(front: Front):
    client = front.client()
    victor = _login(client, "victor", PASSWORD, None)
    assert victor.status_code == 303
    page = client.get("/logout")
    assert page.status_code == 200 and "user:victor" in page.text
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    forged = client.post("/logout", data={"csrf": "x"}, headers={"Origin": BASE})
    assert forged.status_code == 403
    assert client.get("/graphql", params={"query": VERSION}).status_code == 200
    out = client.post(
        "/logout", data={"csrf": token}, headers={"Origin": BASE}, follow_redirects=False
    )
    assert out.status_code == 303
    assert client.get("/graphql", params={"query": VERSION}).status_code == 401


def test_the_host_allow_list_follows_the_settings():
    from dataflare_platform.gateway.settings import FrontSettings

    local = FrontSettings(port=3000)
    assert local.host_allowlist() == {"127.0.0.1:3000", "localhost:3000", "[::1]:3000"}
    public = FrontSettings(
        host="0.0.0.0",
        port=443,
        tls_cert="c.pem",
        tls_key="k.pem",
        public_hosts=("UI.example.com", "ops.example.com:8443"),
    )
    assert {
        "ui.example.com",
        "ui.example.com:443",
        "ops.example.com:8443",
    } <= public.host_allowlist()
    assert "0.0.0.0:443" not in public.host_allowlist()
    assert "https://ui.example.com" in public.origin_allowlist()
    assert "http://ui.example.com" not in public.origin_allowlist()
    assert public.public_origin() == "https://ui.example.com:443"


def test_a_revoked_token_is_refused_from_the_next_request(front: Front):
    from dataflare_platform.identity.store import IdentityStore
    from dataflare_platform.identity.tokens import ServiceTokens

    tokens = ServiceTokens(IdentityStore(front.project.root))
    token_id, token = tokens.create("short-lived", frozenset({"viewer"}))
    client = front.client()
    headers = {"Authorization": f"Bearer {token}"}
    assert _post(client, VERSION, **headers).status_code == 200
    tokens.revoke(token_id)
    assert _post(client, VERSION, **headers).status_code == 401


def test_a_session_follows_role_changes_and_removal_of_its_user(front: Front):
    from dataflare_platform.identity.local_users import LocalUsers
    from dataflare_platform.identity.store import IdentityStore

    users = LocalUsers(IdentityStore(front.project.root))
    users.add("wendy", PASSWORD, frozenset({"viewer"}))
    client = front.client()
    assert _login(client, "wendy", PASSWORD, None).status_code == 303
    page = client.get("/logout")
    csrf = {"Origin": BASE, "X-Dataflare-CSRF": re.search(r'value="([^"]+)"', page.text).group(1)}
    denied = _post(client, SET_CURSOR, **csrf).json()
    assert denied["errors"][0]["extensions"]["permission"] == "set_cursor"
    users.set_roles("wendy", frozenset({"editor"}))
    assert "errors" not in _post(client, SET_CURSOR, **csrf).json()
    users.remove("wendy")
    assert _post(client, VERSION, **csrf).status_code == 401
