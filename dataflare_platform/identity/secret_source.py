"""Where a secret of the identity settings comes from: an environment variable's name or a
file readable by its owner only. The settings never hold the value itself, so a settings
file can be committed, printed and logged without leaking it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pydantic import model_validator

from dataflare_platform.errors import SecretUnavailableError
from dataflare_platform.models import StrictModel


class SecretRef(StrictModel):
    """Exactly one of ``env`` (a variable's name) or ``file`` (a path, mode 0600 or
    stricter: a secret others can read is refused rather than used)."""

    env: str | None = None
    file: Path | None = None

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
            try:
                info = self.file.stat()
                if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                    raise SecretUnavailableError(
                        f"secret {self.describe()} is readable by others: chmod 600 it"
                    )
                value = self.file.read_text(encoding="utf-8")
            except OSError as err:
                raise SecretUnavailableError(
                    f"secret {self.describe()} cannot be read: {err.strerror}"
                ) from None
        value = value.strip()
        if not value:
            raise SecretUnavailableError(f"secret {self.describe()} is not set or empty")
        return value
