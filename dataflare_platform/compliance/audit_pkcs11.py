"""Audit checkpoints signed inside a PKCS#11 token (an HSM; SoftHSM2 in tests), so the
private key never exists in a file or in this process's memory.

Configured by the deployment's environment:

- ``DATAFLARE_AUDIT_PKCS11_MODULE``: the token's PKCS#11 library (e.g.
  ``/usr/lib/softhsm/libsofthsm2.so``);
- ``DATAFLARE_AUDIT_PKCS11_TOKEN``: the token label;
- ``DATAFLARE_AUDIT_PKCS11_KEY``: the label of the key pair (default ``dataflare-audit``);
- ``DATAFLARE_AUDIT_PKCS11_PIN_FILE`` (a 0600 file) or ``DATAFLARE_AUDIT_PKCS11_PIN``.

Ed25519 (CKM_EDDSA, SoftHSM2 >= 2.6) and ECDSA P-256 (CKM_ECDSA over SHA-256) keys are both
accepted; the checkpoint records which one signed it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dataflare_platform.compliance.audit_signing import (
    ECDSA_P256,
    ED25519,
    PublicKey,
    key_id,
)
from dataflare_platform.crypto.pkcs11_pin import read_pin
from dataflare_platform.errors import ConfigError, DataflareError

ENV_MODULE = "DATAFLARE_AUDIT_PKCS11_MODULE"
ENV_TOKEN = "DATAFLARE_AUDIT_PKCS11_TOKEN"
ENV_KEY = "DATAFLARE_AUDIT_PKCS11_KEY"
ENV_PIN = "DATAFLARE_AUDIT_PKCS11_PIN"
ENV_PIN_FILE = "DATAFLARE_AUDIT_PKCS11_PIN_FILE"
DEFAULT_KEY_LABEL = "dataflare-audit"
_ED25519_OID = "1.3.101.112"


class Pkcs11Error(DataflareError):
    """The token could not be opened or refused to sign."""


def _pin(env: Mapping[str, str]) -> str:
    return read_pin(env, ENV_PIN_FILE, ENV_PIN, "audit PKCS#11")


def _public_key(public: Any) -> tuple[PublicKey, str]:
    """The token's public key object as a ``cryptography`` key and its algorithm."""
    from cryptography.hazmat.primitives.serialization import load_der_public_key
    from pkcs11 import Attribute, KeyType
    from pkcs11.util.ec import encode_ec_public_key

    if public.key_type == KeyType.EC_EDWARDS:
        point = public[Attribute.EC_POINT]
        raw = point[-32:] if len(point) == 34 else point  # DER OCTET STRING or raw
        return Ed25519PublicKey.from_public_bytes(bytes(raw)), ED25519
    if public.key_type == KeyType.EC:
        key = load_der_public_key(bytes(encode_ec_public_key(public)))
        if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
            return key, ECDSA_P256
    raise ConfigError("audit PKCS#11", [(ENV_KEY, "the key is neither Ed25519 nor EC P-256")])


class Pkcs11Signer:
    """Signs checkpoints with a key pair held in a PKCS#11 token (a session per signature:
    checkpoints are hourly, and no session is left open between them)."""

    def __init__(self, module: str, token: str, pin: str, label: str = DEFAULT_KEY_LABEL):
        import pkcs11

        try:
            self._token = pkcs11.lib(module).get_token(token_label=token)
        except (pkcs11.PKCS11Error, RuntimeError, OSError) as err:
            raise Pkcs11Error(f"PKCS#11 token {token!r}: {type(err).__name__}") from None
        self._pin = pin
        self._label = label
        with self._session() as session:
            public = self._find(session, pkcs11.ObjectClass.PUBLIC_KEY)
            self.public_key, self.algorithm = _public_key(public)
        self.key_id = key_id(self.public_key)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Pkcs11Signer:
        missing = [v for v in (ENV_MODULE, ENV_TOKEN) if not env.get(v)]
        if missing:
            raise ConfigError("audit PKCS#11", [(v, "not set") for v in missing])
        return cls(
            env[ENV_MODULE], env[ENV_TOKEN], _pin(env), env.get(ENV_KEY) or DEFAULT_KEY_LABEL
        )

    def _session(self):
        import pkcs11

        try:
            return self._token.open(user_pin=self._pin)
        except pkcs11.PKCS11Error as err:
            raise Pkcs11Error(f"PKCS#11 login: {type(err).__name__}") from None

    def _find(self, session: Any, object_class: Any) -> Any:
        import pkcs11

        try:
            return session.get_key(object_class=object_class, label=self._label)
        except (pkcs11.NoSuchKey, pkcs11.MultipleObjectsReturned) as err:
            raise ConfigError(
                "audit PKCS#11", [(ENV_KEY, f"key {self._label!r}: {type(err).__name__}")]
            ) from None

    def sign(self, message: bytes) -> bytes:
        import pkcs11
        from pkcs11.util.ec import encode_ecdsa_signature

        with self._session() as session:
            private = self._find(session, pkcs11.ObjectClass.PRIVATE_KEY)
            try:
                if self.algorithm == ED25519:
                    return bytes(private.sign(message, mechanism=pkcs11.Mechanism.EDDSA))
                # CKM_ECDSA over a SHA-256 digest taken here: the same signature as
                # CKM_ECDSA_SHA256, which not every token (SoftHSM2) offers.
                digest = hashlib.sha256(message).digest()
                raw = private.sign(digest, mechanism=pkcs11.Mechanism.ECDSA)
                return bytes(encode_ecdsa_signature(raw))
            except pkcs11.PKCS11Error as err:
                raise Pkcs11Error(f"PKCS#11 signing: {type(err).__name__}") from None


def generate_token_key(
    module: str, token: str, pin: str, label: str = DEFAULT_KEY_LABEL, algorithm: str = ED25519
) -> None:
    """Create a non-extractable key pair in the token (what an HSM administrator does
    once; the public key is then pinned from ``Pkcs11Signer(...).public_key``)."""
    import pkcs11
    from pkcs11 import Attribute, KeyType
    from pkcs11.util.ec import encode_named_curve_parameters

    curve = {ED25519: (KeyType.EC_EDWARDS, _ED25519_OID), ECDSA_P256: (KeyType.EC, "secp256r1")}
    if algorithm not in curve:
        raise ConfigError("audit PKCS#11", [("algorithm", f"{algorithm}: not supported")])
    key_type, oid = curve[algorithm]
    with pkcs11.lib(module).get_token(token_label=token).open(user_pin=pin, rw=True) as session:
        params = session.create_domain_parameters(
            key_type, {Attribute.EC_PARAMS: encode_named_curve_parameters(oid)}, local=True
        )
        params.generate_keypair(
            store=True,
            label=label,
            private_template={Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True},
        )
