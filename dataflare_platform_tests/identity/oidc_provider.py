"""A real, minimal OpenID provider for the identity tests, built with authlib's server side
(Flask integration) and served by werkzeug on 127.0.0.1 at a free port.

It publishes a discovery document and a JWKS (RS256), runs the authorization code grant
with authlib's OpenID Connect extension (nonce required) and PKCE (S256 required), and
auto-approves: the user is named by the ``test_user`` query parameter of the authorization
request, standing in for the provider's login page. ``Misbehaviour`` switches make it
issue tokens a client must refuse (wrong audience, expired, wrong nonce, foreign key, alg
none), and ``rotate_key`` rotates its signing key the way real providers do (new kid,
published before use).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import OpenIDCode, UserInfo
from authlib.oidc.core.grants.util import create_half_hash
from flask import Flask, jsonify, request
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey
from werkzeug.serving import make_server

# authlib's server refuses plain http unless told otherwise; the provider listens on
# 127.0.0.1 only (the client under test enforces https for anything else).
os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")

CLIENT_ID = "dataflare"
CLIENT_SECRET = "provider-test-secret"  # a test fixture's value, not a real secret
REDIRECT_URI = "http://127.0.0.1:9/oidc/callback"
USERS: dict[str, dict[str, Any]] = {
    "alice": {"sub": "u-1", "groups": ["data-admins", "staff"], "email_verified": True},
    "bob": {"sub": "u-2", "groups": ["analysts"], "email_verified": False},
    "carol": {"sub": "u-3", "groups": [], "email_verified": True},
}


@dataclass
class Misbehaviour:
    """What the next ID tokens get wrong (all off: a correct provider)."""

    audience: str | None = None
    expires_in: int | None = None
    nonce: str | None = None
    foreign_key: bool = False
    # With foreign_key: the foreign key claims the provider's own kid (a forgery attempt)
    # rather than a kid of its own.
    foreign_key_steals_kid: bool = False
    alg_none: bool = False
    # Signed HS256 with the client secret: what a provider (or a forger holding the
    # secret) could do if the client accepted symmetric algorithms.
    hs256: bool = False
    issuer: str | None = None


@dataclass
class ProviderUser:
    name: str
    sub: str
    groups: list[str]
    email_verified: bool

    def get_user_id(self) -> str:
        return self.sub


@dataclass
class Client:
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    redirect_uris: tuple[str, ...] = (REDIRECT_URI,)

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        allowed = {"openid", "profile", "email", "groups"}
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "client_secret_basic" if endpoint == "token" else True

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class AuthorizationCode:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: ProviderUser
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


class LocalProvider:
    """The provider's state: its keys, codes and misbehaviour switches."""

    def __init__(self) -> None:
        self.keys: list[RSAKey] = [self._new_key()]
        self.codes: dict[str, AuthorizationCode] = {}
        self.misbehaviour = Misbehaviour()
        self.base_url = ""
        self.client = Client()
        self.token_requests = 0
        self.jwks_requests = 0
        # Entries replacing those of the discovery document (a misconfigured provider).
        self.discovery_overrides: dict[str, str] = {}

    @staticmethod
    def _new_key() -> RSAKey:
        return RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(8), "use": "sig"})

    @property
    def signing_key(self) -> RSAKey:
        return self.keys[-1]

    def rotate_key(self, *, keep_old: bool = False) -> None:
        """A new signing key (new kid), published from now on; the old one stays
        published only with ``keep_old``."""
        new = self._new_key()
        self.keys = [*self.keys, new] if keep_old else [new]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.as_dict(private=False) for k in self.keys]}

    def sign_id_token(self, claims: dict[str, Any]) -> str:
        """The ID token for ``claims``, misbehaving as switched."""
        bad = self.misbehaviour
        if bad.audience is not None:
            claims["aud"] = bad.audience
        if bad.expires_in is not None:
            claims["iat"] = int(time.time()) + bad.expires_in - 60
            claims["exp"] = int(time.time()) + bad.expires_in
        if bad.nonce is not None:
            claims["nonce"] = bad.nonce
        if bad.issuer is not None:
            claims["iss"] = bad.issuer
        if bad.alg_none:
            return ".".join([_b64({"alg": "none", "typ": "JWT"}), _b64(claims), ""])
        if bad.hs256:
            secret = OctKey.import_key(self.client.client_secret)
            return jwt.encode({"alg": "HS256"}, claims, secret, algorithms=["HS256"])
        key = self._new_key() if bad.foreign_key else self.signing_key
        kid = self.signing_key.kid if bad.foreign_key_steals_kid else key.kid
        return jwt.encode({"alg": "RS256", "kid": kid}, claims, key)


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def build_app(provider: LocalProvider) -> Flask:
    """The Flask app of ``provider``: discovery, JWKS, authorize, token."""
    app = Flask("dataflare-test-oidc-provider")

    class CodeGrant(grants.AuthorizationCodeGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = ("client_secret_basic",)

        def save_authorization_code(self, code: str, req: Any) -> None:
            provider.codes[code] = AuthorizationCode(
                code=code,
                client_id=req.client.client_id,
                redirect_uri=req.payload.redirect_uri,
                scope=req.payload.scope,
                user=req.user,
                nonce=req.payload.data.get("nonce"),
                code_challenge=req.payload.data.get("code_challenge"),
                code_challenge_method=req.payload.data.get("code_challenge_method"),
            )

        def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
            item = provider.codes.get(code)
            if item is not None and item.client_id == client.client_id:
                return item
            return None

        def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
            # One use per code: a replayed code finds nothing (invalid_grant).
            provider.codes.pop(authorization_code.code, None)

        def authenticate_user(self, authorization_code: AuthorizationCode) -> ProviderUser:
            return authorization_code.user

    class IdToken(OpenIDCode):
        def exists_nonce(self, nonce: str, req: Any) -> bool:
            return any(c.nonce == nonce for c in provider.codes.values())

        def generate_user_info(self, user: ProviderUser, scope: str) -> UserInfo:
            return UserInfo(
                sub=user.sub,
                preferred_username=user.name,
                groups=user.groups,
                email=f"{user.name}@example.com",
                email_verified=user.email_verified,
            )

        def encode_id_token(self, token: dict[str, Any], req: Any) -> str:
            now = int(time.time())
            claims: dict[str, Any] = {
                "iss": provider.base_url,
                "aud": [req.client.get_client_id()],
                "iat": now,
                "exp": now + 300,
            }
            claims.update(self.get_authorization_code_claims(req.authorization_code))
            at_hash = create_half_hash(token["access_token"], "RS256")
            claims["at_hash"] = at_hash.decode()
            claims.update(self.generate_user_info(req.user, token["scope"]))
            return provider.sign_id_token(claims)

    server = AuthorizationServer(
        app,
        query_client=lambda cid: provider.client if cid == provider.client.client_id else None,
        save_token=lambda token, req: None,
    )
    server.register_grant(CodeGrant, [IdToken(require_nonce=True), CodeChallenge(required=True)])

    @app.get("/.well-known/openid-configuration")
    def discovery() -> Any:
        base = provider.base_url
        document = dict(
            issuer=base,
            authorization_endpoint=f"{base}/authorize",
            token_endpoint=f"{base}/token",
            jwks_uri=f"{base}/jwks",
            response_types_supported=["code"],
            subject_types_supported=["public"],
            id_token_signing_alg_values_supported=["RS256"],
            code_challenge_methods_supported=["S256"],
        )
        return jsonify({**document, **provider.discovery_overrides})

    @app.get("/jwks")
    def jwks() -> Any:
        provider.jwks_requests += 1
        return jsonify(provider.jwks())

    @app.get("/authorize")
    def authorize() -> Any:
        name = request.args.get("test_user", "")
        user = USERS.get(name)
        grant_user = ProviderUser(name=name, **user) if user else None
        grant = server.get_consent_grant(end_user=grant_user)
        return server.create_authorization_response(grant_user=grant_user, grant=grant)

    @app.post("/token")
    def token() -> Any:
        provider.token_requests += 1
        return server.create_token_response()

    return app


@contextmanager
def running_provider() -> Iterator[LocalProvider]:
    """A provider serving on 127.0.0.1 at a free port until the block ends."""
    provider = LocalProvider()
    app = build_app(provider)
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    provider.base_url = f"http://127.0.0.1:{httpd.server_port}"
    thread = threading.Thread(target=httpd.serve_forever, name="test-oidc-provider", daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        httpd.shutdown()
        thread.join(timeout=30)
