"""The Dagster plugin resource runs the marketplace's load check: a plugin installed from
the signed registry into the home loads, and once revoked it is refused at the first load
after the refresh interval, the refusal audited."""

from __future__ import annotations

import json
import time
from pathlib import Path

import polars as pl
import pytest

from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.compliance.override_refusals import deployment_audit_url
from dataflare_platform.defs.plugins.resources import PluginRuntimeResource
from dataflare_platform.home import ProjectHome
from dataflare_platform.marketplace.client import MarketplaceError, RegistryClient
from dataflare_platform.marketplace.repository import (
    TOP_ROLES,
    Repository,
    generate_key_file,
    load_signer,
)
from dataflare_platform.plugins.build import SAMPLES_DIR, build_plugin
from dataflare_platform.plugins.lock import LockAuth


def test_resource_refuses_a_revoked_marketplace_plugin(
    audited_home: ProjectHome, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    for role in (*TOP_ROLES, "acme"):
        generate_key_file(keys / f"{role}.pem")
    repo = Repository(
        tmp_path / "repo", signers={r: [load_signer(keys / f"{r}.pem")] for r in TOP_ROLES}
    )
    repo.init()
    publisher = load_signer(keys / "acme.pem")
    repo.add_publisher("acme", publisher.public_key)
    wasm = build_plugin(SAMPLES_DIR / "currency", tmp_path / "built")
    manifest = wasm.with_suffix(".json").read_bytes()
    repo.publish("acme", "currency", "1.0.0", wasm.read_bytes(), manifest, publisher)
    home = audited_home.root
    RegistryClient(
        repo.path,
        state_dir=home / "platform" / "marketplace",
        plugins_dir=home / "plugins",
        lock_path=home / "plugins.lock",
        trusted_root=(repo.metadata_dir / "1.root.json").read_bytes(),
        lock_auth=LockAuth.for_home(home),
    ).install("acme/currency", "1.0.0")

    resource = PluginRuntimeResource(build_missing=False, marketplace_refresh_s=0.05)
    out = resource.load("currency").map(pl.DataFrame({"price": [100]}))
    assert out["price_eur"].to_list() == pytest.approx([90.8])
    repo.set_status("acme", "currency", "1.0.0", "revoked", "CVE-2026-3", publisher)
    time.sleep(0.1)  # the refresh interval (0.05 s) passes: the next load refreshes
    with pytest.raises(MarketplaceError, match="CVE-2026-3"):
        resource.load("currency")
    with AuditLog(deployment_audit_url(home)) as log:
        (entry,) = [e for e in log.tail(50) if e.action == "plugin_marketplace_refused"]
    details = json.loads(entry.details)
    assert (entry.actor, entry.subject) == ("system", "currency")
    assert (details["stage"], details["reason"], details["version"]) == ("load", "revoked", "1.0.0")
