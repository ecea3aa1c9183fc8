"""Attacks on the web front, against the real thing: ``dataflare ui`` (front, webserver app
in process, daemon, code server) on a fresh home, attacked the way a process on the same
machine or a foreign web page in a local browser would.

Each refused attempt that is an action is also looked for in the home's audit log.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest
import requests

from dataflare_platform.home import LOCATION_NAME, ProjectHome
from dataflare_platform.identity.bootstrap import FirstCredentials, bootstrap
from dataflare_platform.identity.local_users import LocalUsers
from dataflare_platform.identity.store import IdentityStore
from dataflare_platform.identity.tokens import ServiceTokens
from dataflare_platform_tests.browser import DevToolsChromium, chromium_binary
from dataflare_platform_tests.e2e.conftest import serving_front

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(
    os.environ.get(
        "DATAFLARE_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"
    )
)
SELECTOR = {"repositoryLocationName": LOCATION_NAME, "repositoryName": "__repository__"}
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""
LAUNCH_VARS = {"params": {"selector": {**SELECTOR, "jobName": "audit_checkpoint_job"}}}
SET_CURSOR = """
mutation Cursor($selector: SensorSelector!) {
  setSensorCursor(sensorSelector: $selector, cursor: "99999999") { __typename }
}"""
CURSOR_VARS = {"selector": {**SELECTOR, "sensorName": "audit_trail"}}
STOP_SENSOR = """
mutation Stop($selector: SensorSelector!) { startSensor(sensorSelector: $selector) {
  __typename } }"""
TERMINATE = "mutation T($id: String!) { terminateRun(runId: $id) { __typename } }"
DELETE = "mutation D($id: String!) { deleteRun(runId: $id) { __typename } }"
VERSION = "{ version }"
PASSWORD = "a password of some length"


@dataclass
class LiveFront:
    port: int
    project: ProjectHome
    first: FirstCredentials
    tokens: dict[str, str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def post(self, query: str, variables=None, token: str | None = None, **headers):
        if token is not None:
            headers["Authorization"] = f"Bearer {self.tokens[token]}"
        return requests.post(
            f"{self.base}/graphql",
            json={"query": query, "variables": variables or {}},
            headers=headers,
            timeout=60,
        )

    def audit(self) -> list:
        from dataflare_platform.compliance.audit import AuditLog
        from dataflare_platform.compliance.audit_keys import AuditSettings

        with AuditLog(AuditSettings.resolve(home=self.project.root).url) as log:
            return log.tail(100_000)


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[LiveFront]:
    root = tmp_path_factory.mktemp("attacks")
    project = ProjectHome.resolve(root / "home").ensure()
    first = bootstrap(project.root)  # what the first `dataflare ui` does, kept for the test
    assert first is not None
    store = IdentityStore(project.root)
    tokens = {"launcher": first.token}
    for role in ("viewer", "editor", "admin"):
        tokens[role] = ServiceTokens(store).create(f"{role}-bot", frozenset({role}))[1]
    LocalUsers(store).add("vera", PASSWORD, frozenset({"viewer"}))
    env = {**os.environ, "DATAFLARE_SENSOR_INTERVAL": "1s"}
    with serving_front(project, root / "ui.log", env=env) as front:
        yield LiveFront(front.port, project, first, tokens)


def _denied(answer, permission: str) -> dict:
    body = answer.json()
    assert answer.status_code == 200 and body["data"] is None, body
    (error,) = body["errors"]
    assert error["extensions"]["permission"] == permission, error
    assert f"'{permission}'" in error["message"]
    return error


def _audited(live: LiveFront, actor: str, action: str, permission: str) -> None:
    found = [
        e
        for e in live.audit()
        if e.actor == actor and e.action == action and e.payload().get("action") == permission
    ]
    assert found, f"no {action} of {permission} by {actor} in the audit log"
    assert found[-1].payload()["policy_version"]


def test_no_credentials_or_a_forged_token_is_401(live: LiveFront):
    assert live.post(VERSION).status_code == 401
    assert live.post(VERSION, Authorization="Bearer dft_0000_forged").status_code == 401
    assert live.post(VERSION, Authorization="Basic YWRtaW46YWRtaW4=").status_code == 401
    for path in ("/server_info", "/logs/x", "/runs", "/download_debug/x"):
        assert requests.get(live.base + path, timeout=30).status_code == 401, path


def test_a_mutation_over_get_is_405(live: LiveFront):
    answer = requests.get(
        f"{live.base}/graphql",
        params={"query": SET_CURSOR, "variables": json.dumps(CURSOR_VARS)},
        headers={"Authorization": f"Bearer {live.tokens['admin']}"},
        timeout=30,
    )
    assert answer.status_code == 405
    # A query over GET is fine.
    ok = requests.get(
        f"{live.base}/graphql",
        params={"query": VERSION},
        headers={"Authorization": f"Bearer {live.tokens['viewer']}"},
        timeout=30,
    )
    assert ok.status_code == 200 and ok.json()["data"]["version"]


def test_a_foreign_host_is_refused(live: LiveFront):
    """DNS rebinding: a foreign name resolving to 127.0.0.1 carries its own Host."""
    for host in (f"attacker.example:{live.port}", "attacker.example", f"127.0.0.2:{live.port}"):
        answer = live.post(VERSION, token="admin", Host=host)
        assert answer.status_code == 421, host


def test_a_foreign_origin_is_refused(live: LiveFront):
    for origin in ("http://attacker.example", f"http://localhost:{live.port + 1}", "null"):
        answer = live.post(LAUNCH, LAUNCH_VARS, token="admin", Origin=origin)
        assert answer.status_code == 403, origin
    # A simple cross-site form post (text/plain) is refused before Dagster reads it.
    form = requests.post(
        f"{live.base}/graphql",
        params={"query": SET_CURSOR},
        data="x=1",
        headers={"Content-Type": "text/plain", "Authorization": f"Bearer {live.tokens['admin']}"},
        timeout=30,
    )
    assert form.status_code == 415


def test_wrong_roles_are_refused_naming_the_permission_and_audited(live: LiveFront):
    _denied(live.post(LAUNCH, LAUNCH_VARS, token="viewer"), "launch")
    _audited(live, "service:viewer-bot", "access_denied", "launch")
    _denied(live.post(TERMINATE, {"id": "0" * 36}, token="viewer"), "terminate")
    _audited(live, "service:viewer-bot", "access_denied", "terminate")
    _denied(live.post(SET_CURSOR, CURSOR_VARS, token="launcher"), "set_cursor")
    _audited(live, "service:dataflare-cli", "access_denied", "set_cursor")
    _denied(live.post(STOP_SENSOR, CURSOR_VARS, token="launcher"), "toggle_automation")
    _audited(live, "service:dataflare-cli", "access_denied", "toggle_automation")
    _denied(live.post(DELETE, {"id": "0" * 36}, token="editor"), "delete_run")
    _audited(live, "service:editor-bot", "access_denied", "delete_run")


def test_the_right_roles_are_allowed_and_audited(live: LiveFront):
    launched = live.post(LAUNCH, LAUNCH_VARS, token="launcher").json()
    assert launched["data"]["launchRun"]["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["data"]["launchRun"]["run"]["runId"]
    _audited(live, "service:dataflare-cli", "access_allowed", "launch")
    cursor = live.post(SET_CURSOR, CURSOR_VARS, token="editor").json()
    assert "errors" not in cursor, cursor
    _audited(live, "service:editor-bot", "access_allowed", "set_cursor")
    stopped = live.post(TERMINATE, {"id": run_id}, token="launcher").json()
    assert "errors" not in stopped, stopped
    entry = next(
        e
        for e in reversed(live.audit())
        if e.subject == f"run:{run_id}" and e.action == "access_allowed"
    )
    assert entry.payload()["resource"]["location"] == LOCATION_NAME


def test_the_client_uses_the_home_token(live: LiveFront, monkeypatch):
    from dataflare_platform.client import DataflareClient

    monkeypatch.setenv("DATAFLARE_HOME", str(live.project.root))
    monkeypatch.delenv("DATAFLARE_TOKEN", raising=False)
    assert {ref.location for ref in DataflareClient(port=live.port).jobs()} == {LOCATION_NAME}
    monkeypatch.setenv("DATAFLARE_TOKEN", live.tokens["viewer"])
    assert DataflareClient(port=live.port).jobs()


# -- a real browser ----------------------------------------------------------------------
def _screenshot(browser: DevToolsChromium, name: str) -> None:
    shot = browser.call("Page.captureScreenshot", format="png")["data"]
    target = ARTIFACTS / "ui" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(base64.b64decode(shot))


def test_a_browser_signs_in_with_password_and_totp_and_sees_the_ui(live: LiveFront, tmp_path):
    browser = DevToolsChromium(chromium_binary(), tmp_path / "profile")
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"{live.base}/runs")
        browser.wait_for("location.pathname === '/login' && !!document.forms[0]")
        _screenshot(browser, "front-login.png")
        code = pyotp.TOTP(live.first.admin_totp_secret).now()
        browser.js(
            "(() => { const f = document.forms[0];"
            f" f.username.value = {json.dumps(live.first.admin_name)};"
            f" f.password.value = {json.dumps(live.first.admin_password)};"
            f" f.code.value = {json.dumps(code)}; f.submit(); }})()"
        )
        browser.wait_for("location.pathname === '/runs'")
        cookies = browser.call("Network.getCookies", urls=[live.base])["cookies"]
        session = next(c for c in cookies if c["name"] == "dataflare_session")
        assert session["httpOnly"] and session["sameSite"] == "Strict"
        assert browser.js("document.cookie").find("dataflare_session") == -1
        # The UI's own requests carry the CSRF token (the page's fetch is wrapped).
        status = browser.js(
            "fetch('/graphql', {method: 'POST', headers: {'Content-Type': 'application/json'},"
            " body: JSON.stringify({query: '{ version }'})}).then(r => r.status)"
        )
        assert status == 200
        browser.wait_for("document.body.innerText.includes('Runs')")
        browser.wait_for("!!document.getElementById('dataflare-signout')")
        # Dismissing Dagster's first-visit dialog is a mutation (setNuxSeen) the UI itself
        # sends: it goes through only with the session's CSRF token. The dialog stays away
        # after a reload only if the server stored it.
        browser.wait_for(f"!!{browser.SKIP_BUTTON}")
        assert live.post("{ shouldShowNux }", token="viewer").json()["data"]["shouldShowNux"]
        assert browser.dismiss_first_visit_dialog()
        browser.wait_for(
            "fetch('/graphql', {method: 'POST', headers: {'Content-Type': 'application/json'},"
            " body: JSON.stringify({query: '{ shouldShowNux }'})})"
            ".then(r => r.json()).then(b => b.data.shouldShowNux === false)"
        )
        browser.call("Page.navigate", url=f"{live.base}/runs")
        browser.wait_for("document.body.innerText.includes('Runs')")
        time.sleep(3)
        assert not browser.js(f"!!{browser.SKIP_BUTTON}")
        time.sleep(2)  # let the run list render before the picture
        _screenshot(browser, "front-signed-in.png")
        logins = [e for e in live.audit() if e.action == "login"]
        assert any(e.actor == "user:admin" for e in logins)
    finally:
        browser.close()


# -- attacks through the front on what the run coordinator and the audit trail hold -------
RUN_TAGS = "query R($id: ID!) { runOrError(runId: $id) { ... on Run { tags { key value } } } }"
SENSOR_CURSOR = """
query S($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
  ... on Sensor { sensorState { status typeSpecificData {
    ... on SensorData { lastCursor } } } } } }"""
SET_ANY_CURSOR = """
mutation Cursor($selector: SensorSelector!, $cursor: String) {
  setSensorCursor(sensorSelector: $selector, cursor: $cursor) { __typename } }"""
LAUNCHER = "service:dataflare-cli"  # the principal of the first credentials' token
CEILING_S = 300


def _launch(live: LiveFront, tags: dict[str, str] | None = None, run_config=None) -> dict:
    params = dict(LAUNCH_VARS["params"])
    if tags is not None:
        params["executionMetadata"] = {"tags": [{"key": k, "value": v} for k, v in tags.items()]}
    if run_config is not None:
        params["runConfigData"] = run_config
    answer = live.post(LAUNCH, {"params": params}, token="launcher")
    # Dagster answers a PythonError (the coordinator's refusal) with a 500 and its JSON.
    assert answer.status_code in (200, 500), answer.text
    return answer.json()


def _launched(body: dict) -> str:
    result = body["data"]["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", body
    return result["run"]["runId"]


def _refused(body: dict) -> str:
    """The refusal's message: a clean GraphQL answer, no run."""
    result = (body.get("data") or {}).get("launchRun")
    assert result is None or result["__typename"] != "LaunchRunSuccess", body
    if result is not None and result.get("message"):
        return result["message"]
    return json.dumps(body)


def _poll(live: LiveFront, found, what: str):
    """Poll the audit log until ``found(entries)`` is truthy (the daemon's sensor ticks)."""
    deadline = time.monotonic() + CEILING_S
    while time.monotonic() < deadline:
        hit = found(live.audit())
        if hit:
            return hit
        time.sleep(1)
    pytest.fail(f"not in the audit log within {CEILING_S}s: {what}")


def _run_launched(live: LiveFront, run_id: str):
    return _poll(
        live,
        lambda log: next(
            (e for e in log if e.action == "run_launched" and e.subject == run_id), None
        ),
        f"run_launched of {run_id}",
    )


@pytest.mark.parametrize(
    "tag",
    [
        ("dataflare/principal", "user:admin"),
        ("dagster/schedule_name", "nightly"),
        ("dagster/sensor_name", "audit_trail"),
        ("dataflare/client", "someone"),
    ],
)
def test_a_spoofed_actor_tag_is_refused_and_audited(live: LiveFront, tag):
    key, value = tag
    message = _refused(_launch(live, {key: value}))
    assert key in message and "may not launch" in message, message
    denied = [
        e
        for e in live.audit()
        if e.action == "access_denied"
        and e.payload().get("action") == "launch"
        and key in (e.payload().get("reason") or "")
    ]
    assert denied and all(e.actor == LAUNCHER for e in denied), denied


def test_a_launch_carries_the_tokens_principal_never_a_claimed_one(live: LiveFront):
    before = len(live.audit())
    run_id = _launched(_launch(live, {"user": "admin", "USER": "user:admin"}))
    tags = live.post(RUN_TAGS, {"id": run_id}, token="viewer").json()
    tags = {t["key"]: t["value"] for t in tags["data"]["runOrError"]["tags"]}
    assert tags["dataflare/principal"] == LAUNCHER
    # The front's and the coordinator's decisions on this launch name the token's principal.
    decided = [
        e
        for e in live.audit()[before:]
        if e.action == "access_allowed" and e.payload().get("action") == "launch"
    ]
    assert decided and {e.actor for e in decided} == {LAUNCHER}, decided
    entry = _run_launched(live, run_id)
    assert entry.actor == LAUNCHER
    assert entry.payload()["claimed_by"]["USER"] == "user:admin"


@pytest.mark.parametrize(
    "resources",
    [
        {"governance": {"config": {"audit_url": "sqlite:////tmp/elsewhere.db"}}},
        {"plugins": {"config": {"plugin_dir": "/tmp/x"}}},
    ],
    ids=["governance", "plugins"],
)
def test_a_resource_override_is_refused_and_audited(live: LiveFront, resources):
    (name,) = resources
    before = len(live.audit())
    message = _refused(_launch(live, run_config={"resources": resources}))
    new = live.audit()[before:]
    if "RunConfigValidationInvalid" in message:
        # Not a resource of this job: Dagster's own config check refuses it first.
        pytest.skip(f"{name} is not configurable on audit_checkpoint_job: {message}")
    assert name in message, message
    refused = [e for e in new if e.action == "deployment_override_refused"]
    assert refused and refused[-1].actor == LAUNCHER, [e.action for e in new]
    assert any(name in p for p in refused[-1].payload()["paths"])
    assert any(e.action == "access_denied" and e.actor == LAUNCHER for e in new)


HOSTILE = {
    "empty": "",
    "newline": "line one\nline two\r\n\x1b[31m",
    "long": "x" * 10_000,
    "non-ascii": "ünïcødé ✓ 日本語 \u202e",
}


def test_hostile_tag_contents_launch_or_refuse_cleanly_and_the_trail_keeps_going(
    live: LiveFront,
):
    launched = []
    for name, value in HOSTILE.items():
        body = _launch(live, {f"note-{name}": value})
        result = (body.get("data") or {}).get("launchRun") or {}
        if result.get("__typename") == "LaunchRunSuccess":
            launched.append(result["run"]["runId"])
        else:
            assert body.get("errors") or result.get("__typename"), body
    for run_id in launched:
        entry = _run_launched(live, run_id)
        assert entry.actor == LAUNCHER
    later = _launched(_launch(live))
    assert _run_launched(live, later).actor == LAUNCHER


def _cursor(live: LiveFront) -> tuple[str, str | None]:
    body = live.post(SENSOR_CURSOR, CURSOR_VARS, token="viewer").json()
    state = body["data"]["sensorOrError"]["sensorState"]
    return state["status"], state["typeSpecificData"]["lastCursor"]


def test_a_cursor_moved_ahead_is_an_audit_gap_and_the_trail_keeps_going(live: LiveFront):
    from dagster._core.event_api import EventLogCursor

    status, _ = _cursor(live)
    assert status == "RUNNING"  # default_status of the audit_trail sensor
    # A tick has recorded its positions (and the cursor is the sensor's own JSON).
    _poll(live, lambda log: any(e.action == "audit_cursor" for e in log), "audit_cursor")
    deadline = time.monotonic() + CEILING_S
    while True:
        raw = _cursor(live)[1]
        try:
            cursor = json.loads(raw or "")
        except ValueError:
            cursor = None
        if isinstance(cursor, dict) and cursor.get("runs"):
            break
        assert time.monotonic() < deadline, f"no JSON cursor with runs: {raw!r}"
        time.sleep(1)
    ahead = EventLogCursor.from_storage_id(10**12).to_string()
    cursor["runs"] = {kind: ahead for kind in cursor["runs"]}
    before = max(e.seq for e in live.audit())
    moved = live.post(SET_ANY_CURSOR, {**CURSOR_VARS, "cursor": json.dumps(cursor)}, token="admin")
    assert "errors" not in moved.json(), moved.json()
    gap = _poll(
        live,
        lambda log: next((e for e in log if e.seq > before and e.action == "audit_gap"), None),
        "audit_gap",
    )
    assert "runs" in gap.payload()["moved"]
    later = _launched(_launch(live))
    assert _run_launched(live, later).actor == LAUNCHER
