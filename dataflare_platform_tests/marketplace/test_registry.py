"""Publish -> install -> verify over the directory and over HTTP; yank and revoke."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest

from dataflare_platform.errors import ConflictError, NotFoundError
from dataflare_platform.marketplace.client import ORIGINS_FILE, MarketplaceError
from dataflare_platform.marketplace.repository import generate_key_file, load_signer
from dataflare_platform.plugins.lock import read_lock
from dataflare_platform_tests.marketplace.conftest import MANIFEST, WASM, Registry


def test_target_carries_digest_size_and_manifest_metadata(registry: Registry) -> None:
    registry.publish("1.0.0")
    md = registry.repo.load("acme")
    target = md.signed.targets["acme/currency/1.0.0.wasm"]
    assert target.length == len(WASM)
    assert target.hashes["sha256"] == hashlib.sha256(WASM).hexdigest()
    custom = target.custom["dataflare"]
    assert custom["capabilities"] == ["log"]
    assert custom["license"] == "Apache-2.0"
    assert custom["platform"] == ">=0.1"
    assert custom["status"] == "published"
    snapshot = registry.repo.load("snapshot").signed
    assert snapshot.meta["acme.json"].version == md.signed.version
    timestamp = registry.repo.load("timestamp").signed
    assert timestamp.snapshot_meta.version == snapshot.version


def test_republishing_a_version_is_refused(registry: Registry) -> None:
    registry.publish("1.0.0")
    with pytest.raises(ConflictError, match="already published"):
        registry.publish("1.0.0", wasm=WASM + b"\x00")


def test_publish_to_unknown_namespace_is_refused(registry: Registry) -> None:
    with pytest.raises(NotFoundError, match="no publisher namespace"):
        registry.repo.publish("evil", "x", "1.0.0", WASM, MANIFEST, registry.publisher)


@pytest.mark.parametrize("over", ["directory", "http"])
def test_install_writes_module_manifest_and_pin(
    registry: Registry, over: str, request: pytest.FixtureRequest
) -> None:
    registry.publish("1.0.0")
    source = request.getfixturevalue("http_url") if over == "http" else None
    client = registry.client(source)
    installed = client.install("acme/currency", "1.0.0")
    assert installed.sha256 == hashlib.sha256(WASM).hexdigest()
    assert (client.plugins_dir / "currency.wasm").read_bytes() == WASM
    manifest = json.loads((client.plugins_dir / "currency.json").read_text())
    assert manifest["capabilities"] == ["log"]
    lock = read_lock(client.lock_path)
    assert lock is not None
    pin = lock.plugins["currency"]
    assert pin.sha256 == installed.sha256 and pin.version == "1.0.0"
    assert (
        pin.manifest_sha256
        == hashlib.sha256((client.plugins_dir / "currency.json").read_bytes()).hexdigest()
    )
    assert client.verify("currency").status == "published"


def test_install_unknown_version_names_it(registry: Registry) -> None:
    registry.publish("1.0.0")
    with pytest.raises(MarketplaceError, match=r"acme/currency/2\.0\.0\.wasm") as err:
        registry.client().install("acme/currency", "2.0.0")
    assert err.value.reason == "not_found"


def test_yank_stops_new_installs_but_not_installed_copies(registry: Registry) -> None:
    registry.publish("1.0.0")
    client = registry.client()
    client.install("acme/currency", "1.0.0")
    registry.repo.set_status(
        "acme", "currency", "1.0.0", "yanked", "bad rounding", registry.publisher
    )
    assert client.verify("currency").status == "yanked"
    with pytest.raises(MarketplaceError, match="bad rounding") as err:
        registry.client(state="other").install("acme/currency", "1.0.0")
    assert err.value.reason == "yanked"
    forced = registry.client(state="third").install("acme/currency", "1.0.0", allow_yanked=True)
    assert forced.status == "yanked"


def test_revoked_version_stops_verifying_once_the_client_refreshes(registry: Registry) -> None:
    registry.publish("1.0.0")
    client = registry.client()
    client.install("acme/currency", "1.0.0")
    registry.repo.set_status(
        "acme", "currency", "1.0.0", "revoked", "CVE-2026-1", registry.publisher
    )
    with pytest.raises(MarketplaceError, match=r"'currency' refused \(revoked\).*CVE-2026-1"):
        client.verify("currency")
    with pytest.raises(MarketplaceError) as err:
        registry.client(state="other").install("acme/currency", "1.0.0")
    assert err.value.reason == "revoked"
    with pytest.raises(ConflictError, match="final"):
        registry.repo.set_status(
            "acme", "currency", "1.0.0", "published", "oops", registry.publisher
        )


def test_installed_module_edited_on_disk_is_refused(registry: Registry) -> None:
    registry.publish("1.0.0")
    client = registry.client()
    client.install("acme/currency", "1.0.0")
    (client.plugins_dir / "currency.wasm").write_bytes(WASM + b"\x00")
    with pytest.raises(MarketplaceError, match=r"currency\.wasm has sha256") as err:
        client.verify("currency")
    assert err.value.reason == "digest_mismatch"


def test_offline_client_inside_expiry_verifies_against_its_last_pin(registry: Registry) -> None:
    registry.publish("1.0.0")
    client = registry.client()
    client.install("acme/currency", "1.0.0")
    client.metadata_url = "file:///nonexistent-registry/metadata/"
    assert client.verify("currency").status == "offline"
    assert "currency" in json.loads((client.plugins_dir / ORIGINS_FILE).read_text())


def test_publisher_key_rotation_keeps_installed_plugins_verifying(registry: Registry) -> None:
    registry.publish("1.0.0")
    client = registry.client()
    client.install("acme/currency", "1.0.0")
    generate_key_file(registry.tmp / "keys" / "acme-2.pem")
    new = load_signer(registry.tmp / "keys" / "acme-2.pem")
    registry.repo.rotate_publisher_key("acme", new.public_key, new)
    assert client.verify("currency").status == "published"
    registry.repo.publish("acme", "currency", "1.1.0", WASM, MANIFEST, new)
    assert client.install("acme/currency", "1.1.0").version == "1.1.0"


def test_root_rotation_is_followed_without_reinstalling(registry: Registry) -> None:
    registry.publish("1.0.0")
    client = registry.client()
    client.install("acme/currency", "1.0.0")
    generate_key_file(registry.tmp / "keys" / "root-2.pem")
    registry.repo.rotate_root_key("root", [load_signer(registry.tmp / "keys" / "root-2.pem")])
    generate_key_file(registry.tmp / "keys" / "ts-2.pem")
    registry.repo.rotate_root_key("timestamp", [load_signer(registry.tmp / "keys" / "ts-2.pem")])
    assert client.verify("currency").status == "published"
    trusted = json.loads((client.metadata_dir / "root.json").read_text())
    assert trusted["signed"]["version"] == 3


def test_key_file_is_private_and_never_overwritten(registry: Registry) -> None:
    path = registry.tmp / "keys" / "acme.pem"
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConflictError):
        generate_key_file(path)


def test_concurrent_publishes_both_reach_clients(registry: Registry) -> None:
    """Each publish rewrites snapshot and timestamp: without one writer at a time, one of
    two concurrent publishes would be lost."""
    registry.publish("1.0.0")
    errors: list[BaseException] = []

    def publish(version: str) -> None:
        try:
            for patch in range(5):
                registry.publish(
                    f"{version}.{patch}", wasm=WASM + version.encode(), name=f"p{version[0]}"
                )
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=publish, args=(v,)) for v in ("2.0", "3.0")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    client = registry.client()
    for ref, version in (("p2", "2.0.4"), ("p3", "3.0.4"), ("currency", "1.0.0")):
        assert client.install(f"acme/{ref}", version).version == version
