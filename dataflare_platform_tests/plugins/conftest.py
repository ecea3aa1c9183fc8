"""Plugins are built from their C source once per test session (ziglang from PyPI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataflare_platform.plugins.build import build_samples


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_samples(tmp_path_factory.mktemp("plugins"))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("module-cache")
