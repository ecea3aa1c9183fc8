"""Where the keyring and the wrapped data keys are: deployment configuration only.

- ``DATAFLARE_KEYRING_DIR``: the local keyring's folder (0700, KEK files 0600). It must
  be outside the project home: whoever can read the home (backups, a pipeline's files)
  must not hold the keys of the data in it. Default: ``$XDG_CONFIG_HOME/dataflare/<home
  hash>/keyring``, next to the audit keys ``dataflare audit init`` provisions.
- ``DATAFLARE_DATA_KEYS_DIR``: the wrapped data keys (useless without the keyring), by
  default ``<home>/crypto/data_keys``.
- ``DATAFLARE_KEYRING_PKCS11_MODULE`` (and ``_TOKEN``, ``_PIN_FILE``): a PKCS#11 token
  holds the key-encryption keys instead (``crypto.pkcs11_keyring``).

A launch's run config never reaches these: the Dagster resource marks them deployment
settings (``deployment_settings.DEPLOYMENT_SETTINGS["crypto"]``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError, field_validator, model_validator

from dataflare_platform.crypto.columns import ColumnCipher
from dataflare_platform.crypto.envelope import DataKeyStore, Envelope
from dataflare_platform.crypto.keyring import Keyring
from dataflare_platform.crypto.local_keyring import LocalKeyring
from dataflare_platform.errors import ConfigError
from dataflare_platform.home import ProjectHome, path_inside, user_config_dir
from dataflare_platform.models import StrictModel

ENV_KEYRING_DIR = "DATAFLARE_KEYRING_DIR"
ENV_DATA_KEYS_DIR = "DATAFLARE_DATA_KEYS_DIR"
ENV_PKCS11_MODULE = "DATAFLARE_KEYRING_PKCS11_MODULE"  # crypto.pkcs11_keyring


def default_keyring_dir(home_root: Path, environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/dataflare/<first 16 hex of SHA-256 of the home>/keyring``: the
    per-user folder of ``home.user_config_dir``, shared with the audit keys."""
    return user_config_dir(home_root, environ) / "keyring"


class CryptoSettings(StrictModel):
    """The keyring folder (outside the home, refused otherwise) and the data-key folder."""

    home: Path
    keyring_dir: Path
    data_keys_dir: Path

    @field_validator("keyring_dir", "data_keys_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        return path.expanduser().absolute()

    @model_validator(mode="after")
    def _keys_outside_home(self) -> CryptoSettings:
        if path_inside(self.keyring_dir, self.home):
            raise ValueError(
                f"keyring_dir {self.keyring_dir} is inside the project home {self.home}: keep "
                "key-encryption keys where the data's readers cannot read them"
            )
        return self

    @classmethod
    def resolve(
        cls,
        home: Path | None = None,
        keyring_dir: Path | str | None = None,
        data_keys_dir: Path | str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> CryptoSettings:
        """Explicit values (the deployment's resource fields) win, then the environment,
        then the defaults; a bad value is refused naming the field."""
        env = os.environ if environ is None else environ
        root = ProjectHome.resolve(home).root
        values = {
            "home": root,
            "keyring_dir": keyring_dir
            or env.get(ENV_KEYRING_DIR)
            or default_keyring_dir(root, env),
            "data_keys_dir": data_keys_dir
            or env.get(ENV_DATA_KEYS_DIR)
            or root / "crypto" / "data_keys",
        }
        try:
            return cls(**values)
        except ValidationError as err:
            raise ConfigError.from_validation("crypto settings", err) from None

    def keyring(self, environ: Mapping[str, str] | None = None) -> Keyring:
        """The PKCS#11 token when ``DATAFLARE_KEYRING_PKCS11_MODULE`` is set, else the
        local keyring folder."""
        env = os.environ if environ is None else environ
        if env.get(ENV_PKCS11_MODULE):
            from dataflare_platform.crypto.pkcs11_keyring import Pkcs11Keyring

            return Pkcs11Keyring.from_env(env)
        return LocalKeyring(self.keyring_dir)

    def envelope(self) -> Envelope:
        return Envelope(self.keyring(), DataKeyStore(self.data_keys_dir))

    def cipher(self) -> ColumnCipher:
        return ColumnCipher(self.envelope())
