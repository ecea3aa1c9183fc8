"""Login providers: the ways the front establishes who a browser user is.

Two shapes cover the methods the platform supports:

- a :class:`PasswordLoginProvider` takes what the login form posts (user name, password,
  one-time code) and returns a :class:`Principal` or raises ``AuthenticationError``: local
  users (here), LDAP bind (``identity/ldap.py``);
- a :class:`RedirectLoginProvider` sends the browser to an identity provider and turns the
  callback into a principal: OpenID Connect (``identity/oidc.py``). The front keeps the
  values ``begin`` returns (state, nonce, PKCE verifier) server-side for the one flow,
  bound to a short-lived cookie, and hands them back to ``complete``.

Providers are called off the event loop (they may block on a directory or a network).
The front routes are ``POST /login`` (form field ``provider``: a password provider's
name), ``GET /login/<name>`` and ``GET /login/<name>/callback`` (redirect providers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable
from urllib.parse import urlsplit

from dataflare_platform.access.principal import Principal
from dataflare_platform.errors import ConfigError
from dataflare_platform.identity.local_users import LocalUsers

if TYPE_CHECKING:
    from dataflare_platform.identity.ldap import LdapDirectory
    from dataflare_platform.identity.oidc import OidcLogin


@runtime_checkable
class PasswordLoginProvider(Protocol):
    name: str  # form value and audit detail: "local", "ldap"
    label: str  # shown on the login page
    asks_code: bool  # the form shows the one-time code field

    def authenticate(self, username: str, password: str, code: str | None) -> Principal: ...


@runtime_checkable
class RedirectLoginProvider(Protocol):
    name: str  # path segment: /login/<name>
    label: str

    def begin(self, callback_url: str) -> tuple[str, dict[str, str]]:
        """The URL to send the browser to, and what to keep for ``complete``."""
        ...

    def complete(
        self, callback_url: str, params: Mapping[str, str], kept: Mapping[str, str]
    ) -> Principal:
        """The principal for the provider's callback ``params`` (raises
        ``AuthenticationError`` when anything does not check out)."""
        ...


LoginProvider = PasswordLoginProvider | RedirectLoginProvider


class LocalLoginProvider:
    """Local users of the home (argon2 password, TOTP for admins)."""

    name = "local"
    label = "Local account"
    asks_code = True

    def __init__(self, users: LocalUsers) -> None:
        self.users = users

    def authenticate(self, username: str, password: str, code: str | None) -> Principal:
        return self.users.authenticate(username, password, code)


class LdapLoginProvider:
    """A directory's users through LDAP bind (``identity/ldap.py``); no one-time code."""

    name = "ldap"
    label = "Directory account (LDAP)"
    asks_code = False

    def __init__(self, directory: LdapDirectory) -> None:
        self.directory = directory

    def authenticate(self, username: str, password: str, code: str | None) -> Principal:
        del code  # the directory has no second factor of its own
        return self.directory.authenticate(username, password)


class OidcLoginProvider:
    """OpenID Connect (``identity/oidc.py``). The provider sends the browser back to the
    settings' ``redirect_uri``, which must therefore be the front's
    ``/login/oidc/callback`` (checked here, so a mismatch fails at start, not at login)."""

    name = "oidc"
    label = "Single sign-on (OpenID Connect)"
    CALLBACK_PATH = "/login/oidc/callback"

    def __init__(self, login: OidcLogin) -> None:
        path = urlsplit(login.settings.redirect_uri).path
        if path != self.CALLBACK_PATH:
            raise ConfigError(
                "OIDC settings",
                [("redirect_uri", f"must end in {self.CALLBACK_PATH} (the front's callback)")],
            )
        self.login = login

    def begin(self, callback_url: str) -> tuple[str, dict[str, str]]:
        del callback_url  # the provider only accepts the registered redirect_uri
        url, pending = self.login.begin()
        return url, {"pending": pending.model_dump_json()}

    def complete(
        self, callback_url: str, params: Mapping[str, str], kept: Mapping[str, str]
    ) -> Principal:
        from dataflare_platform.identity.oidc import PendingLogin

        del callback_url
        return self.login.finish(params, PendingLogin.model_validate_json(kept["pending"]))
