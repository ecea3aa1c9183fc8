"""The plugin registry's repository side: a TUF repository on disk (python-tuf's
Metadata API), served by any static file server or read as a local directory.

Why TUF rather than a signed index: a signature alone does not stop a mirror from
serving an older (vulnerable, later revoked) index forever, nor mixing metadata of
different releases. TUF's roles do: ``root`` names the keys of every role (threshold
signatures, rotated by signing a new root with the old one), ``timestamp`` (short
expiry, online key) bounds how stale a client can be, ``snapshot`` pins the version of
every targets file so they cannot be mixed, and ``targets`` delegates ``<namespace>/*/*``
to one role per publisher (terminating: nobody else can sign inside a namespace, and a
publisher cannot sign outside its own).

Layout (``consistent_snapshot`` off: one file per role, roots by version)::

    <repo>/metadata/{N}.root.json timestamp.json snapshot.json targets.json <ns>.json
    <repo>/targets/<ns>/<name>/<version>.wasm

A plugin version is the target ``<ns>/<name>/<version>.wasm``; its length and sha256
come from the module bytes (``TargetFile.from_data``), its ``custom`` metadata carries
the manifest, the declared capabilities, the SPDX licence, the platform version range
and its status (``yanked`` / ``revoked`` with a reason). Private keys never appear in
logs or errors: only key ids do.
"""

from __future__ import annotations

import functools
import json
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from securesystemslib.signer import CryptoSigner, Signer, SSlibKey
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from dataflare_platform.durable import WriterLock, write_atomic
from dataflare_platform.errors import ConflictError, InvalidInputError, NotFoundError
from dataflare_platform.streams.fields import PLUGIN_NAME

T = TypeVar("T")
TOP_ROLES = ("root", "timestamp", "snapshot", "targets")
KEYS_DIR_ENV = "DATAFLARE_REGISTRY_KEYS_DIR"
NAMESPACE = r"^[a-z][a-z0-9-]{0,62}$"
VERSION = r"^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$"
SPEC_VERSION = "1.0.31"
# The registry operator's kill list: a field of the top-level ``targets`` role (signed by
# the targets key, which no publisher holds), ``{target path: {"reason": ...}}``. Clients
# refuse a listed version whatever its publisher's own file says.
KILL_LIST_FIELD = "x-dataflare-kill-list"

DEFAULT_EXPIRY = {
    "root": timedelta(days=365),
    "targets": timedelta(days=90),
    "snapshot": timedelta(days=7),
    "timestamp": timedelta(days=1),
    "delegated": timedelta(days=90),
}

_SERIALIZER = JSONSerializer(compact=False)


# --- keys -------------------------------------------------------------------------


def generate_key_file(path: Path) -> str:
    """Write a new Ed25519 private key (PKCS#8 PEM, unencrypted, mode 0600) to ``path``
    and return its TUF key id. Refuses to overwrite: a lost publisher key is rotated,
    never silently replaced."""
    path = Path(path)
    if path.exists():
        raise ConflictError(f"key file {path} exists: refusing to overwrite a key")
    path.parent.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return SSlibKey.from_crypto(private.public_key()).keyid


def load_signer(path: Path) -> CryptoSigner:
    """A signer over the Ed25519 key in ``path``. A key file others can read is refused
    (the key would be as good as published); the error names the file, never its bytes."""
    path = Path(path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InvalidInputError(f"key file {path} is readable by others (mode {mode & 0o777:o})")
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise InvalidInputError(f"key file {path} does not hold an Ed25519 private key")
    return CryptoSigner(private)


def role_signers_from_dir(
    keys_dir: Path | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, list[Signer]]:
    """The top-level roles' signers from ``<keys_dir>/<role>.pem`` (``keys_dir`` defaults
    to ``$DATAFLARE_REGISTRY_KEYS_DIR``); a missing role key is simply absent (an offline
    root key need not be present to publish)."""
    env = os.environ if environ is None else environ
    if keys_dir is None:
        if not env.get(KEYS_DIR_ENV):
            raise InvalidInputError(f"no registry keys: set {KEYS_DIR_ENV} or pass a folder")
        keys_dir = Path(env[KEYS_DIR_ENV])
    out: dict[str, list[Signer]] = {}
    for role in TOP_ROLES:
        # ``<role>.pem`` and, for a role with a threshold above one, ``<role>.<n>.pem``.
        pems = [Path(keys_dir) / f"{role}.pem", *sorted(Path(keys_dir).glob(f"{role}.*.pem"))]
        signers = [load_signer(pem) for pem in pems if pem.exists()]
        if signers:
            out[role] = signers
    return out


def signer_list(signer: Signer | Sequence[Signer]) -> list[Signer]:
    """One signer or several (a publisher role with a threshold above one signs with as
    many keys as its threshold)."""
    return [signer] if isinstance(signer, Signer) else list(signer)


# --- repository -------------------------------------------------------------------

# A published version's signed status (``custom.dataflare.status``).
STATUSES = ("published", "deprecated", "yanked", "revoked")


def _check_threshold(threshold: int, keys: int, role: str) -> None:
    """A threshold no key set can meet (or zero, which any forgery meets) is refused."""
    if not 1 <= threshold <= keys:
        raise InvalidInputError(
            f"role {role!r}: threshold {threshold} must be between 1 and its {keys} key(s)"
        )


def target_path(namespace: str, name: str, version: str) -> str:
    """The TUF target path of a plugin version, after checking each part's spelling
    (a ``..`` or ``/`` in a part would escape its namespace's delegation)."""
    if not re.match(NAMESPACE, namespace):
        raise InvalidInputError(f"namespace {namespace!r} must match {NAMESPACE}")
    if not re.match(PLUGIN_NAME, name):
        raise InvalidInputError(f"plugin name {name!r} must match {PLUGIN_NAME}")
    if not re.match(VERSION, version):
        raise InvalidInputError(f"version {version!r} is not a semantic version")
    return f"{namespace}/{name}/{version}.wasm"


def _one_writer(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def locked(self: Repository, *args: Any, **kwargs: Any) -> T:
        with self._writing():
            return method(self, *args, **kwargs)

    return locked


@dataclass
class Repository:
    """A TUF repository in ``path``; ``signers`` holds the keys of the top-level roles
    this process may sign with (timestamp and snapshot are online keys; root and
    targets are needed only to init, rotate or add publishers). ``clock`` is the time
    expiries count from (tests issue metadata "from the past" to play a freeze)."""

    path: Path
    signers: dict[str, list[Signer]] = field(default_factory=dict)
    expiry: dict[str, timedelta] = field(default_factory=lambda: dict(DEFAULT_EXPIRY))
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    @property
    def metadata_dir(self) -> Path:
        return Path(self.path) / "metadata"

    @property
    def targets_dir(self) -> Path:
        return Path(self.path) / "targets"

    def _expires(self, role: str) -> datetime:
        delta = self.expiry.get(role, self.expiry["delegated"])
        return (self.clock() + delta).replace(microsecond=0)

    def _signers(self, role: str) -> list[Signer]:
        if not self.signers.get(role):
            raise InvalidInputError(f"no signing key for registry role {role!r}")
        return self.signers[role]

    # ---- files

    def _file(self, role: str, version: int | None = None) -> Path:
        if role == "root":
            if version is None:
                version = self._root_version()
            return self.metadata_dir / f"{version}.root.json"
        return self.metadata_dir / f"{role}.json"

    def _root_version(self) -> int:
        versions = [int(p.name.split(".")[0]) for p in self.metadata_dir.glob("*.root.json")]
        if not versions:
            raise NotFoundError(f"no TUF repository at {self.path} (run init first)")
        return max(versions)

    def load(self, role: str) -> Metadata[Any]:
        try:
            return Metadata.from_file(str(self._file(role)))
        except FileNotFoundError:
            raise NotFoundError(f"registry role {role!r} not found in {self.path}") from None

    def _write(self, role: str, md: Metadata[Any], signers: list[Signer]) -> None:
        md.signatures.clear()
        for signer in signers:
            md.sign(signer, append=True)
        version = md.signed.version if role == "root" else None
        write_atomic(self._file(role, version), md.to_bytes(_SERIALIZER))

    # ---- init

    @_one_writer
    def init(self, thresholds: Mapping[str, int] | None = None) -> None:
        """Create root (v1), targets, snapshot and timestamp, each signed by its role's
        keys (threshold: ``thresholds[role]``, default the number of keys given for the
        role)."""
        thresholds = dict(thresholds or {})
        unknown = sorted(set(thresholds) - set(TOP_ROLES))
        if unknown:
            raise InvalidInputError(f"thresholds for unknown roles {unknown}: {TOP_ROLES}")
        if self.metadata_dir.exists() and any(self.metadata_dir.glob("*.root.json")):
            raise ConflictError(f"a registry already exists at {self.path}")
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        root = Root(expires=self._expires("root"), consistent_snapshot=False)
        for role in TOP_ROLES:
            signers = self._signers(role)
            for signer in signers:
                root.add_key(signer.public_key, role)
            threshold = thresholds.get(role, len(signers))
            _check_threshold(threshold, len(signers), role)
            root.roles[role].threshold = threshold
        self._write("root", Metadata(root), self._signers("root"))
        targets = Targets(expires=self._expires("targets"))
        targets.delegations = Delegations(keys={}, roles={})
        self._write("targets", Metadata(targets), self._signers("targets"))
        self._write("snapshot", Metadata(Snapshot(expires=self._expires("snapshot"))), [])
        self._write("timestamp", Metadata(Timestamp(expires=self._expires("timestamp"))), [])
        self._commit_snapshot({"targets": 1})

    def _commit_snapshot(self, changed: Mapping[str, int]) -> None:
        """Record the new versions of changed targets roles in a new snapshot, then a new
        timestamp over it: the only path by which a targets change reaches clients."""
        snap = self.load("snapshot")
        for role, version in changed.items():
            snap.signed.meta[f"{role}.json"] = MetaFile(version=version)
        snap.signed.version += 1
        snap.signed.expires = self._expires("snapshot")
        self._write("snapshot", snap, self._signers("snapshot"))
        self._refresh_timestamp(snap.signed.version)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One writer at a time: every change is read-modify-write of snapshot and
        timestamp, so two concurrent publishes would otherwise lose one of them."""
        guard = WriterLock(Path(self.path) / ".registry.flock")
        guard.acquire(timeout_s=60)
        try:
            yield
        finally:
            guard.release()

    def refresh_timestamp(self) -> int:
        """Sign a new timestamp (what a registry runs periodically, well inside the
        timestamp expiry, so clients can keep proving freshness)."""
        with self._writing():
            return self._refresh_timestamp()

    def _refresh_timestamp(self, snapshot_version: int | None = None) -> int:
        ts = self.load("timestamp")
        if snapshot_version is None:
            snapshot_version = self.load("snapshot").signed.version
        ts.signed.snapshot_meta = MetaFile(version=snapshot_version)
        ts.signed.version += 1
        ts.signed.expires = self._expires("timestamp")
        self._write("timestamp", ts, self._signers("timestamp"))
        return int(ts.signed.version)

    # ---- root rotation

    @_one_writer
    def rotate_root_key(
        self, role: str, new_signers: list[Signer], threshold: int | None = None
    ) -> None:
        """Replace the keys of a top-level ``role`` in a new root signed by both the old
        and the new root keys (clients walk the chain of roots, nothing is reinstalled).
        ``threshold``: signatures the role needs (default: every new key)."""
        threshold = len(new_signers) if threshold is None else threshold
        _check_threshold(threshold, len(new_signers), role)
        root_md = self.load("root")
        root = root_md.signed
        for keyid in list(root.roles[role].keyids):
            root.revoke_key(keyid, role)
        for signer in new_signers:
            root.add_key(signer.public_key, role)
        root.roles[role].threshold = threshold
        root.version += 1
        root.expires = self._expires("root")
        old_root = self._signers("root")
        if role == "root":
            self._write("root", root_md, [*old_root, *new_signers])
        else:
            self._write("root", root_md, old_root)
        self.signers[role] = list(new_signers)
        if role == "targets":
            targets = self.load("targets")
            targets.signed.version += 1
            self._write("targets", targets, new_signers)
            self._commit_snapshot({"targets": targets.signed.version})
        elif role == "snapshot":
            self._commit_snapshot({})
        elif role == "timestamp":
            self._refresh_timestamp()

    # ---- publishers

    def namespaces(self) -> list[str]:
        delegations = self.load("targets").signed.delegations
        return sorted(delegations.roles or {}) if delegations else []

    @_one_writer
    def add_publisher(
        self, namespace: str, key: SSlibKey | Sequence[SSlibKey], threshold: int = 1
    ) -> None:
        """Delegate ``<namespace>/*/*`` (terminating) to a new role named ``namespace``
        trusting ``key`` (one key or several; ``threshold`` of them must sign). The role's
        own targets file is created (signed by the publisher) at its first publish; until
        then the snapshot does not list it."""
        target_path(namespace, "x", "0.0.0")  # spelling check
        keys = [key] if isinstance(key, SSlibKey) else list(key)
        _check_threshold(threshold, len({k.keyid for k in keys}), namespace)
        targets = self.load("targets")
        delegations = targets.signed.delegations
        assert delegations is not None and delegations.roles is not None
        if namespace in delegations.roles:
            raise ConflictError(f"publisher namespace {namespace!r} already exists")
        for k in keys:
            delegations.keys[k.keyid] = k
        delegations.roles[namespace] = DelegatedRole(
            name=namespace,
            keyids=sorted({k.keyid for k in keys}),
            threshold=threshold,
            terminating=True,
            paths=[f"{namespace}/*/*"],  # TUF: "*" never crosses a "/"
        )
        targets.signed.version += 1
        self._write("targets", targets, self._signers("targets"))
        self._commit_snapshot({"targets": targets.signed.version})

    @_one_writer
    def rotate_publisher_key(
        self,
        namespace: str,
        new_key: SSlibKey | Sequence[SSlibKey],
        new_signer: Signer | Sequence[Signer] | None = None,
        threshold: int | None = None,
    ) -> None:
        """Replace a publisher's key(s): the old keys stop counting as soon as clients see
        the new targets metadata. With ``new_signer`` (as many as the threshold) the
        namespace's targets file is re-signed by the new keys at once, so installed
        plugins keep verifying without a reinstall. ``threshold`` defaults to the role's
        current one."""
        keys = [new_key] if isinstance(new_key, SSlibKey) else list(new_key)
        targets = self.load("targets")
        delegations = targets.signed.delegations
        if delegations is None or namespace not in (delegations.roles or {}):
            raise NotFoundError(f"no publisher namespace {namespace!r}")
        role = delegations.roles[namespace]  # type: ignore[index]
        threshold = role.threshold if threshold is None else threshold
        _check_threshold(threshold, len({k.keyid for k in keys}), namespace)
        for keyid in role.keyids:
            delegations.keys.pop(keyid, None)
        for k in keys:
            delegations.keys[k.keyid] = k
        role.keyids = sorted({k.keyid for k in keys})
        role.threshold = threshold
        targets.signed.version += 1
        self._write("targets", targets, self._signers("targets"))
        changed = {"targets": targets.signed.version}
        if new_signer is not None and self._file(namespace).exists():
            md = self.load(namespace)
            md.signed.version += 1
            self._write(namespace, md, signer_list(new_signer))
            changed[namespace] = md.signed.version
        self._commit_snapshot(changed)

    # ---- publish, yank, revoke

    def _namespace_md(self, namespace: str) -> Metadata[Targets]:
        if namespace not in self.namespaces():
            raise NotFoundError(f"no publisher namespace {namespace!r}: add the publisher first")
        if self._file(namespace).exists():
            return self.load(namespace)
        return Metadata(Targets(expires=self._expires("delegated"), version=1))

    @_one_writer
    def publish(
        self,
        namespace: str,
        name: str,
        version: str,
        wasm_bytes: bytes,
        manifest: Mapping[str, Any] | bytes | str,
        signer: Signer | Sequence[Signer],
        platform: str = ">=0.1",
        license: str | None = None,
        attestation: bytes | None = None,
        quality_score: int | None = None,
    ) -> TargetFile:
        """Add ``<namespace>/<name>/<version>.wasm``, signed by the publisher's
        ``signer``; a published version is immutable (republishing it is refused).
        ``manifest`` is the sidecar's bytes (kept byte for byte) or a mapping.
        ``attestation``: the signed scan report (a DSSE envelope) stored next to the
        module and linked with its digest (:meth:`_store_attestation`)."""
        path = target_path(namespace, name, version)
        md = self._namespace_md(namespace)
        if path in md.signed.targets:
            raise ConflictError(f"{path} is already published: publish a new version")
        # Newer than every published version (yanked and revoked ones included): a
        # release can never slip in below one clients already run.
        prefix = f"{namespace}/{name}/"
        published = [
            Version(p[len(prefix) : -len(".wasm")])
            for p in md.signed.targets
            if p.startswith(prefix)
        ]
        if published and Version(version) <= max(published):
            raise ConflictError(
                f"{path}: version {version} is not newer than the published {max(published)}"
            )
        try:
            SpecifierSet(platform)
        except InvalidSpecifier:
            raise InvalidInputError(
                f"{path}: platform range {platform!r} is not a version specifier (e.g. '>=0.1,<1')"
            ) from None
        if isinstance(manifest, bytes | str):
            manifest_text = manifest.decode() if isinstance(manifest, bytes) else manifest
            manifest = json.loads(manifest_text)
        else:
            manifest_text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        capabilities = manifest.get("capabilities") or []
        spdx = license or manifest.get("license")
        if not spdx:
            raise InvalidInputError(f"{path}: no SPDX licence (manifest 'license' or --license)")
        custom = {
            "dataflare": {
                "name": name,
                "version": version,
                # As text: canonical JSON (what TUF signs) has no floats, manifests do.
                "manifest": manifest_text,
                "capabilities": capabilities,
                "license": spdx,
                "platform": platform,
                "attestations": [],
                "status": "published",
            }
        }
        if quality_score is not None:
            custom["dataflare"]["quality_score"] = quality_score
        if attestation is not None:
            custom["dataflare"]["attestations"].append(self._store_attestation(path, attestation))
        target = TargetFile.from_data(path, wasm_bytes, ["sha256"])
        target.unrecognized_fields["custom"] = custom
        dest = self.targets_dir / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(dest, wasm_bytes)
        md.signed.targets[path] = target
        self._sign_namespace(namespace, md, signer)
        return target

    def _store_attestation(self, path: str, envelope: bytes) -> dict[str, Any]:
        """Write ``envelope`` as ``<version>.scan.dsse.json`` beside the module and return
        its link: the link (path, length, sha256) is inside the publisher-signed targets
        metadata, so a client that verified the target can check the file it fetches."""
        import hashlib

        from dataflare_platform.marketplace.attestation import PREDICATE_TYPE

        att_path = path.removesuffix(".wasm") + ".scan.dsse.json"
        dest = self.targets_dir / att_path
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(dest, envelope)
        return {
            "path": att_path,
            "length": len(envelope),
            "sha256": hashlib.sha256(envelope).hexdigest(),
            "predicateType": PREDICATE_TYPE,
            "envelope": "dsse",
        }

    @_one_writer
    def attach_attestation(
        self,
        namespace: str,
        name: str,
        version: str,
        envelope: bytes,
        signer: Signer | Sequence[Signer],
        quality_score: int | None = None,
    ) -> dict[str, Any]:
        """Link a (new) scan attestation to an already published version, signed by its
        publisher; returns the link. The module itself stays immutable."""
        path = target_path(namespace, name, version)
        md = self._namespace_md(namespace)
        if path not in md.signed.targets:
            raise NotFoundError(f"{path} is not published")
        custom = md.signed.targets[path].unrecognized_fields["custom"]["dataflare"]
        link = self._store_attestation(path, envelope)
        custom["attestations"] = [
            a for a in custom.get("attestations", []) if a.get("path") != link["path"]
        ] + [link]
        if quality_score is not None:
            custom["quality_score"] = quality_score
        self._sign_namespace(namespace, md, signer)
        return link

    def published_versions(self, namespace: str, name: str) -> list[str]:
        """Every version of ``<namespace>/<name>`` in the namespace's targets (whatever
        its status: a yanked or revoked version still counts as published)."""
        if namespace not in self.namespaces() or not self._file(namespace).exists():
            return []
        prefix = f"{namespace}/{name}/"
        return [
            p.removeprefix(prefix).removesuffix(".wasm")
            for p in self.load(namespace).signed.targets
            if p.startswith(prefix) and p.endswith(".wasm")
        ]

    def target_custom(self, namespace: str, name: str, version: str) -> dict[str, Any]:
        """The ``custom.dataflare`` metadata of a published version (as written here)."""
        path = target_path(namespace, name, version)
        md = self._namespace_md(namespace)
        if path not in md.signed.targets:
            raise NotFoundError(f"{path} is not published")
        return dict(md.signed.targets[path].unrecognized_fields["custom"]["dataflare"])

    @_one_writer
    def set_status(
        self,
        namespace: str,
        name: str,
        version: str,
        status: str,
        reason: str,
        signer: Signer | Sequence[Signer],
    ) -> None:
        """Deprecate (still installable, with a warning), yank (no new installs;
        installed copies keep loading) or revoke (refused everywhere once clients
        refresh) a published version, signed by its publisher."""
        if status not in STATUSES:
            raise InvalidInputError(f"status {status!r}: one of {', '.join(STATUSES)}")
        path = target_path(namespace, name, version)
        md = self._namespace_md(namespace)
        if path not in md.signed.targets:
            raise NotFoundError(f"{path} is not published")
        custom = md.signed.targets[path].unrecognized_fields["custom"]["dataflare"]
        if custom["status"] == "revoked" and status != "revoked":
            raise ConflictError(f"{path} is revoked: a revocation is final")
        custom["status"] = status
        custom["reason"] = reason
        self._sign_namespace(namespace, md, signer)

    @_one_writer
    def kill(self, namespace: str, name: str, version: str, reason: str) -> None:
        """The operator's revocation: list the version in the top-level ``targets`` role's
        kill list (signed with the targets key). It holds whatever the publisher signs
        afterwards, and there is no way back (a kill, like a revocation, is final)."""
        path = target_path(namespace, name, version)
        if namespace not in self.namespaces():
            raise NotFoundError(f"no publisher namespace {namespace!r}")
        if not reason.strip():
            raise InvalidInputError("give the reason for the kill (shown to clients)")
        targets = self.load("targets")
        killed = targets.signed.unrecognized_fields.setdefault(KILL_LIST_FIELD, {})
        if path in killed:
            raise ConflictError(f"{path} is already killed")
        killed[path] = {"reason": reason, "at": self.clock().replace(microsecond=0).isoformat()}
        targets.signed.version += 1
        self._write("targets", targets, self._signers("targets"))
        self._commit_snapshot({"targets": targets.signed.version})

    def _sign_namespace(
        self, namespace: str, md: Metadata[Targets], signer: Signer | Sequence[Signer]
    ) -> None:
        if self._file(namespace).exists():  # a new role's file starts at version 1
            md.signed.version += 1
        md.signed.expires = self._expires("delegated")
        self._write(namespace, md, signer_list(signer))
        self._commit_snapshot({namespace: md.signed.version})
