"""Signed entitlements of commercial plugins (issue 20 §3), checked when a plugin loads.

A commercial plugin (its manifest licence names one of the deployment's commercial
licence ids, e.g. ``LicenseRef-Commercial``) loads only with an entitlement: a JSON
document naming the tenant, the plugin, an expiry and optional seat and row limits,
signed with Ed25519 by an issuer whose public key the deployment trusts::

    {"entitlement": {"tenant": ..., "plugin": ..., "expires_at": "2027-01-01T00:00:00Z",
                     "max_rows": 1000000, "seats": 5, "issued_at": ..., "id": ...},
     "key_id": "<sha256 of the issuer's raw public key>", "signature": "<base64>"}

The signature covers the canonical JSON of ``entitlement`` (sorted keys, no spaces), so
any edit (a later expiry, a larger row limit, another tenant) breaks it.

Why expiry is checked at load only: an entitlement that expires while a run is going
must not cut a batch (or a run) in half and leave a sink half-written; the next run, i.e.
the next load, is refused naming the plugin and the expiry. Row limits count the rows
handed to the plugin (failed batches included) since the entitlement was issued: earlier
runs' rows from the usage log when usage statistics are on, plus this run's; enforced at
the next batch boundary: the batch that crosses the limit completes, the next is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import Field, ValidationError

from dataflare_platform.errors import AccessDeniedError, ConfigError
from dataflare_platform.models import StrictModel

COMMERCIAL_LICENCES = ("LicenseRef-Commercial",)


class EntitlementError(AccessDeniedError):
    """A commercial plugin may not run: no, a forged, a foreign or an expired entitlement,
    or its row limit is used up. Names the plugin and the reason (never the signature)."""

    def __init__(self, plugin: str, reason: str) -> None:
        self.plugin, self.reason = plugin, reason
        super().__init__(f"plugin {plugin}: entitlement refused: {reason}")


class Entitlement(StrictModel):
    id: str = Field(min_length=1, max_length=200)
    tenant: str = Field(min_length=1, max_length=256)
    plugin: str = Field(min_length=1, max_length=64)
    issued_at: datetime
    expires_at: datetime
    seats: int | None = Field(default=None, ge=1)
    max_rows: int | None = Field(default=None, ge=0)


def canonical(entitlement: dict[str, Any]) -> bytes:
    return json.dumps(entitlement, sort_keys=True, separators=(",", ":")).encode()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def sign_entitlement(entitlement: Entitlement, key: Ed25519PrivateKey) -> dict[str, Any]:
    """The signed document (what an issuer hands to a customer)."""
    body = json.loads(entitlement.model_dump_json())
    return {
        "entitlement": body,
        "key_id": key_id(key.public_key()),
        "signature": base64.b64encode(key.sign(canonical(body))).decode(),
    }


def load_issuer_private_key(path: Path) -> Ed25519PrivateKey:
    """The issuer's Ed25519 private key (PKCS#8 PEM, as ``dataflare plugin keygen`` writes
    it). A key file others can read is refused; errors name the file, never its bytes."""
    path = Path(path)
    mode = path.stat().st_mode
    if mode & 0o077:
        raise ConfigError("entitlement issuer key", [(str(path), "readable by others")])
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        raise ConfigError("entitlement issuer key", [(str(path), "not a PEM key")]) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("entitlement issuer key", [(str(path), "not an Ed25519 key")])
    return key


def public_pem(key: Ed25519PrivateKey) -> bytes:
    """The PEM public key a deployment lists in ``DATAFLARE_ENTITLEMENT_ISSUER_KEYS``."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_issuer_keys(paths: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    """Trusted issuer keys (PEM ``SubjectPublicKeyInfo`` files) by key id."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        try:
            key = serialization.load_pem_public_key(Path(path).read_bytes())
        except (OSError, ValueError) as err:
            raise ConfigError(
                "entitlement issuer keys", [(str(path), f"not a PEM public key: {err}")]
            ) from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError("entitlement issuer keys", [(str(path), "not an Ed25519 key")])
        keys[key_id(key)] = key
    return keys


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def verify_entitlement(
    document: bytes | dict[str, Any],
    plugin: str,
    tenant: str,
    trusted: dict[str, Ed25519PublicKey],
    now: datetime | None = None,
) -> Entitlement:
    """The entitlement in ``document`` if a trusted issuer signed it for this plugin and
    tenant and it has not expired at ``now``; else :class:`EntitlementError`."""
    try:
        doc = json.loads(document) if isinstance(document, bytes) else document
        body, kid, sig = doc["entitlement"], doc["key_id"], doc["signature"]
        signature = base64.b64decode(sig, validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise EntitlementError(plugin, "the entitlement is not a signed document") from None
    key = trusted.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise EntitlementError(plugin, "signed by an issuer key the deployment does not trust")
    try:
        key.verify(signature, canonical(body))
    except (InvalidSignature, TypeError):
        raise EntitlementError(plugin, "bad signature (the entitlement was altered)") from None
    try:
        ent = Entitlement.model_validate(body)
    except ValidationError as err:
        raise EntitlementError(
            plugin, f"malformed entitlement: {err.error_count()} error(s)"
        ) from None
    if ent.plugin != plugin:
        raise EntitlementError(plugin, f"the entitlement is for plugin {ent.plugin!r}")
    if ent.tenant != tenant:
        raise EntitlementError(plugin, "the entitlement is for another tenant")
    at = now or datetime.now(UTC)
    expires = _utc(ent.expires_at)
    if at >= expires:
        raise EntitlementError(
            plugin,
            f"expired at {expires.isoformat()} (now {at.isoformat(timespec='seconds')});"
            " new runs are refused until a renewed entitlement is installed",
        )
    return ent


def is_commercial(
    expression: str, commercial: Iterable[str], free: Iterable[str] | None = None
) -> bool:
    """Whether using a plugin under the SPDX ``expression`` takes a commercial licence:
    it names one of the ``commercial`` ids (parsed with the licensing of the admission's
    licence check, so aliases match) and cannot be satisfied with the ``free`` licences
    alone (``MIT OR LicenseRef-Commercial`` used under MIT needs no entitlement).
    ``free`` None: the admission's default allow-list."""
    from license_expression import get_spdx_licensing

    from dataflare_platform.plugins.admission import DEFAULT_LICENCES, check_licence

    licensing = get_spdx_licensing()
    try:
        keys = set(licensing.license_keys(licensing.parse(expression)))
    except Exception:  # an unparsable expression is the licence check's to refuse
        return False
    wanted = {str(licensing.parse(c)) for c in commercial}
    if not keys & wanted:
        return False
    others = {f for f in (DEFAULT_LICENCES if free is None else free)}
    others = {f for f in others if str(licensing.parse(f)) not in wanted}
    return not check_licence(expression, others).passed


class RowLimitGate:
    """Counts the rows handed to one loaded plugin, on top of ``used`` (earlier runs'
    rows, from the usage log); refuses the batch after the one that reached
    ``entitlement.max_rows`` (a batch is never cut)."""

    def __init__(self, entitlement: Entitlement, used: int = 0) -> None:
        self.entitlement = entitlement
        self.used = used
        self._lock = threading.Lock()

    def before_batch(self, rows: int) -> None:
        limit = self.entitlement.max_rows
        if limit is None or rows == 0:
            return
        with self._lock:
            used = self.used
        if used >= limit:
            raise EntitlementError(
                self.entitlement.plugin,
                f"row limit {limit} of entitlement {self.entitlement.id} reached"
                f" ({used} rows processed); this batch of {rows} rows was not run",
            )

    def after_batch(self, rows: int) -> None:
        with self._lock:
            self.used += rows


def entitlement_path(wasm: Path) -> Path:
    """``<name>.wasm`` -> ``<name>.entitlement.json`` beside it."""
    return wasm.with_suffix(".entitlement.json")


def check_at_load(
    plugin: str,
    licence: str,
    wasm: Path,
    tenant: str | None,
    trusted: dict[str, Ed25519PublicKey],
    commercial: Iterable[str] = COMMERCIAL_LICENCES,
    clock: Callable[[], datetime] | None = None,
    free: Iterable[str] | None = None,
) -> Entitlement | None:
    """None for a non-commercial plugin; else the verified entitlement from the file
    beside the module, or :class:`EntitlementError`."""
    if not is_commercial(licence, commercial, free):
        return None
    if tenant is None:
        raise EntitlementError(plugin, "commercial plugin and the deployment names no tenant")
    path = entitlement_path(wasm)
    try:
        document = path.read_bytes()
    except FileNotFoundError:
        raise EntitlementError(
            plugin, f"commercial licence {licence!r} and no {path.name}"
        ) from None
    now = clock() if clock is not None else None
    return verify_entitlement(document, plugin, tenant, trusted, now)
