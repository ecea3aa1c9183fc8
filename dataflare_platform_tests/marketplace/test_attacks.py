"""Attacks on the registry, played by a tampering mirror (files rewritten in the served
repository) and by compromised keys. Every refusal is python-tuf's; these tests check
that it happens and that the error names the plugin and the reason."""

from __future__ import annotations

import datetime
import types
from pathlib import Path

import pytest
from tuf.api.metadata import TargetFile
from tuf.ngclient._internal import trusted_metadata_set

from dataflare_platform.marketplace.client import MarketplaceError
from dataflare_platform.marketplace.repository import (
    Repository,
    generate_key_file,
    load_signer,
)
from dataflare_platform_tests.marketplace.conftest import MANIFEST, WASM, Registry

EVIL = b"\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00"


def _snapshot_files(repo: Repository) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in repo.metadata_dir.iterdir()}


def _serve(repo: Repository, files: dict[str, bytes], *names: str) -> None:
    for name in names:
        (repo.metadata_dir / name).write_bytes(files[name])


def _later(monkeypatch: pytest.MonkeyPatch, days: int) -> datetime.datetime:
    """Move the updater's reference time ``days`` ahead (time passing; no check of the
    updater's is replaced) and return that time."""
    shift = datetime.timedelta(days=days)

    class Later(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> datetime.datetime:  # type: ignore[override]
            return datetime.datetime.now(tz) + shift

    shim = types.SimpleNamespace(datetime=Later, timezone=datetime.timezone)
    monkeypatch.setattr(trusted_metadata_set, "datetime", shim)
    return datetime.datetime.now(datetime.UTC) + shift


# --- arbitrary module ------------------------------------------------------------


@pytest.mark.parametrize("evil", [EVIL, b"\x00asm\x01\x00\x00\x01"], ids=["longer", "same-size"])
def test_arbitrary_module_is_refused_at_install(registry: Registry, evil: bytes) -> None:
    registry.publish("1.0.0")
    (registry.repo.targets_dir / "acme/currency/1.0.0.wasm").write_bytes(evil)
    client = registry.client()
    with pytest.raises(MarketplaceError, match=r"'currency' refused \(digest_mismatch\)"):
        client.install("acme/currency", "1.0.0")
    assert not (client.plugins_dir / "currency.wasm").exists()


def test_target_added_without_the_publishers_signature_is_refused(registry: Registry) -> None:
    registry.publish("1.0.0")
    md = registry.repo.load("acme")
    md.signed.targets["acme/currency/6.6.6.wasm"] = TargetFile.from_data(
        "acme/currency/6.6.6.wasm", EVIL
    )
    # The mirror edits the role file in place, keeping its signatures.
    (registry.repo.metadata_dir / "acme.json").write_bytes(md.to_bytes())
    (registry.repo.targets_dir / "acme/currency/6.6.6.wasm").write_bytes(EVIL)
    with pytest.raises(MarketplaceError) as err:
        registry.client().install("acme/currency", "6.6.6")
    assert err.value.reason == "bad_signature"


# --- rollback, mix-and-match --------------------------------------------------------


def test_rollback_to_older_metadata_is_refused(registry: Registry) -> None:
    registry.publish("1.0.0")
    old = _snapshot_files(registry.repo)
    registry.repo.set_status("acme", "currency", "1.0.0", "revoked", "CVE", registry.publisher)
    client = registry.client()
    with pytest.raises(MarketplaceError):
        client.install("acme/currency", "1.0.0")  # the client has seen the revocation
    # The mirror now serves the whole older repository, where 1.0.0 was fine.
    _serve(registry.repo, old, "timestamp.json", "snapshot.json", "acme.json", "targets.json")
    with pytest.raises(MarketplaceError, match=r"'currency' refused \(rollback\)"):
        client.install("acme/currency", "1.0.0")


def test_rollback_of_an_installed_plugins_metadata_is_refused(registry: Registry) -> None:
    registry.publish("1.0.0")
    client = registry.client()
    client.install("acme/currency", "1.0.0")
    old = _snapshot_files(registry.repo)
    registry.repo.set_status("acme", "currency", "1.0.0", "revoked", "CVE", registry.publisher)
    with pytest.raises(MarketplaceError, match="revoked"):
        client.verify("currency")
    _serve(registry.repo, old, "timestamp.json", "snapshot.json", "acme.json")
    with pytest.raises(MarketplaceError) as err:
        client.verify("currency")
    assert err.value.reason == "rollback"


@pytest.mark.parametrize("stale", ["snapshot.json", "acme.json"])
def test_mix_and_match_of_versions_is_refused(registry: Registry, stale: str) -> None:
    """A current timestamp with an older snapshot, or a current snapshot with an older
    publisher file: each file is genuinely signed, the combination never existed."""
    registry.publish("1.0.0")
    old = _snapshot_files(registry.repo)
    registry.repo.set_status("acme", "currency", "1.0.0", "revoked", "CVE", registry.publisher)
    _serve(registry.repo, old, stale)
    with pytest.raises(MarketplaceError) as err:
        registry.client().install("acme/currency", "1.0.0")
    assert err.value.reason == "rollback"  # TUF: version differs from the one pinned


# --- freeze -------------------------------------------------------------------------


def test_frozen_metadata_is_refused_once_the_timestamp_expires(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mirror serves the same (genuine) metadata forever; two days later the
    timestamp (1 day) has expired and the installed plugin no longer verifies."""
    registry.publish("1.0.0")
    client = registry.client()
    client.install("acme/currency", "1.0.0")
    assert client.verify("currency").status == "published"
    _later(monkeypatch, days=2)
    with pytest.raises(MarketplaceError, match=r"'currency' refused \(expired\)") as err:
        client.verify("currency")
    assert "Timestamp" in err.value.detail or "timestamp" in err.value.detail


def test_unreachable_registry_past_expiry_is_refused(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.publish("1.0.0")
    client = registry.client()
    client.install("acme/currency", "1.0.0")
    client.metadata_url = "file:///nonexistent-registry/metadata/"
    later = _later(monkeypatch, days=2)
    client.clock = lambda: later
    with pytest.raises(MarketplaceError, match="expired and cannot be refreshed") as err:
        client.verify("currency")
    assert err.value.reason == "expired"


def test_registry_serving_stale_timestamp_is_refused_at_install(tmp_path: Path) -> None:
    """A registry whose last timestamp was signed ten days ago (1-day expiry)."""
    keys = tmp_path / "keys"
    signers = {}
    for role in ("root", "timestamp", "snapshot", "targets", "acme"):
        generate_key_file(keys / f"{role}.pem")
        signers[role] = [load_signer(keys / f"{role}.pem")]
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=10)
    publisher = signers.pop("acme")[0]
    repo = Repository(tmp_path / "repo", signers=signers, clock=lambda: past)
    repo.init()
    repo.add_publisher("acme", publisher.public_key)
    repo.publish("acme", "currency", "1.0.0", WASM, MANIFEST, publisher)
    registry = Registry(repo, publisher, tmp_path)
    with pytest.raises(MarketplaceError) as err:
        registry.client().install("acme/currency", "1.0.0")
    assert err.value.reason == "expired"


# --- publishers ---------------------------------------------------------------------


def test_publisher_signing_outside_its_namespace_is_refused(registry: Registry) -> None:
    registry.publish("1.0.0")
    generate_key_file(registry.tmp / "keys" / "evil.pem")
    evil = load_signer(registry.tmp / "keys" / "evil.pem")
    registry.repo.add_publisher("evil", evil.public_key)
    registry.repo.publish("evil", "x", "1.0.0", WASM, MANIFEST, evil)
    # evil lists acme's path in its own (validly signed, snapshotted) role file.
    md = registry.repo.load("evil")
    md.signed.targets["acme/currency/9.9.9.wasm"] = TargetFile.from_data(
        "acme/currency/9.9.9.wasm", EVIL
    )
    md.signed.version += 1
    registry.repo._write("evil", md, [evil])
    registry.repo._commit_snapshot({"evil": md.signed.version})
    (registry.repo.targets_dir / "acme/currency/9.9.9.wasm").write_bytes(EVIL)
    with pytest.raises(MarketplaceError) as err:
        registry.client().install("acme/currency", "9.9.9")
    assert err.value.reason == "not_found"  # TUF never asks evil about acme/ paths
    # ...and evil's key signing acme's role file is not acme's key.
    acme = registry.repo.load("acme")
    acme.signed.targets["acme/currency/9.9.9.wasm"] = TargetFile.from_data(
        "acme/currency/9.9.9.wasm", EVIL
    )
    acme.signed.version += 1
    registry.repo._write("acme", acme, [evil])
    registry.repo._commit_snapshot({"acme": acme.signed.version})
    with pytest.raises(MarketplaceError) as err:
        registry.client(state="other").install("acme/currency", "9.9.9")
    assert err.value.reason == "bad_signature"


def test_old_publisher_key_after_rotation_is_refused(registry: Registry) -> None:
    registry.publish("1.0.0")
    client = registry.client()
    client.install("acme/currency", "1.0.0")
    generate_key_file(registry.tmp / "keys" / "acme-2.pem")
    new = load_signer(registry.tmp / "keys" / "acme-2.pem")
    registry.repo.rotate_publisher_key("acme", new.public_key, new)
    assert client.verify("currency").status == "published"
    # The old (compromised) key signs a new release; even a registry that snapshots it
    # cannot make clients accept it.
    registry.repo.publish("acme", "currency", "1.0.1", EVIL, MANIFEST, registry.publisher)
    with pytest.raises(MarketplaceError) as err:
        client.install("acme/currency", "1.0.1")
    assert err.value.reason == "bad_signature"
    # The installed plugin's metadata is now that bad file too: verify refuses as well.
    with pytest.raises(MarketplaceError) as err:
        client.verify("currency")
    assert err.value.reason == "bad_signature"


def test_old_root_key_after_rotation_cannot_sign_a_new_root(registry: Registry) -> None:
    """After root rotation, the old (compromised) root key writes root N+1 handing the
    timestamp role to the attacker: the chain of roots refuses it."""
    registry.publish("1.0.0")
    client = registry.client()
    client.install("acme/currency", "1.0.0")
    old_root = registry.repo.signers["root"]
    generate_key_file(registry.tmp / "keys" / "root-2.pem")
    registry.repo.rotate_root_key("root", [load_signer(registry.tmp / "keys" / "root-2.pem")])
    assert client.verify("currency").status == "published"
    generate_key_file(registry.tmp / "keys" / "attacker.pem")
    attacker = load_signer(registry.tmp / "keys" / "attacker.pem")
    forged = registry.repo.load("root")
    for keyid in list(forged.signed.roles["timestamp"].keyids):
        forged.signed.revoke_key(keyid, "timestamp")
    forged.signed.add_key(attacker.public_key, "timestamp")
    forged.signed.version += 1
    registry.repo._write("root", forged, old_root)
    with pytest.raises(MarketplaceError) as err:
        client.verify("currency")
    assert err.value.reason == "bad_signature"


# --- beyond the listed attacks ------------------------------------------------------


def test_endless_metadata_is_refused_before_it_is_read_whole(registry: Registry) -> None:
    """A mirror serving a timestamp of megabytes (the endless-data attack): the updater
    stops at the role's length bound instead of reading it all."""
    registry.publish("1.0.0")
    timestamp = registry.repo.metadata_dir / "timestamp.json"
    timestamp.write_bytes(timestamp.read_bytes().rstrip(b"}") + b" " * 4_000_000 + b"}")
    with pytest.raises(MarketplaceError) as err:
        registry.client().install("acme/currency", "1.0.0")
    assert err.value.reason == "oversized", err.value
    assert not (registry.tmp / "client" / "plugins" / "currency.wasm").exists()


@pytest.mark.parametrize(
    ("ref", "version"),
    [
        ("acme/../../outside", "1.0.0"),
        ("acme/currency", "../../../outside"),
        ("../acme/currency", "1.0.0"),
        ("acme/Currency.wasm", "1.0.0"),
    ],
)
def test_a_reference_that_would_escape_the_plugin_folder_is_refused(
    registry: Registry, ref: str, version: str
) -> None:
    """A publisher can sign any path its delegation's pattern admits; the client takes
    only references spelled as the registry spells them, before any path is built."""
    registry.publish("1.0.0")
    with pytest.raises(MarketplaceError) as err:
        registry.client().install(ref, version)
    assert err.value.reason == "invalid"
    assert not (registry.tmp / "client" / "plugins").exists()


def test_another_publishers_plugin_of_the_same_name_does_not_replace_it(
    registry: Registry,
) -> None:
    """Plugins are loaded by name: installing evil/currency must not swap the module every
    pipeline using ``currency`` (installed from acme) loads."""
    registry.publish("1.0.0")
    generate_key_file(registry.tmp / "keys" / "evil.pem")
    evil = load_signer(registry.tmp / "keys" / "evil.pem")
    registry.repo.add_publisher("evil", evil.public_key)
    registry.repo.publish("evil", "currency", "9.0.0", EVIL, {**MANIFEST, "version": "9.0.0"}, evil)
    client = registry.client()
    client.install("acme/currency", "1.0.0")
    installed = (registry.tmp / "client" / "plugins" / "currency.wasm").read_bytes()
    with pytest.raises(MarketplaceError) as err:
        client.install("evil/currency", "9.0.0")
    assert err.value.reason == "conflict"
    assert "acme/currency/1.0.0.wasm" in str(err.value)
    assert (registry.tmp / "client" / "plugins" / "currency.wasm").read_bytes() == installed
    registry.publish("1.1.0")  # the same publisher's upgrade goes through
    assert client.install("acme/currency", "1.1.0").version == "1.1.0"
