"""OpenID Connect login against a real provider (authlib's server, tests/identity/
oidc_provider.py) on 127.0.0.1: the whole code + PKCE flow, and each way a callback or an
ID token must be refused."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests

from dataflare_platform.errors import (
    AuthenticationError,
    ConfigError,
    IdentityProviderError,
    InvalidCredentialsError,
    SecretUnavailableError,
)
from dataflare_platform.identity.oidc import OidcLogin, OidcSettings, PendingLogin
from dataflare_platform_tests.identity.oidc_provider import (
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    LocalProvider,
    Misbehaviour,
    running_provider,
)

SECRET_ENV = "DATAFLARE_TEST_OIDC_CLIENT_SECRET"
GROUP_ROLES = {"data-admins": ["admin"], "analysts": ["viewer", "launcher"]}


@pytest.fixture(scope="module")
def provider() -> Iterator[LocalProvider]:
    with running_provider() as running:
        yield running


@pytest.fixture
def settings(provider: LocalProvider, monkeypatch: pytest.MonkeyPatch) -> OidcSettings:
    provider.misbehaviour = Misbehaviour()
    provider.discovery_overrides = {}
    monkeypatch.setenv(SECRET_ENV, CLIENT_SECRET)
    return OidcSettings.validated(
        {
            "issuer": provider.base_url,
            "client_id": CLIENT_ID,
            "client_secret": {"env": SECRET_ENV},
            "redirect_uri": REDIRECT_URI,
            "group_roles": GROUP_ROLES,
            "timeout_seconds": 30,
        },
        "OIDC settings",
    )


@pytest.fixture
def oidc(settings: OidcSettings) -> OidcLogin:
    return OidcLogin(settings)


def authorize(oidc: OidcLogin, user: str = "alice") -> tuple[dict[str, str], PendingLogin]:
    """Begin a login and play the browser at the provider: the callback's query
    parameters and the pending record the front would have kept."""
    url, pending = oidc.begin()
    response = requests.get(
        f"{url}&{urlencode({'test_user': user})}", allow_redirects=False, timeout=30
    )
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    return dict(parse_qsl(urlsplit(location).query)), pending


def test_code_flow_with_pkce_yields_a_principal_with_mapped_roles(oidc: OidcLogin) -> None:
    url, pending = oidc.begin()
    query = dict(parse_qsl(urlsplit(url).query))
    assert query["code_challenge_method"] == "S256"
    assert pending.code_verifier not in url  # only the challenge leaves
    assert query["state"] == pending.state and query["nonce"] == pending.nonce
    assert "openid" in query["scope"].split()

    params, pending = authorize(oidc, "alice")
    alice = oidc.finish(params, pending)
    assert (alice.name, alice.kind, alice.via) == ("alice", "user", "oidc")
    assert alice.roles == {"admin"}
    assert alice.groups == {"data-admins", "staff"}

    params, pending = authorize(oidc, "bob")
    bob = oidc.finish(params, pending)
    assert bob.roles == {"viewer", "launcher"} and bob.groups == {"analysts"}

    params, pending = authorize(oidc, "carol")
    assert oidc.finish(params, pending).roles == frozenset()


def test_an_email_username_must_be_verified(settings: OidcSettings) -> None:
    oidc = OidcLogin(settings.model_copy(update={"username_claim": "email"}))
    params, pending = authorize(oidc, "alice")
    assert oidc.finish(params, pending).name == "alice@example.com"
    params, pending = authorize(oidc, "bob")  # email_verified: false at the provider
    with pytest.raises(AuthenticationError, match="not verified"):
        oidc.finish(params, pending)


def test_a_wrong_state_is_refused(oidc: OidcLogin) -> None:
    params, pending = authorize(oidc)
    _, other = oidc.begin()
    with pytest.raises(AuthenticationError, match="state"):
        oidc.finish(params, other)
    with pytest.raises(AuthenticationError, match="state"):
        oidc.finish({**params, "state": "forged"}, pending)
    with pytest.raises(AuthenticationError, match="state"):
        oidc.finish({"code": params["code"]}, pending)


def test_a_replayed_code_is_refused(oidc: OidcLogin) -> None:
    params, pending = authorize(oidc)
    assert oidc.finish(params, pending).name == "alice"
    with pytest.raises(InvalidCredentialsError) as err:
        oidc.finish(params, pending)
    assert params["code"] not in str(err.value)
    assert CLIENT_SECRET not in str(err.value)


def test_a_wrong_pkce_verifier_is_refused_by_the_provider(oidc: OidcLogin) -> None:
    params, pending = authorize(oidc)
    forged = pending.model_copy(update={"code_verifier": "x" * 64})
    with pytest.raises(InvalidCredentialsError):
        oidc.finish(params, forged)


def test_a_wrong_client_secret_is_refused(oidc: OidcLogin, monkeypatch: pytest.MonkeyPatch) -> None:
    params, pending = authorize(oidc)
    monkeypatch.setenv(SECRET_ENV, "not-the-secret")
    with pytest.raises(InvalidCredentialsError) as err:
        oidc.finish(params, pending)
    assert "not-the-secret" not in str(err.value)


@pytest.mark.parametrize(
    ("misbehaviour", "reason"),
    [
        (Misbehaviour(nonce="another-login"), "nonce"),
        (Misbehaviour(expires_in=-3600), "expired|exp"),
        (Misbehaviour(audience="another-client"), "aud"),
        (Misbehaviour(issuer="http://127.0.0.1:1"), "iss"),
        (Misbehaviour(foreign_key=True), "does not publish"),
        (Misbehaviour(foreign_key=True, foreign_key_steals_kid=True), "signature"),
        (Misbehaviour(alg_none=True), "algorithm 'none'"),
        (Misbehaviour(hs256=True), "algorithm 'HS256'"),
    ],
    ids=[
        "nonce",
        "expired",
        "audience",
        "issuer",
        "foreign-key",
        "forged-kid",
        "alg-none",
        "hs256-client-secret",
    ],
)
def test_a_bad_id_token_is_refused(
    oidc: OidcLogin, provider: LocalProvider, misbehaviour: Misbehaviour, reason: str
) -> None:
    params, pending = authorize(oidc)
    provider.misbehaviour = misbehaviour
    with pytest.raises(IdentityProviderError, match=reason) as err:
        oidc.finish(params, pending)
    assert params["code"] not in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"issuer": "http://127.0.0.1:1"}, "names issuer"),
        ({"token_endpoint": "http://idp.example.com/token"}, "https"),
        ({"jwks_uri": "http://idp.example.com/jwks"}, "https"),
        ({"authorization_endpoint": ""}, "https"),
    ],
)
def test_a_bad_discovery_document_is_refused(
    oidc: OidcLogin, provider: LocalProvider, overrides: dict[str, str], reason: str
) -> None:
    provider.discovery_overrides = overrides
    with pytest.raises(IdentityProviderError, match=reason):
        oidc.begin()


def test_a_token_within_the_clock_skew_is_accepted(
    oidc: OidcLogin, provider: LocalProvider
) -> None:
    """Expired 20 s ago, with 60 s of allowed skew: still accepted (the skew setting is
    what decides, not a hard-coded zero)."""
    params, pending = authorize(oidc)
    provider.misbehaviour = Misbehaviour(expires_in=-20)
    assert oidc.finish(params, pending).name == "alice"


def test_a_key_rotation_at_the_provider_is_followed(
    oidc: OidcLogin, provider: LocalProvider
) -> None:
    before = provider.jwks_requests
    params, pending = authorize(oidc)
    assert oidc.finish(params, pending).name == "alice"
    fetched = provider.jwks_requests
    assert fetched == before + 1  # a cold cache: one fetch

    provider.rotate_key()
    params, pending = authorize(oidc)
    assert oidc.finish(params, pending).name == "alice"
    assert provider.jwks_requests == fetched + 1  # one refetch, on the unknown kid

    params, pending = authorize(oidc)
    assert oidc.finish(params, pending).name == "alice"
    assert provider.jwks_requests == fetched + 1  # the new key set is cached


def test_a_refusal_at_the_provider_is_refused_here(oidc: OidcLogin) -> None:
    params, pending = authorize(oidc, "nobody")  # the provider knows no such user
    assert params["error"] == "access_denied"
    with pytest.raises(AuthenticationError, match="access_denied"):
        oidc.finish(params, pending)


def test_a_stale_login_is_refused(settings: OidcSettings) -> None:
    clock = [1_000_000.0]
    oidc = OidcLogin(settings, now=lambda: clock[0])
    _, pending = oidc.begin()
    clock[0] += settings.login_max_age_seconds + 1
    with pytest.raises(AuthenticationError, match="too long"):
        oidc.finish({"state": pending.state, "code": "any"}, pending)


def test_a_pending_login_cannot_be_empty() -> None:
    """A front that lost its record must not be able to pass an empty one that an
    empty callback state would match."""
    with pytest.raises(ConfigError):
        PendingLogin.validated(
            {"state": "", "nonce": "", "code_verifier": "", "redirect_uri": "", "started_at": 0},
            "pending login",
        )


def test_the_pending_login_round_trips_through_json(oidc: OidcLogin) -> None:
    """What the front stores (a signed cookie, a session) and reads back."""
    params, pending = authorize(oidc)
    stored = pending.model_dump_json()
    assert oidc.finish(params, PendingLogin.model_validate_json(stored)).name == "alice"


def test_another_redirect_uri_is_refused(oidc: OidcLogin) -> None:
    with pytest.raises(ValueError, match="redirect_uri"):
        oidc.begin("https://attacker.example/callback")


def _settings(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "issuer": "https://idp.example.com",
        "client_id": CLIENT_ID,
        "client_secret": {"env": SECRET_ENV},
        "redirect_uri": "https://dataflare.example.com/oidc/callback",
    }
    return {**base, **changes}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"algorithms": ["HS256"]}, "algorithms"),
        ({"algorithms": ["none"]}, "algorithms"),
        ({"issuer": "http://idp.example.com"}, "issuer"),
        ({"redirect_uri": "http://dataflare.example.com/cb"}, "redirect_uri"),
        ({"scopes": ["profile"]}, "scopes"),
        ({"group_roles": {"g": ["superuser"]}}, "group_roles"),
        ({"client_secret": {"env": "X", "file": "/tmp/x"}}, "client_secret"),
        ({"client_secret": "the-secret-itself"}, "client_secret"),
    ],
)
def test_unsafe_settings_are_refused(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        OidcSettings.validated(_settings(**changes), "OIDC settings")
    assert any(f.startswith(field) for f in err.value.fields)


def test_the_client_secret_file_must_be_private(tmp_path, monkeypatch) -> None:
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(CLIENT_SECRET + "\n")
    secret_file.chmod(0o644)
    settings = OidcSettings.validated(
        _settings(client_secret={"file": str(secret_file)}), "OIDC settings"
    )
    with pytest.raises(SecretUnavailableError, match="chmod 600") as err:
        settings.client_secret.read()
    assert CLIENT_SECRET not in str(err.value)
    secret_file.chmod(0o600)
    assert settings.client_secret.read() == CLIENT_SECRET
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.raises(SecretUnavailableError, match=SECRET_ENV):
        OidcSettings.validated(_settings(), "OIDC settings").client_secret.read()
