"""The signed scan report of a plugin version (issue 20 §2): an in-toto Statement v1 in
a DSSE envelope, stored with the release.

Why a DSSE envelope rather than a detached signature over the JSON: DSSE signs the
pre-authentication encoding ``PAE(payloadType, payload)`` of the exact payload bytes, so
no canonicalisation is needed and a payload cannot be re-read as another type. The
envelope is securesystemslib's ``dsse.Envelope`` (the locked 1.6 has it; its ``pae()`` is
the spec's ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``), signed with an
Ed25519 key through ``CryptoSigner`` like every registry key.

The statement's subject is the module (``<ns>/<name>@<version>`` and its sha256); the
predicate (``PREDICATE_TYPE``) holds every admission check with its outcome, the policy
it ran under and the quality score (:func:`quality_score`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import FormatError, VerificationError
from securesystemslib.signer import Key, Signer

from dataflare_platform.errors import DataflareError, InvalidInputError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
PREDICATE_TYPE = "https://dataflare.dev/plugin-scan/v1"

# Quality score weights (documented in docs/marketplace.md "Quality score").
CHECKS_POINTS = 60
DOCS_POINTS = 20
TESTS_POINTS = 20
FULL_TESTS = 5  # vectors for the full test points


class AttestationError(DataflareError):
    """A scan attestation that does not verify: the message says why (never a key)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"scan attestation refused: {reason}")


@dataclass(frozen=True)
class ScanCheck:
    """One admission check as recorded in the report (``skipped``: did not apply, e.g.
    no source shipped; a skipped check neither passes nor fails admission)."""

    name: str
    passed: bool
    detail: str
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "skipped": self.skipped,
            "detail": self.detail,
        }


def quality_score(
    checks: Sequence[ScanCheck], description: bool, readme: bool, vectors: int
) -> int:
    """0-100: ``60 × passed / applicable checks`` (skipped ones do not count) ``+ 10``
    for a manifest description ``+ 10`` for a README ``+ 20 × min(vectors, 5) / 5``,
    rounded down. Why these weights: what the checks prove (the module is safe to load and
    does what its vectors say) matters most; docs and tests are what a user of the plugin
    sees next. A refused module can still score (it tells the publisher what to fix)."""
    applicable = [c for c in checks if not c.skipped]
    passed = sum(1 for c in applicable if c.passed)
    score = CHECKS_POINTS * passed / len(applicable) if applicable else 0.0
    score += (DOCS_POINTS / 2) * int(description) + (DOCS_POINTS / 2) * int(readme)
    score += TESTS_POINTS * min(max(vectors, 0), FULL_TESTS) / FULL_TESTS
    return int(score)


def scan_statement(
    subject: str,
    sha256: str,
    checks: Iterable[ScanCheck],
    score: int,
    scanned_at: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The in-toto Statement v1 of one scan (``subject``: ``<ns>/<name>@<version>``)."""
    checks = list(checks)
    admitted = all(c.passed or c.skipped for c in checks)
    predicate: dict[str, Any] = {
        "scanner": "dataflare plugin_admission",
        "scannedAt": scanned_at,
        "admitted": admitted,
        "qualityScore": score,
        "checks": [c.to_dict() for c in checks],
    }
    predicate.update(extra or {})
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject, "digest": {"sha256": sha256}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def sign_statement(statement: Mapping[str, Any], signer: Signer) -> dict[str, Any]:
    """The statement in a DSSE envelope signed by ``signer`` (as the JSON dict to store)."""
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    envelope = Envelope(payload, PAYLOAD_TYPE, {})
    envelope.sign(signer)
    return envelope.to_dict()


def envelope_bytes(envelope: Mapping[str, Any]) -> bytes:
    """The envelope as stored next to the target (its sha256 is what the target links)."""
    return (json.dumps(envelope, indent=2, sort_keys=True) + "\n").encode()


def verify_envelope(
    envelope: Mapping[str, Any] | bytes,
    keys: Sequence[Key],
    subject_sha256: str | None = None,
    threshold: int = 1,
) -> dict[str, Any]:
    """The statement inside ``envelope`` once ``threshold`` of ``keys`` have signed its
    PAE; refused (AttestationError) if no trusted key signed it, the payload or its type
    was altered, it is not a plugin-scan statement, or (given ``subject_sha256``) it is
    about another module."""
    try:
        raw = json.loads(envelope) if isinstance(envelope, bytes) else dict(envelope)
        env = Envelope.from_dict(json.loads(json.dumps(raw)))  # from_dict mutates its input
    except (ValueError, KeyError, TypeError, AttributeError, FormatError) as err:
        raise AttestationError(f"not a DSSE envelope ({err})") from None
    if env.payload_type != PAYLOAD_TYPE:
        raise AttestationError(f"payload type {env.payload_type!r}")
    if not keys:
        raise InvalidInputError("scan attestation: no trusted key to verify it with")
    try:
        env.verify(list(keys), threshold)
    except VerificationError as err:
        raise AttestationError(f"signature refused ({err})") from None
    try:
        statement = json.loads(env.payload)
    except ValueError:
        raise AttestationError("the signed payload is not JSON") from None
    if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != (
        PREDICATE_TYPE
    ):
        raise AttestationError("not a plugin-scan in-toto statement")
    if subject_sha256 is not None:
        digests = [s.get("digest", {}).get("sha256") for s in statement.get("subject", [])]
        if subject_sha256 not in digests:
            raise AttestationError("its subject is another module")
    return statement
