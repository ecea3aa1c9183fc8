"""Directory sign-in in a real browser: headless Chromium fills the login form of the real
``dataflare ui`` (started with ``--login-config`` naming a real slapd, search then bind
with a service account), lands in the Dagster UI as ``user:ldap/<name>`` with the role
its directory group grants, and a wrong password gets the sign-in page's error. The
session lives in the home, so it outlasts a restart of the front process, and a sign-out
ends it. Screenshots go to the test artefacts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from dataflare_platform.gateway.process import free_port
from dataflare_platform.home import LOCATION_NAME, ProjectHome
from dataflare_platform.identity.bootstrap import bootstrap
from dataflare_platform_tests.browser import DevToolsChromium, chromium_binary
from dataflare_platform_tests.e2e.conftest import stop_group, wait_until_serving
from dataflare_platform_tests.e2e.test_attacks_gateway import ARTIFACTS
from dataflare_platform_tests.identity.slapd_server import (
    PASSWORDS,
    REQUIRES_SLAPD,
    SERVICE_DN,
    SERVICE_PASSWORD,
    running_slapd,
)

# As the other LDAP tests: CI installs slapd and sets DATAFLARE_REQUIRE_SLAPD=1, which
# turns its absence into a failure.
pytestmark = [
    pytest.mark.e2e,
    REQUIRES_SLAPD,
]
SERVICE_ENV = "DATAFLARE_TEST_LDAP_BIND_PASSWORD"
SELECTOR = {"repositoryLocationName": LOCATION_NAME, "repositoryName": "__repository__"}
# Authorized for a launcher, then refused by Dagster itself for its config: no run starts.
LAUNCH = (
    "mutation L($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename } }",
    {"p": {"selector": {**SELECTOR, "jobName": "audit_checkpoint_job"}, "runConfigData": {"x": 1}}},
)
SET_CURSOR = (
    'mutation C($s: SensorSelector!) { setSensorCursor(sensorSelector: $s, cursor: "1") '
    "{ __typename } }",
    {"s": {**SELECTOR, "sensorName": "audit_trail"}},
)
SIGNOUT = "document.getElementById('dataflare-signout')"


@dataclass
class DirectoryFront:
    """The running ``dataflare ui``; ``restart`` stops it and starts it again on the same
    home and port (a new process: nothing in memory survives)."""

    port: int
    project: ProjectHome
    command: list[str]
    env: dict[str, str]
    root: Path
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log_path = self.root / "ui.log"
        with log_path.open("a") as log:
            self.proc = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=self.env,
                start_new_session=True,
            )
        wait_until_serving(self.proc, self.port, log_path, "dataflare ui", 300, "/healthz")

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, 120)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def audit(self) -> list:
        from dataflare_platform.compliance.audit import AuditLog
        from dataflare_platform.compliance.audit_keys import AuditSettings

        with AuditLog(AuditSettings.resolve(home=self.project.root).url) as log:
            return log.tail(100_000)


@pytest.fixture(scope="module")
def front(tmp_path_factory) -> Iterator[DirectoryFront]:
    root = tmp_path_factory.mktemp("ldap-browser")
    with running_slapd(root / "slapd") as slapd:
        project = ProjectHome.resolve(root / "home").ensure()
        assert bootstrap(project.root) is not None
        config = root / "login.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "ldap": {
                        "url": slapd.url,
                        "bind_dn": SERVICE_DN,
                        "bind_password": {"env": SERVICE_ENV},
                        "user_base_dn": slapd.people(),
                        "group_base_dn": slapd.groups(),
                        "group_roles": {f"cn=analysts,{slapd.groups()}": ["launcher"]},
                        "timeout_seconds": 30,
                    }
                }
            )
        )
        port = free_port()
        dataflare = Path(sys.executable).with_name("dataflare")
        command = [str(dataflare), "ui", "--home", str(project.root), "--port", str(port)]
        command += ["--login-config", str(config)]
        env = {**os.environ, **project.environ(), SERVICE_ENV: SERVICE_PASSWORD}
        live = DirectoryFront(port, project, command, env, root)
        try:
            live.start()
            yield live
        finally:
            live.stop()


@pytest.fixture
def browser(tmp_path) -> Iterator[DevToolsChromium]:
    chromium = DevToolsChromium(chromium_binary(), tmp_path / "profile")
    try:
        chromium.call("Page.enable")
        yield chromium
    finally:
        chromium.close()


def _fill_directory_form(browser: DevToolsChromium, base: str, user: str, password: str) -> None:
    browser.call("Page.navigate", url=f"{base}/runs")
    browser.wait_for("location.pathname === '/login' && !!document.forms[0]")
    browser.js(
        "(() => { const f = document.forms[0]; f.provider.value = 'ldap';"
        f" f.username.value = {json.dumps(user)};"
        f" f.password.value = {json.dumps(password)}; f.submit(); }})()"
    )


def _graphql(browser: DevToolsChromium, request: tuple[str, dict]) -> dict:
    """A GraphQL POST from the UI page (its wrapped fetch adds the session's CSRF token)."""
    query, variables = request
    body = json.dumps({"query": query, "variables": variables})
    return browser.js(
        "fetch('/graphql', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        f" body: {json.dumps(body)}}}).then(r => r.json())"
    )


def _screenshot(browser: DevToolsChromium, name: str) -> None:
    time.sleep(2)  # let the page finish rendering before the picture
    browser.screenshot(ARTIFACTS / "ui" / name)


def _session_cookie(browser: DevToolsChromium, base: str) -> str:
    cookies = browser.call("Network.getCookies", urls=[base])["cookies"]
    session = next(c for c in cookies if c["name"] == "dataflare_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    return session["value"]


def test_a_directory_user_signs_in_with_the_role_of_their_group(front, browser):
    _fill_directory_form(browser, front.base, "bob", PASSWORDS["bob"])
    browser.wait_for("location.pathname === '/runs' && document.body.innerText.includes('Runs')")
    browser.wait_for(f"!!{SIGNOUT}")
    assert browser.js(f"{SIGNOUT}.title") == "signed in as user:ldap/bob"
    # bob is in "analysts", mapped to launcher: a launch passes the front (Dagster then
    # refuses its config, so no run starts), a cursor change (editor) is refused.
    launched = _graphql(browser, LAUNCH)
    assert launched["data"]["launchRun"]["__typename"] == "RunConfigValidationInvalid", launched
    refused = _graphql(browser, SET_CURSOR)
    assert refused["errors"][0]["extensions"]["permission"] == "set_cursor", refused
    assert "user:ldap/bob" in refused["errors"][0]["message"]
    browser.wait_for(f"!!{browser.SKIP_BUTTON}")  # Dagster's first-visit dialog
    assert browser.dismiss_first_visit_dialog()  # setNuxSeen: a view-level mutation
    _screenshot(browser, "front-ldap-signed-in.png")
    entries = front.audit()
    login = next(e for e in reversed(entries) if e.action == "login")
    assert login.actor == "user:ldap/bob" and login.payload()["via"] == "ldap"
    assert any(
        e.actor == "user:ldap/bob"
        and e.action == "access_allowed"
        and e.payload()["action"] == "launch"
        for e in entries
    )


def test_a_wrong_directory_password_shows_the_error_page(front, browser):
    _fill_directory_form(browser, front.base, "bob", "not-bobs-password")
    browser.wait_for("!!document.querySelector('p.error')")
    assert browser.js("location.pathname") == "/login"
    shown = browser.js("document.querySelector('p.error').innerText")
    assert shown == "invalid user name or password"
    assert browser.js("document.forms[0].provider.value") == "ldap"  # still the directory
    _screenshot(browser, "front-ldap-refused.png")
    # An unknown user reads the same line.
    _fill_directory_form(browser, front.base, "mallory", "anything-at-all")
    browser.wait_for("!!document.querySelector('p.error')")
    assert browser.js("document.querySelector('p.error').innerText") == shown
    failed = [e for e in front.audit() if e.action == "login_failed"]
    assert {e.subject for e in failed} >= {"user:ldap/bob", "user:ldap/mallory"}
    cookies = browser.call("Network.getCookies", urls=[front.base])["cookies"]
    assert not any(c["name"] == "dataflare_session" for c in cookies)


def test_the_session_outlasts_a_restart_of_the_front_and_sign_out_ends_it(front, browser):
    _fill_directory_form(browser, front.base, "alice", PASSWORDS["alice"])
    browser.wait_for(f"location.pathname === '/runs' && !!{SIGNOUT}")
    session_id = _session_cookie(browser, front.base)
    front.restart()  # a new process: only the home's session table carries the sign-in
    browser.call("Page.navigate", url=f"{front.base}/runs")
    browser.wait_for(f"location.pathname === '/runs' && !!{SIGNOUT}")
    assert browser.js(f"{SIGNOUT}.title") == "signed in as user:ldap/alice"
    _screenshot(browser, "front-ldap-after-restart.png")
    # Sign out through the page (a POST with the session's CSRF token).
    browser.call("Page.navigate", url=f"{front.base}/logout")
    browser.wait_for("!!document.forms[0]")
    assert "Signed in as user:ldap/alice" in browser.js("document.body.innerText")
    _screenshot(browser, "front-ldap-sign-out.png")
    browser.js("document.forms[0].submit()")
    browser.wait_for("location.pathname === '/login'")
    replayed = requests.get(
        f"{front.base}/graphql",
        params={"query": "{ version }"},
        cookies={"dataflare_session": session_id},
        timeout=60,
    )
    assert replayed.status_code == 401
