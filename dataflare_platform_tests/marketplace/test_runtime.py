"""A plugin installed from the registry runs under the runtime's pin check, and the
runtime refuses it once its module is swapped (the lock install wrote holds)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from dataflare_platform.marketplace.client import MarketplaceError
from dataflare_platform.plugins.lock import PluginPinError
from dataflare_platform.plugins.registry import PluginRegistry, RegistryConfig
from dataflare_platform_tests.marketplace.conftest import Registry


def test_installed_plugin_loads_pinned_and_swapped_module_is_refused(
    registry: Registry, currency: Path
) -> None:
    manifest = currency.with_suffix(".json").read_bytes()
    registry.publish_built(currency)
    client = registry.client()
    client.install("acme/currency", "1.0.0")
    assert (client.plugins_dir / "currency.json").read_bytes() == manifest
    config = RegistryConfig(
        cache_dir=registry.tmp / "cache", lock_files=(client.lock_path,), allow_unpinned=False
    )
    plugin = PluginRegistry(client.plugins_dir, config).load("currency")
    out = plugin.map(pl.DataFrame({"price": [100]}))
    assert out["price_eur"].to_list() == pytest.approx([90.8])
    # Swap the module for another valid one: the runtime's pin and verify both refuse.
    (client.plugins_dir / "currency.wasm").write_bytes(b"\x00asm\x01\x00\x00\x00")
    with pytest.raises(PluginPinError):
        PluginRegistry(client.plugins_dir, config).load("currency")
    with pytest.raises(MarketplaceError, match="digest_mismatch"):
        client.verify("currency")


def test_edited_manifest_sidecar_is_refused_by_verify(registry: Registry) -> None:
    registry.publish("1.0.0")
    client = registry.client()
    client.install("acme/currency", "1.0.0")
    sidecar = client.plugins_dir / "currency.json"
    edited = json.loads(sidecar.read_text()) | {"capabilities": ["log", "net"]}
    sidecar.write_text(json.dumps(edited))
    with pytest.raises(MarketplaceError, match="not the manifest the registry signed"):
        client.verify("currency")
