"""LDAP login against a real OpenLDAP server (Debian's slapd, started by the fixture on
127.0.0.1 with its own config and data): binds, group → role mapping, and the inputs that
must be refused with one and the same message."""

from __future__ import annotations

import pytest

from dataflare_platform.errors import (
    ConfigError,
    IdentityProviderError,
    InvalidCredentialsError,
)
from dataflare_platform.identity.ldap import LdapDirectory, LdapSettings
from dataflare_platform_tests.identity.slapd_server import (
    PASSWORDS,
    REQUIRES_SLAPD,
    SERVICE_DN,
    SERVICE_PASSWORD,
    Slapd,
    operation_counts,
)

pytestmark = REQUIRES_SLAPD
SERVICE_ENV = "DATAFLARE_TEST_LDAP_BIND_PASSWORD"
INJECTIONS = ["*", ")(uid=*", "admin)(|(uid=*", "alice)(uid=*", "*)(objectClass=*", "alice\x00"]


def group_roles(slapd: Slapd) -> dict[str, list[str]]:
    # Spelt with spaces and capitals on purpose: DNs are compared normalized.
    return {
        f"CN=data-admins, {slapd.groups()}": ["admin"],
        f"cn=analysts,{slapd.groups()}": ["viewer", "launcher"],
    }


@pytest.fixture
def search_then_bind(slapd: Slapd, monkeypatch: pytest.MonkeyPatch) -> LdapDirectory:
    monkeypatch.setenv(SERVICE_ENV, SERVICE_PASSWORD)
    settings = LdapSettings.validated(
        {
            "url": slapd.url,
            "bind_dn": SERVICE_DN,
            "bind_password": {"env": SERVICE_ENV},
            "user_base_dn": slapd.people(),
            "group_base_dn": slapd.groups(),
            "group_roles": group_roles(slapd),
            "timeout_seconds": 30,
        },
        "LDAP settings",
    )
    return LdapDirectory(settings)


@pytest.fixture
def dn_template(slapd: Slapd) -> LdapDirectory:
    settings = LdapSettings.validated(
        {
            "url": slapd.url,
            "user_dn_template": f"uid={{username}},{slapd.people()}",
            "group_base_dn": slapd.groups(),
            "group_roles": group_roles(slapd),
            "timeout_seconds": 30,
        },
        "LDAP settings",
    )
    return LdapDirectory(settings)


@pytest.fixture(params=["search_then_bind", "dn_template"])
def directory(request: pytest.FixtureRequest) -> LdapDirectory:
    return request.getfixturevalue(request.param)


def test_the_right_password_yields_a_principal_with_roles_from_groups(
    directory: LdapDirectory,
) -> None:
    alice = directory.authenticate("alice", PASSWORDS["alice"])
    assert (alice.name, alice.kind, alice.via) == ("alice", "user", "ldap")
    assert alice.groups == {"data-admins", "analysts"}
    assert alice.roles == {"admin", "viewer", "launcher"}

    bob = directory.authenticate("bob", PASSWORDS["bob"])
    assert bob.groups == {"analysts"} and bob.roles == {"viewer", "launcher"}

    carol = directory.authenticate("carol", PASSWORDS["carol"])
    assert carol.groups == {"staff"} and carol.roles == frozenset()  # unmapped group


def test_the_principal_is_named_as_the_directory_spells_the_user(
    directory: LdapDirectory,
) -> None:
    """LDAP matches names without regard to case: "ALICE" binds as uid=alice, and the
    principal is "alice" (one person, one audit identity)."""
    assert directory.authenticate("ALICE", PASSWORDS["alice"]).name == "alice"


def test_a_name_with_dn_special_characters_is_escaped(directory: LdapDirectory) -> None:
    """``+`` joins RDN parts in a DN and must be escaped in the bind DN and in the group
    filter's member value; a wrong password for that user is still refused."""
    dave = directory.authenticate("dave+ops", PASSWORDS["dave+ops"])
    assert dave.name == "dave+ops" and dave.roles == {"viewer", "launcher"}
    _refused(directory, "dave+ops", PASSWORDS["alice"])


def _refused(directory: LdapDirectory, username: str, password: str) -> str:
    with pytest.raises(InvalidCredentialsError) as err:
        directory.authenticate(username, password)
    message = str(err.value)
    assert password == "" or password not in message
    return message


def test_wrong_password_unknown_user_and_empty_password_are_refused_alike(
    directory: LdapDirectory,
) -> None:
    messages = {
        _refused(directory, "alice", "wrong"),
        _refused(directory, "alice", PASSWORDS["bob"]),
        _refused(directory, "nobody", "anything"),
        _refused(directory, "alice", ""),  # an unauthenticated bind, if it were sent
        _refused(directory, "", PASSWORDS["alice"]),
    }
    assert messages == {"invalid user name or password"}


@pytest.mark.parametrize("username", INJECTIONS)
def test_filter_and_dn_injection_usernames_are_refused(
    directory: LdapDirectory, username: str
) -> None:
    # With alice's real password: an injected filter matching alice's entry must not log
    # anyone in.
    assert _refused(directory, username, PASSWORDS["alice"]) == "invalid user name or password"


def tls_directory(slapd: Slapd, **changes: object) -> LdapDirectory:
    settings: dict[str, object] = {
        "url": slapd.ldaps_url,
        "ca_file": str(slapd.ca_file),
        "user_dn_template": f"uid={{username}},{slapd.people()}",
        "group_base_dn": slapd.groups(),
        "group_roles": group_roles(slapd),
        "timeout_seconds": 30,
    }
    return LdapDirectory(LdapSettings.validated({**settings, **changes}, "LDAP settings"))


def test_ldaps_and_start_tls_verify_the_servers_certificate(slapd: Slapd) -> None:
    assert tls_directory(slapd).authenticate("alice", PASSWORDS["alice"]).roles == {
        "admin",
        "viewer",
        "launcher",
    }
    start_tls = tls_directory(slapd, url=slapd.url, start_tls=True)
    assert start_tls.authenticate("bob", PASSWORDS["bob"]).name == "bob"
    _refused(start_tls, "bob", "wrong")


@pytest.mark.parametrize("start_tls", [False, True], ids=["ldaps", "start-tls"])
def test_an_untrusted_or_misnamed_certificate_is_refused(slapd: Slapd, start_tls: bool) -> None:
    url = slapd.url if start_tls else slapd.ldaps_url
    # The system's CAs do not know the test CA.
    untrusted = tls_directory(slapd, url=url, start_tls=start_tls, ca_file=None)
    with pytest.raises(IdentityProviderError, match="not trusted") as err:
        untrusted.authenticate("alice", PASSWORDS["alice"])
    assert PASSWORDS["alice"] not in str(err.value)
    # The certificate names 127.0.0.1 only; "localhost" is another name.
    misnamed = tls_directory(slapd, url=url.replace("127.0.0.1", "localhost"), start_tls=start_tls)
    with pytest.raises(IdentityProviderError, match="does not name"):
        misnamed.authenticate("alice", PASSWORDS["alice"])


def test_a_wrong_service_password_is_a_provider_error_naming_no_secret(
    search_then_bind: LdapDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SERVICE_ENV, "not-the-service-password")
    with pytest.raises(IdentityProviderError, match="service account") as err:
        search_then_bind.authenticate("alice", PASSWORDS["alice"])
    assert "not-the-service-password" not in str(err.value)


def test_an_unreachable_directory_is_a_provider_error() -> None:
    settings = LdapSettings.validated(
        {"url": "ldap://127.0.0.1:1", "user_dn_template": "uid={username},dc=x"}, "LDAP"
    )
    with pytest.raises(IdentityProviderError, match="could not be reached"):
        LdapDirectory(settings).authenticate("alice", "secret-value")


@pytest.mark.parametrize(
    "changes",
    [
        {"url": "ldap://ldap.example.com"},  # clear text to another host
        {"url": "http://ldap.example.com"},
        {"user_dn_template": "uid=alice,dc=x"},  # no {username}
        {"user_dn_template": None},  # neither template nor search-then-bind
        {"group_roles": {"cn=g,dc=x": ["root"]}},
        {"bind_password": "the-password-itself"},
    ],
)
def test_unsafe_settings_are_refused(changes: dict[str, object]) -> None:
    base: dict[str, object] = {
        "url": "ldaps://ldap.example.com",
        "user_dn_template": "uid={username},ou=people,dc=x",
    }
    with pytest.raises(ConfigError):
        LdapSettings.validated({**base, **changes}, "LDAP settings")


def test_start_tls_makes_plain_ldap_to_another_host_acceptable() -> None:
    settings = LdapSettings.validated(
        {
            "url": "ldap://ldap.example.com",
            "start_tls": True,
            "user_dn_template": "uid={username},dc=x",
        },
        "LDAP settings",
    )
    assert settings.start_tls


def test_an_unknown_user_costs_the_directory_what_a_wrong_password_costs(
    slapd: Slapd, search_then_bind: LdapDirectory
) -> None:
    """Search then bind: a name the search does not find still gets its bind (as a DN
    that cannot exist), so the directory does the same operations for an unknown user as
    for a known user with a wrong password. Counted by slapd itself (its monitor
    database), not timed."""

    def cost(username: str, password: str) -> dict[str, int]:
        before = operation_counts(slapd)
        _refused(search_then_bind, username, password)
        after = operation_counts(slapd)
        return {op: after[op] - before[op] for op in ("Bind", "Search")}

    wrong_password = cost("alice", "not-alices-password")
    # The service's bind and the user's, plus the counting's own bind and search.
    assert wrong_password == {"Bind": 3, "Search": 2}
    assert cost("nobody", "not-alices-password") == wrong_password
    assert cost("nobody", PASSWORDS["alice"]) == wrong_password
