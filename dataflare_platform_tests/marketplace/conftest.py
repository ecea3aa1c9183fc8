"""A registry with its keys, a publisher, and clients over the directory or HTTP; the
currency sample plugin built once per module, and the plugin runtime that loads it
through a marketplace load check."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from securesystemslib.signer import CryptoSigner

from dataflare_platform.marketplace.client import RegistryClient
from dataflare_platform.marketplace.loadcheck import MarketplaceLoadCheck
from dataflare_platform.marketplace.repository import (
    TOP_ROLES,
    Repository,
    generate_key_file,
    load_signer,
)
from dataflare_platform.marketplace.served import served_directory
from dataflare_platform.plugins.build import SAMPLES_DIR, build_plugin
from dataflare_platform.plugins.registry import PluginRegistry, RegistryConfig

# The smallest valid module: magic and version (content is not what TUF checks).
WASM = b"\x00asm\x01\x00\x00\x00"
MANIFEST = {
    "name": "currency",
    "version": "1.0.0",
    "kind": "map",
    "capabilities": ["log"],
    "license": "Apache-2.0",
}


@dataclass
class Registry:
    repo: Repository
    publisher: CryptoSigner
    tmp: Path

    def client(self, source: str | None = None, state: str = "client") -> RegistryClient:
        root = (self.repo.metadata_dir / "1.root.json").read_bytes()
        return RegistryClient(
            source or self.repo.path,
            state_dir=self.tmp / state / "state",
            plugins_dir=self.tmp / state / "plugins",
            trusted_root=root,
        )

    def publish(self, version: str, wasm: bytes = WASM, name: str = "currency") -> None:
        self.repo.publish(
            "acme", name, version, wasm, {**MANIFEST, "version": version}, self.publisher
        )

    def publish_built(self, module: Path, version: str = "1.0.0", platform: str = ">=0.1") -> None:
        """A built plugin (``module`` and its manifest sidecar) as ``acme/currency``."""
        self.repo.publish(
            "acme",
            "currency",
            version,
            module.read_bytes(),
            module.with_suffix(".json").read_bytes(),
            self.publisher,
            platform=platform,
        )


@pytest.fixture(scope="module")
def currency(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The currency sample plugin, built (``currency.wasm`` with its ``.json`` sidecar)."""
    return build_plugin(SAMPLES_DIR / "currency", tmp_path_factory.mktemp("built"))


def checked_runtime(
    client: RegistryClient, check: MarketplaceLoadCheck, cache_dir: Path
) -> PluginRegistry:
    """The plugin runtime over ``client``'s installed plugins, pinned to the lock install
    wrote (no unpinned plugin), loading each through ``check``."""
    config = RegistryConfig(
        cache_dir=cache_dir, lock_files=(client.lock_path,), allow_unpinned=False
    )
    return PluginRegistry(client.plugins_dir, config, load_checks=[check])


def assert_currency_runs(runtime: PluginRegistry) -> None:
    """``runtime`` loads the currency plugin and it converts a price (× 0.908)."""
    out = runtime.load("currency").map(pl.DataFrame({"price": [100]}))
    assert out["price_eur"].to_list() == pytest.approx([90.8])


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    keys = tmp_path / "keys"
    for role in TOP_ROLES:
        generate_key_file(keys / f"{role}.pem")
    generate_key_file(keys / "acme.pem")
    signers = {role: [load_signer(keys / f"{role}.pem")] for role in TOP_ROLES}
    repo = Repository(tmp_path / "repo", signers=signers)
    repo.init()
    publisher = load_signer(keys / "acme.pem")
    repo.add_publisher("acme", publisher.public_key)
    return Registry(repo, publisher, tmp_path)


@pytest.fixture
def http_url(registry: Registry) -> Iterator[str]:
    """The repository directory served by ``http.server`` on loopback."""
    with served_directory(registry.repo.path) as url:
        yield url
