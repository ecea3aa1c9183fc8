"""Attacks on the web front, against the real thing: ``dataflare ui`` (front, webserver app
in process, daemon, code servers) on a fresh home, attacked the way a process on the same
machine or a foreign web page in a local browser would.

Each refused attempt that is an action is also looked for in the home's audit log. The
home is provisioned with ``dataflare audit init`` (key, pinned public key and file anchor
outside the home, under a test ``XDG_CONFIG_HOME``), so its log is checkpointed and the
tampering attacks are judged by the real ``dataflare audit verify``. A second code
location (``attack_defs.py``) and a policy that is the shipped default plus two scoping
rules (:data:`MODULE_RULES`) give the daemon-side attacks their targets: a sensor outside
its rights, and backfills reaching outside their requester's.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
import pytest
import requests

from dataflare_platform.access.default_policy import DEFAULT_POLICY
from dataflare_platform.home import LOCATION_NAME, ProjectHome
from dataflare_platform.identity.bootstrap import FirstCredentials, bootstrap
from dataflare_platform.identity.local_users import LocalUsers
from dataflare_platform.identity.store import IdentityStore
from dataflare_platform.identity.tokens import ServiceTokens
from dataflare_platform_tests.browser import DevToolsChromium, chromium_binary
from dataflare_platform_tests.e2e.conftest import serving_front
from dataflare_platform_tests.waits import wait_until

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
# What the tests launch: a no-op job of the attack location (its runs take seconds: a
# platform job's run worker imports the whole platform), except where a platform
# resource must be on the job (overrides) or its work is the point (checkpoints).
LAUNCH_VARS = {
    "params": {
        "selector": {
            "repositoryLocationName": "attack_location",
            "repositoryName": "__repository__",
            "jobName": "noop_job",
        }
    }
}
CHECKPOINT_VARS = {"params": {"selector": {**SELECTOR, "jobName": "audit_checkpoint_job"}}}
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
ATTACK_DEFS = Path(__file__).with_name("attack_defs.py")
ATTACK_LOCATION = "attack_location"
# Appended to the shipped default for this module: automation may not launch in group
# billing (rogue_sensor tries), and service:scoped-bot may launch anything but billing.
MODULE_RULES = """
@id("automation stays out of billing")
forbid (principal, action == Dataflare::Action::"launch", resource)
when { principal.via == "daemon" && resource has group && resource.group == "billing" };

@id("scoped-bot stays out of billing")
forbid (
  principal == Dataflare::Principal::"service:scoped-bot",
  action == Dataflare::Action::"launch",
  resource
)
when { resource has group && resource.group == "billing" };
"""


@dataclass
class LiveFront:
    port: int
    project: ProjectHome
    first: FirstCredentials
    tokens: dict[str, str]
    token_ids: dict[str, str]
    root: Path
    env: dict[str, str]

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
    token_ids: dict[str, str] = {}
    for name, role in (
        ("viewer", "viewer"),
        ("editor", "editor"),
        ("admin", "admin"),
        ("scoped", "launcher"),
        ("revoked", "launcher"),
    ):
        token_ids[name], tokens[name] = ServiceTokens(store).create(
            f"{name}-bot", frozenset({role})
        )
    LocalUsers(store).add("vera", PASSWORD, frozenset({"viewer"}))
    policy = root / "policy.cedar"
    policy.write_text(DEFAULT_POLICY + MODULE_RULES)
    (root / "gate").mkdir()
    workspace = root / "workspace.yaml"
    workspace.write_text(
        json.dumps(
            {
                "load_from": [
                    {
                        "python_module": {
                            "module_name": "dataflare_platform.definitions",
                            "location_name": LOCATION_NAME,
                        }
                    },
                    {
                        "python_file": {
                            "relative_path": str(ATTACK_DEFS),
                            "location_name": ATTACK_LOCATION,
                            "working_directory": str(ATTACK_DEFS.parent),
                        }
                    },
                ]
            }
        )
    )
    env = {
        **os.environ,
        **project.environ(),
        "DATAFLARE_SENSOR_INTERVAL": "1s",
        "XDG_CONFIG_HOME": str(root / "xdg"),
        "DATAFLARE_POLICY": str(policy),
        "DATAFLARE_TEST_GATE": str(root / "gate"),
    }
    for var in (
        "DATAFLARE_AUDIT_URL",
        "DATAFLARE_AUDIT_SIGNING_KEY",
        "DATAFLARE_AUDIT_ENTRY_KEY",
        "DATAFLARE_AUDIT_TRUSTED_KEYS",
    ):
        env.pop(var, None)
    env.pop("DATAFLARE_AUDIT_ANCHOR_URL", None)
    dataflare = Path(sys.executable).with_name("dataflare")
    # The embedded default's explicit step: key, pinned key and anchor outside the home.
    subprocess.run(
        [str(dataflare), "audit", "init", "--home", str(project.root)],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    with serving_front(project, root / "ui.log", env=env, workspace=workspace, cwd=root) as front:
        yield LiveFront(front.port, project, first, tokens, token_ids, root, env)


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
    assert entry.payload()["resource"]["location"] == ATTACK_LOCATION


def test_the_client_uses_the_home_token(live: LiveFront, monkeypatch):
    from dataflare_platform.client import DataflareClient

    monkeypatch.setenv("DATAFLARE_HOME", str(live.project.root))
    monkeypatch.delenv("DATAFLARE_TOKEN", raising=False)
    assert {ref.location for ref in DataflareClient(port=live.port).jobs()} == {
        LOCATION_NAME,
        ATTACK_LOCATION,
    }
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
        # The page's own script (CSRF header on the UI's fetches) has run once the page
        # is parsed; a fetch evaluated while the new document is still loading goes out
        # without it (403: seen under load).
        browser.wait_for("!!document.getElementById('dataflare-signout')")
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


def _launch(
    live: LiveFront, tags: dict[str, str] | None = None, run_config=None, job_vars=LAUNCH_VARS
) -> dict:
    params = dict(job_vars["params"])
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
    message = _refused(_launch(live, run_config={"resources": resources}, job_vars=CHECKPOINT_VARS))
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
    wanted = json.dumps(cursor)

    def set_cursor() -> None:
        moved = live.post(SET_ANY_CURSOR, {**CURSOR_VARS, "cursor": wanted}, token="admin")
        assert "errors" not in moved.json(), moved.json()

    def gap_entry():
        return next((e for e in live.audit() if e.seq > before and e.action == "audit_gap"), None)

    # A tick already running when the cursor is set ends by writing the cursor it started
    # from over ours (seen under load): then no gap can be seen, and the cursor is set again.
    set_cursor()
    deadline = time.monotonic() + CEILING_S
    while (gap := gap_entry()) is None:
        assert time.monotonic() < deadline, f"not in the audit log within {CEILING_S}s: audit_gap"
        if _cursor(live)[1] != wanted and gap_entry() is None:
            set_cursor()
        time.sleep(1)
    assert "runs" in gap.payload()["moved"]
    later = _launched(_launch(live))
    assert _run_launched(live, later).actor == LAUNCHER


# -- the daemon: a sensor and backfills outside their principal's rights -----------------
LAUNCH_BACKFILL = """
mutation B($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
CANCEL_BACKFILL = """
mutation C($id: String!) { cancelPartitionBackfill(backfillId: $id) { __typename } }"""


@contextmanager
def _instance(live: LiveFront) -> Iterator[Any]:
    """The live home's Dagster instance, read from the test process (SQLite storage)."""
    import dagster as dg

    with pytest.MonkeyPatch.context() as patch:
        for key, value in live.project.environ().items():  # dagster.yaml reads them
            patch.setenv(key, value)
        with dg.DagsterInstance.from_config(str(live.project.dagster_home)) as instance:
            yield instance


def _never_queued(instance, run_id: str) -> None:
    kinds = {r.dagster_event.event_type_value for r in instance.all_logs(run_id) if r.dagster_event}
    assert "PIPELINE_ENQUEUED" not in kinds and "PIPELINE_START" not in kinds, kinds


def test_a_sensor_launch_outside_its_rights_is_refused_and_audited(live: LiveFront):
    import dagster as dg

    with _instance(live) as instance:
        run = wait_until(
            "a FAILURE run of billing_job (rogue_sensor)",
            lambda: next(
                (
                    r
                    for r in instance.get_runs(dg.RunsFilter(job_name="billing_job"))
                    if r.status == dg.DagsterRunStatus.FAILURE
                ),
                None,
            ),
            CEILING_S,
            poll_s=1,
        )
        assert run.tags.get("dagster/sensor_name") == "rogue_sensor"
        assert "dataflare/principal" not in run.tags
        messages = [r.message or "" for r in instance.all_logs(run.run_id)]
        assert any("sensor:rogue_sensor may not launch job 'billing_job'" in m for m in messages)
        _never_queued(instance, run.run_id)
    denied = _poll(
        live,
        lambda log: [e for e in log if e.actor == "sensor:rogue_sensor"],
        "rogue_sensor's decision",
    )
    assert {e.action for e in denied} == {"access_denied"}
    details = denied[0].payload()
    assert details["via"] == "daemon" and details["resource"]["group"] == "billing"
    assert "automation stays out of billing" in details["reason"]


def _request_backfill(live: LiveFront, token: str, assets: list[str], parts: list[str], tags=None):
    params: dict[str, Any] = {
        "assetSelection": [{"path": [a]} for a in assets],
        "partitionNames": parts,
    }
    if tags:
        params["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
    answer = live.post(LAUNCH_BACKFILL, {"params": params}, token=token)
    assert answer.status_code in (200, 500), answer.text
    return answer.json()


def _backfill_id(body: dict) -> str:
    result = body["data"]["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", body
    return result["backfillId"]


def _backfill_runs(instance, backfill_id: str) -> list:
    import dagster as dg

    return instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))


def _decisions(live: LiveFront, backfill_id: str, action: str) -> list:
    return [
        e for e in live.audit() if e.action == action and e.payload().get("backfill") == backfill_id
    ]


def test_a_backfill_runs_as_its_requester(live: LiveFront):
    import dagster as dg

    from dataflare_platform.access.backfill_requester import REQUESTER_TAG, parse_requester

    backfill_id = _backfill_id(_request_backfill(live, "launcher", ["ledger"], ["p1"]))
    with _instance(live) as instance:
        recorded = parse_requester(instance.get_backfill(backfill_id).tags[REQUESTER_TAG])
        assert recorded.id == LAUNCHER and recorded.roles == {"launcher"}
        runs = wait_until(
            f"the successful run of backfill {backfill_id}",
            lambda: (
                (rs := _backfill_runs(instance, backfill_id))
                and all(r.status == dg.DagsterRunStatus.SUCCESS for r in rs)
                and rs
            ),
            CEILING_S,
            poll_s=1,
        )
    assert {r.tags["dataflare/principal"] for r in runs} == {LAUNCHER}
    allowed = _decisions(live, backfill_id, "access_allowed")
    assert allowed and {e.actor for e in allowed} == {LAUNCHER}
    assert {e.payload()["submitted_by"] for e in allowed} == {"daemon"}
    assert not _decisions(live, backfill_id, "access_denied")


def test_a_backfill_reaching_outside_its_requesters_rights_is_refused_and_audited(
    live: LiveFront,
):
    # The front lets service:scoped-bot (a launcher) ask: its rule is about groups, and
    # the request names assets, not groups. The daemon's runs reach group billing.
    backfill_id = _backfill_id(_request_backfill(live, "scoped", ["ledger", "invoices"], ["p1"]))
    try:
        denied = _poll(
            live,
            lambda log: [
                e
                for e in log
                if e.action == "access_denied" and e.payload().get("backfill") == backfill_id
            ],
            f"a refused run of backfill {backfill_id}",
        )
        assert {e.actor for e in denied} == {"service:scoped-bot"}
        details = denied[0].payload()
        assert details["resource"]["group"] == "billing"
        assert "scoped-bot stays out of billing" in details["reason"]
        assert details["submitted_by"] == "daemon"
        with _instance(live) as instance:
            runs = wait_until(
                f"a finished run of backfill {backfill_id}",
                lambda: [r for r in _backfill_runs(instance, backfill_id) if r.is_finished],
                CEILING_S,
                poll_s=1,
            )
            refused = [r for r in runs if "dataflare/principal" not in r.tags]
            assert refused, [(r.run_id, r.status, r.tags) for r in runs]
            for run in refused:
                assert run.status.value == "FAILURE"
                messages = [r.message or "" for r in instance.all_logs(run.run_id)]
                assert any("service:scoped-bot (requester of backfill" in m for m in messages), (
                    messages
                )
                _never_queued(instance, run.run_id)
            # Nothing of group billing was materialized for this backfill.
            assert all("invoices" not in str(r.asset_selection) for r in runs if r not in refused)
    finally:
        live.post(CANCEL_BACKFILL, {"id": backfill_id}, token="admin")


def test_a_backfill_whose_requester_lost_the_role_is_refused_and_audited(live: LiveFront):
    import dagster as dg

    from dataflare_platform.identity.store import IdentityStore
    from dataflare_platform.identity.tokens import ServiceTokens

    requester = "service:revoked-bot"
    backfill_id = _backfill_id(
        _request_backfill(live, "revoked", ["gated_ledger", "gated_report"], ["p1"])
    )
    try:
        with _instance(live) as instance:
            first = wait_until(
                "gated_ledger's run started",
                lambda: next(
                    (
                        r
                        for r in _backfill_runs(instance, backfill_id)
                        if r.status == dg.DagsterRunStatus.STARTED
                    ),
                    None,
                ),
                CEILING_S,
                poll_s=1,
            )
            assert first.tags["dataflare/principal"] == requester
            # The account loses its rights while its backfill is under way.
            ServiceTokens(IdentityStore(live.project.root)).revoke(live.token_ids["revoked"])
            (live.root / "gate" / "open").touch()
            denied = _poll(
                live,
                lambda log: [
                    e
                    for e in log
                    if e.action == "access_denied" and e.payload().get("backfill") == backfill_id
                ],
                f"the refused gated_report run of backfill {backfill_id}",
            )
            assert {e.actor for e in denied} == {requester}
            assert "no rule permits launch" in denied[0].payload()["reason"]
            assert instance.get_run_by_id(first.run_id).status == dg.DagsterRunStatus.SUCCESS
            second = wait_until(
                "gated_report's run refused",
                lambda: [
                    r
                    for r in _backfill_runs(instance, backfill_id)
                    if r.run_id != first.run_id and r.is_finished
                ],
                CEILING_S,
                poll_s=1,
            )
            assert {r.status for r in second} == {dg.DagsterRunStatus.FAILURE}
            for run in second:
                _never_queued(instance, run.run_id)
        allowed = _decisions(live, backfill_id, "access_allowed")
        assert allowed and {e.actor for e in allowed} == {requester}
    finally:
        live.post(CANCEL_BACKFILL, {"id": backfill_id}, token="admin")


def test_a_reserved_tag_on_a_backfill_is_refused_and_audited(live: LiveFront):
    forged = json.dumps(
        {"id": "user:admin", "kind": "user", "name": "admin", "via": "local", "roles": ["admin"]}
    )
    for key, value in (
        ("dataflare/backfill_requester", forged),
        ("dataflare/team", "x"),
        ("dagster/sensor_name", "rogue_sensor"),  # would make its runs the sensor's
    ):
        before = len(live.audit())
        body = _request_backfill(live, "launcher", ["ledger"], ["p1"], tags={key: value})
        result = (body.get("data") or {}).get("launchPartitionBackfill") or {}
        assert result.get("__typename") != "LaunchBackfillSuccess", body
        assert key in json.dumps(body), body
        denied = [
            e
            for e in live.audit()[before:]
            if e.action == "access_denied" and key in (e.payload().get("reason") or "")
        ]
        assert denied and {e.actor for e in denied} == {LAUNCHER}, denied


# -- the live home's audit log, tampered, judged by `dataflare audit verify` -------------
# The front and daemon keep writing the live log, so each attack works on a copy of it
# taken right after a checkpoint run (SQLite's backup API: a consistent snapshot) and
# `verify --home <live home> --url <copy>` judges it against the home's pinned key and
# its configured anchor, as it would the tampered log in place.
ACTIVE = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def _verify(live: LiveFront, url: str | None = None, **env: str) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("dataflare")), "audit", "verify"]
    command += ["--home", str(live.project.root)] + (["--url", url] if url else [])
    return subprocess.run(
        command, env={**live.env, **env}, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def signed_copy(live: LiveFront) -> Path:
    """A snapshot of the live log right after a checkpoint signed and anchored it."""
    import sqlite3

    import dagster as dg

    run_id = _launched(_launch(live, job_vars=CHECKPOINT_VARS))
    with _instance(live) as instance:
        wait_until(
            f"checkpoint run {run_id} finished",
            lambda: instance.get_run_by_id(run_id).is_finished,
            CEILING_S,
            poll_s=1,
        )
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
        wait_until(
            "no checkpoint run under way",
            lambda: (
                not instance.get_runs(
                    dg.RunsFilter(
                        job_name="audit_checkpoint_job",
                        statuses=[dg.DagsterRunStatus(s) for s in ACTIVE],
                    )
                )
            ),
            CEILING_S,
            poll_s=1,
        )
    live_db = live.project.root / "audit.db"
    copy = live.root / "signed-copy.db"
    with sqlite3.connect(live_db) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    source.close()
    target.close()
    untouched = _verify(live, _url(copy))
    assert untouched.returncode == 0, untouched.stdout + untouched.stderr
    assert "ok:" in untouched.stdout
    return copy


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def _sql(path: Path, *statements: str) -> None:
    import sqlite3

    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()


def _rechain(path: Path, edit) -> None:
    """Rewrite the log consistently: ``edit`` changes the list of entries (content,
    insertions), then every seq, prev_hash and hash is recomputed as the log would."""
    import sqlalchemy as sa

    from dataflare_platform.compliance.audit import GENESIS_HASH, AuditEntry

    table = AuditEntry.__table__
    engine = sa.create_engine(_url(path))
    try:
        with engine.begin() as conn:
            entries = [
                AuditEntry.model_validate(r._mapping)
                for r in conn.execute(sa.select(table).order_by(table.c.seq))
            ]
            entries = edit(entries)
            prev = GENESIS_HASH
            for seq, entry in enumerate(entries, start=1):
                entry.seq, entry.prev_hash = seq, prev
                entry.hash = prev = entry.compute_hash()
            conn.execute(table.delete())
            conn.execute(table.insert(), [e.model_dump() for e in entries])
    finally:
        engine.dispose()


def _rewrite_actor(entries: list) -> list:
    entries[2].actor = "user:nobody"
    return entries


def _insert_forged(entries: list) -> list:
    from dataflare_platform.compliance.audit import AuditEntry

    forged = AuditEntry(
        seq=0,
        at=entries[2].at,
        actor="user:admin",
        action="access_allowed",
        subject="job:audit_checkpoint_job",
        details=json.dumps({"action": "launch"}),
        prev_hash="",
        hash="",
    )
    return [*entries[:3], forged, *entries[3:]]


def _forged_tail(entries: list) -> list:
    """A forged entry appended after everything the last checkpoint signed: the young
    unsigned tail, which only the entry authenticators protect."""
    forged = _insert_forged(entries)[3]
    forged.at = entries[-1].at  # in time order after the real head
    return [*entries, forged]


def _last_entry(path: Path) -> tuple[int, str]:
    import sqlite3

    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1")
        seq, digest = row.fetchone()
    conn.close()
    return seq, digest


def _sign_as_attacker(path: Path, attacker) -> None:
    """A checkpoint over the log as it now is, signed with ``attacker`` and written by the
    attacker's own code (the platform's ``checkpoint`` would refuse the entries, whose
    tags the attacker cannot make)."""
    import sqlalchemy as sa

    from dataflare_platform.compliance.audit import AuditCheckpoint, checkpoint_message
    from dataflare_platform.compliance.audit_keys import FileSigner
    from dataflare_platform.times import utc_now

    signer = FileSigner(attacker)
    seq, head = _last_entry(path)
    at = utc_now()
    cp = AuditCheckpoint(
        seq=seq,
        head_hash=head,
        signed_at=at,
        key_id=signer.key_id,
        signature=signer.sign(checkpoint_message(seq, head, at, seq, signer.algorithm)).hex(),
        entries=seq,
        algorithm=signer.algorithm,
    )
    engine = sa.create_engine(_url(path))
    try:
        with engine.begin() as conn:
            conn.execute(AuditCheckpoint.__table__.insert(), [cp.model_dump(exclude={"id"})])
    finally:
        engine.dispose()


def _attacker_resigns(path: Path, live: LiveFront) -> None:
    """Rewrite, drop the log's checkpoints, sign a fresh one with the attacker's own key,
    and leave its public key where a verifier trusting the home's keys would find it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from dataflare_platform.compliance.audit_keys import key_id, public_pem

    _rechain(path, _rewrite_actor)
    _sql(path, "DELETE FROM audit_checkpoints")
    attacker = Ed25519PrivateKey.generate()
    _sign_as_attacker(path, attacker)
    keys = live.project.root / "audit_keys"
    keys.mkdir(exist_ok=True)
    (keys / f"{key_id(attacker.public_key())}.pub").write_bytes(public_pem(attacker.public_key()))


def _tamper(name: str, path: Path, live: LiveFront) -> None:
    if name == "rewritten":
        _sql(path, "UPDATE audit_entries SET actor = 'user:nobody' WHERE seq = 3")
    elif name == "rewritten with a recomputed chain":
        _rechain(path, _rewrite_actor)
    elif name == "forged entry inserted, chain recomputed":
        _rechain(path, _insert_forged)
    elif name == "truncated":
        _sql(path, "DELETE FROM audit_entries WHERE seq > 5")
    elif name == "truncated, checkpoints deleted":
        _sql(path, "DELETE FROM audit_entries WHERE seq > 5", "DELETE FROM audit_checkpoints")
    elif name == "emptied":
        _sql(path, "DELETE FROM audit_entries")
    elif name == "emptied, checkpoints deleted":
        _sql(path, "DELETE FROM audit_entries", "DELETE FROM audit_checkpoints")
    elif name == "rewritten, checkpoints deleted":
        _rechain(path, _rewrite_actor)
        _sql(path, "DELETE FROM audit_checkpoints")
    elif name == "re-signed with the attacker's key":
        _attacker_resigns(path, live)
    elif name == "forged entry appended to the unsigned tail, chain recomputed":
        _rechain(path, _forged_tail)
    elif name == "tail entry tagged with the attacker's entry key":
        from dataflare_platform.compliance.audit_signing import EntryAuthenticator

        _rechain(path, _forged_tail)
        attacker = EntryAuthenticator.generate()
        (seq, digest) = _last_entry(path)
        _sql(
            path,
            f"UPDATE audit_entries SET mac = '{attacker.tag(digest)}',"
            f" mac_key = '{attacker.key_id}' WHERE seq = {seq}",
        )
    else:
        raise AssertionError(name)


@pytest.mark.parametrize(
    ("attack", "says"),
    [
        ("rewritten", ["first bad entry seq 3: hash does not match the entry's content"]),
        ("rewritten with a recomputed chain", ["signed head hash differs", "were rewritten"]),
        ("forged entry inserted, chain recomputed", ["signed head hash differs"]),
        ("truncated", ["but the log holds 5 (truncated or emptied)"]),
        ("truncated, checkpoints deleted", ["anchor: counted", "log holds 5"]),
        ("emptied", ["but the log holds 0 (truncated or emptied)"]),
        ("emptied, checkpoints deleted", ["anchor: counted", "log holds 0"]),
        ("rewritten, checkpoints deleted", ["anchor: signed head hash differs"]),
        ("re-signed with the attacker's key", ["not pinned", "anchor: signed head hash differs"]),
        # Entries after the last checkpoint: caught by their authenticators (entry key
        # outside the home), not by any checkpoint.
        (
            "forged entry appended to the unsigned tail, chain recomputed",
            ["first bad entry seq", ": no authenticator"],
        ),
        (
            "tail entry tagged with the attacker's entry key",
            ["first bad entry seq", "authenticated with entry key", "not the deployment's"],
        ),
    ],
)
def test_a_tampered_live_log_fails_verify_saying_what(
    live: LiveFront, signed_copy: Path, tmp_path: Path, attack: str, says: list[str]
):
    import shutil

    tampered = tmp_path / "audit.db"
    shutil.copyfile(signed_copy, tampered)
    keys = live.project.root / "audit_keys"
    try:
        _tamper(attack, tampered, live)
        result = _verify(live, _url(tampered))
    finally:
        for planted in keys.glob("*.pub") if keys.is_dir() else ():
            planted.unlink()
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 1, output
    for words in says:
        assert words in output, output


def test_the_anchor_deleted_or_the_pinned_key_swapped_fails_verify(
    live: LiveFront, signed_copy: Path, tmp_path: Path
):
    """Outside the home too: a deleted anchor file fails, and an attacker who could also
    replace the pinned key file with their own still fails against the anchor's
    checkpoints, signed by the deployment's key."""
    import shutil

    from dataflare_platform.compliance.audit_keys import user_config_dir

    config = user_config_dir(live.project.root, {"XDG_CONFIG_HOME": live.env["XDG_CONFIG_HOME"]})
    xdg = tmp_path / "xdg"
    copied = user_config_dir(live.project.root, {"XDG_CONFIG_HOME": str(xdg)})
    shutil.copytree(config, copied)
    settings = json.loads((copied / "audit.json").read_text())
    for field in ("signing_key", "entry_key", "trusted_keys", "anchor_url"):
        settings[field] = settings[field].replace(str(config), str(copied))
    (copied / "audit.json").write_text(json.dumps(settings))
    tampered = tmp_path / "audit.db"
    shutil.copyfile(signed_copy, tampered)
    assert _verify(live, _url(tampered), XDG_CONFIG_HOME=str(xdg)).returncode == 0

    anchor = copied / "anchor.jsonl"
    saved = anchor.read_bytes()
    anchor.unlink()
    gone = _verify(live, _url(tampered), XDG_CONFIG_HOME=str(xdg))
    assert gone.returncode == 1 and "anchor:" in gone.stderr, gone.stderr
    anchor.write_bytes(saved)

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from dataflare_platform.compliance.audit_keys import public_pem

    attacker = Ed25519PrivateKey.generate()
    _rechain(tampered, _rewrite_actor)
    _sql(tampered, "DELETE FROM audit_checkpoints")
    _sign_as_attacker(tampered, attacker)
    (copied / "trusted.pem").write_bytes(public_pem(attacker.public_key()))
    swapped = _verify(live, _url(tampered), XDG_CONFIG_HOME=str(xdg))
    output = " ".join((swapped.stdout + swapped.stderr).split())
    assert swapped.returncode == 1, output
    assert "anchor: signed by unknown key" in output and "(not pinned)" in output, output
