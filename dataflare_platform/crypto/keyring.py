"""The one key-management interface every keyring backend implements.

A keyring holds key-encryption keys (KEKs) by *key name* (a dataset or a tenant), each in
numbered versions. It never hands a KEK out: it wraps and unwraps data keys with it, so
the same interface fits a local key folder, a PKCS#11 token and a cloud KMS (whose
``Encrypt``/``Decrypt`` of a data key are exactly ``wrap``/``unwrap``).

Rotation follows a transit-encryption service: ``rotate`` adds a version and new data is
encrypted under the newest one; ``set_min_decryption_version`` retires the older ones
(unwrap refuses them, so their ciphertexts no longer decrypt); ``destroy`` deletes every
version of a name: the crypto-shredding of a dataset or tenant.

This protocol is the extension point for other key stores: a cloud KMS keyring is one
more implementation chosen in ``crypto.settings.CryptoSettings.keyring`` (how its
operations map, and the rules it must keep: docs/encryption.md, "Extension point").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from dataflare_platform.errors import DataflareError, InvalidInputError, NotFoundError

# A key name becomes a folder or a token label: plain identifiers only (no "/", no "..").
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class KeyringError(DataflareError):
    """Base class of the keyring's refusals."""


class KeyRetiredError(KeyringError):
    """A key version below the name's minimum decryption version was asked for."""


class KeyDestroyedError(KeyringError, NotFoundError):
    """The key name was destroyed (crypto-shredded) or never existed."""


class UnwrapError(KeyringError):
    """A wrapped data key does not open with its key-encryption key (tampered, or wrapped
    for another name or version)."""


def check_key_name(name: str) -> str:
    """``name`` if it is a plain identifier usable as a folder or token label."""
    if not isinstance(name, str) or not _KEY_NAME.fullmatch(name) or ".." in name:
        raise InvalidInputError(
            f"key name {name!r}: use letters, digits, '_', '-', '.' (at most 128, no '..')"
        )
    return name


@dataclass(frozen=True)
class KeyState:
    """What a keyring knows of one name: its versions, the newest, and the oldest one
    that may still decrypt."""

    name: str
    latest: int
    min_decryption_version: int

    @property
    def usable(self) -> range:
        return range(self.min_decryption_version, self.latest + 1)

    def check_usable(self, version: int) -> None:
        """Raise unless ``version`` may decrypt: retired below the minimum, absent above
        the newest (one wording for every keyring and the envelope)."""
        if version < self.min_decryption_version:
            raise KeyRetiredError(
                f"key {self.name!r} version {version} is retired (minimum decryption "
                f"version {self.min_decryption_version})"
            )
        if version > self.latest:
            raise KeyDestroyedError(f"key {self.name!r} has no version {version}")


@runtime_checkable
class Keyring(Protocol):
    """Key-encryption keys by name and version; wrap/unwrap of data keys."""

    def create(self, name: str) -> KeyState:
        """Create version 1 of ``name``; an existing name is returned as it is."""
        ...

    def rotate(self, name: str) -> KeyState:
        """Add a version to ``name`` (created if absent); new data uses it."""
        ...

    def state(self, name: str) -> KeyState:
        """The name's versions; ``KeyDestroyedError`` if it has none."""
        ...

    def exists(self, name: str) -> bool: ...

    def set_min_decryption_version(self, name: str, version: int) -> KeyState:
        """Retire every version below ``version`` (never above the latest)."""
        ...

    def wrap(self, name: str, version: int, data_key: bytes) -> bytes:
        """``data_key`` encrypted under the KEK ``name``/``version``."""
        ...

    def unwrap(self, name: str, version: int, wrapped: bytes) -> bytes:
        """The data key; refused below the minimum version, after destroy, or tampered."""
        ...

    def destroy(self, name: str) -> None:
        """Delete every version of ``name``: whatever was encrypted under it is lost."""
        ...
