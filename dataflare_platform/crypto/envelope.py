"""Envelope encryption: one data key (DEK) per key name and version, wrapped by the
keyring's key-encryption key of that version and stored wrapped next to the data.

The DEK never reaches disk in the clear; the wrapped copies live in a data-key folder
(``<home>/crypto/data_keys`` by default: a wrapped key is useless without the keyring,
which lives outside the home). Rotating a name adds a KEK version and a fresh DEK under
it; unwrapped DEKs are cached in this process, but every use first re-reads the name's
state, so a retirement or a destroy takes effect at the next batch.

From one 32-byte DEK two keys are derived with HKDF-SHA256 (distinct ``info``): the
AES-256-GCM key of the randomized mode and the 512-bit AES-SIV key of the deterministic
mode, so the two modes never share key material.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dataflare_platform.crypto.keyring import (
    KeyDestroyedError,
    Keyring,
    KeyState,
    check_key_name,
)
from dataflare_platform.crypto.local_keyring import _replace
from dataflare_platform.errors import ConflictError

DEK_BYTES = 32


@dataclass(frozen=True)
class DataKey:
    """The ciphers of one name and version (derived once, reused for every batch)."""

    name: str
    version: int
    gcm: AESGCM
    siv: AESSIV


def _derive(dek: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(dek)


class DataKeyStore:
    """Wrapped DEKs by name and version, one JSON file per name (0600)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _path(self, name: str) -> Path:
        return self.folder / f"{check_key_name(name)}.json"

    def load(self, name: str) -> dict[int, bytes]:
        try:
            data = json.loads(self._path(name).read_text())
        except FileNotFoundError:
            return {}
        return {int(v): base64.b64decode(w) for v, w in data.items()}

    @contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive lock across processes (``flock`` on ``.lock`` in the folder):
        creating a name, its first data key and a rotation happen under it, so two
        pipelines starting at once cannot each make a data key for the same version (the
        second would overwrite the first and strand what it encrypted)."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def save(self, name: str, version: int, wrapped: bytes) -> None:
        """Add a wrapped key; a version that already has one is never replaced."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        keys = self.load(name)
        if version in keys:
            raise ConflictError(f"data key {name!r} version {version} exists already")
        keys[version] = wrapped
        body = {str(v): base64.b64encode(w).decode() for v, w in sorted(keys.items())}
        _replace(self._path(name), json.dumps(body).encode())

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)


class Envelope:
    """Data keys of every name, wrapped by ``keyring``, stored in ``store``."""

    def __init__(self, keyring: Keyring, store: DataKeyStore) -> None:
        self.keyring = keyring
        self.store = store
        self._cache: dict[tuple[str, int], DataKey] = {}

    def _new_dek(self, name: str, version: int) -> None:
        dek = os.urandom(DEK_BYTES)
        self.store.save(name, version, self.keyring.wrap(name, version, dek))

    def ensure(self, name: str) -> KeyState:
        """The name's state, creating version 1 and its DEK on first use. A name the
        keyring knows whose newest data key is missing is an error, never a fresh key
        (that would hide a lost or misconfigured data-key folder while new data went
        under keys no old reader has), like a missing audit key."""
        if self.keyring.exists(name):  # the common case: no lock, nothing to write
            state = self.keyring.state(name)
            if state.latest in self.store.load(name):
                return state
        with self.store.lock():
            existed = self.keyring.exists(name)
            state = self.keyring.create(name)
            if state.latest not in self.store.load(name):
                if existed:
                    raise KeyDestroyedError(
                        f"the data key of {name!r} version {state.latest} is missing from "
                        f"{self.store.folder}: restore it (or point DATAFLARE_DATA_KEYS_DIR "
                        "at it)"
                    )
                self._new_dek(name, state.latest)
            return state

    def rotate(self, name: str) -> KeyState:
        """A new KEK version and a fresh DEK under it: new data is encrypted with it."""
        with self.store.lock():
            state = self.keyring.rotate(name)
            self._new_dek(name, state.latest)
            return state

    def retire_below(self, name: str, version: int) -> KeyState:
        state = self.keyring.set_min_decryption_version(name, version)
        self._forget(name)
        return state

    def destroy(self, name: str) -> None:
        """Crypto-shredding: the KEKs go (the wrapped DEKs are then noise), and so do the
        wrapped DEKs and this process's cached keys."""
        self.keyring.destroy(name)
        self.store.delete(name)
        self._forget(name)

    def _forget(self, name: str) -> None:
        for key in [k for k in self._cache if k[0] == name]:
            del self._cache[key]

    def state(self, name: str) -> KeyState:
        return self.keyring.state(name)

    def key(self, name: str, version: int, state: KeyState | None = None) -> DataKey:
        """The data key ``name``/``version``, checked against the name's current state
        (``state`` when the caller already read it for this batch)."""
        state = state or self.keyring.state(name)
        state.check_usable(version)
        cached = self._cache.get((name, version))
        if cached is not None:
            return cached
        wrapped = self.store.load(name).get(version)
        if wrapped is None:
            raise KeyDestroyedError(f"no data key for {name!r} version {version}")
        dek = self.keyring.unwrap(name, version, wrapped)
        key = DataKey(
            name,
            version,
            AESGCM(_derive(dek, b"dataflare aes-256-gcm", 32)),
            AESSIV(_derive(dek, b"dataflare aes-siv-512", 64)),
        )
        self._cache[(name, version)] = key
        return key
