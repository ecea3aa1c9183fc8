"""A registry with its keys, a publisher, and clients over the directory or HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner

from dataflare_platform.marketplace.client import RegistryClient
from dataflare_platform.marketplace.repository import (
    TOP_ROLES,
    Repository,
    generate_key_file,
    load_signer,
)
from dataflare_platform.marketplace.served import served_directory

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
