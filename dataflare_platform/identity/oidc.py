"""OpenID Connect login: the authorization code flow with PKCE, for a confidential client.

The web front calls two methods and keeps one small record in between:

- ``OidcLogin.begin()`` returns the provider's authorization URL to redirect the browser
  to, and a ``PendingLogin`` (state, nonce, PKCE verifier) that the front keeps where the
  browser cannot change it: a signed, short-lived, HttpOnly cookie or a server-side
  session. It holds no secret of the platform's, but the verifier must not reach anyone
  else than this browser's own callback.
- ``OidcLogin.finish(callback_params, pending)`` checks the callback's state, exchanges
  the code at the provider's token endpoint (client secret plus PKCE verifier) and
  verifies the ID token before it yields a ``Principal``: its signature against the
  provider's published keys (fetched again when a token names an unknown key id, which is
  how providers rotate keys), ``iss``, ``aud`` (and ``azp``), ``exp``/``iat``/``nbf``
  with the configured clock skew, the ``nonce`` of this login and ``at_hash`` when the
  token carries one. Only asymmetric algorithms are accepted: ``none`` and the HMAC
  algorithms (whose key would be the client secret) are refused.

authlib builds the authorization URL and performs the code exchange; joserfc verifies the
JWS. No crypto is written here. Every HTTP call has a timeout, and the issuer and every
endpoint it announces must be https (plain http only on the loopback interface, for tests
and a provider on the same host).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oidc.core.grants.util import create_half_hash
from joserfc import jws, jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from pydantic import Field, field_validator

from dataflare_platform.access.principal import NAME_PATTERN, Principal
from dataflare_platform.errors import (
    AuthenticationError,
    IdentityProviderError,
    InvalidCredentialsError,
    InvalidInputError,
)
from dataflare_platform.identity.group_roles import check_mapping, principal_groups, roles_for
from dataflare_platform.identity.secret_source import SecretRef
from dataflare_platform.models import StrictModel

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# Signature algorithms whose verification key is public. HS* would be keyed with the
# client secret (anyone holding it could mint tokens) and "none" is no signature at all.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DISCOVERY_PATH = "/.well-known/openid-configuration"


def require_secure_url(url: str, what: str) -> str:
    """``url`` if it is https, or http to a loopback host (a provider on this machine):
    tokens and codes must not cross a network in clear."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
        return url
    raise InvalidInputError(
        f"{what} {url[:200]!r} must be an https URL (http only for 127.0.0.1/localhost)"
    )


class OidcSettings(StrictModel):
    """One OpenID provider and this platform's registration as a client of it."""

    issuer: str = Field(description="The provider's issuer URL, exactly as its tokens say.")
    client_id: str = Field(min_length=1)
    client_secret: SecretRef | None = Field(
        default=None,
        description="Where the client secret is read from (env var name or 0600 file); "
        "None for a public client (PKCE only).",
    )
    redirect_uri: str = Field(description="This platform's callback URL, as registered.")
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    group_roles: dict[str, frozenset[str]] = Field(default_factory=dict)
    algorithms: tuple[str, ...] = ("RS256",)
    clock_skew_seconds: int = Field(default=60, ge=0, le=300)
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # How long a login may sit at the provider between begin() and finish().
    login_max_age_seconds: int = Field(default=600, gt=0, le=3600)

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        return require_secure_url(value, "issuer")

    @field_validator("redirect_uri")
    @classmethod
    def _redirect(cls, value: str) -> str:
        return require_secure_url(value, "redirect_uri")

    @field_validator("scopes")
    @classmethod
    def _openid_scope(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "openid" not in value:
            raise ValueError("scopes must include 'openid'")
        return value

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        refused = sorted(set(value) - ASYMMETRIC_ALGORITHMS)
        if refused or not value:
            raise ValueError(
                f"algorithms {refused} refused: only {sorted(ASYMMETRIC_ALGORITHMS)} "
                "(public-key signatures) are accepted"
            )
        return value

    @field_validator("group_roles")
    @classmethod
    def _roles(cls, value: dict[str, frozenset[str]]) -> dict[str, frozenset[str]]:
        check_mapping(value)
        return value


class PendingLogin(StrictModel):
    """What ``finish`` needs from ``begin``: kept by the front, out of the browser's
    reach (a signed cookie or a server-side session), for one login only."""

    # Never empty: an empty state would match a callback that carries none.
    state: str = Field(min_length=16)
    nonce: str = Field(min_length=16)
    code_verifier: str = Field(min_length=43, max_length=128)  # RFC 7636 4.1
    redirect_uri: str
    started_at: float


class ProviderEndpoints(StrictModel):
    """The parts of the provider's discovery document this client uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


class OidcLogin:
    """Logs users in through one OpenID provider. Thread-safe enough for a web front: the
    cached discovery document and key set are replaced whole, never mutated."""

    def __init__(
        self,
        settings: OidcSettings,
        *,
        http: requests.Session | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._http = http or requests.Session()
        self._now = now
        self._endpoints: ProviderEndpoints | None = None
        self._keys: KeySet | None = None

    # -- the two calls the front makes -------------------------------------------------

    def begin(self, redirect_uri: str | None = None) -> tuple[str, PendingLogin]:
        """The URL to send the browser to, and the record to keep until the callback.

        ``redirect_uri`` defaults to the configured one; another value is refused (it
        would usually come from the request's Host header, which the client controls)."""
        redirect = redirect_uri or self.settings.redirect_uri
        if redirect != self.settings.redirect_uri:
            raise InvalidInputError("redirect_uri differs from the configured redirect_uri")
        endpoints = self.endpoints()
        pending = PendingLogin(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            code_verifier=secrets.token_urlsafe(64),
            redirect_uri=redirect,
            started_at=self._now(),
        )
        client = self._client(redirect, with_secret=False)
        url, _ = client.create_authorization_url(
            endpoints.authorization_endpoint,
            state=pending.state,
            code_verifier=pending.code_verifier,
            nonce=pending.nonce,
        )
        return url, pending

    def finish(self, callback_params: Mapping[str, str], pending: PendingLogin) -> Principal:
        """The authenticated user behind the callback's query parameters, or
        ``AuthenticationError`` (``InvalidCredentialsError`` for a refused code,
        ``IdentityProviderError`` for a provider or token that cannot be trusted)."""
        if self._now() - pending.started_at > self.settings.login_max_age_seconds:
            raise AuthenticationError("the login took too long: start again")
        state = callback_params.get("state")
        if not isinstance(state, str) or not hmac.compare_digest(
            state.encode(), pending.state.encode()
        ):
            raise AuthenticationError("the login's state does not match: start again")
        if "error" in callback_params:
            code = _safe_word(callback_params["error"])
            raise AuthenticationError(f"the identity provider refused the login ({code})")
        code = callback_params.get("code")
        if not isinstance(code, str) or not code:
            raise AuthenticationError("the identity provider's callback carries no code")
        token = self._exchange(code, pending)
        id_token = token.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise IdentityProviderError("the token response carries no ID token")
        claims = self.verify_id_token(
            id_token, nonce=pending.nonce, access_token=token.get("access_token")
        )
        return self._principal(claims)

    # -- the ID token ------------------------------------------------------------------

    def verify_id_token(
        self, id_token: str, *, nonce: str, access_token: object = None
    ) -> dict[str, Any]:
        """The claims of ``id_token`` once its signature, issuer, audience, times, nonce
        and (if present) ``at_hash`` hold; ``IdentityProviderError`` otherwise."""
        settings = self.settings
        try:
            header = jws.extract_compact(id_token.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeError):
            raise IdentityProviderError("the ID token is not a compact JWS") from None
        alg = header.get("alg")
        if alg not in settings.algorithms:
            raise IdentityProviderError(
                f"the ID token's algorithm {str(alg)[:20]!r} is not accepted "
                f"(accepted: {list(settings.algorithms)})"
            )
        key = self._key(header.get("kid"))
        try:
            decoded = jwt.decode(id_token, key, algorithms=[alg])
        except JoseError as err:
            raise IdentityProviderError(
                f"the ID token's signature does not verify ({err.error})"
            ) from None
        except ValueError:  # a key of another type than the algorithm's
            raise IdentityProviderError("the ID token's key does not fit its algorithm") from None
        claims = dict(decoded.claims)
        registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self._now()),
            leeway=settings.clock_skew_seconds,
            # The discovery document's spelling (it may end in "/"; tokens carry it so).
            iss={"essential": True, "value": self.endpoints().issuer},
            sub={"essential": True},
            aud={"essential": True, "value": settings.client_id},
            exp={"essential": True},
            iat={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as err:
            raise IdentityProviderError(
                f"the ID token is refused: {err.description or err.error}"
            ) from None
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        azp = claims.get("azp")
        if (len(audiences) > 1 or azp is not None) and azp != settings.client_id:
            raise IdentityProviderError("the ID token's authorized party (azp) is not this client")
        token_nonce = claims.get("nonce")
        if not isinstance(token_nonce, str) or not hmac.compare_digest(
            token_nonce.encode(), nonce.encode()
        ):
            raise IdentityProviderError("the ID token's nonce is not this login's")
        at_hash = claims.get("at_hash")
        if at_hash is not None:
            if not isinstance(access_token, str) or not isinstance(at_hash, str):
                raise IdentityProviderError("the ID token's at_hash cannot be checked")
            expected = create_half_hash(access_token, alg)
            if expected is None or not hmac.compare_digest(expected, at_hash.encode()):
                raise IdentityProviderError(
                    "the ID token's at_hash does not match the access token"
                )
        return claims

    # -- provider metadata -------------------------------------------------------------

    def endpoints(self) -> ProviderEndpoints:
        """The provider's discovery document (fetched once, then cached)."""
        if self._endpoints is None:
            issuer = self._issuer()
            doc = self._get_json(issuer + DISCOVERY_PATH, "discovery document")
            try:
                endpoints = ProviderEndpoints.model_validate(
                    {k: doc.get(k) for k in ProviderEndpoints.model_fields}
                )
            except ValueError:
                raise IdentityProviderError(
                    "the provider's discovery document lacks issuer or an endpoint"
                ) from None
            # OpenID Connect Discovery 4.3: the document's issuer is exactly the one asked.
            if endpoints.issuer.rstrip("/") != issuer:
                raise IdentityProviderError(
                    f"the discovery document names issuer {endpoints.issuer[:200]!r}, "
                    f"not {issuer!r}"
                )
            for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                try:
                    require_secure_url(getattr(endpoints, name), name)
                except InvalidInputError as err:
                    raise IdentityProviderError(str(err)) from None
            self._endpoints = endpoints
        return self._endpoints

    def _issuer(self) -> str:
        return self.settings.issuer.rstrip("/")

    def _key(self, kid: object) -> Any:
        """The provider's key named ``kid``; an unknown kid makes one fresh fetch of the
        key set (the provider rotated its keys) before the token is refused."""
        if kid is not None and not isinstance(kid, str):
            raise IdentityProviderError("the ID token's key id is not a string")
        fetched = False
        if self._keys is None:
            self._keys, fetched = self._fetch_keys(), True
        while True:
            try:
                return self._keys.get_by_kid(kid)
            except InvalidKeyIdError:
                if fetched:
                    break
                self._keys, fetched = self._fetch_keys(), True
        raise IdentityProviderError(
            f"the ID token is signed with a key the provider does not publish "
            f"(kid {str(kid)[:64]!r})"
        )

    def _fetch_keys(self) -> KeySet:
        data = self._get_json(self.endpoints().jwks_uri, "key set")
        keys = data.get("keys")
        if not isinstance(keys, list):
            raise IdentityProviderError("the provider's key set has no 'keys' list")
        # Only public keys of asymmetric types: a symmetric ("oct") key published here
        # would let an HS* token verify.
        public = [k for k in keys if isinstance(k, dict) and k.get("kty") in ("RSA", "EC", "OKP")]
        try:
            return KeySet.import_key_set({"keys": public})
        except (JoseError, ValueError) as err:
            raise IdentityProviderError(f"the provider's key set cannot be read ({err})") from None

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            # No redirects: they could lead off https (or off the provider).
            response = self._http.get(
                url, timeout=self.settings.timeout_seconds, allow_redirects=False
            )
            response.raise_for_status()
            data = response.json()
        except requests.RequestException as err:
            raise IdentityProviderError(
                f"the provider's {what} could not be fetched from {url[:200]}: {type(err).__name__}"
            ) from None
        except ValueError:
            raise IdentityProviderError(f"the provider's {what} is not JSON") from None
        if not isinstance(data, dict):
            raise IdentityProviderError(f"the provider's {what} is not a JSON object")
        return data

    # -- the code exchange ---------------------------------------------------------------

    def _client(self, redirect_uri: str, *, with_secret: bool) -> OAuth2Session:
        secret_ref = self.settings.client_secret
        secret = secret_ref.read() if (with_secret and secret_ref is not None) else None
        return OAuth2Session(
            client_id=self.settings.client_id,
            client_secret=secret,
            token_endpoint_auth_method="client_secret_basic" if secret_ref else "none",
            scope=" ".join(self.settings.scopes),
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
        )

    def _exchange(self, code: str, pending: PendingLogin) -> dict[str, Any]:
        endpoints = self.endpoints()
        client = self._client(pending.redirect_uri, with_secret=True)
        try:
            with client:
                token = client.fetch_token(
                    endpoints.token_endpoint,
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=pending.code_verifier,
                    timeout=self.settings.timeout_seconds,
                )
        except (OAuthError, OAuth2Error) as err:
            # invalid_grant: a wrong, reused or expired code, or a PKCE mismatch.
            raise InvalidCredentialsError(
                f"the identity provider refused the code ({_safe_word(getattr(err, 'error', ''))})"
            ) from None
        except requests.RequestException as err:
            raise IdentityProviderError(
                f"the provider's token endpoint could not be reached: {type(err).__name__}"
            ) from None
        if not isinstance(token, Mapping):
            raise IdentityProviderError("the token response is not a JSON object")
        return dict(token)

    # -- the principal -----------------------------------------------------------------

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        settings = self.settings
        name = claims.get(settings.username_claim)
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise AuthenticationError(
                f"the ID token's {settings.username_claim!r} claim is missing or not a "
                "valid user name (letters, digits and _.@+-)"
            )
        if settings.username_claim == "email" and claims.get("email_verified") is not True:
            # An unverified address is whatever the user typed at the provider.
            raise AuthenticationError("the ID token's email address is not verified")
        raw = claims.get(settings.groups_claim, [])
        if isinstance(raw, str):
            raw = [raw]
        groups = [g for g in raw if isinstance(g, str)] if isinstance(raw, list) else []
        return Principal(
            name=name,
            kind="user",
            via="oidc",
            roles=roles_for(groups, settings.group_roles),
            groups=principal_groups(groups),
        )


def _safe_word(value: object) -> str:
    """An OAuth error code fit for a message: the provider's (or attacker's) text cut to
    the characters error codes use."""
    text = str(value)[:64]
    return "".join(c for c in text if c.isalnum() or c in "_-.") or "unknown"
