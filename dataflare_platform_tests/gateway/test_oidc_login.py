"""Single sign-on through the front: the front's /login/oidc sends the browser to a real
OpenID provider (the identity tests' authlib provider on 127.0.0.1), the provider sends
it back to /login/oidc/callback, and the front's session carries the principal the ID
token names, with roles from its groups."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests
import yaml

from dataflare_platform.errors import ConfigError
from dataflare_platform_tests.gateway.conftest import BASE, Front
from dataflare_platform_tests.identity.oidc_provider import (
    CLIENT_ID,
    CLIENT_SECRET,
    Client,
    LocalProvider,
    running_provider,
)

CALLBACK = f"{BASE}/login/oidc/callback"
SECRET_ENV = "DATAFLARE_TEST_FRONT_OIDC_SECRET"


@pytest.fixture(scope="module")
def provider() -> Iterator[LocalProvider]:
    with running_provider() as running:
        running.client = Client(redirect_uris=(CALLBACK,))
        yield running


def _login_config(tmp_path, provider: LocalProvider, redirect_uri: str = CALLBACK):
    path = tmp_path / "login.yaml"
    oidc = {
        "issuer": provider.base_url,
        "client_id": CLIENT_ID,
        "client_secret": {"env": SECRET_ENV},
        "redirect_uri": redirect_uri,
        "group_roles": {"data-admins": ["admin"], "analysts": ["viewer"]},
        "timeout_seconds": 30,
    }
    path.write_text(yaml.safe_dump({"oidc": oidc}))
    return path


@pytest.fixture
def sso_front(front: Front, provider, tmp_path, monkeypatch):
    from dataflare_platform.gateway.serve import build_front
    from dataflare_platform.gateway.settings import FrontSettings

    monkeypatch.setenv(SECRET_ENV, CLIENT_SECRET)
    config = _login_config(tmp_path, provider)
    app = build_front(
        front.webserver_app, FrontSettings(port=3000), front.project, front.instance, config
    )
    return Front(
        app, front.project, front.tokens, front.totp_secret, front.instance, front.webserver_app
    )


def _sign_in(client, user: str):
    start = client.get("/login/oidc?next=/runs", follow_redirects=False)
    assert start.status_code == 303
    # The flow cookie must come back on the provider's cross-site redirect: Lax, scoped.
    flow = start.headers["set-cookie"].lower()
    assert flow.startswith("dataflare_sso=") and "samesite=lax" in flow and "httponly" in flow
    assert "path=/login/oidc" in flow
    at_provider = requests.get(
        start.headers["location"] + f"&test_user={user}", allow_redirects=False, timeout=30
    )
    assert at_provider.status_code == 302, at_provider.text
    back = urlsplit(at_provider.headers["Location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == CALLBACK
    return client.get(f"{back.path}?{back.query}", follow_redirects=False)


def test_the_login_page_offers_single_sign_on_and_a_login_lands_in_a_session(sso_front):
    client = sso_front.client()
    assert "/login/oidc" in client.get("/login").text
    done = _sign_in(client, "alice")
    # A same-site hop to the target (a 303 would stay cross-site and the browser would
    # hold back the Strict session cookie on the next page).
    assert done.status_code == 200 and 'content="0;url=/runs"' in done.text
    session = next(c for c in done.headers.get_list("set-cookie") if "dataflare_session=" in c)
    assert "samesite=strict" in session.lower()
    answer = client.get("/graphql", params={"query": "{ version }"})
    assert answer.status_code == 200 and answer.json()["data"]["version"]
    login = next(e for e in reversed(sso_front.audit_entries()) if e.action == "login")
    assert login.actor == "user:oidc/alice" and login.payload()["via"] == "oidc"


def test_a_replayed_or_foreign_callback_is_refused(sso_front):
    client = sso_front.client()
    start = client.get("/login/oidc", follow_redirects=False)
    at_provider = requests.get(
        start.headers["location"] + "&test_user=bob", allow_redirects=False, timeout=30
    )
    back = urlsplit(at_provider.headers["Location"])
    # Another browser (no flow cookie) cannot complete this login.
    stranger = sso_front.client()
    assert stranger.get(f"{back.path}?{back.query}").status_code == 400
    ok = client.get(f"{back.path}?{back.query}", follow_redirects=False)
    assert ok.status_code == 200 and "Signed in" in ok.text
    # The flow is taken once: the same callback again is refused.
    again = client.get(f"{back.path}?{back.query}", follow_redirects=False)
    assert again.status_code == 400


def test_a_redirect_uri_elsewhere_than_the_front_callback_fails_at_start(
    front, provider, tmp_path, monkeypatch
):
    from dataflare_platform.gateway.serve import build_front
    from dataflare_platform.gateway.settings import FrontSettings

    monkeypatch.setenv(SECRET_ENV, CLIENT_SECRET)
    config = _login_config(tmp_path, provider, redirect_uri=f"{BASE}/oidc/callback")
    with pytest.raises(ConfigError, match="redirect_uri"):
        build_front(front.webserver_app, FrontSettings(port=3000), front.project, None, config)
