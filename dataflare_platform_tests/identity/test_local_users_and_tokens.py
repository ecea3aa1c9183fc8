"""Local users and service tokens on a real identity store under a home."""

from __future__ import annotations

import stat

import pyotp
import pytest

from dataflare_platform.errors import AuthenticationError, InvalidInputError, NotFoundError
from dataflare_platform.identity.bootstrap import bootstrap
from dataflare_platform.identity.local_users import LocalUsers
from dataflare_platform.identity.store import IdentityStore
from dataflare_platform.identity.tokens import ServiceTokens

PASSWORD = "a long enough password"


@pytest.fixture
def store(home) -> IdentityStore:
    return IdentityStore(home.root)


def test_the_store_is_owner_only_and_holds_no_secret_in_clear(store, home):
    users, tokens = LocalUsers(store), ServiceTokens(store)
    users.add("carol", PASSWORD, frozenset({"editor"}))
    _, token = tokens.create("ci", frozenset({"viewer"}))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    raw = store.path.read_bytes()
    assert PASSWORD.encode() not in raw and token.split("_", 2)[2].encode() not in raw
    assert b"$argon2id$" in raw


def test_a_password_logs_in_and_a_wrong_one_or_name_does_not(store):
    users = LocalUsers(store)
    assert users.add("carol", PASSWORD, frozenset({"editor"})) is None
    principal = users.authenticate("carol", PASSWORD, None)
    assert principal.id == "user:carol" and principal.roles == {"editor"}
    assert principal.via == "local"
    for name, password in (("carol", PASSWORD + "x"), ("nobody", PASSWORD)):
        with pytest.raises(AuthenticationError):
            users.authenticate(name, password, None)
    users.set_password("carol", "another long password")
    with pytest.raises(AuthenticationError):
        users.authenticate("carol", PASSWORD, None)
    users.remove("carol")
    with pytest.raises(NotFoundError):
        users.remove("carol")


def test_an_admin_always_has_a_second_factor(store):
    users = LocalUsers(store)
    secret = users.add("root-ish", PASSWORD, frozenset({"admin"}))
    assert secret is not None
    with pytest.raises(AuthenticationError):
        users.authenticate("root-ish", PASSWORD, None)
    with pytest.raises(AuthenticationError):
        users.authenticate(
            "root-ish", PASSWORD, "000000" if pyotp.TOTP(secret).now() != "000000" else "111111"
        )
    assert users.authenticate("root-ish", PASSWORD, pyotp.TOTP(secret).now()).roles == {"admin"}


def test_bad_names_roles_and_short_passwords_are_refused(store):
    users = LocalUsers(store)
    for name, roles, password in (
        ("../etc", {"viewer"}, PASSWORD),
        ("dave", {"root"}, PASSWORD),
        ("dave", set(), PASSWORD),
        ("dave", {"viewer"}, "short"),
    ):
        with pytest.raises(InvalidInputError):
            users.add(name, password, frozenset(roles))
    users.add("dave", PASSWORD, frozenset({"viewer"}))
    with pytest.raises(InvalidInputError):
        users.add("dave", PASSWORD, frozenset({"viewer"}))


def test_a_token_authenticates_until_revoked(store):
    tokens = ServiceTokens(store)
    token_id, token = tokens.create("ci", frozenset({"launcher"}))
    principal = tokens.authenticate(token)
    assert principal.id == "service:ci" and principal.via == "token"
    assert principal.roles == {"launcher"}
    for forged in (
        token[:-1] + ("A" if token[-1] != "A" else "B"),
        "dft_" + token_id + "_x",
        "",
        "x",
    ):
        with pytest.raises(AuthenticationError):
            tokens.authenticate(forged)
    tokens.revoke(token_id)
    with pytest.raises(AuthenticationError):
        tokens.authenticate(token)
    assert tokens.list()[0]["revoked_at"]
    with pytest.raises(NotFoundError):
        tokens.revoke(token_id)


def test_bootstrap_creates_credentials_once_and_keeps_the_token_0600(home):
    first = bootstrap(home.root)
    assert first is not None
    assert first.token_file.read_text().strip() == first.token
    assert stat.S_IMODE(first.token_file.stat().st_mode) == 0o600
    store = IdentityStore(home.root)
    assert ServiceTokens(store).authenticate(first.token).id == "service:dataflare-cli"
    code = pyotp.TOTP(first.admin_totp_secret).now()
    assert LocalUsers(store).authenticate("admin", first.admin_password, code).roles == {"admin"}
    assert bootstrap(home.root) is None  # never shown again


def test_admin_is_granted_only_to_an_account_with_a_second_factor(store):
    users = LocalUsers(store)
    users.add("hal", PASSWORD, frozenset({"editor"}))
    with pytest.raises(InvalidInputError, match="second factor"):
        users.set_roles("hal", frozenset({"admin"}))
    secret = users.add("ida", PASSWORD, frozenset({"viewer"}), totp=True)
    users.set_roles("ida", frozenset({"admin"}))
    assert users.current("ida").roles == {"admin"}
    assert users.authenticate("ida", PASSWORD, pyotp.TOTP(secret).now()).roles == {"admin"}
    with pytest.raises(NotFoundError):
        users.set_roles("nobody", frozenset({"viewer"}))
    assert users.current("nobody") is None


def test_plugin_roles_are_assignable_and_a_publisher_needs_a_namespace() -> None:
    from dataflare_platform.identity.store import check_roles

    assert check_roles({"publisher@acme", "reviewer", "operator", "viewer"}) == frozenset(
        {"publisher@acme", "reviewer", "operator", "viewer"}
    )
    for bad in ("publisher", "publisher@Acme", "reviewer@acme", "owner"):
        with pytest.raises(InvalidInputError, match="publisher@<namespace>"):
            check_roles({bad})
