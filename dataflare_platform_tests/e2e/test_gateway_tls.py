"""``dataflare ui --tls-cert/--tls-key``, the command itself as a process (so the options'
pass-through to the front is what is tested): it speaks HTTPS with a certificate from a
test CA made with openssl (the shared ``test_ca`` fixture), verified against that CA
only; the first start's admin signs in with password + TOTP, the session cookie is
Secure, and the service token queries GraphQL."""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import pyotp
import pytest
import requests

from dataflare_platform.gateway.process import free_port
from dataflare_platform.home import ProjectHome
from dataflare_platform_tests.e2e.conftest import stop_group, wait_until_serving

pytestmark = pytest.mark.e2e


STOP_CEILING_S = 300  # generous: the machine is shared


def _first_credentials(log: str) -> dict[str, str]:
    """What the first start printed once (the banner of ``print_first_credentials``)."""
    text = " ".join(log.split())
    found = {}
    for key, label in (
        ("user", "admin user:"),
        ("password", "admin password:"),
        ("totp", "TOTP secret:"),
        ("token", "service token:"),
    ):
        match = re.search(re.escape(label) + r" (\S+)", text)
        assert match, f"{label} not in the banner: {text[-2000:]}"
        found[key] = match.group(1)
    return found


def test_dataflare_ui_serves_https_with_the_given_certificate(tmp_path, test_ca):
    ca, cert, key = test_ca.ca, test_ca.server_cert, test_ca.server_key
    project = ProjectHome.resolve(tmp_path / "home").ensure()
    trust = ssl.create_default_context(cafile=str(ca))
    port, log_path = free_port(), tmp_path / "ui.log"
    dataflare = Path(sys.executable).with_name("dataflare")
    command = [str(dataflare), "ui", "--home", str(project.root), "--port", str(port)]
    command += ["--tls-cert", str(cert), "--tls-key", str(key)]
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg-config")}
    env = {k: v for k, v in env.items() if not k.startswith("DATAFLARE_AUDIT_")}
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=env,
            start_new_session=True,
        )
    try:
        wait_until_serving(
            proc, port, log_path, "dataflare ui", STOP_CEILING_S, scheme="https", context=trust
        )
        base = f"https://127.0.0.1:{port}"
        assert f"DataFlare UI on {base}" in " ".join(log_path.read_text().split())
        first = _first_credentials(log_path.read_text())
        _check_https(base, port, ca, first)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=STOP_CEILING_S) == 0, log_path.read_text()[-3000:]
    finally:
        stop_group(proc, 30)


def _check_https(base: str, port: int, ca: Path, first: dict[str, str]) -> None:
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
        headers={"Authorization": f"Bearer {first['token']}"},
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
            "username": first["user"],
            "password": first["password"],
            "provider": "local",
            "code": pyotp.TOTP(first["totp"]).now(),
        },
        headers={"Origin": base},
        allow_redirects=False,
        verify=str(ca),
        timeout=30,
    )
    assert signed_in.status_code == 303, signed_in.text
    cookie = next(
        c for c in signed_in.raw.headers.getlist("Set-Cookie") if c.startswith("dataflare_session=")
    )
    assert "Secure" in cookie and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    # The signed-in browser queries with its session: a read by GET, and a POST carrying
    # the CSRF token the front wrote into the UI page (as the page's own script sends it).
    read = browser.get(f"{base}/graphql", params={"query": "{ version }"}, verify=str(ca))
    assert read.status_code == 200 and read.json()["data"]["version"], read.text
    page = browser.get(f"{base}/", headers={"Accept": "text/html"}, verify=str(ca), timeout=60)
    token = re.search(r'var token=("[^"]+")', page.text)
    assert page.status_code == 200 and token, page.text[:2000]
    queried = browser.post(
        f"{base}/graphql",
        json={"query": "{ version }"},
        verify=str(ca),
        timeout=60,
        headers={"Origin": base, "x-dataflare-csrf": json.loads(token.group(1))},
    )
    assert queried.status_code == 200 and queried.json()["data"]["version"], queried.text
    # An http:// Origin is not this server's origin under TLS.
    foreign = requests.post(
        f"{base}/graphql",
        json={"query": "{ version }"},
        verify=str(ca),
        timeout=30,
        headers={
            "Authorization": f"Bearer {first['token']}",
            "Origin": f"http://127.0.0.1:{port}",
        },
    )
    assert foreign.status_code == 403
