"""Signing keys of the audit log and the settings that say where the log and keys live.

Checkpoints are signed with Ed25519 so that whoever can write the audit database cannot
also forge a checkpoint: the private key lives in a separate directory (file mode 0600),
and a verifier needs only the public keys. A key id is derived from the public key itself
(first 16 hex digits of SHA-256 of its raw bytes), so a checkpoint names the key that
signed it without trusting any registry.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import ValidationError, field_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from dataflare_platform.errors import ConfigError, InvalidInputError
from dataflare_platform.home import ProjectHome
from dataflare_platform.models import StrictModel

PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"
DEFAULT_DB_NAME = "audit.db"
DEFAULT_KEY_DIRNAME = "audit_keys"


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 of the raw public key: short, stable, self-certifying."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key_pair(key_dir: Path) -> str:
    """Write a new Ed25519 key pair as ``<key id>.key`` (PKCS#8 PEM, mode 0600) and
    ``<key id>.pub`` (SubjectPublicKeyInfo PEM) under ``key_dir``; return the key id.

    The private file is created with O_EXCL and mode 0600 from the start, so the key is
    never readable by others, not even for a moment, and an existing key is never
    overwritten.
    """
    key_dir = Path(key_dir)
    try:
        key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        private = Ed25519PrivateKey.generate()
        kid = key_id(private.public_key())
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(
            key_dir / f"{kid}{PRIVATE_SUFFIX}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600
        )
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        (key_dir / f"{kid}{PUBLIC_SUFFIX}").write_bytes(public_pem)
    except OSError as err:
        raise ConfigError("audit keys", [("key_dir", f"{key_dir}: {err}")]) from None
    return kid


def load_public_keys(key_dir: Path) -> dict[str, Ed25519PublicKey]:
    """Every ``*.pub`` under ``key_dir`` by key id (the id is recomputed from the key, not
    taken from the file name, so a renamed file cannot impersonate another key)."""
    key_dir = Path(key_dir)
    if not key_dir.is_dir():
        raise ConfigError("audit keys", [("key_dir", f"no key directory at {key_dir}")])
    keys: dict[str, Ed25519PublicKey] = {}
    for path in sorted(key_dir.glob(f"*{PUBLIC_SUFFIX}")):
        try:
            public = serialization.load_pem_public_key(path.read_bytes())
        except (ValueError, UnsupportedAlgorithm, OSError) as err:
            raise ConfigError("audit keys", [("key_dir", f"{path}: {err}")]) from None
        if not isinstance(public, Ed25519PublicKey):
            raise ConfigError("audit keys", [("key_dir", f"{path}: not an Ed25519 key")])
        keys[key_id(public)] = public
    return keys


def load_signing_key(key_dir: Path, kid: str | None = None) -> Ed25519PrivateKey:
    """The private key ``kid`` under ``key_dir``; without ``kid`` the only one there
    (several keys and no id is refused rather than guessed)."""
    key_dir = Path(key_dir)
    if not key_dir.is_dir():
        raise ConfigError("audit keys", [("key_dir", f"no key directory at {key_dir}")])
    if kid is None:
        candidates = sorted(key_dir.glob(f"*{PRIVATE_SUFFIX}"))
        if len(candidates) != 1:
            found = ", ".join(p.stem for p in candidates) or "none"
            raise ConfigError(
                "audit keys",
                [("key_id", f"expected exactly one private key in {key_dir}, found {found}")],
            )
        path = candidates[0]
    else:
        path = key_dir / f"{kid}{PRIVATE_SUFFIX}"
        if not path.is_file():
            raise ConfigError("audit keys", [("key_id", f"no private key {kid} in {key_dir}")])
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm, OSError) as err:
        raise ConfigError("audit keys", [("key_dir", f"{path}: {err}")]) from None
    if not isinstance(private, Ed25519PrivateKey):
        raise ConfigError("audit keys", [("key_dir", f"{path}: not an Ed25519 key")])
    return private


def normalize_url(url: str) -> str:
    """Check an audit database URL and pin PostgreSQL to the psycopg 3 driver.

    Only SQLite files and PostgreSQL are supported: those are the two backends whose
    append lock (BEGIN IMMEDIATE, advisory transaction lock) is implemented. An
    in-memory SQLite database is refused because an audit log that vanishes on exit
    proves nothing.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise InvalidInputError(f"not a database URL: {err}") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite":
        if driver not in ("", "pysqlite"):
            raise InvalidInputError(
                f"SQLite driver {driver!r} is not supported (use sqlite:///path)"
            )
        if not parsed.database or parsed.database == ":memory:":
            raise InvalidInputError("an in-memory SQLite audit log is lost on exit; give a file")
        return parsed.render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise InvalidInputError(f"PostgreSQL driver {driver!r} is not supported (use +psycopg)")
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise InvalidInputError(f"backend {backend!r} is not supported (sqlite or postgresql)")


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages and reports."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


class AuditSettings(StrictModel):
    """Where the audit log and its keys are: validated so that a typo fails naming the
    field before anything is written."""

    url: str
    key_dir: Path

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        return normalize_url(url)

    @field_validator("key_dir")
    @classmethod
    def _check_key_dir(cls, key_dir: Path) -> Path:
        key_dir = key_dir.expanduser().absolute()
        if key_dir.exists() and not key_dir.is_dir():
            raise ValueError(f"{key_dir} exists and is not a directory")
        return key_dir

    @classmethod
    def resolve(
        cls,
        url: str | None = None,
        key_dir: Path | None = None,
        home: Path | None = None,
    ) -> AuditSettings:
        """Explicit values win; otherwise ``<home>/audit.db`` and ``<home>/audit_keys``,
        the home resolved like every other command (--home, $DATAFLARE_HOME, ./.dataflare).
        """
        if url is None or key_dir is None:
            root = ProjectHome.resolve(home).root
            url = url if url is not None else f"sqlite:///{root / DEFAULT_DB_NAME}"
            key_dir = key_dir if key_dir is not None else root / DEFAULT_KEY_DIRNAME
        try:
            return cls(url=url, key_dir=key_dir)
        except ValidationError as err:
            problems = ConfigError.from_validation("audit settings", err).problems
            raise ConfigError("audit settings", [(f, _mask(m, url)) for f, m in problems]) from None


def _mask(message: str, url: str) -> str:
    """Keep a password in a bad URL out of the error message."""
    try:
        password = make_url(url).password
    except ArgumentError:
        return message
    return message.replace(str(password), "***") if password else message
