"""The signed scan report: an in-toto Statement v1 in a DSSE envelope (Ed25519), refused
when its payload, type or subject is altered or a key other than the trusted one signed
it; the quality score's formula; the report stored with the release."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner

from dataflare_platform.marketplace.attestation import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    AttestationError,
    ScanCheck,
    envelope_bytes,
    quality_score,
    scan_statement,
    sign_statement,
    verify_envelope,
)
from dataflare_platform_tests.marketplace.conftest import MANIFEST, WASM

SHA = hashlib.sha256(WASM).hexdigest()
CHECKS = [ScanCheck("abi", True, "ok"), ScanCheck("licence", False, "GPL")]


@pytest.fixture
def signer() -> CryptoSigner:
    return CryptoSigner(Ed25519PrivateKey.generate())


def statement() -> dict:
    return scan_statement("acme/currency@1.0.0", SHA, CHECKS, 42, "2026-12-05T00:00:00+00:00")


def test_a_signed_statement_verifies_with_the_signers_key(signer):
    env = sign_statement(statement(), signer)
    assert env["payloadType"] == PAYLOAD_TYPE
    got = verify_envelope(envelope_bytes(env), [signer.public_key], subject_sha256=SHA)
    assert got["_type"] == "https://in-toto.io/Statement/v1"
    assert got["predicateType"] == PREDICATE_TYPE
    assert got["subject"] == [{"name": "acme/currency@1.0.0", "digest": {"sha256": SHA}}]
    assert got["predicate"]["admitted"] is False
    assert got["predicate"]["checks"][1] == {
        "name": "licence", "passed": False, "skipped": False, "detail": "GPL",
    }  # fmt: skip


def test_the_signature_covers_the_dsse_pae(signer):
    """Independently of securesystemslib: the signature verifies over the spec's PAE."""
    env = sign_statement(statement(), signer)
    payload = base64.b64decode(env["payload"])
    pae = b"DSSEv1 %d %b %d %b" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload), payload)
    sig = base64.b64decode(env["signatures"][0]["sig"])
    signer._private_key.public_key().verify(sig, pae)  # raises if not


def test_a_tampered_payload_is_refused(signer):
    env = sign_statement(statement(), signer)
    forged = statement()
    forged["predicate"]["admitted"] = True
    env["payload"] = base64.b64encode(json.dumps(forged).encode()).decode()
    with pytest.raises(AttestationError, match="signature refused"):
        verify_envelope(env, [signer.public_key])


def test_a_changed_payload_type_is_refused(signer):
    env = sign_statement(statement(), signer)
    env["payloadType"] = "application/json"
    with pytest.raises(AttestationError, match="payload type"):
        verify_envelope(env, [signer.public_key])


def test_a_signature_by_another_key_is_refused(signer):
    other = CryptoSigner(Ed25519PrivateKey.generate())
    env = sign_statement(statement(), other)
    with pytest.raises(AttestationError, match="signature refused"):
        verify_envelope(env, [signer.public_key])


def test_a_wrong_key_claiming_the_trusted_key_id_is_refused(signer):
    """A forger who copies the trusted key id into its own signature still fails."""
    other = CryptoSigner(Ed25519PrivateKey.generate())
    payload = json.dumps(statement()).encode()
    env = Envelope(payload, PAYLOAD_TYPE, {})
    sig = other.sign(env.pae())
    sig.keyid = signer.public_key.keyid
    env.signatures[sig.keyid] = sig
    with pytest.raises(AttestationError, match="signature refused"):
        verify_envelope(env.to_dict(), [signer.public_key])


def test_a_statement_about_another_module_is_refused(signer):
    env = sign_statement(statement(), signer)
    with pytest.raises(AttestationError, match="another module"):
        verify_envelope(env, [signer.public_key], subject_sha256="0" * 64)


def test_garbage_is_refused():
    with pytest.raises(AttestationError, match="not a DSSE envelope"):
        verify_envelope(b'{"payload": 1}', [])


@pytest.mark.parametrize(
    ("checks", "description", "readme", "vectors", "score"),
    [
        ([True] * 7, True, True, 5, 100),
        ([True] * 7, True, True, 9, 100),  # tests points cap at 5 vectors
        ([True] * 7, False, False, 0, 60),
        ([True] * 6 + [False], True, False, 2, 69),  # 60*6/7=51.4 + 10 + 8
        ([False] * 7, True, True, 5, 40),
    ],
)
def test_quality_score_formula(checks, description, readme, vectors, score):
    scan = [ScanCheck(f"c{i}", ok, "") for i, ok in enumerate(checks)]
    assert quality_score(scan, description, readme, vectors) == score


def test_skipped_checks_do_not_count():
    scan = [ScanCheck("a", True, ""), ScanCheck("source_rebuild", True, "", skipped=True)]
    assert quality_score(scan, False, False, 0) == 60


def test_the_report_is_stored_with_the_release_and_linked_by_digest(registry, signer):
    env = envelope_bytes(sign_statement(statement(), signer))
    registry.repo.publish(
        "acme", "currency", "1.0.0", WASM, MANIFEST, registry.publisher,
        attestation=env, quality_score=42,
    )  # fmt: skip
    custom = registry.repo.target_custom("acme", "currency", "1.0.0")
    assert custom["quality_score"] == 42
    (link,) = custom["attestations"]
    stored = (registry.repo.targets_dir / link["path"]).read_bytes()
    assert link["path"] == "acme/currency/1.0.0.scan.dsse.json"
    assert link["sha256"] == hashlib.sha256(stored).hexdigest()
    assert link["predicateType"] == PREDICATE_TYPE
    assert verify_envelope(stored, [signer.public_key], subject_sha256=SHA)
    # the link travels in the publisher-signed metadata clients verify
    client = registry.client()
    updater = client._refreshed("currency")
    info = client._target(updater, "currency", "acme/currency/1.0.0.wasm")
    assert client._custom(info)["attestations"] == [link]


def test_attaching_a_new_report_to_a_published_version(registry, signer):
    registry.publish("1.0.0")
    env = envelope_bytes(sign_statement(statement(), signer))
    link = registry.repo.attach_attestation(
        "acme", "currency", "1.0.0", env, registry.publisher, quality_score=42
    )
    assert registry.repo.target_custom("acme", "currency", "1.0.0")["attestations"] == [link]
    assert registry.repo.published_versions("acme", "currency") == ["1.0.0"]
