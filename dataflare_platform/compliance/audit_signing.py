"""The signing vocabulary of audit checkpoints: the algorithms, key ids derived from
public keys, and the Signer interface that file keys and PKCS#11 tokens implement."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from dataflare_platform.errors import InvalidInputError

ED25519 = "ed25519"
ECDSA_P256 = "ecdsa-p256-sha256"
PublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey


class Signer(Protocol):
    """Anything that signs checkpoints: a key file, a PKCS#11 token."""

    key_id: str
    algorithm: str
    public_key: PublicKey

    def sign(self, message: bytes) -> bytes: ...


def key_id(public_key: PublicKey) -> str:
    """First 16 hex digits of SHA-256 of the public key: short, stable, self-certifying."""
    if isinstance(public_key, Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raw = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return hashlib.sha256(raw).hexdigest()[:16]


def algorithm_of(public_key: PublicKey) -> str:
    """The checkpoint algorithm name a public key verifies."""
    if isinstance(public_key, Ed25519PublicKey):
        return ED25519
    if isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name == "secp256r1":
        return ECDSA_P256
    raise InvalidInputError("only Ed25519 and ECDSA P-256 keys sign audit checkpoints")


class FileSigner:
    """An Ed25519 private key held in this process (read from a 0600 file)."""

    algorithm = ED25519

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_key = private.public_key()
        self.key_id = key_id(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


def as_signer(signing_key: Signer | Ed25519PrivateKey) -> Signer:
    """A raw Ed25519 key (tests, older callers) wrapped as a signer."""
    if isinstance(signing_key, Ed25519PrivateKey):
        return FileSigner(signing_key)
    return signing_key


def public_pem(public_key: PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# -- entry authenticators ------------------------------------------------------------------
# Checkpoints are signed now and then; an entry appended after the last one would be
# protected only by the hash chain, which whoever can write the home can recompute. Each
# entry therefore also carries an HMAC-SHA256 of its hash, made at append with a secret
# key kept with the signing key outside the home (never on the append path's disk).
ENTRY_MAC_FORMAT = "dataflare.audit.entry-mac/1"
ENTRY_KEY_BYTES = 32


class EntryAuthenticator:
    """An HMAC-SHA256 key that authenticates each audit entry at append.

    The tag covers a format label and the entry's hash, which already covers its seq,
    time, actor, action, subject, details and the previous entry's hash: an edited,
    inserted, reordered or re-chained entry needs a new tag, which only a holder of the
    key can make. ``key_id`` (16 hex digits of SHA-256 over a label and the key) names the
    key in each entry without revealing it, so an entry tagged with another key is
    reported as such rather than as a bad tag.
    """

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != ENTRY_KEY_BYTES:
            raise InvalidInputError(f"an audit entry key is {ENTRY_KEY_BYTES} random bytes")
        self._key = key
        label = b"dataflare.audit.entry-key-id/1\x00"
        self.key_id = hashlib.sha256(label + key).hexdigest()[:16]

    @classmethod
    def generate(cls) -> EntryAuthenticator:
        """A fresh random key (``secrets``): for provisioning and tests."""
        return cls(secrets.token_bytes(ENTRY_KEY_BYTES))

    def tag(self, entry_hash: str) -> str:
        """The hex HMAC-SHA256 an entry with hash ``entry_hash`` carries."""
        message = f"{ENTRY_MAC_FORMAT}\x00{entry_hash}".encode("ascii")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def check(self, entry_hash: str, tag: str) -> bool:
        """True when ``tag`` is this key's tag of ``entry_hash`` (constant-time compare)."""
        return hmac.compare_digest(self.tag(entry_hash), tag)

    def encoded(self) -> str:
        """The key as one line of hex, the form of its 0600 file."""
        return self._key.hex()

    def __repr__(self) -> str:  # never the key itself
        return f"EntryAuthenticator(key_id={self.key_id!r})"
