"""The front with ``--tls-cert/--tls-key`` (what ``dataflare ui`` passes it; started by the
shared helper, without a daemon): it speaks HTTPS with a certificate from the shared
test CA (``tls_ca``, made with openssl), and its session cookie is Secure."""

from __future__ import annotations

import re
import ssl

import pyotp
import pytest
import requests

from dataflare_platform.home import ProjectHome
from dataflare_platform_tests.e2e.conftest import serving_front

pytestmark = pytest.mark.e2e


def test_the_front_serves_https_and_sets_secure_cookies(tmp_path, test_ca):
    ca, cert, key = test_ca.ca, test_ca.server_cert, test_ca.server_key
    project = ProjectHome.resolve(tmp_path / "home").ensure()
    trust = ssl.create_default_context(cafile=str(ca))
    with serving_front(
        project, tmp_path / "ui.log", daemon=False, tls=(cert, key), trust=trust
    ) as front:
        first = front.first
        assert first is not None
        port, base = front.port, front.base_url
        assert base == f"https://127.0.0.1:{port}"
        # Only the test CA makes it trusted; plain HTTP on the port is no way in.
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{base}/healthz", timeout=30)
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
        answer = requests.post(
            f"{base}/graphql",
            json={"query": "{ version }"},
            verify=str(ca),
            timeout=60,
            headers={"Authorization": f"Bearer {first.token}"},
        )
        assert answer.status_code == 200 and answer.json()["data"]["version"]
        browser = requests.Session()
        form = browser.get(f"{base}/login", verify=str(ca), timeout=30)
        assert "Secure" in form.headers["set-cookie"]
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        signed_in = browser.post(
            f"{base}/login",
            data={
                "csrf": csrf,
                "next": "/",
                "username": first.admin_name,
                "password": first.admin_password,
                "provider": "local",
                "code": pyotp.TOTP(first.admin_totp_secret).now(),
            },
            headers={"Origin": base},
            allow_redirects=False,
            verify=str(ca),
            timeout=30,
        )
        assert signed_in.status_code == 303, signed_in.text
        cookie = next(
            c
            for c in signed_in.raw.headers.getlist("Set-Cookie")
            if c.startswith("dataflare_session=")
        )
        assert "Secure" in cookie and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
        # An http:// Origin is not this server's origin under TLS.
        foreign = requests.post(
            f"{base}/graphql",
            json={"query": "{ version }"},
            verify=str(ca),
            timeout=30,
            headers={
                "Authorization": f"Bearer {first.token}",
                "Origin": f"http://127.0.0.1:{port}",
            },
        )
        assert foreign.status_code == 403
