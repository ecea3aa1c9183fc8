"""Signing keys of the audit log and the settings that say where the log, its keys and
its anchor are.

Checkpoints are signed so that whoever can write the audit database cannot also forge a
checkpoint. The deployment configures, outside the project home (whoever can write the
home can write the log):

- the signing key: ``DATAFLARE_AUDIT_SIGNING_KEY`` (a PEM private key file, mode 0600) or
  a PKCS#11 token (``DATAFLARE_AUDIT_PKCS11_MODULE`` and friends, see ``audit_pkcs11``);
- the entry key: ``DATAFLARE_AUDIT_ENTRY_KEY`` (a file of one line of hex, 32 random
  bytes, mode 0600), the HMAC-SHA256 key every append tags its entry with, so an entry
  written after the last checkpoint cannot be forged or re-chained by whoever can write
  the home either (``audit_signing.EntryAuthenticator``). It is a file even where the
  signing key is on a PKCS#11 token: appends are frequent and must stay cheap;
- the trusted public keys, PINNED: ``DATAFLARE_AUDIT_TRUSTED_KEYS`` names one file of
  concatenated PEM public keys. Only those verify a checkpoint (never "every key found in
  a folder": a key dropped next to the log is not trusted);
- the anchor: ``DATAFLARE_AUDIT_ANCHOR_URL`` (PostgreSQL, or ``file://`` for the embedded
  default), where every checkpoint is also written, so emptying the log *and* its
  checkpoints is still caught.

A missing key is an error, never silently regenerated. The embedded default is an
explicit provisioning step, ``dataflare audit init`` (the demo calls it): a key pair, the
pinned public key and a file anchor in a per-user directory outside the home
(``$XDG_CONFIG_HOME/dataflare/<home hash>/``, mode 0700, files 0600), recorded in
``audit.json`` there. Environment variables win over that file, field by field.

A key id is derived from the public key itself (first 16 hex digits of SHA-256 of the raw
Ed25519 key, or of the DER SubjectPublicKeyInfo of an EC key), so a checkpoint names the
key that signed it without trusting any registry.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import ValidationError, field_validator, model_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from dataflare_platform.compliance.audit_signing import (
    ECDSA_P256,
    ED25519,
    EntryAuthenticator,
    FileSigner,
    PublicKey,
    Signer,
    algorithm_of,
    as_signer,
    key_id,
    public_pem,
)
from dataflare_platform.errors import ConfigError, InvalidInputError
from dataflare_platform.home import ProjectHome, path_inside, user_config_dir
from dataflare_platform.models import StrictModel
from dataflare_platform.secrets import redact_url

# Re-exported: the signing vocabulary is reached through this module too.
__all__ = [
    "ECDSA_P256",
    "ED25519",
    "AuditSettings",
    "EntryAuthenticator",
    "FileSigner",
    "PublicKey",
    "Signer",
    "algorithm_of",
    "as_signer",
    "generate_key_pair",
    "key_id",
    "load_entry_key",
    "load_public_keys",
    "load_signing_key",
    "load_trusted_keys",
    "provision",
    "public_pem",
    "user_config_dir",
]

PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"
DEFAULT_DB_NAME = "audit.db"

ENV_SIGNING_KEY = "DATAFLARE_AUDIT_SIGNING_KEY"
ENV_ENTRY_KEY = "DATAFLARE_AUDIT_ENTRY_KEY"
ENV_TRUSTED_KEYS = "DATAFLARE_AUDIT_TRUSTED_KEYS"
ENV_ANCHOR_URL = "DATAFLARE_AUDIT_ANCHOR_URL"
ENV_PKCS11_MODULE = "DATAFLARE_AUDIT_PKCS11_MODULE"
PROVISION_FILE = "audit.json"
PROVISION_KEY = "signing.key"
PROVISION_ENTRY_KEY = "entry.key"
PROVISION_TRUSTED = "trusted.pem"
PROVISION_ANCHOR = "anchor.jsonl"
_PEM_BLOCK = re.compile(rb"-----BEGIN PUBLIC KEY-----\s.*?-----END PUBLIC KEY-----", re.DOTALL)


def _write_private(path: Path, private: Ed25519PrivateKey) -> None:
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def write_entry_key(path: Path) -> EntryAuthenticator:
    """Create a new entry key file at ``path`` (O_EXCL, mode 0600 from the start: never
    readable by others, never overwriting a key) and return it."""
    key = EntryAuthenticator.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key.encoded() + "\n")
    return key


def load_entry_key(path: Path, field: str = "entry_key") -> EntryAuthenticator:
    """The entry key in ``path``. Missing, unreadable, readable by group or others, or not
    64 hex digits is an error naming the file (a key is never generated here: a new one
    would make the log's existing tags unverifiable and hide the loss)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii").strip()
    except OSError as err:
        raise ConfigError(
            "audit keys", [(field, f"{path}: {err.strerror}: restore the entry key")]
        ) from None
    except UnicodeDecodeError:
        raise ConfigError("audit keys", [(field, f"{path}: not one line of hex")]) from None
    if mode & 0o077:
        raise ConfigError(
            "audit keys", [(field, f"{path}: mode {mode & 0o777:o}, must be 0600 (owner only)")]
        )
    try:
        return EntryAuthenticator(bytes.fromhex(text))
    except (ValueError, InvalidInputError):
        raise ConfigError(
            "audit keys", [(field, f"{path}: not {2 * 32} hex digits (a 32-byte key)")]
        ) from None


def generate_key_pair(key_dir: Path) -> str:
    """Write a new Ed25519 key pair as ``<key id>.key`` (PKCS#8 PEM, mode 0600) and
    ``<key id>.pub`` (SubjectPublicKeyInfo PEM) under ``key_dir``; return the key id.

    The private file is created with O_EXCL and mode 0600 from the start, so the key is
    never readable by others, not even for a moment, and an existing key is never
    overwritten. Pinning the public key is a separate, deliberate step.
    """
    key_dir = Path(key_dir)
    try:
        key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        private = Ed25519PrivateKey.generate()
        kid = key_id(private.public_key())
        _write_private(key_dir / f"{kid}{PRIVATE_SUFFIX}", private)
        (key_dir / f"{kid}{PUBLIC_SUFFIX}").write_bytes(public_pem(private.public_key()))
    except OSError as err:
        raise ConfigError("audit keys", [("key_dir", f"{key_dir}: {err}")]) from None
    return kid


def load_public_keys(key_dir: Path) -> dict[str, Ed25519PublicKey]:
    """Every ``*.pub`` under ``key_dir`` by key id: a helper for tools and tests that
    handle a key directory; a deployment trusts only its pinned file
    (:func:`load_trusted_keys`)."""
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


def load_trusted_keys(path: Path) -> dict[str, PublicKey]:
    """The pinned public keys: every PEM ``PUBLIC KEY`` block of one file, by key id (the
    id is recomputed from each key). A file with none is an error: nothing would verify."""
    field = "trusted_keys"
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ConfigError("audit keys", [(field, f"{path}: {err.strerror}")]) from None
    keys: dict[str, PublicKey] = {}
    for block in _PEM_BLOCK.findall(data):
        try:
            public = serialization.load_pem_public_key(block)
            algorithm_of(public)  # type: ignore[arg-type]
        except (ValueError, UnsupportedAlgorithm, InvalidInputError) as err:
            raise ConfigError("audit keys", [(field, f"{path}: {err}")]) from None
        keys[key_id(public)] = public  # type: ignore[arg-type]
    if not keys:
        raise ConfigError("audit keys", [(field, f"{path}: no PEM public key in it")])
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
    return load_private_key_file(path, "key_dir")


def load_private_key_file(path: Path, field: str = "signing_key") -> Ed25519PrivateKey:
    """An Ed25519 PEM private key file; missing, unreadable or another type is an error."""
    try:
        private = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as err:
        raise ConfigError("audit keys", [(field, f"{path}: {err.strerror}")]) from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise ConfigError("audit keys", [(field, f"{path}: {err}")]) from None
    if not isinstance(private, Ed25519PrivateKey):
        raise ConfigError("audit keys", [(field, f"{path}: not an Ed25519 key")])
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
    """The URL with any password masked, for messages and reports: the platform's one
    redaction helper (``secrets.redact_url``)."""
    return redact_url(url)


class AuditSettings(StrictModel):
    """Where the audit log, its keys and its anchor are: validated so that a typo fails
    naming the field before anything is written. Keys inside the project home are
    refused (whoever can rewrite the log could then also re-sign it)."""

    url: str
    home: Path
    signing_key: Path | None = None
    entry_key: Path | None = None
    trusted_keys: Path | None = None
    anchor_url: str | None = None
    pkcs11: bool = False

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        return normalize_url(url)

    @field_validator("signing_key", "entry_key", "trusted_keys")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        return None if path is None else path.expanduser().absolute()

    @model_validator(mode="after")
    def _keys_outside_home(self) -> AuditSettings:
        for name in ("signing_key", "entry_key", "trusted_keys"):
            path = getattr(self, name)
            if path is not None and path_inside(path, self.home):
                raise ValueError(
                    f"{name} {path} is inside the project home {self.home}: keep audit keys "
                    "where whoever can write the log cannot (run `dataflare audit init`)"
                )
        return self

    @classmethod
    def resolve(
        cls,
        url: str | None = None,
        home: Path | None = None,
        signing_key: Path | None = None,
        trusted_keys: Path | None = None,
        anchor_url: str | None = None,
        environ: Mapping[str, str] | None = None,
        entry_key: Path | None = None,
    ) -> AuditSettings:
        """Explicit values win, then the environment (``DATAFLARE_AUDIT_*``), then what
        ``dataflare audit init`` provisioned for this home; the log defaults to
        ``<home>/audit.db``, the home resolved like every other command."""
        env = os.environ if environ is None else environ
        root = ProjectHome.resolve(home).root
        url = url if url is not None else f"sqlite:///{root / DEFAULT_DB_NAME}"
        provisioned = _read_provisioned(user_config_dir(root, env))
        pkcs11 = bool(env.get(ENV_PKCS11_MODULE))

        def pick(explicit, var: str, key: str):
            if explicit is not None:
                return explicit
            if env.get(var):
                return env[var]
            return provisioned.get(key)

        values = {
            "url": url,
            "home": root,
            "signing_key": None if pkcs11 else pick(signing_key, ENV_SIGNING_KEY, "signing_key"),
            "entry_key": pick(entry_key, ENV_ENTRY_KEY, "entry_key"),
            "trusted_keys": pick(trusted_keys, ENV_TRUSTED_KEYS, "trusted_keys"),
            "anchor_url": pick(anchor_url, ENV_ANCHOR_URL, "anchor_url"),
            "pkcs11": pkcs11,
        }
        try:
            return cls(**values)
        except ValidationError as err:
            problems = ConfigError.from_validation("audit settings", err).problems
            raise ConfigError("audit settings", [(f, _mask(m, url)) for f, m in problems]) from None

    def signer(self, environ: Mapping[str, str] | None = None) -> Signer:
        """The configured signing key; none configured or a missing file is an error (a
        key is never generated here)."""
        if self.pkcs11:
            from dataflare_platform.compliance.audit_pkcs11 import Pkcs11Signer

            return Pkcs11Signer.from_env(os.environ if environ is None else environ)
        if self.signing_key is None:
            raise ConfigError(
                "audit keys",
                [
                    (
                        "signing_key",
                        f"no audit signing key configured: set {ENV_SIGNING_KEY} (or "
                        f"{ENV_PKCS11_MODULE}) or run `dataflare audit init`",
                    )
                ],
            )
        return FileSigner(load_private_key_file(self.signing_key))

    def authenticator(self) -> EntryAuthenticator:
        """The configured entry key; none configured or a missing file is an error (a key
        is never generated here)."""
        if self.entry_key is None:
            raise ConfigError(
                "audit keys",
                [
                    (
                        "entry_key",
                        f"no audit entry key configured: set {ENV_ENTRY_KEY} or run"
                        " `dataflare audit init`",
                    )
                ],
            )
        return load_entry_key(self.entry_key)

    def trusted(self) -> dict[str, PublicKey]:
        """The pinned public keys; none configured is an error."""
        if self.trusted_keys is None:
            raise ConfigError(
                "audit keys",
                [
                    (
                        "trusted_keys",
                        f"no pinned audit public keys: set {ENV_TRUSTED_KEYS} or run"
                        " `dataflare audit init`",
                    )
                ],
            )
        return load_trusted_keys(self.trusted_keys)


def _read_provisioned(directory: Path) -> dict[str, str]:
    path = directory / PROVISION_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError("audit settings", [(str(path), str(err))]) from None
    return {k: v for k, v in data.items() if isinstance(v, str)}


def provision(
    home_root: Path, anchor_url: str | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``dataflare audit init``: provision this home's embedded-default key pair, pin its
    public key and choose a file anchor, all in :func:`user_config_dir` (0700, files
    0600). Idempotent: an existing provisioning is returned as it is; if its key file has
    gone, that is an error (a new key would hide the loss), never a regeneration."""
    directory = user_config_dir(home_root, environ)
    existing = _read_provisioned(directory)
    if existing:
        for field in ("signing_key", "entry_key"):
            key = Path(existing.get(field, "") or directory / "-")
            if (field == "signing_key" or field in existing) and not key.is_file():
                raise ConfigError(
                    "audit keys",
                    [(field, f"the provisioned audit key {key} is missing: restore it")],
                )
        if "entry_key" not in existing:
            # Provisioned before entries were authenticated: this explicit step adds the
            # entry key (the log's older entries then need `dataflare audit upgrade`).
            try:
                write_entry_key(directory / PROVISION_ENTRY_KEY)
            except OSError as err:
                raise ConfigError("audit keys", [("config_dir", f"{directory}: {err}")]) from None
            existing = {**existing, "entry_key": str(directory / PROVISION_ENTRY_KEY)}
            _write_provisioned(directory, existing, replace=True)
        return existing
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory.chmod(0o700)
        private = Ed25519PrivateKey.generate()
        key_path = directory / PROVISION_KEY
        _write_private(key_path, private)
        write_entry_key(directory / PROVISION_ENTRY_KEY)
        trusted = directory / PROVISION_TRUSTED
        trusted.write_bytes(public_pem(private.public_key()))
        trusted.chmod(0o600)
        config = {
            "signing_key": str(key_path),
            "entry_key": str(directory / PROVISION_ENTRY_KEY),
            "trusted_keys": str(trusted),
            "anchor_url": anchor_url or f"file://{directory / PROVISION_ANCHOR}",
            "key_id": key_id(private.public_key()),
        }
        if anchor_url is None:
            anchor = directory / PROVISION_ANCHOR
            os.close(os.open(anchor, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
        _write_provisioned(directory, config)
    except OSError as err:
        raise ConfigError("audit keys", [("config_dir", f"{directory}: {err}")]) from None
    return config


def provision_embedded(home_root: Path, environ: Mapping[str, str] | None = None) -> bool:
    """At a front's start: :func:`provision` the embedded default for this home unless
    the deployment configures its own audit keys (any of ``DATAFLARE_AUDIT_SIGNING_KEY``,
    ``_ENTRY_KEY``, ``_TRUSTED_KEYS``, ``_PKCS11_MODULE`` set: then a missing key stays a
    start error naming it). Every append needs the entry key, and the first ``make ui``
    must stay one command. Idempotent; a provisioned key that went missing is an error,
    never replaced. True when it provisioned (or completed) the default."""
    env = os.environ if environ is None else environ
    own = (ENV_SIGNING_KEY, ENV_ENTRY_KEY, ENV_TRUSTED_KEYS, ENV_PKCS11_MODULE)
    if any(env.get(name) for name in own):
        return False
    provision(Path(home_root), environ=env)
    return True


def _write_provisioned(directory: Path, config: Mapping[str, str], replace: bool = False) -> None:
    """Write ``audit.json`` 0600: created exclusively, or (``replace``) through a 0600
    temporary file renamed over the old one, so no reader ever sees half a file."""
    target = directory / PROVISION_FILE
    path = directory / f".{PROVISION_FILE}.tmp" if replace else target
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(dict(config), out, indent=2)
    if replace:
        path.replace(target)


def _mask(message: str, url: str) -> str:
    """Keep a password in a bad URL out of the error message."""
    try:
        password = make_url(url).password
    except ArgumentError:
        return message
    return message.replace(str(password), "***") if password else message
