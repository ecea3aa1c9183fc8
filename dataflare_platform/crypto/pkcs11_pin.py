"""The PIN of a PKCS#11 token, shared by every token user (the keyring here, the audit
checkpoint signer in ``compliance.audit_pkcs11``): from a file of mode 0600 named by
one variable, else from another variable; none is a configuration error naming the file
variable. The PIN itself never appears in a message."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dataflare_platform.errors import ConfigError


def read_pin(env: Mapping[str, str], pin_file_var: str, pin_var: str, what: str) -> str:
    if env.get(pin_file_var):
        path = Path(env[pin_file_var])
        try:
            if path.stat().st_mode & 0o077:
                raise ConfigError(what, [(pin_file_var, f"{path} must be mode 0600")])
            return path.read_text().strip()
        except OSError as err:
            raise ConfigError(what, [(pin_file_var, f"{path}: {err.strerror}")]) from None
    if env.get(pin_var):
        return env[pin_var]
    raise ConfigError(what, [(pin_file_var, "no PIN configured")])
