"""TLS settings shared by the PostgreSQL, Redis and NATS connectors (and the file checks
the alert channels' client certificates use).

One ``tls:`` block per connection, in the deployment's pipeline files (never in a
launch's run config: resource and connector settings are deployment-only, see
``deployment_settings``)::

    tls:
      ca_file: /etc/dataflare/tls/ca.pem        # trust anchors; default: the system's
      cert_file: /etc/dataflare/tls/client.pem  # mutual TLS: both or neither
      key_file: /etc/dataflare/tls/client.key   # must be 0600 (no group/other bits)
      server_name: db.internal                  # name checked in the server certificate
      mode: verify-full                         # or verify-ca (chain only, no name)
      insecure_skip_verify: false               # true: encryption WITHOUT verification

Why these defaults: a TLS connection that does not check the server's certificate stops
only passive eavesdroppers; anyone who can sit between the platform and the broker reads
and changes everything. So whenever TLS is on the chain *and* the name are verified
(libpq's ``verify-full``), checking only the chain (``verify-ca``) must be asked for, and
turning verification off must be spelt ``insecure_skip_verify: true`` and is logged as a
warning each time such settings load.

Files are checked when the settings load (exist, are regular files, readable; the key is
not readable by group or others), so a typo fails ``pipeline validate`` naming the field
(``tls.key_file``) instead of failing later inside a TLS library with an opaque message.
"""

from __future__ import annotations

import logging
import os
import ssl
import stat
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from dataflare_platform.errors import ConfigError, InvalidInputError
from dataflare_platform.models import StrictModel

log = logging.getLogger(__name__)


def _readable_file(path: Path) -> Path:
    """An existing, readable regular file (the message names the path, not a content)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InvalidInputError(f"{path} does not exist") from None
    except OSError as err:
        raise InvalidInputError(f"{path}: {err.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInputError(f"{path} is not a regular file")
    if not os.access(path, os.R_OK):
        raise InvalidInputError(f"{path} is not readable by this user")
    return path


def _private_file(path: Path) -> Path:
    """A readable regular file with no group/other permission bits (a private key)."""
    _readable_file(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise InvalidInputError(
            f"{path} has mode {mode:04o}: a private key must be 0600 (chmod 600 {path})"
        )
    return path


ReadableFile = Annotated[Path, AfterValidator(_readable_file)]
PrivateKeyFile = Annotated[Path, AfterValidator(_private_file)]
# A DNS name or an IP address, nothing else (it goes into libpq's conninfo as ``host``).
ServerName = Annotated[str, Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9.:-]{0,252})$")]


class TlsSettings(StrictModel):
    """How a connector protects and authenticates one connection (see the module doc)."""

    ca_file: ReadableFile | None = Field(
        None, description="PEM trust anchors for the server certificate; default: the system's"
    )
    cert_file: ReadableFile | None = Field(
        None, description="Client certificate (PEM) for mutual TLS; needs key_file"
    )
    key_file: PrivateKeyFile | None = Field(
        None, description="Client private key (PEM, mode 0600) for mutual TLS"
    )
    server_name: ServerName | None = Field(
        None, description="Name the server certificate must carry; default: the URL's host"
    )
    mode: Literal["verify-full", "verify-ca"] = Field(
        "verify-full", description="verify-full: chain and name; verify-ca: chain only"
    )
    insecure_skip_verify: bool = Field(
        False, description="Encrypt without verifying the server at all (logged as a warning)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise InvalidInputError(
                f"mutual TLS needs cert_file and key_file: {missing} is missing"
            )
        if self.insecure_skip_verify:
            log.warning(
                "TLS server verification is OFF (insecure_skip_verify: true): the connection"
                " is encrypted but anyone between here and the server can read and change it"
            )
        elif self.mode == "verify-ca":
            log.warning(
                "TLS mode verify-ca: the server certificate's chain is checked, its name is"
                " not (any certificate from this CA is accepted)"
            )
        return self

    @property
    def verifies(self) -> bool:
        return not self.insecure_skip_verify

    @property
    def checks_name(self) -> bool:
        return self.verifies and self.mode == "verify-full"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context: TLS 1.2 or later, the CA file (or the system's trust
        store), the client certificate, and verification as the settings say."""
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None and self.key_file is not None:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        if not self.checks_name:
            context.check_hostname = False
        if not self.verifies:
            context.verify_mode = ssl.CERT_NONE
        return context

    def libpq_params(self) -> dict[str, str]:
        """The libpq connection parameters for these settings (``sslmode`` and files)."""
        params = {"sslmode": "require" if not self.verifies else self.mode}
        if self.ca_file is not None:
            params["sslrootcert"] = str(self.ca_file)
        elif self.verifies:
            params["sslrootcert"] = "system"  # libpq >= 16: the system's trust store
        if self.cert_file is not None and self.key_file is not None:
            params["sslcert"] = str(self.cert_file)
            params["sslkey"] = str(self.key_file)
        return params


def tls_failure(err: BaseException) -> str | None:
    """A one-line reason when ``err`` (or what caused it) is a TLS failure, else None:
    what the server's certificate or the handshake got wrong, without a traceback."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"TLS: the server certificate was refused ({current.verify_message})"
        if isinstance(current, ssl.SSLEOFError):
            return (
                "TLS handshake failed: the server closed the connection (does it require a"
                " client certificate this client lacks, or refuse its issuer?)"
            )
        if isinstance(current, ssl.SSLError):
            reason = current.reason or str(current)
            if "ALERT" in reason.upper():
                return (
                    f"TLS handshake failed: the server sent {reason} (it refused this"
                    " client certificate, or the lack of one)"
                )
            return f"TLS handshake failed ({reason})"
        current = current.__cause__ or current.__context__
    text = str(err)
    for marker in ("certificate verify failed", "SSL error", "tlsv1 alert", "SSL connection"):
        if marker in text:
            return "TLS: " + text.strip().splitlines()[0]
    return None


_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_VERIFYING = {"verify-full", "verify-ca"}


def check_libpq_url(dsn: str, what: str, field: str) -> None:
    """Refuse a PostgreSQL url (the audit log's, the audit anchor's) whose TLS would not
    protect it: a host that is not loopback without a verifying ``sslmode``, or libpq TLS
    files that fail the connectors' checks. A ``ConfigError`` about ``what`` names
    ``field`` and the url parameter, never the url (it may hold a password)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict
    from pydantic import ValidationError

    dsn = dsn.replace("postgresql+psycopg://", "postgresql://", 1)

    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError:
        raise ConfigError(what, [(field, "not a PostgreSQL connection url")]) from None
    mode = params.get("sslmode")
    hosts = [h for h in str(params.get("host") or "localhost").split(",") if h]
    remote = [h for h in hosts if h not in _LOOPBACK and not h.startswith("/")]
    if remote and mode not in _VERIFYING:
        raise ConfigError(
            what,
            [
                (
                    field,
                    f"host {remote[0]} is not loopback: add sslmode=verify-full and"
                    " sslrootcert=<CA file> so what it carries travels over verified TLS",
                )
            ],
        )
    if mode not in (*_VERIFYING, "require") and not any(
        k in params for k in ("sslrootcert", "sslcert", "sslkey")
    ):
        return
    fields = {"ca_file": "sslrootcert", "cert_file": "sslcert", "key_file": "sslkey"}
    data: dict[str, object] = {
        ours: params[theirs]
        for ours, theirs in fields.items()
        if theirs in params and params[theirs] != "system"
    }
    if mode in _VERIFYING:
        data["mode"] = mode
    elif mode == "require":
        data["insecure_skip_verify"] = True
    try:
        TlsSettings.model_validate(data)
    except ValidationError as err:
        names = {"mode": "sslmode", **fields}
        problems = []
        for item in err.errors():
            name = str(item["loc"][0]) if item["loc"] else ""
            where = f"{field} {names[name]}" if name in names else field
            problems.append((where, item["msg"].removeprefix("Value error, ")))
        raise ConfigError(what, problems) from None
