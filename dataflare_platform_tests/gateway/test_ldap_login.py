"""Directory sign-in through the front's login form: the form's ``provider=ldap`` binds
as the user at a real slapd (the identity tests' server on 127.0.0.1), and the session
carries the roles of the user's groups."""

from __future__ import annotations

import re

import pytest
import yaml

from dataflare_platform_tests.gateway.conftest import BASE, Front
from dataflare_platform_tests.identity.slapd_server import (
    PASSWORDS,
    REQUIRES_SLAPD,
    Slapd,
)

pytestmark = REQUIRES_SLAPD


@pytest.fixture
def directory_front(front: Front, slapd: Slapd, tmp_path) -> Front:
    from dataflare_platform.gateway.serve import build_front
    from dataflare_platform.gateway.settings import FrontSettings

    config = tmp_path / "login.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "ldap": {
                    "url": slapd.url,
                    "user_dn_template": f"uid={{username}},{slapd.people()}",
                    "group_base_dn": slapd.groups(),
                    "group_roles": {f"cn=analysts,{slapd.groups()}": ["launcher"]},
                    "timeout_seconds": 30,
                }
            }
        )
    )
    app = build_front(
        front.webserver_app, FrontSettings(port=3000), front.project, front.instance, config
    )
    return Front(
        app, front.project, front.tokens, front.totp_secret, front.instance, front.webserver_app
    )


def _sign_in(client, user: str, password: str):
    form = client.get("/login")
    assert 'value="ldap"' in form.text  # the form offers the directory
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    return client.post(
        "/login",
        data={
            "csrf": csrf,
            "next": "/",
            "username": user,
            "password": password,
            "provider": "ldap",
        },
        headers={"Origin": BASE},
        follow_redirects=False,
    )


def test_a_directory_user_signs_in_with_the_roles_of_their_groups(directory_front: Front):
    client = directory_front.client()
    assert _sign_in(client, "bob", PASSWORDS["bob"]).status_code == 303
    page = client.get("/logout")
    assert "user:ldap/bob" in page.text
    login = next(e for e in reversed(directory_front.audit_entries()) if e.action == "login")
    assert login.actor == "user:ldap/bob" and login.payload()["via"] == "ldap"


def test_a_wrong_directory_password_is_refused_and_audited(directory_front: Front):
    client = directory_front.client()
    refused = _sign_in(client, "bob", "not-bobs-password")
    assert refused.status_code == 401
    assert client.get("/graphql", params={"query": "{ version }"}).status_code == 401
    failed = next(
        e for e in reversed(directory_front.audit_entries()) if e.action == "login_failed"
    )
    assert failed.subject == "user:ldap/bob" and failed.payload()["via"] == "ldap"
