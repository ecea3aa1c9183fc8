"""Where every credential of the platform comes from, and how it is kept out of output.

A setting never holds a secret's value: it holds a reference, ``{env: NAME}`` (an
environment variable of the deployment) or ``{file: /abs/path}`` (a secret file, 0600 or
0400 and owned by the user running the platform). Settings files can then be committed,
printed and logged, and a leaked secret is rotated at its source without editing them.

Three kinds of reference:

- ``SecretRef``: any variable; for settings only the operator writes (identity settings).
- ``PlatformSecretRef``: only variables named ``DATAFLARE_SECRET_*``. Files that pipeline
  or alert-rule authors write (pipeline YAML, alert rules) use this one, so such a file
  cannot send, say, ``AWS_SECRET_ACCESS_KEY`` to a mail or broker server of its choice.
- A literal credential (a password inside a URL or DSN, a token in a query string, an
  ``Authorization`` header value) is refused at load by ``url_credential_problem`` and
  friends, naming the field, with a hint to use a reference.

Redaction: ``redact_url`` replaces a URL's password (and credential-looking query values)
with ``***``; ``Secret`` (pydantic's ``SecretStr``) never shows its value in ``repr``/``str``.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from dataflare_platform.errors import InvalidInputError, SecretUnavailableError
from dataflare_platform.models import StrictModel

# A secret's value in memory: ``repr``/``str`` print ``**********``; ``get_secret_value()``
# is the one place the value is taken out (right where it is handed to a client library).
Secret = SecretStr

SECRET_ENV_PREFIX = "DATAFLARE_SECRET_"
REDACTED = "***"
HINT = (
    "a credential is never written in a settings file: give a reference instead, "
    f"{{env: {SECRET_ENV_PREFIX}NAME}} or {{file: /path/to/0600-file}}"
)

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
# Words that make a query parameter or header name a credential, matched on whole words
# of the name (``api_key``, ``X-Auth-Token``, ``Authorization``) so that, say, a TLS
# option ``ssl_keyfile`` is not mistaken for one.
_CREDENTIAL_WORDS = frozenset(
    [
        "pass",
        "passwd",
        "password",
        "pwd",
        "secret",
        "token",
        "auth",
        "authorization",
        "key",
        "apikey",
        "sig",
        "signature",
        "credential",
        "credentials",
        "session",
        "cookie",
        "bearer",
    ]
)


def _is_credential_name(name: str) -> bool:
    return any(word in _CREDENTIAL_WORDS for word in re.split(r"[^a-z0-9]+", name.lower()))


class SecretRef(StrictModel):
    """Exactly one of ``env`` (a variable's name) or ``file`` (an absolute path to a
    regular file, mode 0600/0400, owned by the current user: a secret others can read or
    replace is refused rather than used)."""

    env: str | None = Field(default=None, pattern=_ENV_NAME)
    file: Path | None = None

    @field_validator("file")
    @classmethod
    def _file_path(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        text = str(value)
        if "\x00" in text or not value.is_absolute() or ".." in value.parts:
            raise ValueError("a secret file is an absolute path without '..'")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret is read from exactly one of 'env' or 'file'")
        return self

    def describe(self) -> str:
        """Where the secret lives, for messages (never the value)."""
        return f"${self.env}" if self.env is not None else f"file {self.file}"

    def read(self) -> str:
        """The secret's value, read at each call (a rotated secret is picked up without a
        restart); surrounding whitespace and a trailing newline are dropped."""
        if self.env is not None:
            value = os.environ.get(self.env, "")
        else:
            assert self.file is not None
            value = _read_secret_file(self.file, self.describe())
        value = value.strip()
        if not value:
            raise SecretUnavailableError(f"secret {self.describe()} is not set or empty")
        _remember(value)
        return value

    def secret(self) -> Secret:
        """``read()`` wrapped so that printing it never shows the value."""
        return Secret(self.read())


class PlatformSecretRef(SecretRef):
    """A ``SecretRef`` whose variable must carry the platform's secret prefix
    (``DATAFLARE_SECRET_``): the reference type of files authors write (pipelines,
    alert rules)."""

    @field_validator("env")
    @classmethod
    def _prefixed(cls, value: str | None) -> str | None:
        return value if value is None else prefixed_env(value)


def prefixed_env(name: str) -> str:
    """``name`` if it carries the platform's secret prefix; ValueError (the field's
    refusal at load) otherwise."""
    if not name.startswith(SECRET_ENV_PREFIX):
        raise InvalidInputError(
            f"only variables named {SECRET_ENV_PREFIX}* may be read here "
            f"(not {name!r}): the deployment exports the secrets it means to share"
        )
    return name


def _read_secret_file(path: Path, where: str) -> str:
    """The file's text, checked on the opened descriptor (no race between the check and
    the read): a regular file, owned by us, no group/other permission bits."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise SecretUnavailableError(f"secret {where} cannot be read: {err.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretUnavailableError(f"secret {where} is not a regular file")
        if info.st_uid != os.geteuid():
            raise SecretUnavailableError(
                f"secret {where} is not owned by the user running the platform "
                f"(uid {os.geteuid()}): chown it"
            )
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO | stat.S_IXUSR):
            raise SecretUnavailableError(
                f"secret {where} has mode {stat.S_IMODE(info.st_mode):04o}: chmod 600 (or 400) it"
            )
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            if sum(map(len, chunks)) > 1 << 20:
                raise SecretUnavailableError(f"secret {where} is larger than 1 MiB")
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise SecretUnavailableError(f"secret {where} is not UTF-8 text") from None


# --- redaction -------------------------------------------------------------------------

# Every value ``SecretRef.read`` handed out in this process (bounded: a rotated secret
# adds one), so the log formatter (observability/logs.py) can take them out of any line
# whatever a client library echoed.
_REVEALED_MAX = 256
_revealed: dict[str, None] = {}
_revealed_changes = 0


def _remember(value: str) -> None:
    global _revealed_changes
    if value in _revealed:
        return
    if len(_revealed) >= _REVEALED_MAX:
        _revealed.pop(next(iter(_revealed)))
    _revealed[value] = None
    _revealed_changes += 1


def revealed_values() -> tuple[str, ...]:
    """The secret values read so far (for redaction only; never print them)."""
    return tuple(_revealed)


def revealed_count() -> int:
    """Changes to ``revealed_values`` so far (a cheap "did it change" check)."""
    return _revealed_changes


def redact_url(url: str) -> str:
    """``url`` with its password (and credential-looking query values) replaced by
    ``***``; a URL whose user part is a lone token (``nats://TOKEN@host``) has it replaced
    too. Anything that does not parse is redacted whole."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, sep, _password = userinfo.partition(":")
            if sep:
                userinfo = f"{user}:{REDACTED}"
            elif parts.scheme in ("nats", "tls"):
                userinfo = REDACTED  # nats://token@host: the user part is the token
            netloc = f"{userinfo}@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode(
                [(k, REDACTED if _is_credential_name(k) else v) for k, v in pairs],
                safe="*",
            )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return f"<url {REDACTED}>"


def redact(text: str, *values: str | None) -> str:
    """``text`` with each of ``values`` (and its URL-encoded form) replaced by ``***``:
    for messages of client libraries that may echo what they were given."""
    for value in values:
        if value:
            text = text.replace(value, REDACTED).replace(quote(value, safe=""), REDACTED)
    return text


# --- literal credentials in settings files ----------------------------------------------


_RAW_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://([^@]*)@")


def url_credential_problem(url: str, token_user: bool = False) -> str | None:
    """Why ``url`` may not be written in a settings file (it carries a password, a token
    in its user part when ``token_user``, or a credential-looking query value), or None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None  # the field's own validator says what is wrong with it
    if parts.password is not None or (token_user and parts.username):
        return f"the URL carries a credential in its user part; {HINT}"
    if "@" not in parts.netloc:
        # A raw password holding '/', '?' or '#' ends the authority early, so urlsplit
        # reads it as path, query or fragment: look for "user:secret@" at the raw start.
        raw = _RAW_USERINFO.match(url)
        if raw is not None and (":" in raw.group(1) or token_user):
            return f"the URL carries a credential in its user part; {HINT}"
    for key, _ in parse_qsl(parts.query, keep_blank_values=True):
        if _is_credential_name(key):
            return f"the URL carries a credential in its query ({key}=...); {HINT}"
    return None


def is_credential_header(name: str) -> bool:
    """Headers whose values are credentials (Authorization, X-Api-Key, *-Token...)."""
    return _is_credential_name(name)
