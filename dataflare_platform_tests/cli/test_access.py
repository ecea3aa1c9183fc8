"""``dataflare users`` and ``dataflare tokens`` on a real home."""

from __future__ import annotations

from typer.testing import CliRunner

from dataflare_platform.cli import app
from dataflare_platform.identity.local_users import LocalUsers
from dataflare_platform.identity.store import IdentityStore
from dataflare_platform.identity.tokens import ServiceTokens

runner = CliRunner()


def test_users_add_list_passwd_remove(home, monkeypatch):
    root = str(home.root)
    monkeypatch.setenv("DATAFLARE_PASSWORD", "first long password")
    added = runner.invoke(app, ["users", "add", "erin", "--role", "launcher", "--home", root])
    assert added.exit_code == 0, added.output
    listing = runner.invoke(app, ["users", "list", "--json", "--home", root])
    assert '"erin"' in listing.stdout and "first long password" not in listing.stdout
    monkeypatch.setenv("DATAFLARE_PASSWORD", "second long password")
    assert runner.invoke(app, ["users", "passwd", "erin", "--home", root]).exit_code == 0
    users = LocalUsers(IdentityStore(home.root))
    assert users.authenticate("erin", "second long password", None).id == "user:erin"
    assert runner.invoke(app, ["users", "remove", "erin", "--home", root]).exit_code == 0
    assert users.list() == []


def test_a_password_typed_at_the_prompt_must_be_repeated(home, monkeypatch):
    monkeypatch.delenv("DATAFLARE_PASSWORD", raising=False)
    args = ["users", "add", "fay", "--role", "viewer", "--home", str(home.root)]
    differ = runner.invoke(app, args, input="one long password\ntwo long password\n")
    assert differ.exit_code == 2 and "differ" in differ.output
    same = runner.invoke(app, args, input="one long password\none long password\n")
    assert same.exit_code == 0, same.output


def test_an_admin_gets_a_totp_secret_and_a_bad_role_is_refused_before_any_prompt(home):
    root = str(home.root)
    bad = runner.invoke(app, ["users", "add", "g", "--role", "root", "--home", root], input="")
    assert bad.exit_code == 2 and "roles must be" in bad.output
    admin = runner.invoke(
        app, ["users", "add", "gus", "--role", "admin", "--home", root],
        env={"DATAFLARE_PASSWORD": "an admin's long password"},
    )  # fmt: skip
    assert admin.exit_code == 0 and "otpauth://totp/" in admin.stdout


def test_tokens_create_list_revoke(home):
    root = str(home.root)
    created = runner.invoke(app, ["tokens", "create", "ci", "--role", "viewer", "--home", root])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    tokens = ServiceTokens(IdentityStore(home.root))
    assert tokens.authenticate(token).id == "service:ci"
    listing = runner.invoke(app, ["tokens", "list", "--json", "--home", root])
    assert token not in listing.stdout
    token_id = tokens.list()[0]["id"]
    assert runner.invoke(app, ["tokens", "revoke", token_id, "--home", root]).exit_code == 0
    again = runner.invoke(app, ["tokens", "revoke", token_id, "--home", root])
    assert again.exit_code == 2
