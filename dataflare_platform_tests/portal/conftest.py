"""A registry with two publishers and several versions, built with the marketplace's
own fixtures and signing API; one publisher ships hostile text in its manifest."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from dataflare_platform.marketplace.repository import generate_key_file, load_signer
from dataflare_platform_tests.marketplace.conftest import WASM, Registry
from dataflare_platform_tests.marketplace.conftest import http_url as http_url
from dataflare_platform_tests.marketplace.conftest import registry as registry

SAMPLES = Path(__file__).parents[2] / "dataflare_platform" / "plugins" / "samples"
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


@dataclass
class Portal:
    registry: Registry
    root: bytes


@pytest.fixture
def portal_registry(registry: Registry, tmp_path: Path) -> Portal:
    """acme/currency 1.0.0 (yanked), 1.1.0, 2.0.0-rc.1; acme/geo 0.1.0 (revoked); evil/pii_mask
    1.0.0 with a hostile description, licence and capability."""
    repo, acme = registry.repo, registry.publisher
    currency = json.loads((SAMPLES / "currency" / "plugin.json").read_text())
    for version in ("1.0.0", "1.1.0", "2.0.0-rc.1"):
        manifest = {**currency, "version": version}
        repo.publish("acme", "currency", version, WASM + version.encode(), manifest, acme)
    repo.set_status("acme", "currency", "1.0.0", "yanked", "rate rounding bug", acme)
    geo = {
        "name": "geo",
        "version": "0.1.0",
        "kind": "map",
        "license": "MIT",
        "description": "Geohash of a lat/lon pair.",
        "capabilities": ["log", "clock"],
    }
    repo.publish("acme", "geo", "0.1.0", WASM + b"geo", geo, acme)
    repo.set_status("acme", "geo", "0.1.0", "revoked", "key leak", acme)

    generate_key_file(tmp_path / "keys" / "evil.pem")
    evil = load_signer(tmp_path / "keys" / "evil.pem")
    repo.add_publisher("evil", evil.public_key)
    hostile = {
        "name": "pii_mask",
        "version": "1.0.0",
        "kind": "map",
        "description": HOSTILE,
        "license": 'MIT" onmouseover="window.__pwned = 3',
        "capabilities": ['log"><script>window.__pwned = 4</script>'],
        "params": [{"name": "<b>salt</b>", "type": "string", "default": "</script>"}],
    }
    repo.publish("evil", "pii_mask", "1.0.0", WASM + b"pii", hostile, evil)
    # A publisher with nothing published yet.
    generate_key_file(tmp_path / "keys" / "quiet.pem")
    repo.add_publisher("quiet", load_signer(tmp_path / "keys" / "quiet.pem").public_key)
    return Portal(registry, (repo.metadata_dir / "1.root.json").read_bytes())
