"""A keyring in a PKCS#11 token (an HSM; SoftHSM2 in tests): key-encryption keys are
non-extractable AES-256 secret keys generated inside the token, and data keys are
wrapped and unwrapped there with CKM_AES_GCM, so a KEK never exists in a file or in this
process's memory.

Configured by the deployment's environment, like the audit signer's token
(``compliance.audit_pkcs11``, whose PIN rules this follows):

- ``DATAFLARE_KEYRING_PKCS11_MODULE``: the token's PKCS#11 library;
- ``DATAFLARE_KEYRING_PKCS11_TOKEN``: the token label;
- ``DATAFLARE_KEYRING_PKCS11_PIN_FILE`` (a 0600 file) or ``DATAFLARE_KEYRING_PKCS11_PIN``.

Objects are labelled ``dataflare-kek/<name>/v<N>``. The token is the state: the versions
of a name are its key objects, the latest the highest, the minimum decryption version
the lowest still present. Retiring a version therefore destroys it in the token (an HSM
keeps no "disabled" flag we could trust across vendors): ``set_min_decryption_version``
is irreversible here, unlike the local keyring's until ``purge_retired``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from dataflare_platform.crypto.keyring import (
    KeyDestroyedError,
    KeyRetiredError,
    KeyringError,
    KeyState,
    UnwrapError,
    check_key_name,
)
from dataflare_platform.crypto.local_keyring import NONCE_BYTES, wrap_aad
from dataflare_platform.crypto.pkcs11_pin import read_pin
from dataflare_platform.errors import ConfigError, InvalidInputError

ENV_MODULE = "DATAFLARE_KEYRING_PKCS11_MODULE"
ENV_TOKEN = "DATAFLARE_KEYRING_PKCS11_TOKEN"
ENV_PIN = "DATAFLARE_KEYRING_PKCS11_PIN"
ENV_PIN_FILE = "DATAFLARE_KEYRING_PKCS11_PIN_FILE"
_PREFIX = "dataflare-kek/"
_LABEL = re.compile(r"^dataflare-kek/(?P<name>[^/]+)/v(?P<version>[0-9]+)$")


def _pin(env: Mapping[str, str]) -> str:
    return read_pin(env, ENV_PIN_FILE, ENV_PIN, "keyring PKCS#11")


class Pkcs11Keyring:
    """KEKs in a PKCS#11 token; one session per operation (none left open)."""

    def __init__(self, module: str, token: str, pin: str) -> None:
        import pkcs11

        try:
            self._token = pkcs11.lib(module).get_token(token_label=token)
        except (pkcs11.PKCS11Error, RuntimeError, OSError) as err:
            raise KeyringError(f"PKCS#11 token {token!r}: {type(err).__name__}") from None
        self._pin = pin

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Pkcs11Keyring:
        env = os.environ if env is None else env
        missing = [v for v in (ENV_MODULE, ENV_TOKEN) if not env.get(v)]
        if missing:
            raise ConfigError("keyring PKCS#11", [(v, "not set") for v in missing])
        return cls(env[ENV_MODULE], env[ENV_TOKEN], _pin(env))

    def _session(self, rw: bool = False) -> Any:
        import pkcs11

        try:
            return self._token.open(user_pin=self._pin, rw=rw)
        except pkcs11.PKCS11Error as err:
            raise KeyringError(f"PKCS#11 login: {type(err).__name__}") from None

    @staticmethod
    def _label(name: str, version: int) -> str:
        return f"{_PREFIX}{check_key_name(name)}/v{int(version)}"

    def _versions(self, session: Any, name: str) -> dict[int, Any]:
        from pkcs11 import Attribute, ObjectClass

        check_key_name(name)
        found = {}
        for obj in session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY}):
            match = _LABEL.match(obj[Attribute.LABEL])
            if match and match["name"] == name:
                found[int(match["version"])] = obj
        return found

    def _generate(self, session: Any, name: str, version: int) -> None:
        from pkcs11 import Attribute, KeyType

        session.generate_key(
            KeyType.AES,
            256,
            label=self._label(name, version),
            store=True,
            template={
                Attribute.EXTRACTABLE: False,
                Attribute.SENSITIVE: True,
                Attribute.ENCRYPT: True,
                Attribute.DECRYPT: True,
            },
        )

    def state(self, name: str) -> KeyState:
        with self._session() as session:
            versions = self._versions(session, name)
        if not versions:
            raise KeyDestroyedError(f"no key {name!r} in the token (destroyed or never made)")
        return KeyState(name, max(versions), min(versions))

    def exists(self, name: str) -> bool:
        with self._session() as session:
            return bool(self._versions(session, name))

    def create(self, name: str) -> KeyState:
        with self._session(rw=True) as session:
            if not self._versions(session, name):
                self._generate(session, name, 1)
        return self.state(name)

    def rotate(self, name: str) -> KeyState:
        with self._session(rw=True) as session:
            versions = self._versions(session, name)
            self._generate(session, name, max(versions, default=0) + 1)
        return self.state(name)

    def set_min_decryption_version(self, name: str, version: int) -> KeyState:
        with self._session(rw=True) as session:
            versions = self._versions(session, name)
            if not versions or not 1 <= version <= max(versions):
                raise InvalidInputError(
                    f"min_decryption_version {version}: between 1 and the latest "
                    f"({max(versions, default=0)})"
                )
            for v, key in versions.items():
                if v < version:
                    key.destroy()
        return self.state(name)

    def _key(self, session: Any, name: str, version: int) -> Any:
        versions = self._versions(session, name)
        if not versions:
            raise KeyDestroyedError(f"no key {name!r} in the token")
        if version < min(versions):
            raise KeyRetiredError(
                f"key {name!r} version {version} is retired (minimum decryption version "
                f"{min(versions)})"
            )
        if version not in versions:
            raise KeyDestroyedError(f"key {name!r} has no version {version}")
        return versions[version]

    def wrap(self, name: str, version: int, data_key: bytes) -> bytes:
        from pkcs11 import Mechanism
        from pkcs11.mechanisms import GCMParams

        nonce = os.urandom(NONCE_BYTES)
        with self._session() as session:
            key = self._key(session, name, version)
            params = GCMParams(nonce, wrap_aad(name, version))
            return nonce + bytes(
                key.encrypt(data_key, mechanism=Mechanism.AES_GCM, mechanism_param=params)
            )

    def unwrap(self, name: str, version: int, wrapped: bytes) -> bytes:
        import pkcs11
        from pkcs11 import Mechanism
        from pkcs11.mechanisms import GCMParams

        with self._session() as session:
            key = self._key(session, name, version)
            params = GCMParams(wrapped[:NONCE_BYTES], wrap_aad(name, version))
            try:
                return bytes(
                    key.decrypt(
                        wrapped[NONCE_BYTES:], mechanism=Mechanism.AES_GCM, mechanism_param=params
                    )
                )
            except pkcs11.PKCS11Error:
                raise UnwrapError(f"the data key of {name!r} v{version} does not open") from None

    def destroy(self, name: str) -> None:
        with self._session(rw=True) as session:
            for key in self._versions(session, name).values():
                key.destroy()
