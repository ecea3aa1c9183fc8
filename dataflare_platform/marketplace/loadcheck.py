"""Verification of a marketplace plugin at every load, cheap enough for the load path.

A plugin installed through :class:`~dataflare_platform.marketplace.client.RegistryClient`
is recorded in the client's state folder (``installed.json``, platform-owned, not the
plugin folder authors write to). At each load of such a plugin the runtime calls a
:class:`MarketplaceLoadCheck`, which compares the module's digest (already computed by
the pin check) and its manifest with the *verified view* (``verified.json``) the client
wrote from metadata python-tuf had just verified: the target's digests, its status, the
operator's kill list, its platform range and the timestamp's expiry.

Why a view rather than TUF at each load: rebuilding the trusted metadata set parses and
checks five signed files (milliseconds); the view is one small JSON file, re-read only
when its mtime changes. Freshness is kept by refreshing through TUF (network) only when
the view is older than ``refresh_s`` or the timestamp has expired; a refresh that fails
while the cached timestamp is still valid keeps the view (offline within the bound TUF
grants), past the expiry the load is refused (reason ``expired``). So a revoked or killed
version stops loading at most ``refresh_s`` after it is published, once the registry is
reachable, and no client loads on metadata staler than the timestamp's expiry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dataflare_platform.marketplace.client import (
    ATTESTATION_DIGEST,
    INSTALLED_FILE,
    SCANNER_KEY_ENV,
    VIEW_FILE,
    MarketplaceError,
    RegistryClient,
    check_platform,
    parse_time,
    platform_version,
)

REFRESH_ENV = "DATAFLARE_MARKETPLACE_REFRESH_S"
DEFAULT_REFRESH_S = 300.0
# Entry points (``pyproject.toml``) through which a load refusal reaches the audit log.
AUDIT_GROUP = "dataflare_platform.plugin_audit"
log = logging.getLogger(__name__)


class _CachedJson:
    """A JSON file parsed again only when its (mtime, size, inode) changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: tuple[int, int, int] | None = None
        self._value: Any = None

    def read(self) -> Any:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._key, self._value = None, None
            return None
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if key != self._key:
            try:
                self._value = json.loads(self.path.read_bytes())
            except (FileNotFoundError, ValueError):  # replaced or torn mid-read: as absent
                self._key, self._value = None, None
                return None
            self._key = key
        return self._value


class MarketplaceLoadCheck:
    """Called by the plugin runtime as ``check(name, sha256, manifest_bytes)`` after the
    pin check; raises :class:`MarketplaceError` (told to ``on_refused`` first) or returns.
    A plugin the state folder does not record as installed into ``plugins_dir`` is not a
    marketplace plugin: nothing to check."""

    def __init__(
        self,
        state_dir: Path,
        plugins_dir: Path,
        refresh_s: float = DEFAULT_REFRESH_S,
        on_refused: Callable[[MarketplaceError], None] | None = None,
        clock: Callable[[], datetime] | None = None,
        require_attestation: bool = False,
    ) -> None:
        """``require_attestation`` (a scanner key is configured): a target must link the
        very scan report install/verify checked (its sha256, recorded in the installed
        record); a report that changed or went missing after a refresh is refused with
        reason ``attestation`` until ``verify`` checks the new one."""
        self.require_attestation = require_attestation
        self.state_dir = Path(state_dir)
        self.plugins_dir = str(Path(plugins_dir).resolve())
        self.refresh_s = refresh_s
        self.on_refused = on_refused
        self.clock = clock or (lambda: datetime.now(UTC))
        self.platform_version = platform_version()
        self._installed = _CachedJson(self.state_dir / INSTALLED_FILE)
        self._view = _CachedJson(self.state_dir / VIEW_FILE)
        self._refresh_lock = threading.Lock()
        self._next_attempt: datetime | None = None

    def __call__(self, name: str, sha256: str, manifest: bytes | None = None) -> None:
        installed = self._installed.read()
        origin = (installed or {}).get("plugins", {}).get(self.plugins_dir, {}).get(name)
        if origin is None:
            return
        try:
            self._check(name, origin, str(installed.get("source", "")), sha256, manifest)
        except MarketplaceError as err:
            err.version = err.version or origin.get("version")
            err.stage = "load"
            if self.on_refused is not None:
                self.on_refused(err)
            raise

    def _check(
        self,
        name: str,
        origin: Mapping[str, str],
        source: str,
        sha256: str,
        manifest: bytes | None,
    ) -> None:
        view = self._fresh_view(name, source)
        path = origin["target"]
        if path in view.get("killed", {}):
            reason = view["killed"][path].get("reason", "")
            raise MarketplaceError(
                name, "revoked", f"{path}: killed by the registry operator: {reason}"
            )
        target = view.get("targets", {}).get(path)
        if target is None:
            raise MarketplaceError(name, "not_found", f"{path} is not in the registry")
        if target.get("status") == "revoked":
            raise MarketplaceError(name, "revoked", f"{path}: {target.get('reason', '')}")
        if sha256 != target["sha256"]:
            raise MarketplaceError(
                name,
                "digest_mismatch",
                f"module has sha256 {sha256}, the registry's {path} has {target['sha256']}",
            )
        if manifest is not None and hashlib.sha256(manifest).hexdigest() != target.get(
            "manifest_sha256"
        ):
            raise MarketplaceError(
                name,
                "digest_mismatch",
                f"the manifest is not the one the registry signed for {path}",
            )
        check_platform(name, path, target.get("platform"), self.platform_version)
        if self.require_attestation:
            self._check_attestation(name, path, origin, target)

    @staticmethod
    def _check_attestation(
        name: str, path: str, origin: Mapping[str, str], target: Mapping[str, Any]
    ) -> None:
        """The scan report linked now is the one whose signature install/verify checked:
        the link is publisher-signed, so a report swapped or dropped on the registry
        since then shows here without fetching or verifying the report at load."""
        current, checked = target.get(ATTESTATION_DIGEST), origin.get(ATTESTATION_DIGEST)
        if current is None:
            raise MarketplaceError(name, "attestation", f"{path} links no scan report any more")
        if checked is None:
            raise MarketplaceError(
                name,
                "attestation",
                f"{path}: no scan report was checked at install; run dataflare plugin verify "
                "with the scanner key",
            )
        if current != checked:
            raise MarketplaceError(
                name,
                "attestation",
                f"{path}: its scan report changed since it was checked (sha256 {checked[:12]}… "
                f"-> {current[:12]}…); run dataflare plugin verify with the scanner key",
            )

    def _fresh_view(self, name: str, source: str) -> dict[str, Any]:
        """The verified view, refreshed through TUF first when it is older than
        ``refresh_s`` or the timestamp it was made under has expired."""
        view = self._view.read()
        now = self.clock()
        if view is not None and not self._stale(view, now):
            return dict(view)
        with self._refresh_lock:
            view = self._view.read()
            if view is not None and not self._stale(view, now):
                return dict(view)
            if self._next_attempt is None or now >= self._next_attempt or view is None:
                try:
                    return self._refresh(source, now)
                except MarketplaceError as err:
                    if err.reason != "unavailable":
                        raise MarketplaceError(name, err.reason, err.detail) from None
                    # Offline: retry after a while, not at every load.
                    self._next_attempt = now + timedelta(seconds=min(self.refresh_s, 60.0))
                    log.warning("marketplace registry unreachable, using cached metadata: %s", err)
            if view is None:
                raise MarketplaceError(name, "unavailable", "no verified registry metadata yet")
            if now >= parse_time(view["timestamp_expires"]):
                raise MarketplaceError(
                    name,
                    "expired",
                    f"registry metadata expired at {view['timestamp_expires']} and cannot be "
                    "refreshed",
                )
            return dict(view)

    def _stale(self, view: Mapping[str, Any], now: datetime) -> bool:
        refreshed = parse_time(view["refreshed_at"])
        return (now - refreshed).total_seconds() >= self.refresh_s or now >= parse_time(
            view["timestamp_expires"]
        )

    def _refresh(self, source: str, now: datetime) -> dict[str, Any]:
        client = RegistryClient(source, self.state_dir, Path(self.plugins_dir))
        client.clock = self.clock
        view = client.refresh()
        self._next_attempt = None
        return view


def refresh_interval(environ: Mapping[str, str] | None = None) -> float:
    """``DATAFLARE_MARKETPLACE_REFRESH_S`` (seconds, > 0), else 300."""
    env = os.environ if environ is None else environ
    raw = env.get(REFRESH_ENV)
    if not raw:
        return DEFAULT_REFRESH_S
    from dataflare_platform.errors import InvalidInputError

    try:
        value = float(raw)
    except ValueError:
        raise InvalidInputError(f"{REFRESH_ENV}={raw!r} is not a number of seconds") from None
    if not value > 0:
        raise InvalidInputError(f"{REFRESH_ENV} must be > 0 seconds, got {raw!r}")
    return value


def audit_refusal(
    home: Path | None, actor: str = "system", run_id: str | None = None
) -> Callable[[MarketplaceError], None] | None:
    """A recorder appending refusals to the deployment's audit log through the
    ``marketplace_refused`` entry point (the audit store sits in a sibling layer)."""
    from importlib.metadata import entry_points

    found = {ep.name: ep for ep in entry_points(group=AUDIT_GROUP)}
    if "marketplace_refused" not in found:
        log.warning("no marketplace_refused entry point: marketplace refusals are not audited")
        return None
    record = found["marketplace_refused"].load()

    def on_refused(err: MarketplaceError) -> None:
        record(err, home, actor=actor, run_id=run_id)

    return on_refused


def deployment_load_check(
    plugin_dir: Path,
    home: Path | None = None,
    actor: str = "system",
    run_id: str | None = None,
) -> MarketplaceLoadCheck:
    """The deployment's check (``dataflare_platform.plugin_load_checks`` entry point):
    the client state in ``<home>/platform/marketplace`` (where ``dataflare plugin
    install`` keeps it), the refresh interval from ``DATAFLARE_MARKETPLACE_REFRESH_S``,
    refusals audited as ``actor``; scan reports required when
    ``DATAFLARE_PLUGIN_SCANNER_PUBLIC_KEY`` is set."""
    from dataflare_platform.home import ProjectHome

    root = ProjectHome.resolve(home).root
    return MarketplaceLoadCheck(
        root / "platform" / "marketplace",
        plugin_dir,
        refresh_interval(),
        on_refused=audit_refusal(root, actor, run_id),
        require_attestation=bool(os.environ.get(SCANNER_KEY_ENV)),
    )
