"""LDAP login: a simple bind as the user, then the user's groups mapped to roles.

Two ways to find the user's entry:

- a DN template (``uid={username},ou=people,dc=example,dc=org``): the user name is
  escaped as an RDN value and the bind goes straight to it;
- search then bind: a service account (its password from an env var or a 0600 file)
  searches ``user_base_dn`` with ``user_filter`` (the user name escaped for filters), one
  entry must match, then the bind is made as that entry.

Then ``group_filter`` (``{user_dn}`` and ``{username}`` escaped) under ``group_base_dn``
lists the groups; each group's DN is looked up in ``group_roles``. The user name must fit
the principal name pattern before anything reaches the directory, an empty password is
refused (an LDAP simple bind with a DN and no password is an *unauthenticated* bind that
many servers accept), and a wrong password, an unknown user and a refused user name all
get the same message.

Unknown users cost what wrong passwords cost: with search then bind, a name the search
does not find still gets a bind, as a DN that cannot exist under ``user_base_dn`` with
the presented password, on its own connection, exactly as a found user's bind is made.
Both paths therefore make the same LDAP operations (one service bind, one search, one
user bind, refused with the same result code); what is left is the directory's own work
on a real entry's password hash, which the rate limit of the front bounds.

Plain ``ldap://`` to another host than the loopback needs ``start_tls``; TLS (LDAPS or
StartTLS) always verifies the server's certificate and its name, by Python's ``ssl``
context (``check_hostname``, OpenSSL's own name matching, IP addresses included, no
fallback to the subject's common name), not by ldap3's ``check_hostname``: ldap3 2.9.1
matches names with ``ssl.match_hostname``, which Python 3.12 removed, and then falls back
to its own backport that ignores IP address entries and accepts a common name when the
certificate has no DNS name (``_VerifyingTls``).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from ldap3 import AUTO_BIND_NONE, BASE, NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, parse_dn
from pydantic import Field, field_validator, model_validator

from dataflare_platform.access.principal import NAME_PATTERN, Principal
from dataflare_platform.errors import (
    IdentityProviderError,
    InvalidCredentialsError,
    InvalidInputError,
)
from dataflare_platform.identity.group_roles import check_mapping, principal_groups, roles_for
from dataflare_platform.identity.secret_source import SecretRef
from dataflare_platform.models import StrictModel

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_SPACES_AROUND = re.compile(r"\s*([,=+])\s*")


def normalize_dn(dn: str) -> str:
    """``dn`` in one spelling for comparisons: no spaces around separators, attribute
    types and values lower-cased (LDAP's usual matching rules for DNs ignore case)."""
    compact = _SPACES_AROUND.sub(r"\1", dn.strip())
    try:
        parts = parse_dn(compact)
    except LDAPException:
        raise InvalidInputError(f"{dn[:200]!r} is not a valid DN") from None
    return "".join(f"{attr.lower()}={value.lower()}{sep}" for attr, value, sep in parts)


class LdapSettings(StrictModel):
    """One directory: where it is, how users and their groups are found, what groups
    grant."""

    url: str = Field(description="ldap://host:port or ldaps://host:port")
    start_tls: bool = False
    ca_file: Path | None = Field(
        default=None, description="CA bundle for the server's certificate (system's if unset)"
    )
    user_dn_template: str | None = Field(
        default=None, description="e.g. uid={username},ou=people,dc=example,dc=org"
    )
    bind_dn: str | None = Field(default=None, description="service account for search-then-bind")
    bind_password: SecretRef | None = None
    user_base_dn: str | None = None
    user_filter: str = "(&(objectClass=inetOrgPerson)(uid={username}))"
    # The attribute holding the user name as the directory spells it (LDAP matches "ALICE"
    # to uid=alice): the principal is named by it, so one person has one audit identity.
    username_attribute: str = "uid"
    group_base_dn: str | None = None
    group_filter: str = "(&(objectClass=groupOfNames)(member={user_dn}))"
    group_name_attribute: str = "cn"
    group_roles: dict[str, frozenset[str]] = Field(
        default_factory=dict, description="group DN -> roles it grants"
    )
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    timeout_seconds: int = Field(default=10, ge=1, le=120)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
            raise ValueError("url must be ldap://host[:port] or ldaps://host[:port]")
        return value

    @field_validator("group_roles")
    @classmethod
    def _roles(cls, value: dict[str, frozenset[str]]) -> dict[str, frozenset[str]]:
        check_mapping(value)
        return {normalize_dn(dn): roles for dn, roles in value.items()}

    @model_validator(mode="after")
    def _coherent(self) -> LdapSettings:
        parts = urlsplit(self.url)
        if parts.scheme == "ldap" and not self.start_tls and parts.hostname not in LOOPBACK_HOSTS:
            raise ValueError(
                "plain ldap:// to another host than 127.0.0.1/localhost sends passwords in "
                "clear: use ldaps:// or start_tls: true"
            )
        if self.user_dn_template is not None:
            if "{username}" not in self.user_dn_template:
                raise ValueError("user_dn_template must contain {username}")
        elif self.user_base_dn is None or self.bind_dn is None or self.bind_password is None:
            raise ValueError(
                "set user_dn_template, or bind_dn + bind_password + user_base_dn (search then bind)"
            )
        if "{username}" not in self.user_filter:
            raise ValueError("user_filter must contain {username}")
        return self


class _VerifyingTls(Tls):
    """ldap3's TLS settings with the socket wrapped by one ``ssl.SSLContext`` that checks
    the certificate chain and the server's name during the handshake. Used for LDAPS and
    StartTLS alike (ldap3 calls ``wrap_socket`` for both); ldap3's own name check, which
    depends on ``ssl.match_hostname`` (gone in Python 3.12), is never reached."""

    def __init__(self, ca_file: Path | None, server_name: str) -> None:
        super().__init__(
            validate=ssl.CERT_REQUIRED, ca_certs_file=str(ca_file) if ca_file else None
        )
        # Verifies the chain (the system's CAs when no ca_file) and, with check_hostname,
        # the name: a DNS name against DNS entries, an IP address against IP entries.
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        context.hostname_checks_common_name = False  # names only from subjectAltName
        self._context = context
        self._server_name = server_name

    def wrap_socket(self, connection: Connection, do_handshake: bool = False) -> None:
        del do_handshake  # always now: the name is checked in the handshake, before use
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=True,
            server_hostname=self._server_name,
        )


class LdapDirectory:
    """Authenticates users against one directory. Each call opens its own connections
    (and closes them): nothing is shared between logins."""

    def __init__(self, settings: LdapSettings) -> None:
        self.settings = settings
        parts = urlsplit(settings.url)
        assert parts.hostname is not None  # the settings' validator requires one
        tls = _VerifyingTls(settings.ca_file, parts.hostname)
        # The DN a name the search does not find is bound as (see the module's docstring):
        # random, so no entry can have been made for it in advance.
        self._decoy_dn = (
            f"cn=dataflare-no-such-user-{secrets.token_hex(8)},{settings.user_base_dn}"
            if settings.user_base_dn
            else None
        )
        self._server = Server(
            parts.hostname,
            port=parts.port,
            use_ssl=parts.scheme == "ldaps",
            tls=tls,
            get_info=NONE,
            connect_timeout=settings.connect_timeout_seconds,
        )

    def authenticate(self, username: str, password: str) -> Principal:
        """The user ``username`` once the directory accepted ``password``, with roles from
        their groups; ``InvalidCredentialsError`` (one message) for any wrong name or
        password, ``IdentityProviderError`` when the directory cannot be used."""
        if not isinstance(username, str) or not NAME_PATTERN.match(username):
            raise InvalidCredentialsError()
        if not isinstance(password, str) or not password:
            raise InvalidCredentialsError()
        settings = self.settings
        service = self._service_connection() if settings.bind_dn is not None else None
        try:
            found = True
            if settings.user_dn_template is not None:
                user_dn = settings.user_dn_template.replace("{username}", escape_rdn(username))
            else:
                assert service is not None and self._decoy_dn is not None
                match = self._find_user(service, username)
                found = match is not None
                # Not found: the same bind, as a DN that cannot exist (same work, same
                # refusal as a wrong password).
                user_dn = match if match is not None else self._decoy_dn
            user = self._connection(user_dn, password)
            try:
                if not user.bind() or not found:
                    raise InvalidCredentialsError()
                name = self._canonical_name(user, user_dn, username)
                groups = self._groups(service or user, user_dn, username)
            finally:
                user.unbind()
        except LDAPException as err:
            raise IdentityProviderError(
                f"the LDAP directory {settings.url} could not be used: {type(err).__name__}"
            ) from None
        finally:
            if service is not None:
                service.unbind()
        names = [name for _, name in groups]
        return Principal(
            name=name,
            kind="user",
            via="ldap",
            roles=roles_for((dn for dn, _ in groups), settings.group_roles),
            groups=principal_groups(names),
        )

    # -- steps -------------------------------------------------------------------------

    def _connection(self, user_dn: str | None, password: str | None) -> Connection:
        """An opened (and StartTLS'd when configured) connection, not bound yet."""
        conn = Connection(
            self._server,
            user=user_dn,
            password=password,
            auto_bind=AUTO_BIND_NONE,
            read_only=True,
            raise_exceptions=False,
            auto_referrals=False,
            # ldap3 packs it into SO_RCVTIMEO as whole seconds: an int.
            receive_timeout=self.settings.timeout_seconds,
        )
        try:
            conn.open()
            if self.settings.start_tls and not conn.start_tls():
                _close(conn)
                raise IdentityProviderError(
                    f"StartTLS with the LDAP directory {self.settings.url} failed"
                )
        except LDAPException as err:
            _close(conn)
            raise IdentityProviderError(
                f"the LDAP directory {self.settings.url} could not be reached: "
                f"{_connect_failure(err)}"
            ) from None
        return conn

    def _service_connection(self) -> Connection:
        settings = self.settings
        assert settings.bind_password is not None
        conn = self._connection(settings.bind_dn, settings.bind_password.read())
        try:
            bound = conn.bind()
        except LDAPException as err:
            raise IdentityProviderError(
                f"the LDAP service account bind failed: {type(err).__name__}"
            ) from None
        if not bound:
            conn.unbind()
            # Not the user's fault: the platform's own account was refused.
            raise IdentityProviderError(
                f"the LDAP directory refused the service account {settings.bind_dn}"
            )
        return conn

    def _find_user(self, service: Connection, username: str) -> str | None:
        settings = self.settings
        assert settings.user_base_dn is not None
        search_filter = settings.user_filter.replace("{username}", escape_filter_chars(username))
        service.search(
            settings.user_base_dn,
            search_filter,
            search_scope=SUBTREE,
            attributes=[],
            size_limit=2,
            time_limit=settings.timeout_seconds,
        )
        entries = [e for e in service.response or [] if e.get("type") == "searchResEntry"]
        if len(entries) != 1:
            # None: unknown user; two: an ambiguous filter. Refused as a bad password is.
            return None
        return str(entries[0]["dn"])

    def _canonical_name(self, user: Connection, user_dn: str, username: str) -> str:
        """The user name as the directory's own entry spells it, read by the user after
        their bind; ``username`` if the entry cannot be read or the value does not fit
        the principal name pattern."""
        attr = self.settings.username_attribute
        user.search(user_dn, "(objectClass=*)", search_scope=BASE, attributes=[attr])
        for entry in user.response or []:
            if entry.get("type") != "searchResEntry":
                continue
            values = entry.get("attributes", {}).get(attr)
            for value in values if isinstance(values, list) else [values]:
                if (
                    isinstance(value, str)
                    and value.casefold() == username.casefold()
                    and NAME_PATTERN.match(value)
                ):
                    return value
        return username

    def _groups(self, conn: Connection, user_dn: str, username: str) -> list[tuple[str, str]]:
        """(normalized DN, name) of each group ``user_dn`` belongs to."""
        settings = self.settings
        if settings.group_base_dn is None:
            return []
        search_filter = settings.group_filter.replace(
            "{user_dn}", escape_filter_chars(user_dn)
        ).replace("{username}", escape_filter_chars(username))
        name_attr = settings.group_name_attribute
        conn.search(
            settings.group_base_dn,
            search_filter,
            search_scope=SUBTREE,
            attributes=[name_attr],
            time_limit=settings.timeout_seconds,
        )
        groups = []
        for entry in conn.response or []:
            if entry.get("type") != "searchResEntry":
                continue
            value = entry.get("attributes", {}).get(name_attr)
            name = value[0] if isinstance(value, list) and value else value
            groups.append((normalize_dn(str(entry["dn"])), str(name or "")))
        return groups


def _connect_failure(err: LDAPException) -> str:
    """Why a connection failed, in words an operator can act on (ldap3's own text
    carries whole certificates; it never carries a password: no bind was sent yet)."""
    text = str(err)
    # OpenSSL's words: "Hostname mismatch" / "IP address mismatch" (a name check in the
    # handshake), otherwise a chain that does not lead to a trusted CA.
    if "mismatch" in text or "doesn't match any name" in text:
        return "its TLS certificate does not name this host (use the name it was issued for)"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "its TLS certificate is not trusted (set ca_file to the CA that signed it)"
    return type(err).__name__


def _close(conn: Connection) -> None:
    """Close ``conn`` after a failure: its socket may be half-wrapped or broken, so an
    unbind that cannot be sent is not a new error."""
    with contextlib.suppress(LDAPException):
        conn.unbind()
