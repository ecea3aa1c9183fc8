"""The front with ``--tls-cert/--tls-key`` (what ``dataflare ui`` passes it; started by the
shared helper, without a daemon): it speaks HTTPS with a certificate from a
test CA made here with openssl, and its session cookie is Secure."""

from __future__ import annotations

import re
import ssl
import subprocess
from pathlib import Path

import pyotp
import pytest
import requests

from dataflare_platform.home import ProjectHome
from dataflare_platform_tests.e2e.conftest import serving_front

pytestmark = pytest.mark.e2e


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_test_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signed for 127.0.0.1 and localhost."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=DataFlare test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        cwd=directory,
    )
    (directory / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
        cwd=directory,
    )
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


def test_the_front_serves_https_and_sets_secure_cookies(tmp_path):
    ca, cert, key = make_test_ca(tmp_path)
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
