"""``install`` / ``verify`` with a scanner key configured fetch the scan report the target
links (length and sha256 from the publisher-signed target), verify its DSSE signature and
refuse a version without a good one with reason ``attestation``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner

from dataflare_platform.marketplace.attestation import (
    ScanCheck,
    envelope_bytes,
    scan_statement,
    sign_statement,
)
from dataflare_platform.marketplace.client import MarketplaceError, RegistryClient
from dataflare_platform.marketplace.repository import generate_key_file, load_signer
from dataflare_platform_tests.marketplace.conftest import MANIFEST, WASM, Registry


@pytest.fixture
def scanner(tmp_path: Path) -> CryptoSigner:
    generate_key_file(tmp_path / "scan-keys" / "scan.pem")
    return load_signer(tmp_path / "scan-keys" / "scan.pem")


def report(signer: CryptoSigner, wasm: bytes = WASM, admitted: bool = True) -> bytes:
    checks = [ScanCheck("abi", True, "ok"), ScanCheck("licence", admitted, "")]
    sha = hashlib.sha256(wasm).hexdigest()
    statement = scan_statement("acme/currency@1.0.0", sha, checks, 70, "2026-12-05T00:00:00Z")
    return envelope_bytes(sign_statement(statement, signer))


def publish(registry: Registry, version: str, attestation: bytes | None) -> None:
    registry.repo.publish(
        "acme",
        "currency",
        version,
        WASM,
        {**MANIFEST, "version": version},
        registry.publisher,
        attestation=attestation,
    )


def client(registry: Registry, source: str, scanner: CryptoSigner | None, state: str):
    root = (registry.repo.metadata_dir / "1.root.json").read_bytes()
    return RegistryClient(
        source,
        state_dir=registry.tmp / state / "state",
        plugins_dir=registry.tmp / state / "plugins",
        trusted_root=root,
        scan_keys=[scanner.public_key] if scanner else None,
    )


def test_a_signed_admitting_report_is_fetched_over_http_and_verified(
    registry: Registry, http_url: str, scanner: CryptoSigner
) -> None:
    publish(registry, "1.0.0", report(scanner))
    c = client(registry, http_url, scanner, "a")
    assert c.install("acme/currency", "1.0.0").status == "published"
    assert c.verify("currency").status == "published"


@pytest.mark.parametrize(
    ("case", "detail"),
    [
        ("none", "links no signed scan report"),
        ("other_key", "signature refused"),
        ("refused_scan", "the scan did not admit"),
        ("another_module", "its subject is another module"),
    ],
)
def test_install_refuses_a_version_without_a_good_report(
    registry: Registry, http_url: str, scanner: CryptoSigner, tmp_path: Path, case, detail
) -> None:
    generate_key_file(tmp_path / "other.pem")
    envelope = {
        "none": None,
        "other_key": report(load_signer(tmp_path / "other.pem")),
        "refused_scan": report(scanner, admitted=False),
        "another_module": report(scanner, wasm=WASM + b"\x00"),
    }[case]
    publish(registry, "1.0.0", envelope)
    with pytest.raises(MarketplaceError) as err:
        client(registry, http_url, scanner, "b").install("acme/currency", "1.0.0")
    assert err.value.reason == "attestation" and detail in err.value.detail
    assert not (registry.tmp / "b" / "plugins" / "currency.wasm").exists()
    # Without a scanner key configured the deployment does not ask for a report.
    assert client(registry, http_url, None, "c").install("acme/currency", "1.0.0")


def test_verify_refuses_a_report_changed_on_the_server(
    registry: Registry, http_url: str, scanner: CryptoSigner
) -> None:
    publish(registry, "1.0.0", report(scanner))
    c = client(registry, http_url, scanner, "d")
    c.install("acme/currency", "1.0.0")
    stored = registry.repo.targets_dir / "acme" / "currency" / "1.0.0.scan.dsse.json"
    envelope = json.loads(stored.read_bytes())
    envelope["payloadType"] = envelope["payloadType"].upper()  # same length, other bytes
    stored.write_bytes(envelope_bytes(envelope))
    with pytest.raises(MarketplaceError) as err:
        c.verify("currency")
    assert err.value.reason == "attestation" and "LengthOrHashMismatch" in err.value.detail
