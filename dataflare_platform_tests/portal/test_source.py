"""The portal reads only what TUF verified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataflare_platform.marketplace.client import MarketplaceError
from dataflare_platform.portal.source import read_registry
from dataflare_platform_tests.portal.conftest import Portal


def test_reads_every_publisher_and_version_with_its_signing_key(portal_registry: Portal, tmp_path):
    reg = read_registry(portal_registry.registry.repo.path, tmp_path / "st", portal_registry.root)
    assert {p.namespace for p in reg.publishers} == {"acme", "evil", "quiet"}
    refs = sorted((v.namespace, v.name, v.version) for v in reg.versions)
    assert refs == [
        ("acme", "currency", "1.0.0"),
        ("acme", "currency", "1.1.0"),
        ("acme", "currency", "2.0.0-rc.1"),
        ("acme", "geo", "0.1.0"),
        ("evil", "pii_mask", "1.0.0"),
    ]
    acme = next(p for p in reg.publishers if p.namespace == "acme")
    assert acme.signed_by == [portal_registry.registry.publisher.public_key.keyid]
    assert acme.key_ids == acme.signed_by and acme.threshold == 1
    quiet = next(p for p in reg.publishers if p.namespace == "quiet")
    assert quiet.signed_by == [] and quiet.role_version is None
    yanked = next(v for v in reg.versions if v.version == "1.0.0" and v.name == "currency")
    assert yanked.custom["status"] == "yanked" and yanked.custom["reason"] == "rate rounding bug"
    assert reg.skipped == []


def test_over_http_the_same_as_from_the_folder(portal_registry: Portal, http_url, tmp_path):
    reg = read_registry(http_url, tmp_path / "st", portal_registry.root)
    assert len(reg.versions) == 5


def test_a_target_added_without_the_publishers_signature_refuses_the_build(
    portal_registry: Portal, tmp_path
):
    """A catalogue built from a role file someone edited would show an unsigned plugin."""
    path: Path = portal_registry.registry.repo.metadata_dir / "acme.json"
    doc = json.loads(path.read_text())
    forged = dict(doc["signed"]["targets"]["acme/currency/1.1.0.wasm"])
    doc["signed"]["targets"]["acme/forged/9.9.9.wasm"] = forged
    path.write_text(json.dumps(doc))
    with pytest.raises(MarketplaceError) as err:
        read_registry(portal_registry.registry.repo.path, tmp_path / "st", portal_registry.root)
    assert err.value.reason in {"bad_signature", "repository", "digest_mismatch"}


def test_a_registry_without_trusted_root_is_refused(portal_registry: Portal, tmp_path):
    with pytest.raises(MarketplaceError, match="no trusted root"):
        read_registry(portal_registry.registry.repo.path, tmp_path / "st")


def test_a_forged_role_file_in_the_portals_cache_is_not_shown(portal_registry: Portal, tmp_path):
    """The cache is re-verified, not trusted: a target slipped into the cached role file
    (no valid signature over it) is replaced by the registry's signed file."""
    state = tmp_path / "st"
    read_registry(portal_registry.registry.repo.path, state, portal_registry.root)
    cached = state / "metadata" / "acme.json"
    doc = json.loads(cached.read_text())
    doc["signed"]["targets"]["acme/forged/9.9.9.wasm"] = dict(
        doc["signed"]["targets"]["acme/currency/1.1.0.wasm"]
    )
    cached.write_text(json.dumps(doc))
    reg = read_registry(portal_registry.registry.repo.path, state)
    assert "forged" not in {v.name for v in reg.versions}
    assert len(reg.versions) == 5
