"""Verification at every load of a plugin installed from the registry: the runtime checks
the module against the client's verified view, refreshes it through TUF once it is older
than the refresh interval, and refuses revoked, killed, swapped, out-of-range and
expired-and-unrefreshable plugins (each refusal audited)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.compliance.override_refusals import deployment_audit_url
from dataflare_platform.errors import ConflictError
from dataflare_platform.home import ProjectHome
from dataflare_platform.marketplace.client import ORIGINS_FILE, MarketplaceError, RegistryClient
from dataflare_platform.marketplace.loadcheck import (
    MarketplaceLoadCheck,
    audit_refusal,
    deployment_load_check,
)
from dataflare_platform.plugins.build import SAMPLES_DIR, build_plugin
from dataflare_platform.plugins.registry import PluginRegistry, RegistryConfig
from dataflare_platform_tests.marketplace.conftest import (
    Registry,
    assert_currency_runs,
    checked_runtime,
)

HOUR = timedelta(hours=1)


class Clock:
    """The load check's notion of now, moved forward by the test (TUF's own checks of
    fetched metadata keep the real clock)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def installed(
    registry: Registry, currency: Path, platform: str = ">=0.1"
) -> tuple[RegistryClient, Clock, MarketplaceLoadCheck, PluginRegistry]:
    registry.publish_built(currency, platform=platform)
    client = registry.client()
    client.install("acme/currency", "1.0.0")
    clock = Clock()
    check = MarketplaceLoadCheck(client.state_dir, client.plugins_dir, refresh_s=60, clock=clock)
    return client, clock, check, checked_runtime(client, check, registry.tmp / "cache")


def test_installed_plugin_loads_through_the_check(registry: Registry, currency: Path) -> None:
    _, _, _, runtime = installed(registry, currency)
    assert_currency_runs(runtime)


def test_revoked_after_install_stops_loading_after_refresh(
    registry: Registry, currency: Path
) -> None:
    _, clock, _, runtime = installed(registry, currency)
    runtime.load("currency")
    registry.repo.set_status(
        "acme", "currency", "1.0.0", "revoked", "CVE-2026-1", registry.publisher
    )
    # Inside the refresh interval the verified view stands (no network per load)...
    runtime.load("currency")
    # ...once it is older than the interval, the load refreshes and sees the revocation.
    clock.now += timedelta(seconds=61)
    with pytest.raises(MarketplaceError, match=r"revoked.*CVE-2026-1") as err:
        runtime.load("currency")
    assert (err.value.plugin, err.value.reason, err.value.version) == (
        "currency",
        "revoked",
        "1.0.0",
    )


def test_expired_cache_and_unreachable_registry_refuses_to_load(
    registry: Registry, currency: Path
) -> None:
    _, clock, _, runtime = installed(registry, currency)
    shutil.move(registry.repo.path, registry.tmp / "gone")  # the registry is unreachable
    clock.now += 2 * HOUR  # past the refresh interval, inside the timestamp's day
    runtime.load("currency")  # offline but fresh enough: the verified digest holds
    clock.now += 2 * 24 * HOUR  # past the timestamp's expiry
    with pytest.raises(MarketplaceError, match="expired") as err:
        runtime.load("currency")
    assert err.value.plugin == "currency"
    assert err.value.reason == "expired"


def test_swapped_module_refused_by_the_registry_check_without_a_lock(
    registry: Registry, currency: Path
) -> None:
    """The marketplace check stands on its own: with no lock pinning the module, a module
    swapped after install is still refused at load (its digest is not the target's)."""
    client, _, check, _ = installed(registry, currency)
    runtime = PluginRegistry(
        client.plugins_dir, RegistryConfig(cache_dir=registry.tmp / "cache"), load_checks=[check]
    )
    runtime.load("currency")
    other = build_plugin(SAMPLES_DIR / "pii_mask", registry.tmp / "other")
    shutil.copy(other, client.plugins_dir / "currency.wasm")
    with pytest.raises(MarketplaceError, match="digest_mismatch"):
        runtime.load("currency")


def test_removing_the_plugin_folder_record_does_not_skip_the_check(
    registry: Registry, currency: Path
) -> None:
    """``.marketplace.json`` sits in the plugin folder (writable by plugin authors); the
    load check reads the client's own record in its state folder."""
    client, clock, _, runtime = installed(registry, currency)
    (client.plugins_dir / ORIGINS_FILE).write_text("{}")
    registry.repo.set_status("acme", "currency", "1.0.0", "revoked", "bad", registry.publisher)
    clock.now += timedelta(seconds=61)
    with pytest.raises(MarketplaceError, match="revoked"):
        runtime.load("currency")


def test_platform_range_enforced_at_install_and_load(registry: Registry, currency: Path) -> None:
    client, _, check, runtime = installed(registry, currency, platform=">=0.1,<0.2")
    runtime.load("currency")
    check.platform_version = "0.2.0"  # the platform was upgraded past the range
    with pytest.raises(MarketplaceError, match="platform") as err:
        runtime.load("currency")
    assert err.value.reason == "platform"
    registry.publish_built(currency, "2.0.0", platform=">=99")
    with pytest.raises(MarketplaceError, match="runs on platform >=99"):
        client.install("acme/currency", "2.0.0")


def test_publish_refuses_equal_or_older_versions(registry: Registry) -> None:
    registry.publish("1.2.0")
    for older in ("1.2.0", "1.1.9", "0.9.0", "1.2.0-rc.1"):
        with pytest.raises(ConflictError):
            registry.publish(older)
    registry.publish("1.2.1")
    registry.publish("1.0.0", name="another")  # per plugin, not per namespace


def test_load_refusal_is_audited_without_secrets(
    registry: Registry, currency: Path, audited_home: ProjectHome
) -> None:
    client, clock, check, runtime = installed(registry, currency)
    check.on_refused = audit_refusal(audited_home.root, actor="user:alice")
    registry.repo.set_status(
        "acme", "currency", "1.0.0", "revoked", "compromised build", registry.publisher
    )
    clock.now += timedelta(seconds=61)
    with pytest.raises(MarketplaceError):
        runtime.load("currency")
    # An install refused is audited too (the CLI passes the same recorder).
    client.on_refused = audit_refusal(audited_home.root, actor="user:alice")
    with pytest.raises(MarketplaceError):
        client.install("acme/currency", "1.0.0")
    with AuditLog(deployment_audit_url(audited_home.root)) as log:
        entries = [e for e in log.tail(50) if e.action == "plugin_marketplace_refused"]
    details = [json.loads(e.details) for e in entries]
    assert [(e.actor, e.subject) for e in entries] == [("user:alice", "currency")] * 2
    assert [(d["stage"], d["reason"], d["version"]) for d in details] == [
        ("load", "revoked", "1.0.0"),
        ("install", "revoked", "1.0.0"),
    ]
    assert "compromised build" in details[0]["detail"]
    assert "PRIVATE KEY" not in json.dumps(details)


def test_deployment_registry_runs_the_marketplace_check(
    registry: Registry, currency: Path, home: ProjectHome
) -> None:
    """``deployment_load_check`` (the entry point every deployment registry loads) reads
    the client state where ``dataflare plugin install`` keeps it, in the home."""
    root = (registry.repo.metadata_dir / "1.root.json").read_bytes()
    registry.publish_built(currency)
    plugins = home.root / "plugins"
    client = RegistryClient(
        registry.repo.path,
        state_dir=home.root / "platform" / "marketplace",
        plugins_dir=plugins,
        trusted_root=root,
    )
    client.install("acme/currency", "1.0.0")
    check = deployment_load_check(plugins, home.root)
    check("currency", client.verify("currency").sha256, (plugins / "currency.json").read_bytes())
    with pytest.raises(MarketplaceError, match="digest_mismatch"):
        check("currency", "0" * 64, None)


def test_revocation_reaches_a_load_over_http(
    registry: Registry, currency: Path, http_url: str
) -> None:
    """The refresh a load makes goes to the registry the plugin was installed from, here
    over HTTP on loopback."""
    registry.publish_built(currency)
    client = registry.client(http_url)
    client.install("acme/currency", "1.0.0")
    clock = Clock()
    check = MarketplaceLoadCheck(client.state_dir, client.plugins_dir, refresh_s=30, clock=clock)
    runtime = PluginRegistry(
        client.plugins_dir, RegistryConfig(cache_dir=registry.tmp / "cache"), load_checks=[check]
    )
    runtime.load("currency")
    registry.repo.set_status("acme", "currency", "1.0.0", "revoked", "CVE", registry.publisher)
    clock.now += timedelta(seconds=31)
    with pytest.raises(MarketplaceError, match="revoked"):
        runtime.load("currency")


def test_plugin_installed_before_the_state_record_is_checked_once_verified(
    registry: Registry, currency: Path
) -> None:
    client, clock, _, runtime = installed(registry, currency)
    (client.state_dir / "installed.json").unlink()  # as a client of the previous release
    registry.repo.set_status("acme", "currency", "1.0.0", "yanked", "old", registry.publisher)
    client.verify("currency")  # records it
    registry.repo.set_status("acme", "currency", "1.0.0", "revoked", "bad", registry.publisher)
    clock.now += timedelta(seconds=61)
    with pytest.raises(MarketplaceError, match="revoked"):
        runtime.load("currency")


def test_frozen_registry_refuses_the_load_once_the_timestamp_expires(
    registry: Registry, currency: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry is reachable but serves the same (genuine) metadata forever: two days
    on, the refresh a load makes finds the timestamp expired and the load is refused."""
    from dataflare_platform_tests.marketplace.test_attacks import _later

    _, clock, _, runtime = installed(registry, currency)
    runtime.load("currency")
    clock.now = _later(monkeypatch, days=2)
    with pytest.raises(MarketplaceError, match="expired") as err:
        runtime.load("currency")
    assert (err.value.plugin, err.value.reason) == ("currency", "expired")


def test_scan_report_changed_or_missing_after_refresh_refuses_the_load(
    registry: Registry, tmp_path: Path
) -> None:
    """With a scanner key configured the load check refuses (reason ``attestation``) a
    target whose linked scan report is no longer the one install/verify checked."""
    import hashlib

    from tuf.api.metadata import Metadata

    from dataflare_platform.marketplace.client import ATTESTATION_DIGEST, VIEW_FILE
    from dataflare_platform.marketplace.repository import generate_key_file, load_signer
    from dataflare_platform_tests.marketplace.conftest import MANIFEST, WASM
    from dataflare_platform_tests.marketplace.test_client_attestation import report

    generate_key_file(tmp_path / "scan.pem")
    scanner = load_signer(tmp_path / "scan.pem")
    first = report(scanner)
    registry.repo.publish(
        "acme", "currency", "1.0.0", WASM, MANIFEST, registry.publisher, attestation=first
    )
    root = (registry.repo.metadata_dir / "1.root.json").read_bytes()
    client = RegistryClient(
        registry.repo.path,
        state_dir=tmp_path / "c" / "state",
        plugins_dir=tmp_path / "c" / "plugins",
        trusted_root=root,
        scan_keys=[scanner.public_key],
    )
    client.install("acme/currency", "1.0.0")
    path, sha = "acme/currency/1.0.0.wasm", hashlib.sha256(WASM).hexdigest()
    view = json.loads((client.state_dir / VIEW_FILE).read_text())
    assert view["targets"][path][ATTESTATION_DIGEST] == hashlib.sha256(first).hexdigest()
    clock = Clock()
    check = MarketplaceLoadCheck(
        client.state_dir, client.plugins_dir, refresh_s=60, clock=clock, require_attestation=True
    )
    unchecked = MarketplaceLoadCheck(client.state_dir, client.plugins_dir, 60, clock=clock)
    check("currency", sha)

    # A new report linked on the registry (signed by the publisher, so TUF accepts it):
    # refused at the first load after the refresh, until verify checks it.
    registry.repo.attach_attestation(
        "acme", "currency", "1.0.0", report(scanner) + b" ", registry.publisher
    )
    check("currency", sha)  # inside the refresh interval the view stands
    clock.now += timedelta(seconds=61)
    with pytest.raises(MarketplaceError, match="scan report changed") as err:
        check("currency", sha)
    assert (err.value.reason, err.value.stage) == ("attestation", "load")
    unchecked("currency", sha)  # no scanner key configured: nothing asked of the report
    client.verify("currency")  # checks the new report's signature and records it
    check("currency", sha)

    # The report dropped from the target (publisher re-signs without the link).
    md = Metadata.from_file(str(registry.repo.metadata_dir / "acme.json"))
    md.signed.targets[path].unrecognized_fields["custom"]["dataflare"]["attestations"] = []
    md.to_file(str(registry.repo.metadata_dir / "acme.json"))
    registry.repo.set_status("acme", "currency", "1.0.0", "published", "", registry.publisher)
    clock.now += timedelta(seconds=61)
    with pytest.raises(MarketplaceError, match="links no scan report") as err:
        check("currency", sha)
    assert err.value.reason == "attestation"


def test_installed_without_a_checked_report_is_refused_when_reports_are_required(
    registry: Registry,
) -> None:
    import hashlib

    from dataflare_platform_tests.marketplace.conftest import WASM

    registry.publish("1.0.0")
    client = registry.client()
    client.install("acme/currency", "1.0.0")  # no scanner key, no report linked
    check = MarketplaceLoadCheck(
        client.state_dir, client.plugins_dir, refresh_s=60, require_attestation=True
    )
    with pytest.raises(MarketplaceError, match="links no scan report") as err:
        check("currency", hashlib.sha256(WASM).hexdigest())
    assert err.value.reason == "attestation"
