"""The plugin registry's client side: install and re-verify plugins through TUF.

Every check that matters (signatures and thresholds, the chain of roots, version
rollback, expiry, snapshot consistency, delegation paths, target length and hashes) is
python-tuf's ``ngclient.Updater``; this module maps its refusals onto one error naming
the plugin and the reason, writes what it verified into the plugin folder, and pins it
in ``plugins.lock`` (so the runtime's own digest check holds it at every load).

The source is an ``http(s)://`` URL of a repository (its ``metadata/`` and ``targets/``
folders) or a local directory (read through :class:`LocalFetcher`, still verified).
The client's trusted state is ``<state_dir>/metadata`` (TUF's cache, bootstrapped from
a root the operator trusts out of band) and ``<plugins_dir>/.marketplace.json`` (which
registry target each installed plugin came from).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, TargetFile
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

if TYPE_CHECKING:
    from securesystemslib.signer import Key

from dataflare_platform.durable import WriterLock, write_atomic
from dataflare_platform.errors import DataflareError, InvalidInputError
from dataflare_platform.marketplace.repository import target_path
from dataflare_platform.plugins.lock import LockAuth, PinnedPlugin, write_lock

log = logging.getLogger(__name__)

ORIGINS_FILE = ".marketplace.json"
# In the client's (platform-owned) state folder: which plugin of which folder came from
# which target, and the verified registry view the runtime checks each load against.
INSTALLED_FILE = "installed.json"
VIEW_FILE = "verified.json"
KILL_LIST_FIELD = "x-dataflare-kill-list"  # repository.KILL_LIST_FIELD (client stays light)
MAX_METADATA_BYTES = 1 << 20


def platform_version() -> str:
    """The running platform's version (the installed distribution's)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dataflare-platform")
    except PackageNotFoundError:  # a source tree without metadata
        return "0.0.0"


def check_platform(plugin: str, target: str, spec: str | None, running: str) -> None:
    """Refuse a version whose signed ``platform`` range excludes the running platform."""
    if not spec:
        return
    try:
        allowed = SpecifierSet(spec).contains(Version(running), prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        raise MarketplaceError(
            plugin, "platform", f"{target}: platform range {spec!r} cannot be read"
        ) from None
    if not allowed:
        raise MarketplaceError(
            plugin, "platform", f"{target} runs on platform {spec}, this is {running}"
        )


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _write_json(path: Path, data: Any) -> None:
    """Whole-file replace through a temporary file of its own: runs in several processes
    may refresh the same state folder at once (``write_atomic``'s fixed temporary name
    would let two writers interleave)."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        f.write((json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    Path(f.name).replace(path)


class MarketplaceError(DataflareError):
    """A plugin the registry does not vouch for: ``reason`` is one of ``not_found``,
    ``revoked`` (by its publisher, or killed by the registry operator), ``yanked``,
    ``digest_mismatch``, ``expired``, ``rollback``, ``bad_signature``, ``platform`` (the
    running platform is outside the version's range), ``unavailable``, ``repository``
    (any other TUF refusal). ``version`` is the plugin version concerned, when known."""

    def __init__(self, plugin: str, reason: str, detail: str, version: str | None = None) -> None:
        self.plugin, self.reason, self.detail, self.version = plugin, reason, detail, version
        self.stage = ""  # install | verify | load, set where the refusal is reported
        super().__init__(f"plugin {plugin!r} refused ({reason}): {detail}")


class LocalFetcher(FetcherInterface):
    """Serves ``file://`` URLs from disk, so a registry directory (a mount, a USB stick,
    a test fixture) goes through exactly the same TUF verification as HTTP. A missing
    file is a 404, which is how the updater learns there is no newer root."""

    def _fetch(self, url: str) -> Iterator[bytes]:
        if not url.startswith("file://"):
            raise tuf_errors.DownloadError(f"not a file URL: {url}")
        path = Path(url[len("file://") :])
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise tuf_errors.DownloadHTTPError(f"{path} not found", 404) from None
        return iter([data])


def _reason(err: Exception) -> str:
    if isinstance(err, tuf_errors.ExpiredMetadataError):
        return "expired"
    if isinstance(err, tuf_errors.BadVersionNumberError):
        return "rollback"
    if isinstance(
        err, tuf_errors.LengthOrHashMismatchError | tuf_errors.DownloadLengthMismatchError
    ):
        return "digest_mismatch"
    if isinstance(err, tuf_errors.UnsignedMetadataError):
        return "bad_signature"
    if isinstance(err, tuf_errors.DownloadError):
        return "unavailable"
    return "repository"


ATTESTATION_DIGEST = "attestation_sha256"
# The scanner public key a deployment trusts (<key>.pub.json): set, install and verify
# check scan reports and the load check refuses a target whose report changed.
SCANNER_KEY_ENV = "DATAFLARE_PLUGIN_SCANNER_PUBLIC_KEY"


def scan_link_digest(custom: dict[str, Any]) -> str | None:
    """The sha256 of the scan report a target links last (None when it links none)."""
    from dataflare_platform.marketplace.attestation import PREDICATE_TYPE

    links = [a for a in custom.get("attestations", []) if a.get("predicateType") == PREDICATE_TYPE]
    return str(links[-1]["sha256"]) if links else None


def _with_attestation(origin: dict[str, str], checked: dict[str, Any] | None) -> dict[str, str]:
    """The installed record, with the digest of the scan report install/verify checked
    (kept from before when no scanner key was configured this time)."""
    if checked is not None:
        origin = {**origin, ATTESTATION_DIGEST: checked[ATTESTATION_DIGEST]}
    return origin


def render_manifest(custom: dict[str, Any]) -> str:
    """The manifest sidecar written at install: the signed manifest text, byte for byte,
    so its digest can be recomputed from the registry's metadata at every verify."""
    return str(custom.get("manifest", "{}"))


@dataclass(frozen=True)
class Installed:
    plugin: str
    target: str
    version: str
    sha256: str
    status: str


class RegistryClient:
    """Installs from one registry into ``plugins_dir`` and pins into ``lock_path``.

    ``trusted_root`` (bytes of a ``root.json``) bootstraps trust the first time; after
    that the cached, verified metadata in ``state_dir`` is the trust anchor and root
    rotations are followed by the updater."""

    def __init__(
        self,
        source: str | Path,
        state_dir: Path,
        plugins_dir: Path,
        lock_path: Path | None = None,
        trusted_root: bytes | None = None,
        lock_auth: LockAuth | None = None,
        on_refused: Callable[[MarketplaceError], None] | None = None,
        scan_keys: list[Key] | None = None,
    ) -> None:
        """``on_refused`` is told of every refused install and verify before it is raised
        (the CLI appends it to the audit log; the data plane does not know the store).
        ``scan_keys``: the scanner's public keys the deployment trusts; given, install and
        verify also fetch the target's linked scan report and refuse (reason
        ``attestation``) a version without one that these keys signed, admitting it."""
        source = str(source)
        self.source = source
        if source.startswith(("http://", "https://")):
            base, self._fetcher = source.rstrip("/"), None
        else:
            base = "file://" + str(Path(source.removeprefix("file://")).resolve())
            self._fetcher = LocalFetcher()
        self.metadata_url, self.targets_url = f"{base}/metadata/", f"{base}/targets/"
        self.state_dir = Path(state_dir)
        self.metadata_dir = self.state_dir / "metadata"
        self.plugins_dir = Path(plugins_dir)
        self.lock_path = Path(lock_path) if lock_path else self.plugins_dir / "plugins.lock"
        self.lock_auth = lock_auth
        # The time the cached timestamp's expiry is judged by when the registry cannot
        # be reached (the updater judges fetched metadata by its own clock).
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.platform_version = platform_version()
        self.on_refused = on_refused
        self.scan_keys = list(scan_keys or [])
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        if not (self.metadata_dir / "root.json").exists():
            if trusted_root is None:
                raise MarketplaceError(
                    "*", "repository", f"no trusted root in {self.metadata_dir}: pass one"
                )
            write_atomic(self.metadata_dir / "root.json", trusted_root)

    def _updater(self) -> Updater:
        return Updater(
            metadata_dir=str(self.metadata_dir),
            metadata_base_url=self.metadata_url,
            target_base_url=self.targets_url,
            fetcher=self._fetcher,
        )

    def _refreshed(self, plugin: str) -> Updater:
        updater = self._updater()
        try:
            updater.refresh()
        except tuf_errors.DownloadLengthMismatchError as err:
            # More bytes than the role's length bound (the endless-data attack, or a
            # broken mirror): the updater stopped reading; not a network failure.
            raise MarketplaceError(
                plugin, "oversized", f"the registry served oversized metadata ({err})"
            ) from None
        except tuf_errors.DownloadError as err:
            if self._cached_timestamp_expired():
                raise MarketplaceError(
                    plugin,
                    "expired",
                    f"registry metadata expired and cannot be refreshed ({err})",
                ) from None
            raise MarketplaceError(plugin, "unavailable", str(err)) from None
        except tuf_errors.RepositoryError as err:
            raise MarketplaceError(plugin, _reason(err), f"{type(err).__name__}: {err}") from None
        return updater

    def _cached_timestamp_expired(self) -> bool:
        path = self.metadata_dir / "timestamp.json"
        if not path.exists():
            return True
        return bool(Metadata.from_file(str(path)).signed.is_expired(self.clock()))

    def _target(self, updater: Updater, plugin: str, path: str) -> TargetFile:
        try:
            info = updater.get_targetinfo(path)
        except tuf_errors.RepositoryError as err:
            raise MarketplaceError(plugin, _reason(err), f"{type(err).__name__}: {err}") from None
        if info is None:
            raise MarketplaceError(plugin, "not_found", f"{path} is not in the registry")
        return info

    @staticmethod
    def _custom(info: TargetFile) -> dict[str, Any]:
        return dict(info.custom.get("dataflare", {}))

    # ---- install

    def _refused(self, err: MarketplaceError, version: str | None, stage: str) -> MarketplaceError:
        if err.version is None:
            err.version = version
        err.stage = err.stage or stage
        if self.on_refused is not None:
            self.on_refused(err)
        return err

    def install(self, ref: str, version: str, allow_yanked: bool = False) -> Installed:
        """Download ``<namespace>/<name>`` at ``version`` through TUF, write the module
        and its manifest into the plugin folder and pin both digests in the lock; a
        refusal is told to ``on_refused`` first."""
        try:
            return self._install(ref, version, allow_yanked)
        except MarketplaceError as err:
            raise self._refused(err, version, "install") from None

    def _install(self, ref: str, version: str, allow_yanked: bool) -> Installed:
        namespace, _, name = ref.partition("/")
        if not namespace or not name:
            raise MarketplaceError(ref, "not_found", "give the plugin as <namespace>/<name>")
        try:  # each part becomes part of a file path here: spelled as the registry allows
            path = target_path(namespace, name, version)
        except InvalidInputError as err:
            raise MarketplaceError(ref, "invalid", str(err)) from None
        installed = self._origins().get(name)
        if installed is not None and not str(installed.get("target", "")).startswith(
            f"{namespace}/"
        ):
            # One plugin folder, one name per plugin: another publisher's ``name`` would
            # silently replace the module the deployment's pipelines load as ``name``.
            raise MarketplaceError(
                name,
                "conflict",
                f"{path}: {name!r} is installed from {installed.get('target')}; another "
                "publisher's plugin of the same name does not replace it",
            )
        updater = self._refreshed(name)
        info = self._target(updater, name, path)
        custom = self._custom(info)
        status = self._check_target(name, path, custom)
        if status == "yanked" and not allow_yanked:
            raise MarketplaceError(name, "yanked", f"{path}: {custom.get('reason', '')}")
        if status == "deprecated":  # still installable: the caller warns
            log.warning("%s is deprecated: %s", path, custom.get("reason", ""))
        checked = self._check_attestation(updater, name, path, info, custom)
        with tempfile.TemporaryDirectory(dir=self.state_dir) as tmp:
            tmp_file = Path(tmp) / "module.wasm"
            try:
                updater.download_target(info, str(tmp_file))
            except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as err:
                raise MarketplaceError(name, _reason(err), f"{path}: {err}") from None
            wasm = tmp_file.read_bytes()
            manifest = render_manifest(custom)
            self.plugins_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.plugins_dir / f"{name}.json", manifest.encode())
            shutil.move(str(tmp_file), self.plugins_dir / f"{name}.wasm")
        sha = hashlib.sha256(wasm).hexdigest()
        pin = PinnedPlugin(
            sha256=sha,
            manifest_sha256=hashlib.sha256(manifest.encode()).hexdigest(),
            version=version,
            size_bytes=len(wasm),
        )
        write_lock(self.lock_path, {name: pin}, auth=self.lock_auth)
        origins = self._origins()
        origins[name] = {"target": path, "version": version, "sha256": sha}
        write_atomic(
            self.plugins_dir / ORIGINS_FILE,
            (json.dumps(origins, indent=2, sort_keys=True) + "\n").encode(),
        )
        self._record_installed(name, _with_attestation(origins[name], checked))
        self._write_view(updater)
        return Installed(name, path, version, sha, status)

    def _check_target(self, name: str, path: str, custom: dict[str, Any]) -> str:
        """The version's status after the operator's kill list, its publisher's status
        and its platform range: a killed or revoked version and one outside the range
        are refused."""
        killed = self.kill_list().get(path)
        if killed is not None:
            raise MarketplaceError(
                name, "revoked", f"{path}: killed by the registry operator: {killed['reason']}"
            )
        status = str(custom.get("status", "published"))
        if status == "revoked":
            raise MarketplaceError(name, "revoked", f"{path}: {custom.get('reason', '')}")
        check_platform(name, path, custom.get("platform"), self.platform_version)
        return status

    def _check_attestation(
        self, updater: Updater, name: str, path: str, info: TargetFile, custom: dict[str, Any]
    ) -> dict[str, Any] | None:
        """With scanner keys configured: fetch the scan report the target links (through
        the updater's fetcher, checked against the length and sha256 recorded in the
        publisher-signed target, as TUF checks a target), verify its DSSE signature with
        the scanner keys, that it is about this very module and that it admitted it.
        Returns the statement with the checked report's sha256 under
        :data:`ATTESTATION_DIGEST` (None when no scanner key is configured: nothing to
        check against). Any failure is reason ``attestation``."""
        if not self.scan_keys:
            return None
        from dataflare_platform.marketplace.attestation import (
            PREDICATE_TYPE,
            AttestationError,
            verify_envelope,
        )

        links = [
            a for a in custom.get("attestations", []) if a.get("predicateType") == PREDICATE_TYPE
        ]
        if not links:
            raise MarketplaceError(name, "attestation", f"{path} links no signed scan report")
        link = links[-1]
        report = TargetFile(
            length=int(link["length"]), hashes={"sha256": str(link["sha256"])}, path=link["path"]
        )
        with tempfile.TemporaryDirectory(dir=self.state_dir) as tmp:
            dest = Path(tmp) / "scan.dsse.json"
            try:
                updater.download_target(report, str(dest))
            except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as err:
                raise MarketplaceError(
                    name, "attestation", f"{link['path']}: {type(err).__name__}: {err}"
                ) from None
            envelope = dest.read_bytes()
        try:
            statement = verify_envelope(
                envelope, self.scan_keys, subject_sha256=info.hashes.get("sha256", "")
            )
        except AttestationError as err:
            raise MarketplaceError(name, "attestation", f"{link['path']}: {err}") from None
        if statement["predicate"].get("admitted") is not True:
            raise MarketplaceError(
                name, "attestation", f"{link['path']}: the scan did not admit {path}"
            )
        return {**statement, ATTESTATION_DIGEST: str(link["sha256"])}

    def kill_list(self) -> dict[str, dict[str, str]]:
        """The operator's kill list from the top-level targets metadata the updater last
        verified (``refresh`` loads and persists it only after checking it)."""
        path = self.metadata_dir / "targets.json"
        if not path.exists():
            return {}
        signed = Metadata.from_file(str(path)).signed
        return dict(signed.unrecognized_fields.get(KILL_LIST_FIELD, {}))

    # ---- the catalogue (``dataflare plugin list`` / ``info``)

    def catalogue(self) -> list[dict[str, Any]]:
        """Every published version in the registry, from freshly verified metadata: each
        publisher's targets file is loaded through the updater (so checked against the
        snapshot and the delegation's keys) before it is read. A version on the
        operator's kill list shows status ``killed``."""
        try:
            updater = self._refreshed("*")
            killed = self.kill_list()
            top = Metadata.from_file(str(self.metadata_dir / "targets.json")).signed
            namespaces = sorted((top.delegations.roles or {}) if top.delegations else {})
            out: list[dict[str, Any]] = []
            for namespace in namespaces:
                # Any path inside the namespace makes the updater load and verify its role.
                updater.get_targetinfo(f"{namespace}/_/0.0.0.wasm")
                role_file = self.metadata_dir / f"{namespace}.json"
                if not role_file.exists():
                    continue  # a publisher that has not published yet
                role = Metadata.from_file(str(role_file))
                for path, info in sorted(role.signed.targets.items()):
                    custom = self._custom(info)
                    status, reason = custom.get("status", "published"), custom.get("reason", "")
                    if path in killed:
                        status, reason = "killed", killed[path]["reason"]
                    out.append(
                        {
                            "namespace": namespace,
                            "name": custom.get("name", path.split("/")[1]),
                            "version": custom.get("version", ""),
                            "status": status,
                            "reason": reason,
                            "license": custom.get("license"),
                            "capabilities": custom.get("capabilities", []),
                            "platform": custom.get("platform"),
                            "target": path,
                            "sha256": info.hashes.get("sha256"),
                            "length": info.length,
                            "signed_by": sorted(role.signatures),
                            "attestations": custom.get("attestations", []),
                        }
                    )
            return out
        except tuf_errors.RepositoryError as err:
            raise MarketplaceError("*", _reason(err), f"{type(err).__name__}: {err}") from None

    # ---- the verified view the runtime loads against

    def _installed(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.state_dir / INSTALLED_FILE).read_text()))
        except FileNotFoundError:
            return {"source": self.source, "plugins": {}}

    def _record_installed(self, name: str, origin: dict[str, str]) -> None:
        """The platform-owned copy of where each plugin came from (the plugin folder's
        ``.marketplace.json`` is writable by plugin authors: removing an entry there must
        not turn the load-time check off)."""
        guard = WriterLock(self.state_dir / ".installed.flock")
        guard.acquire(timeout_s=60)
        try:
            installed = self._installed()
            installed["source"] = self.source
            folder = installed["plugins"].setdefault(str(self.plugins_dir.resolve()), {})
            if folder.get(name) == origin:
                return
            folder[name] = origin
            _write_json(self.state_dir / INSTALLED_FILE, installed)
        finally:
            guard.release()

    def refresh(self) -> dict[str, Any]:
        """Refresh from the registry and rewrite the verified view (what the runtime's
        load check calls once its view is older than its refresh interval). A delegated
        role that fails to verify (e.g. signed by a publisher's rotated-out key) is a
        :class:`MarketplaceError` like any other refusal, not an escaping TUF error."""
        updater = self._refreshed("*")
        try:
            return self._write_view(updater)
        except tuf_errors.RepositoryError as err:
            raise MarketplaceError("*", _reason(err), f"{type(err).__name__}: {err}") from None

    def _write_view(self, updater: Updater) -> dict[str, Any]:
        """Record, from metadata the updater has just verified, what every installed
        target is (digests, status, platform range), the kill list and the timestamp's
        expiry: the runtime checks loads against this file without touching TUF."""
        paths = {
            origin["target"]
            for folder in self._installed()["plugins"].values()
            for origin in folder.values()
        }
        targets: dict[str, Any] = {}
        for path in sorted(paths):
            info = updater.get_targetinfo(path)
            if info is None:
                continue
            custom = self._custom(info)
            targets[path] = {
                "sha256": info.hashes.get("sha256", ""),
                "length": info.length,
                "manifest_sha256": hashlib.sha256(render_manifest(custom).encode()).hexdigest(),
                "status": custom.get("status", "published"),
                "reason": custom.get("reason", ""),
                "platform": custom.get("platform"),
                # The scan report the (publisher-signed) target links now; the load check
                # compares it with the one install/verify checked.
                ATTESTATION_DIGEST: scan_link_digest(custom),
            }
        timestamp = Metadata.from_file(str(self.metadata_dir / "timestamp.json")).signed
        view = {
            "refreshed_at": self.clock().isoformat(),
            "timestamp_expires": timestamp.expires.isoformat(),
            "targets": targets,
            "killed": self.kill_list(),
        }
        write_atomic(self.state_dir / VIEW_FILE, (json.dumps(view, sort_keys=True) + "\n").encode())
        return view

    def _origins(self) -> dict[str, dict[str, str]]:
        try:
            return dict(json.loads((self.plugins_dir / ORIGINS_FILE).read_text()))
        except FileNotFoundError:
            return {}

    # ---- verify

    def verify(self, name: str) -> Installed:
        """Re-check an installed plugin against fresh registry metadata: refused if its
        version was revoked or killed, if the module on disk no longer matches its
        target, if the platform is outside its range, or if the metadata cannot be
        refreshed and the cached timestamp has expired (told to ``on_refused`` first)."""
        # The client's own record first (the plugin folder's is writable by authors).
        folder = self._installed()["plugins"].get(str(self.plugins_dir.resolve()), {})
        origin = folder.get(name) or self._origins().get(name)
        try:
            return self._verify(name, origin)
        except MarketplaceError as err:
            raise self._refused(err, origin["version"] if origin else None, "verify") from None

    def _verify(self, name: str, origin: dict[str, str] | None) -> Installed:
        if origin is None:
            raise MarketplaceError(name, "not_found", "not installed from a registry here")
        module = self.plugins_dir / f"{name}.wasm"
        try:
            updater = self._refreshed(name)
        except MarketplaceError as err:
            if err.reason != "unavailable":
                raise
            # Offline but inside the timestamp expiry: the last verified digest holds.
            return self._check_digest(name, module, origin["sha256"], None, origin, "offline")
        info = self._target(updater, name, origin["target"])
        custom = self._custom(info)
        status = self._check_target(name, origin["target"], custom)
        installed = self._check_digest(
            name, module, info.hashes.get("sha256", ""), info.length, origin, status
        )
        checked = self._check_attestation(updater, name, origin["target"], info, custom)
        sidecar = self.plugins_dir / f"{name}.json"
        signed = render_manifest(custom).encode()
        if not sidecar.exists() or sidecar.read_bytes() != signed:
            raise MarketplaceError(
                name,
                "digest_mismatch",
                f"{sidecar} is not the manifest the registry signed for {origin['target']}",
            )
        # A plugin installed before the client kept its own record gets one once verified.
        self._record_installed(name, _with_attestation(dict(origin), checked))
        self._write_view(updater)
        return installed

    @staticmethod
    def _check_digest(
        name: str,
        module: Path,
        expected: str,
        length: int | None,
        origin: dict[str, str],
        status: str,
    ) -> Installed:
        try:
            data = module.read_bytes()
        except FileNotFoundError:
            raise MarketplaceError(name, "not_found", f"{module} is missing") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected or (length is not None and len(data) != length):
            raise MarketplaceError(
                name,
                "digest_mismatch",
                f"{module} has sha256 {actual}, the registry's {origin['target']} has {expected}",
            )
        return Installed(name, origin["target"], origin["version"], actual, status)
