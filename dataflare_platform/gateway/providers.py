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
from typing import Protocol, runtime_checkable

from dataflare_platform.access.principal import Principal
from dataflare_platform.identity.local_users import LocalUsers


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
