"""Single sign-on in a real browser: headless Chromium opens the real ``dataflare ui``
(started with ``--login-config``), is sent to a real OpenID provider (the identity tests'
authlib provider on 127.0.0.1), comes back to the front's callback and lands in the UI
signed in, under the browser's own cookie rules (SameSite)."""

from __future__ import annotations

import base64
import html
import os
import time
from pathlib import Path

import pytest
import requests
import yaml

from dataflare_platform.gateway.process import free_port
from dataflare_platform.home import ProjectHome
from dataflare_platform.identity.bootstrap import bootstrap
from dataflare_platform_tests.browser import DevToolsChromium, chromium_binary
from dataflare_platform_tests.e2e.conftest import serving_front
from dataflare_platform_tests.e2e.test_attacks_gateway import ARTIFACTS
from dataflare_platform_tests.identity.oidc_provider import (
    CLIENT_ID,
    CLIENT_SECRET,
    Client,
    running_provider,
)

pytestmark = pytest.mark.e2e
SECRET_ENV = "DATAFLARE_TEST_SSO_SECRET"


def test_a_browser_signs_in_through_the_openid_provider(tmp_path):
    project = ProjectHome.resolve(tmp_path / "home").ensure()
    assert bootstrap(project.root) is not None
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running_provider() as provider:
        provider.client = Client(redirect_uris=(f"{base}/login/oidc/callback",))
        # Another site than the front's (127.0.0.1 and localhost are different sites; ports
        # do not count): the way back from the provider is a cross-site navigation.
        provider.base_url = provider.base_url.replace("127.0.0.1", "localhost")
        config = tmp_path / "login.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "oidc": {
                        "issuer": provider.base_url,
                        "client_id": CLIENT_ID,
                        "client_secret": {"env": SECRET_ENV},
                        "redirect_uri": f"{base}/login/oidc/callback",
                        "group_roles": {"data-admins": ["admin"]},
                        "timeout_seconds": 30,
                    }
                }
            )
        )
        with serving_front(
            project,
            tmp_path / "ui.log",
            port=port,
            daemon=False,
            login_config=config,
            env={**os.environ, SECRET_ENV: CLIENT_SECRET},
        ):
            _sign_in_through_the_provider(tmp_path, base, provider)


def _sign_in_through_the_provider(tmp_path: Path, base: str, provider) -> None:
    """Chromium signs in at the provider and lands in the UI (the front serves)."""
    browser = None
    try:
        browser = DevToolsChromium(chromium_binary(), tmp_path / "profile")
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"{base}/login")
        browser.wait_for("!!document.querySelector('a.provider')")
        browser.js("document.querySelector('a.provider').href = '/login/oidc?next=/runs'")
        # The provider's login page, as a browser meets it: a page of the provider's
        # origin that sends the browser back to the front (a cross-site navigation, so
        # the browser applies SameSite rules to the front's cookies). Its answer is the
        # provider's own: the authorization request, approved for alice, yields the
        # callback URL the page navigates to.
        browser.call("Fetch.enable", patterns=[{"urlPattern": f"{provider.base_url}/authorize*"}])
        browser.js("document.querySelector('a.provider').click()")
        paused = browser.wait_event("Fetch.requestPaused")
        approved = requests.get(
            paused["request"]["url"] + "&test_user=alice", allow_redirects=False, timeout=30
        )
        assert approved.status_code == 302, approved.text
        callback = approved.headers["Location"]
        refresh = f'<meta http-equiv="refresh" content="0;url={html.escape(callback)}">'
        page = f"<!doctype html>{refresh}<p>Signing you in...</p>"
        browser.send(
            "Fetch.fulfillRequest",
            requestId=paused["requestId"],
            responseCode=200,
            responseHeaders=[{"name": "Content-Type", "value": "text/html"}],
            body=base64.b64encode(page.encode()).decode(),
        )
        browser.wait_for(
            "location.origin + location.pathname === "
            f"'{base}/runs' && document.body.innerText.includes('Runs')"
        )
        cookies = browser.call("Network.getCookies", urls=[base])["cookies"]
        assert any(c["name"] == "dataflare_session" and c["sameSite"] == "Strict" for c in cookies)
        status = browser.js(
            "fetch('/graphql', {method: 'POST', headers: {'Content-Type': "
            "'application/json'}, body: JSON.stringify({query: '{ version }'})})"
            ".then(r => r.status)"
        )
        assert status == 200
        time.sleep(2)
        browser.screenshot(ARTIFACTS / "ui" / "front-sso-signed-in.png")
    finally:
        if browser is not None:
            browser.close()
