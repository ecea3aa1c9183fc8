"""Plugins are built from their C source once per test session (ziglang from PyPI)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from dataflare_platform.plugins.build import build_samples


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_samples(tmp_path_factory.mktemp("plugins"))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("module-cache")


@pytest.fixture
def plugin_dir(built: dict[str, Path], tmp_path: Path) -> Path:
    """A delivered plugin folder holding copies of two built samples (tests swap them)."""
    out = tmp_path / "plugins"
    out.mkdir()
    for name in ("currency", "pii_mask"):
        shutil.copy(built[name], out / f"{name}.wasm")
        shutil.copy(built[name].with_suffix(".json"), out / f"{name}.json")
    return out


@pytest.fixture(autouse=True)
def pinned_samples(audited_home, built: dict[str, Path]) -> Path:
    """Every test runs in its own home whose deployment lock pins the built samples,
    signed with the home's lock key (outside the home), as ``dataflare plugin lock``
    would: ``load_plugin`` checks the deployment's pins like every other load path. The
    home's audit keys are provisioned: pin decisions are appended to its audit log."""
    home = audited_home
    from dataflare_platform.plugins.lock import LOCK_FILE, LockAuth, PinnedPlugin, write_lock

    pins = {
        name: PinnedPlugin(
            sha256=hashlib.sha256(wasm.read_bytes()).hexdigest(),
            manifest_sha256=hashlib.sha256(wasm.with_suffix(".json").read_bytes()).hexdigest(),
        )
        for name, wasm in built.items()
    }
    lock = home.root / LOCK_FILE
    write_lock(lock, pins, auth=LockAuth.for_home(home.root))
    return lock
