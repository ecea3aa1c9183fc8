"""The local keyring: key-encryption keys as files in a folder OUTSIDE the project home.

Layout (folder 0700, files 0600, created with O_EXCL so a key is never readable by others
nor overwritten)::

    <keyring>/<name>/v<N>.kek     32 random bytes, AES-256 KEK version N
    <keyring>/<name>/state.json   {"latest": N, "min_decryption_version": M}

Data keys are wrapped with AES-256-GCM under the KEK, the associated data naming the key
name and version, so a wrapped key moved to another name or version does not open.
Retired versions (below the minimum) are refused by ``unwrap`` and their files can be
deleted with ``purge_retired``; ``destroy`` deletes the name's folder (crypto-shredding;
on SSDs and copy-on-write file systems overwriting does not reach every copy, so the
file is simply unlinked: the backups of this folder are what an operator must also
shred, docs/security.md).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dataflare_platform.crypto.keyring import (
    KeyDestroyedError,
    KeyState,
    UnwrapError,
    check_key_name,
)
from dataflare_platform.errors import ConfigError, InvalidInputError

KEK_BYTES = 32
NONCE_BYTES = 12
_STATE = "state.json"


def wrap_aad(name: str, version: int) -> bytes:
    """Associated data of a wrapped data key: it opens only for its name and version."""
    return f"dataflare-dek\x00{name}\x00{version}".encode()


def _write_exclusive(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _replace(path: Path, data: bytes) -> None:
    """Atomic rewrite of a small file (0600 from the start)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    _write_exclusive(tmp, data)
    tmp.replace(path)


class LocalKeyring:
    """KEK files in ``root`` (a folder the deployment names, never inside the home)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().absolute()
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            mode = stat.S_IMODE(self.root.stat().st_mode)
        except OSError as err:
            raise ConfigError(
                "keyring", [("keyring_dir", f"{self.root}: {err.strerror}")]
            ) from None
        if mode & 0o077:
            raise ConfigError(
                "keyring", [("keyring_dir", f"{self.root} is mode {mode:o}: it must be 0700")]
            )

    def _dir(self, name: str) -> Path:
        return self.root / check_key_name(name)

    def exists(self, name: str) -> bool:
        return (self._dir(name) / _STATE).is_file()

    def state(self, name: str) -> KeyState:
        path = self._dir(name) / _STATE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise KeyDestroyedError(
                f"no key {name!r} in the keyring (destroyed or never made)"
            ) from None
        return KeyState(name, int(data["latest"]), int(data["min_decryption_version"]))

    def _save(self, state: KeyState) -> None:
        data = {"latest": state.latest, "min_decryption_version": state.min_decryption_version}
        _replace(self._dir(state.name) / _STATE, json.dumps(data).encode())

    def _new_version(self, name: str, version: int) -> None:
        _write_exclusive(self._dir(name) / f"v{version}.kek", AESGCM.generate_key(256))

    def create(self, name: str) -> KeyState:
        if self.exists(name):
            return self.state(name)
        folder = self._dir(name)
        folder.mkdir(mode=0o700, exist_ok=True)
        self._new_version(name, 1)
        state = KeyState(name, 1, 1)
        self._save(state)
        return state

    def rotate(self, name: str) -> KeyState:
        if not self.exists(name):
            return self.create(name)
        state = self.state(name)
        self._new_version(name, state.latest + 1)
        state = KeyState(name, state.latest + 1, state.min_decryption_version)
        self._save(state)
        return state

    def set_min_decryption_version(self, name: str, version: int) -> KeyState:
        state = self.state(name)
        if not 1 <= version <= state.latest:
            raise InvalidInputError(
                f"min_decryption_version {version}: between 1 and the latest ({state.latest})"
            )
        state = KeyState(name, state.latest, max(version, state.min_decryption_version))
        self._save(state)
        return state

    def purge_retired(self, name: str) -> list[int]:
        """Delete the KEK files of retired versions (their data is then unrecoverable)."""
        state = self.state(name)
        purged = []
        for version in range(1, state.min_decryption_version):
            path = self._dir(name) / f"v{version}.kek"
            if path.exists():
                path.unlink()
                purged.append(version)
        return purged

    def _kek(self, name: str, version: int) -> AESGCM:
        state = self.state(name)
        state.check_usable(version)
        try:
            return AESGCM(Path(self._dir(name) / f"v{version}.kek").read_bytes())
        except FileNotFoundError:
            raise KeyDestroyedError(f"key {name!r} version {version} was purged") from None

    def wrap(self, name: str, version: int, data_key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._kek(name, version).encrypt(nonce, data_key, wrap_aad(name, version))

    def unwrap(self, name: str, version: int, wrapped: bytes) -> bytes:
        kek = self._kek(name, version)
        try:
            return kek.decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], wrap_aad(name, version)
            )
        except InvalidTag:
            raise UnwrapError(f"the data key of {name!r} v{version} does not open") from None

    def destroy(self, name: str) -> None:
        folder = self._dir(name)
        if folder.exists():
            shutil.rmtree(folder)
