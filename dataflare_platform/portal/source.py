"""Read every plugin version the registry vouches for, through TUF.

The marketplace client answers "is this one target trustworthy?"; the portal needs the
whole catalogue. python-tuf's ``Updater`` has no listing call, so this module refreshes
the top-level metadata with the updater (signatures, thresholds, chain of roots, rollback,
expiry, snapshot consistency), then makes the updater load each publisher's delegated
role (``get_targetinfo`` on a path inside the namespace: the same verification an install
does) and reads the role from the updater's cache. Before using it, the role is checked
again with the public Metadata API (signed by its delegation's keys to threshold, the
version the verified snapshot names, not expired), so a file that appeared in the cache
by any other route is never shown. Nothing is read from the repository directly: an
operator's local folder goes through :class:`LocalFetcher` and the same checks.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib import parse

from securesystemslib.signer import Key
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, Snapshot, TargetFile, Targets
from tuf.ngclient import Updater

from dataflare_platform.marketplace.attestation import (
    PREDICATE_TYPE,
    AttestationError,
    verify_envelope,
)
from dataflare_platform.marketplace.client import LocalFetcher, MarketplaceError, RegistryClient
from dataflare_platform.marketplace.repository import VERSION
from dataflare_platform.streams.fields import PLUGIN_NAME

# A probe path inside a namespace: never a real plugin (names start with a letter), only
# there to make the updater walk to (and verify) the namespace's delegated role.
_PROBE = "{namespace}/0-portal-probe/0.0.0.wasm"


@dataclass(frozen=True)
class VerifiedVersion:
    """One target, as the registry signed it."""

    namespace: str
    name: str
    version: str
    path: str
    length: int
    sha256: str
    custom: dict[str, Any]


@dataclass(frozen=True)
class VerifiedPublisher:
    """A delegated role: who may sign inside the namespace, and who did sign its file."""

    namespace: str
    key_ids: list[str]
    threshold: int
    signed_by: list[str]
    role_version: int | None
    expires: datetime | None


@dataclass
class VerifiedRegistry:
    source: str
    refreshed_at: datetime
    publishers: list[VerifiedPublisher] = field(default_factory=list)
    versions: list[VerifiedVersion] = field(default_factory=list)
    # Targets whose path does not spell <namespace>/<name>/<version>.wasm: signed, but
    # not shown (a ``..`` in a name would otherwise become a page path).
    skipped: list[str] = field(default_factory=list)


def _refusal(err: Exception) -> MarketplaceError:
    reason = "repository"
    if isinstance(err, tuf_errors.ExpiredMetadataError):
        reason = "expired"
    elif isinstance(err, tuf_errors.BadVersionNumberError):
        reason = "rollback"
    elif isinstance(err, tuf_errors.UnsignedMetadataError):
        reason = "bad_signature"
    elif isinstance(err, tuf_errors.DownloadError):
        reason = "unavailable"
    return MarketplaceError("*", reason, f"portal: {type(err).__name__}: {err}")


def _updater(client: RegistryClient) -> Updater:
    local = client.metadata_url.startswith("file://")
    return Updater(
        metadata_dir=str(client.metadata_dir),
        metadata_base_url=client.metadata_url,
        target_base_url=client.targets_url,
        fetcher=LocalFetcher() if local else None,
    )


def _cached(client: RegistryClient, role: str) -> Metadata[Any]:
    name = parse.quote(role, "")
    return Metadata.from_file(str(client.metadata_dir / f"{name}.json"))


def read_registry(
    source: str | Path,
    state_dir: Path,
    trusted_root: bytes | None = None,
    now: datetime | None = None,
    scan_keys: Sequence[Key] = (),
) -> VerifiedRegistry:
    """Everything the registry at ``source`` vouches for. ``state_dir`` is the portal's
    own TUF cache (bootstrapped from ``trusted_root`` the first time, like an install);
    a refusal raises :class:`MarketplaceError` and no page is built from unverified
    data. Each version's scan report (the signed in-toto statement its target links) is
    read through the updater too, and its DSSE signature checked with ``scan_keys``
    (see :func:`_scan_report`)."""
    client = RegistryClient(
        source, state_dir=state_dir, plugins_dir=state_dir / "unused", trusted_root=trusted_root
    )
    updater = _updater(client)
    try:
        updater.refresh()
    except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as err:
        raise _refusal(err) from None
    when = now or datetime.now(UTC)
    root_md: Metadata[Root] = _cached(client, "root")
    targets_md: Metadata[Targets] = _cached(client, "targets")
    snapshot: Metadata[Snapshot] = _cached(client, "snapshot")
    try:  # the same re-check for the top-level files read back from the cache
        for role, md in (("targets", targets_md), ("snapshot", snapshot)):
            root_md.signed.verify_delegate(role, md.signed_bytes, md.signatures)
    except tuf_errors.UnsignedMetadataError as err:
        raise _refusal(err) from None
    listed = snapshot.signed.meta.get("targets.json")
    if listed is None or listed.version != targets_md.signed.version:
        raise MarketplaceError("*", "repository", "portal: targets.json is not the snapshot's")
    out = VerifiedRegistry(source=str(source), refreshed_at=when)
    delegations = targets_md.signed.delegations
    roles = (delegations.roles or {}) if delegations else {}
    for namespace, role in sorted(roles.items()):
        meta = snapshot.signed.meta.get(f"{namespace}.json")
        if meta is None:  # a publisher who has not published yet
            out.publishers.append(
                VerifiedPublisher(namespace, sorted(role.keyids), role.threshold, [], None, None)
            )
            continue
        try:
            updater.get_targetinfo(_PROBE.format(namespace=namespace))
            md: Metadata[Targets] = _cached(client, namespace)
            # Belt and braces over the updater's own checks (see the module docstring).
            targets_md.signed.verify_delegate(namespace, md.signed_bytes, md.signatures)
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as err:
            raise _refusal(err) from None
        if md.signed.version != meta.version or md.signed.is_expired(when):
            raise MarketplaceError(
                "*", "repository", f"portal: {namespace}.json is not the snapshot's current one"
            )
        signed_by = sorted(k for k in md.signatures if k in role.keyids)
        out.publishers.append(
            VerifiedPublisher(
                namespace,
                sorted(role.keyids),
                role.threshold,
                signed_by,
                md.signed.version,
                md.signed.expires,
            )
        )
        for path, target in sorted(md.signed.targets.items()):
            parts = path.split("/")
            ok = (
                len(parts) == 3
                and parts[0] == namespace
                and parts[2].endswith(".wasm")
                and re.match(PLUGIN_NAME, parts[1]) is not None
                and re.match(VERSION, parts[2].removesuffix(".wasm")) is not None
            )
            if not ok:
                out.skipped.append(path)
                continue
            custom = target.unrecognized_fields.get("custom", {}).get("dataflare", {})
            custom = dict(custom) if isinstance(custom, dict) else {}
            scan = _scan_report(updater, client, custom, target, scan_keys)
            if scan is not None:
                custom["scan"] = scan
            out.versions.append(
                VerifiedVersion(
                    namespace=namespace,
                    name=parts[1],
                    version=parts[2].removesuffix(".wasm"),
                    path=path,
                    length=target.length,
                    sha256=target.hashes.get("sha256", ""),
                    custom=custom,
                )
            )
    return out


def _scan_report(
    updater: Updater,
    client: RegistryClient,
    custom: dict[str, Any],
    target: TargetFile,
    scan_keys: Sequence[Key],
) -> dict[str, Any] | None:
    """The admission scan of one version, from the report its target links (None: it
    links none). The report is downloaded by the updater, which checks its length and
    sha256 against the link in the publisher-signed target, exactly as ``install`` does;
    its DSSE signature is then checked with the scanner keys the portal was given. Shown
    as ``signature``: ``verified``; ``not checked`` (no scanner key given: the checks
    shown are what the publisher attached, as signed by the publisher); or the refusal,
    in which case no check of the report is shown."""
    links = [
        a
        for a in custom.get("attestations") or []
        if isinstance(a, dict) and a.get("predicateType") == PREDICATE_TYPE
    ]
    if not links:
        return None
    link = links[-1]
    try:
        report = TargetFile(
            length=int(link["length"]), hashes={"sha256": str(link["sha256"])}, path=link["path"]
        )
    except (KeyError, TypeError, ValueError):
        return {"signature": "refused: a malformed report link", "checks": []}
    with tempfile.TemporaryDirectory(dir=client.state_dir) as tmp:
        dest = Path(tmp) / "scan.dsse.json"
        try:
            updater.download_target(report, str(dest))
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as err:
            return {"signature": f"refused: {type(err).__name__}", "checks": []}
        envelope = dest.read_bytes()
    sha256 = target.hashes.get("sha256", "")
    try:
        if scan_keys:
            statement = verify_envelope(envelope, list(scan_keys), subject_sha256=sha256)
            signature = "verified"
        else:
            statement = _unchecked_statement(envelope, sha256)
            signature = "not checked (no scanner key given)"
    except AttestationError as err:
        return {"signature": f"refused: {err.reason}", "checks": []}
    predicate = statement.get("predicate") or {}
    return {
        "admitted": predicate.get("admitted"),
        "checks": predicate.get("checks") or [],
        "scanned_at": predicate.get("scannedAt"),
        "signature": signature,
    }


def _unchecked_statement(envelope: bytes, sha256: str) -> dict[str, Any]:
    """The statement inside a DSSE envelope whose signature nobody can check here, still
    refused when it is not a plugin-scan statement about this very module."""
    import base64

    try:
        payload = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    except (ValueError, KeyError, TypeError) as err:
        raise AttestationError(f"not a DSSE envelope ({type(err).__name__})") from None
    if not isinstance(payload, dict) or payload.get("predicateType") != PREDICATE_TYPE:
        raise AttestationError("not a plugin-scan in-toto statement")
    digests = [
        s.get("digest", {}).get("sha256")
        for s in payload.get("subject") or []
        if isinstance(s, dict)
    ]
    if sha256 not in digests:
        raise AttestationError("its subject is another module")
    return payload
