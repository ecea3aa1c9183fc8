"""The signing vocabulary of audit checkpoints: the algorithms, key ids derived from
public keys, and the Signer interface that file keys and PKCS#11 tokens implement."""

from __future__ import annotations

import hashlib
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
