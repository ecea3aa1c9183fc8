"""Shared fixtures: a real local keyring in a 0700 folder outside the home, and the
wrapped data keys inside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataflare_platform.crypto.columns import ColumnCipher
from dataflare_platform.crypto.settings import CryptoSettings


@pytest.fixture
def settings(tmp_path: Path) -> CryptoSettings:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    return CryptoSettings.resolve(
        home=home,
        keyring_dir=tmp_path / "outside" / "keyring",
        environ={},
    )


@pytest.fixture
def cipher(settings: CryptoSettings) -> ColumnCipher:
    return settings.cipher()
