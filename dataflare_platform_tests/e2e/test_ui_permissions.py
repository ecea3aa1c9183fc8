"""The Dagster UI shows what the signed-in person may do, in a real headless Chromium on a
real ``dataflare ui`` (front, webserver app, daemon, code server): a viewer's Materialize
button and sensor switch are disabled with the reason, an admin's are enabled. The reasons
come from the Cedar policy through Dagster's own permission fields (``ui_permissions.py``).
Screenshots go to test-artifacts/ui/."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest

from dataflare_platform.gateway.process import free_port
from dataflare_platform.home import LOCATION_NAME, ProjectHome
from dataflare_platform.identity.local_users import LocalUsers
from dataflare_platform.identity.store import IdentityStore
from dataflare_platform_tests.browser import DevToolsChromium, chromium_binary
from dataflare_platform_tests.e2e.conftest import wait_until_serving

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(
    os.environ.get(
        "DATAFLARE_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"
    )
)
PASSWORD = "a password of some length"
ASSET_PATH = "/assets/nexmark/bids"
SENSOR_PATH = f"/locations/{LOCATION_NAME}/sensors/audit_trail"
# The Materialize button of the asset page (the first button whose text starts so).
MATERIALIZE = (
    "[...document.querySelectorAll('button')]"
    ".find(b => b.innerText.trim().startsWith('Materialize'))"
)
SENSOR_SWITCH = "document.querySelector('input[type=checkbox]')"
JOB_PATH = f"/locations/{LOCATION_NAME}/jobs/audit_checkpoint_job"
PERMISSIONS_FETCH = """
fetch('/graphql', {method: 'POST', headers: {'Content-Type': 'application/json'},
  body: JSON.stringify({query: `{ permissions { permission value disabledReason }
    locationStatusesOrError { ... on WorkspaceLocationStatusEntries {
      entries { name permissions { permission value disabledReason } } } } }`})})
  .then(r => r.json())
"""


@dataclass
class LiveUI:
    port: int
    project: ProjectHome
    admin_totp: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[LiveUI]:
    root = tmp_path_factory.mktemp("ui-permissions")
    project = ProjectHome.resolve(root / "home").ensure()
    users = LocalUsers(IdentityStore(project.root))
    users.add("vera", PASSWORD, frozenset({"viewer"}))
    secret = users.add("ada", PASSWORD, frozenset({"admin"}))
    assert secret is not None
    port = free_port()
    log_path = root / "ui.log"
    dataflare = Path(sys.executable).with_name("dataflare")
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(dataflare), "ui", "--home", str(project.root), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            env={**os.environ, **project.environ()},
            start_new_session=True,
        )
    try:
        wait_until_serving(proc, port, log_path, "dataflare ui", ceiling_s=300, path="/healthz")
        yield LiveUI(port, project, secret)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def browser(tmp_path) -> Iterator[DevToolsChromium]:
    opened = DevToolsChromium(chromium_binary(), tmp_path / "profile", window="1400,900")
    try:
        yield opened
    finally:
        opened.close()


def _open(browser: DevToolsChromium, url: str, ready: str) -> None:
    browser.call("Page.navigate", url=url)
    browser.wait_for(ready, 120)
    # Dagster's first-visit dialog comes a moment after the page: give it a few seconds.
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and not browser.dismiss_first_visit_dialog():
        time.sleep(0.5)


def _hover(browser: DevToolsChromium, element: str) -> None:
    """Move the mouse over ``element`` (a JS expression) as a person would."""
    box = browser.js(
        f"(() => {{ const r = ({element}).getBoundingClientRect();"
        " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
    )
    x, y = box
    browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=x - 40, y=y - 40)
    browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)


def _tooltip_shows(browser: DevToolsChromium, text: str) -> bool:
    """True once a tooltip (Dagster's portal) shows ``text``; retries the hover."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        shown = browser.js(
            "[...document.querySelectorAll('[role=tooltip], [class*=tooltip], [class*=Tooltip]')]"
            f".some(t => t.innerText.includes({json.dumps(text)}))"
        )
        if shown:
            return True
        time.sleep(0.5)
    return False


def _permissions(browser: DevToolsChromium) -> tuple[dict, dict]:
    # The UI page's script (which adds the session's CSRF token to its requests) has run.
    browser.wait_for("!!document.getElementById('dataflare-signout')", 120)
    body = browser.js(PERMISSIONS_FETCH)
    assert body and "errors" not in body, body
    unscoped = {p["permission"]: p for p in body["data"]["permissions"]}
    (entry,) = [
        e for e in body["data"]["locationStatusesOrError"]["entries"] if e["name"] == LOCATION_NAME
    ]
    return unscoped, {p["permission"]: p for p in entry["permissions"]}


def test_a_viewer_sees_launch_buttons_and_the_sensor_switch_disabled_with_the_reason(
    live: LiveUI, browser: DevToolsChromium
):
    folder = ARTIFACTS / "ui"
    browser.sign_in(live.base, "vera", PASSWORD)
    # What the UI itself asked for and got, in the signed-in page.
    unscoped, here = _permissions(browser)
    launch = here["launch_pipeline_execution"]
    assert launch["value"] is False
    assert launch["disabledReason"].startswith(
        f"Needs permission 'launch' (role launcher) in location '{LOCATION_NAME}'"
    ), launch
    assert "user:vera" in launch["disabledReason"]
    assert unscoped["launch_pipeline_execution"]["value"] is False

    _open(browser, live.base + ASSET_PATH, f"!!{MATERIALIZE}")
    browser.wait_for(f"{MATERIALIZE}.disabled", 60)
    _hover(browser, MATERIALIZE)
    # The asset button's tooltip is Dagster's own text for a denied asset permission.
    assert _tooltip_shows(browser, "You do not have permission to materialize")
    browser.screenshot(folder / "permissions-viewer-asset.png")

    # The sensor switch shows the policy's reason (Dagster reads the location's reasons).
    _open(browser, live.base + SENSOR_PATH, f"!!{SENSOR_SWITCH}")
    browser.wait_for(f"{SENSOR_SWITCH}.disabled", 60)
    _hover(browser, SENSOR_SWITCH)
    assert _tooltip_shows(browser, "Needs permission 'toggle_automation' (role editor)")
    browser.screenshot(folder / "permissions-viewer-sensor.png")
    assert (folder / "permissions-viewer-sensor.png").stat().st_size > 10_000

    # A job's page: its launch button (Materialize, for an asset job) is disabled.
    _open(browser, live.base + JOB_PATH, f"!!{MATERIALIZE}")
    browser.wait_for(f"{MATERIALIZE}.disabled", 60)
    _hover(browser, MATERIALIZE)
    assert _tooltip_shows(browser, "You do not have permission to materialize")
    browser.screenshot(folder / "permissions-viewer-job.png")


def test_an_admin_sees_them_enabled(live: LiveUI, browser: DevToolsChromium):
    folder = ARTIFACTS / "ui"
    browser.sign_in(live.base, "ada", PASSWORD, pyotp.TOTP(live.admin_totp).now())
    unscoped, here = _permissions(browser)
    assert here["launch_pipeline_execution"]["value"] is True
    assert unscoped["launch_pipeline_execution"]["value"] is True
    assert all(p["value"] for p in here.values()), here

    _open(browser, live.base + ASSET_PATH, f"!!{MATERIALIZE}")
    browser.wait_for(f"!{MATERIALIZE}.disabled", 60)
    browser.screenshot(folder / "permissions-admin-asset.png")
    _open(browser, live.base + SENSOR_PATH, f"!!{SENSOR_SWITCH}")
    browser.wait_for(f"!{SENSOR_SWITCH}.disabled", 60)
    browser.screenshot(folder / "permissions-admin-sensor.png")
    assert (folder / "permissions-admin-sensor.png").stat().st_size > 10_000
    _open(browser, live.base + JOB_PATH, f"!!{MATERIALIZE}")
    browser.wait_for(f"!{MATERIALIZE}.disabled", 60)
    browser.screenshot(folder / "permissions-admin-job.png")
