"""A directory of plugins, loaded by name: ``<dir>/<name>.wasm`` with its manifest sidecar
``<dir>/<name>.json``. Limits and granted capabilities are set once for the registry (the
deployment's policy) and may be tightened per load; sample plugins whose module is missing
can be built from their shipped C source on demand.

    registry = PluginRegistry("plugins", RegistryConfig(deadline_ms=200, build_missing=True))
    mask = registry.load("pii_mask", params={"min_digits": 12}, columns={"text": "email"})
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import Field, SecretStr

from dataflare_platform.deployment_settings import env_flag
from dataflare_platform.errors import ConfigError
from dataflare_platform.events.log import EventLog
from dataflare_platform.forks import reset_in_forked_child
from dataflare_platform.home import ProjectHome
from dataflare_platform.models import StrictModel
from dataflare_platform.plugins.admission import check_licence
from dataflare_platform.plugins.build import SAMPLES_DIR, build_plugin
from dataflare_platform.plugins.engine import plugin_cache
from dataflare_platform.plugins.entitlements import (
    COMMERCIAL_LICENCES,
    Entitlement,
    EntitlementError,
    RowLimitGate,
    check_at_load,
    load_issuer_keys,
)
from dataflare_platform.plugins.lock import (
    LOCK_FILE,
    LockAuth,
    LockAuthenticationError,
    PinnedPlugin,
    Pins,
    PluginPinError,
    digest,
    lock_key_path,
    write_lock,
)
from dataflare_platform.plugins.manifest import (
    Manifest,
    load_manifest,
    manifest_path,
    parse_manifest,
)
from dataflare_platform.plugins.names import check_plugin_name, is_plugin_name, plugin_file
from dataflare_platform.plugins.runtime import Limits, Plugin
from dataflare_platform.plugins.usage import (
    PluginUsage,
    UsageSettings,
    rows_used,
    tenant_hash,
    usage_topic,
)

ORIGINS_FILE = ".marketplace.json"  # marketplace.client writes it (same name)

MB = 1024 * 1024
LOCK_ENV = "DATAFLARE_PLUGIN_LOCK"
ALLOW_UNPINNED_ENV = "DATAFLARE_PLUGIN_ALLOW_UNPINNED"
CACHE_DIR_ENV = "DATAFLARE_PLUGIN_CACHE_DIR"
CACHE_KEY_ENV = "DATAFLARE_PLUGIN_CACHE_KEY_FILE"
TENANT_ENV = "DATAFLARE_TENANT"
ALLOWED_LICENCES_ENV = "DATAFLARE_PLUGIN_ALLOWED_LICENCES"
ISSUER_KEYS_ENV = "DATAFLARE_ENTITLEMENT_ISSUER_KEYS"
USAGE_SALT_ENV = "DATAFLARE_PLUGIN_USAGE_SALT"  # a deployment secret: never logged
# The platform's own folder in the home (0700): state plugin authors must not reach.
PLATFORM_DIR = "platform"
# Entry points (``pyproject.toml``) through which the deployment audits pin decisions
# made outside a Dagster run (the Python API, the CLI): ``refused`` and ``unpinned``. The
# data plane sits below the audit store, so it finds the recorder by name.
AUDIT_HOOKS = "dataflare_platform.plugin_audit"
# Entry points giving the deployment's load checks run after the pin check at every load
# (``marketplace``: the module against the registry's verified metadata). The marketplace
# sits above the runtime, so the runtime finds it by name, as it finds the audit.
LOAD_CHECKS = "dataflare_platform.plugin_load_checks"
# A load check: (name, module sha256, manifest bytes or None); raises to refuse.
LoadCheck = Callable[[str, str, bytes | None], None]
log = logging.getLogger(__name__)


class RegistryConfig(StrictModel):
    """The sandbox policy of a registry, validated: bad values are refused naming the field."""

    deadline_ms: float = Field(Limits.deadline_ms, gt=0, le=600_000)
    memory_mb: int = Field(Limits.memory_bytes // MB, ge=1, le=4096)
    fuel: int | None = Field(None, ge=1)
    max_failures: int = Field(Limits.max_failures, ge=1)
    failure_window_s: float = Field(Limits.failure_window_s, gt=0)
    quarantine_s: float = Field(Limits.quarantine_s, ge=0)
    pool_size: int = Field(Limits.pool_size, ge=1, le=64)
    granted_capabilities: tuple[str, ...] = ()
    build_missing: bool = False
    # The authenticated compile cache (``plugins.cache``): a platform-owned folder, never
    # the plugin folder; its MAC key defaults to ``<cache_dir>.key`` beside it.
    cache_dir: Path | None = None
    cache_key_file: Path | None = None
    # Pins (``plugins.lock``): the files consulted, in order, and whether a plugin none of
    # them names may load. A library registry allows it (its caller chose the folder); the
    # deployment's registry, which every pipeline run uses, refuses unless the deployment
    # explicitly allows it (``defs.plugins.resources``, docs/security.md).
    lock_files: tuple[Path, ...] = ()
    allow_unpinned: bool = True
    # Lock authentication (``plugins.lock`` module docstring): the HMAC key file (outside
    # the home) and the home the locks serve. Unset: locks are not MAC-checked (a library
    # registry over a folder its caller chose); the deployment always sets both.
    lock_key_file: Path | None = None
    lock_scope: Path | None = None
    # Licences and entitlements (``plugins.entitlements``, issue 20 §3). ``allowed_licences``
    # None: no licence check at load (a library registry); else the manifest's SPDX
    # expression must be satisfiable with these (``admission.check_licence``). A plugin
    # whose licence names a ``commercial_licences`` id needs a signed entitlement for
    # ``tenant`` from one of ``entitlement_issuer_keys`` (PEM public keys).
    allowed_licences: tuple[str, ...] | None = None
    commercial_licences: tuple[str, ...] = COMMERCIAL_LICENCES
    tenant: str | None = None
    entitlement_issuer_keys: tuple[Path, ...] = ()
    # Usage statistics (``plugins.usage``, issue 20 §4): on when both are set; every load
    # then writes aggregated usage events of that plugin into the event log there.
    usage_tenant_salt: SecretStr | None = Field(None, min_length=16)
    usage_log_dir: Path | None = None
    usage_flush_interval_s: float = Field(60.0, gt=0, le=86_400)

    def usage_settings(self) -> UsageSettings | None:
        if self.usage_tenant_salt is None or self.usage_log_dir is None:
            return None
        return UsageSettings.validated(
            {
                "tenant": self.tenant or "default",
                "tenant_salt": self.usage_tenant_salt.get_secret_value(),
                "flush_interval_s": self.usage_flush_interval_s,
            },
            "plugin usage settings",
        )

    @classmethod
    def load(cls, **values: Any) -> RegistryConfig:
        return cls.validated(values, "plugin limits")

    def limits(self) -> Limits:
        return Limits(
            deadline_ms=self.deadline_ms,
            memory_bytes=self.memory_mb * MB,
            fuel=self.fuel,
            max_failures=self.max_failures,
            failure_window_s=self.failure_window_s,
            quarantine_s=self.quarantine_s,
            pool_size=self.pool_size,
        )

    def lock_auth(self) -> LockAuth | None:
        if self.lock_key_file is None or self.lock_scope is None:
            return None
        return LockAuth(self.lock_key_file, str(self.lock_scope.resolve()))


class PluginRegistry:
    """Plugins found in one directory; ``load`` gives a fresh, sandboxed instance each time
    (so two pipeline steps never share stats, state or a lock)."""

    def __init__(
        self,
        directory: Path | str,
        config: RegistryConfig | None = None,
        on_refused: Callable[[PluginPinError], None] | None = None,
        on_unpinned: Callable[[str, str], None] | None = None,
        load_checks: Iterable[LoadCheck] = (),
    ) -> None:
        """``on_refused`` is told of every pin refusal before it is raised, ``on_unpinned``
        (name, sha256) of every plugin loaded unpinned because ``allow_unpinned`` lets it
        (the deployment appends both to the audit log; the data plane does not know the
        audit store). ``load_checks`` run after the pin check passes, at every load (the
        marketplace's: registry digest, revocation, freshness); each audits and raises
        its own refusals."""
        self.directory = Path(directory)
        self.config = config or RegistryConfig()
        self.on_refused = on_refused
        self.on_unpinned = on_unpinned
        self.load_checks = tuple(load_checks)
        self._build_lock = threading.Lock()
        self._issuers: dict[str, Ed25519PublicKey] | None = None
        # The entitlement clock (None: now, UTC); tests set their own.
        self.clock: Callable[[], datetime] | None = None
        reset_in_forked_child(self)

    def _after_fork(self) -> None:
        """In a forked child: the parent's threads may have held the build lock."""
        self._build_lock = threading.Lock()

    # -- discovery -----------------------------------------------------------------------
    def names(self) -> list[str]:
        """Plugins available by name: built ones, plus shipped samples if built on demand."""
        found = set()
        if self.directory.is_dir():
            found = {
                p.stem
                for p in self.directory.glob("*.wasm")
                if is_plugin_name(p.stem) and p.with_suffix(".json").exists()
            }
        if self.config.build_missing:
            found |= set(sample_names())
        return sorted(found)

    def path(self, name: str) -> Path:
        """``<dir>/<name>.wasm``, built from the sample source first if allowed and missing.
        A name that is not a plain identifier (``../x``, ``/abs``, ``a/b``, ``x.wasm``) is
        refused as a ``ConfigError`` naming ``plugin.name``: nothing outside the folder."""
        wasm = plugin_file(self.directory, name, ".wasm")
        if wasm.exists() and wasm.with_suffix(".json").exists():
            return wasm
        if self.config.build_missing and name in sample_names():
            with self._build_lock:
                if not (wasm.exists() and wasm.with_suffix(".json").exists()):
                    build_plugin(SAMPLES_DIR / name, self.directory)
            return wasm
        available = ", ".join(self.names()) or "none"
        raise ConfigError(
            f"plugin registry {self.directory}",
            [("plugin.name", f"no plugin named {name!r} (available: {available})")],
        )

    def manifest(self, name: str) -> Manifest:
        return load_manifest(self.path(name).with_suffix(".json"))

    # -- loading -------------------------------------------------------------------------
    def load(
        self,
        name: str,
        params: dict[str, Any] | None = None,
        columns: dict[str, str] | None = None,
        limits: Limits | None = None,
        granted: Iterable[str] | None = None,
        lock_files: Iterable[Path] = (),
        pipeline: str = "",
    ) -> Plugin:
        """A new instance of plugin ``name`` (used by ``pipeline``, for usage statistics):
        bad params are refused as a ``ConfigError`` naming ``params.<field>``; a column
        binding naming no manifest column likewise.
        The module's bytes are read once, checked against the pins (``lock_files`` first,
        e.g. the pipeline's own lock, then the registry's) and those very bytes are
        compiled: a module swapped after the check is never the one that runs."""
        wasm = self.path(name)
        module = wasm.read_bytes()
        sidecar = wasm.with_suffix(".json")
        manifest_bytes = sidecar.read_bytes()
        self.verify(name, module, tuple(lock_files), manifest_bytes)
        manifest = parse_manifest(manifest_bytes, sidecar)
        params = manifest.resolve_params(params)  # ConfigError naming params.<field>
        check_columns(manifest, columns)
        entitlement = self.check_licence(manifest, wasm)
        grants = self.config.granted_capabilities if granted is None else tuple(granted)
        plugin = Plugin(
            manifest,
            module,
            params,
            limits or self.config.limits(),
            grants,
            columns,
            plugin_cache(self.config.cache_dir, self.config.cache_key_file),
        )
        if entitlement is not None and entitlement.max_rows is not None:
            plugin.entitlement = RowLimitGate(entitlement, self.rows_used(entitlement))
        self.attach_usage(plugin, pipeline)
        return plugin

    def rows_used(self, entitlement: Entitlement) -> int:
        """Rows of earlier runs counted against ``entitlement`` (since it was issued), from
        the usage log when usage statistics are on; 0 otherwise (then a row limit counts
        per run)."""
        settings = self.config.usage_settings()
        if settings is None or self.config.usage_log_dir is None:
            return 0
        topic = usage_topic(EventLog(self.config.usage_log_dir), settings.topic)
        digest = tenant_hash(settings.tenant, settings.tenant_salt)
        return rows_used(topic, entitlement.plugin, digest, entitlement.issued_at)

    def attach_usage(self, plugin: Plugin, pipeline: str = "") -> PluginUsage | None:
        """Record ``plugin``'s calls as usage events when the deployment turned usage on.
        The last window is flushed when the plugin is collected or the process exits."""
        settings = self.config.usage_settings()
        if settings is None or self.config.usage_log_dir is None:
            return None
        usage = PluginUsage.attach(
            plugin,
            EventLog(self.config.usage_log_dir),
            settings,
            pipeline or "adhoc",
            publisher_of(self.directory, plugin.name),
        )
        weakref.finalize(plugin, usage.flush)
        return usage

    def check_licence(self, manifest: Manifest, wasm: Path) -> Entitlement | None:
        """The load-time licence policy: the SPDX allow-list (when set), then, for a
        commercial licence, the signed entitlement beside the module (its expiry is
        checked now: an expired one refuses this load, i.e. a new run)."""
        config = self.config
        if config.allowed_licences is not None:
            allowed = set(config.allowed_licences)
            outcome = check_licence(manifest.license, allowed)
            if not outcome.passed:
                raise EntitlementError(manifest.name, f"licence refused: {outcome.detail}")
        if self._issuers is None:
            self._issuers = load_issuer_keys(config.entitlement_issuer_keys)
        return check_at_load(
            manifest.name,
            manifest.license,
            wasm,
            config.tenant,
            self._issuers,
            config.commercial_licences,
            self.clock,
            config.allowed_licences,
        )

    # -- pins ----------------------------------------------------------------------------
    def pins(self, first: Iterable[Path] = ()) -> Pins:
        auth = self.config.lock_auth()
        checked = frozenset(self.config.lock_files) if auth is not None else frozenset()
        return Pins(self.config.lock_files, auth, checked).with_first(tuple(first))

    def verify(
        self,
        name: str,
        module: bytes,
        first: Iterable[Path] = (),
        manifest: bytes | None = None,
    ) -> str:
        """The module's digest if its pin matches (and the manifest's, when both the pin
        and ``manifest`` have one), or it may run unpinned; else the refusal, told to
        ``on_refused`` and raised as ``PluginPinError`` (both digests). The load checks
        then see the same digest (a marketplace refusal is its ``MarketplaceError``)."""
        actual = self._verify_pin(name, module, first, manifest)
        for check in self.load_checks:
            check(name, actual, manifest)
        return actual

    def _verify_pin(
        self, name: str, module: bytes, first: Iterable[Path], manifest: bytes | None
    ) -> str:
        actual = digest(module)
        try:
            found = self.pins(first).lookup(name)
        except LockAuthenticationError as err:
            self._refuse(err)
        if found is not None:
            pin, lock = found
            if pin.sha256 != actual:
                self._refuse(PluginPinError(name, actual, pin.sha256, lock))
            if manifest is not None and pin.manifest_sha256 not in (None, digest(manifest)):
                self._refuse(
                    PluginPinError(
                        name, digest(manifest), pin.manifest_sha256, lock, what="manifest"
                    )
                )
            return actual
        if self.config.allow_unpinned:
            if self.on_unpinned is not None:
                self.on_unpinned(name, actual)
            return actual
        if self.config.build_missing and name in sample_names() and self.config.lock_files:
            return self._pin_sample(name, actual, manifest)
        self._refuse(PluginPinError(name, actual, None, None))
        raise AssertionError("unreachable")

    def _pin_sample(self, name: str, actual: str, manifest: bytes | None) -> str:
        """A shipped sample is platform code: its pin is what its shipped source compiles
        to. Built again in a scratch folder; identical bytes are pinned in the deployment's
        lock (the last lock file), anything else is refused as a mismatch."""
        with tempfile.TemporaryDirectory() as scratch:
            built = build_plugin(SAMPLES_DIR / name, Path(scratch))
            expected = digest(built.read_bytes())
        lock = self.config.lock_files[-1]
        if expected != actual:
            self._refuse(PluginPinError(name, actual, expected, SAMPLES_DIR / name))
        shipped = (SAMPLES_DIR / name / "plugin.json").read_bytes()
        if manifest is not None and digest(manifest) != digest(shipped):
            self._refuse(
                PluginPinError(name, digest(manifest), digest(shipped), SAMPLES_DIR / name)
            )
        version = parse_manifest(shipped, SAMPLES_DIR / name / "plugin.json").version
        pin = PinnedPlugin(sha256=actual, manifest_sha256=digest(shipped), version=version)
        try:
            write_lock(lock, {name: pin}, auth=self.config.lock_auth())
        except LockAuthenticationError as err:
            self._refuse(LockAuthenticationError(err.lock, err.problem, name))
        return actual

    def _refuse(self, error: PluginPinError) -> NoReturn:
        if self.on_refused is not None:
            self.on_refused(error)
        raise error


def publisher_of(directory: Path, name: str) -> str:
    """The registry namespace a plugin was installed from (``.marketplace.json``, written
    by ``dataflare plugin install``), else ``local``."""
    try:
        origins = json.loads((directory / ORIGINS_FILE).read_text())
        target = str(origins[name]["target"])
    except (OSError, ValueError, KeyError, TypeError):
        return "local"
    return target.split("/", 1)[0] if "/" in target else "local"


def check_columns(manifest: Manifest, columns: dict[str, str] | None) -> None:
    known = {c.name for c in (*manifest.input, *manifest.output)}
    problems = [
        (f"columns.{k}", f"plugin {manifest.name} has no column {k!r} (has {sorted(known)})")
        for k in (columns or {})
        if k not in known
    ]
    if problems:
        raise ConfigError(f"column binding of plugin {manifest.name}", problems)


def sample_names() -> list[str]:
    """Names of the shipped sample plugins (directories with a ``plugin.c``)."""
    return sorted(d.name for d in SAMPLES_DIR.iterdir() if (d / "plugin.c").exists())


def deployment_config(
    home: Path | None = None, environ: Mapping[str, str] | None = None, **values: Any
) -> RegistryConfig:
    """The deployment's pin policy, from the same variables the Dagster resource reads:
    the deployment's lock (``DATAFLARE_PLUGIN_LOCK`` or ``<home>/plugins.lock``), signed
    with the lock key outside the home; unpinned plugins refused unless
    ``DATAFLARE_PLUGIN_ALLOW_UNPINNED=true``; shipped samples pin themselves to their
    source; the compile cache in the platform's folder. ``values`` override (the resource
    passes its fields)."""
    env = os.environ if environ is None else environ
    root = ProjectHome.resolve(home).root
    settings: dict[str, Any] = {
        "cache_dir": Path(env.get(CACHE_DIR_ENV) or root / PLATFORM_DIR / "plugin-cache"),
        "cache_key_file": Path(env[CACHE_KEY_ENV]) if env.get(CACHE_KEY_ENV) else None,
        "lock_files": (Path(env.get(LOCK_ENV) or root / LOCK_FILE),),
        "allow_unpinned": env_flag(ALLOW_UNPINNED_ENV, env),
        "build_missing": True,
        "lock_key_file": lock_key_path(root, env),
        "lock_scope": root,
    }
    settings.update(licence_settings(root, env))
    settings.update(values)
    return RegistryConfig.load(**settings)


def licence_settings(root: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """Entitlement and usage settings from the deployment's environment: the tenant
    (``DATAFLARE_TENANT``), the SPDX allow-list checked at load
    (``DATAFLARE_PLUGIN_ALLOWED_LICENCES``, comma-separated; unset: no check), the trusted
    entitlement issuer keys (``DATAFLARE_ENTITLEMENT_ISSUER_KEYS``, PEM files separated by
    ``os.pathsep``), and usage statistics into ``<home>/events/log`` when
    ``DATAFLARE_PLUGIN_USAGE_SALT`` is set."""
    out: dict[str, Any] = {}
    if env.get(TENANT_ENV):
        out["tenant"] = env[TENANT_ENV]
    if env.get(ALLOWED_LICENCES_ENV):
        out["allowed_licences"] = tuple(
            x.strip() for x in env[ALLOWED_LICENCES_ENV].split(",") if x.strip()
        )
    if env.get(ISSUER_KEYS_ENV):
        out["entitlement_issuer_keys"] = tuple(
            Path(p) for p in env[ISSUER_KEYS_ENV].split(os.pathsep) if p
        )
    if env.get(USAGE_SALT_ENV):
        out["usage_tenant_salt"] = env[USAGE_SALT_ENV]
        out["usage_log_dir"] = ProjectHome.resolve(root).event_log_dir
    return out


def audit_hooks(
    plugin_dir: Path, home: Path | None = None, actor: str = "system", run_id: str | None = None
) -> tuple[Callable[[PluginPinError], None] | None, Callable[[str, str], None] | None]:
    """``(on_refused, on_unpinned)`` appending to the deployment's audit log through the
    ``dataflare_platform.plugin_audit`` entry points; (None, None) with a warning when the
    package is installed without them (the refusal itself never depends on the audit)."""
    from importlib.metadata import entry_points

    found = {ep.name: ep for ep in entry_points(group=AUDIT_HOOKS)}
    if not {"refused", "unpinned"} <= set(found):
        log.warning("no %s entry points: plugin pin decisions are not audited", AUDIT_HOOKS)
        return None, None
    refused, unpinned = found["refused"].load(), found["unpinned"].load()

    def on_refused(error: PluginPinError) -> None:
        refused(error, plugin_dir, home, actor=actor, run_id=run_id)

    def on_unpinned(name: str, sha256: str) -> None:
        unpinned(name, sha256, plugin_dir, home, actor=actor, run_id=run_id)

    return on_refused, on_unpinned


def deployment_load_checks(
    plugin_dir: Path, home: Path | None = None, actor: str = "system", run_id: str | None = None
) -> list[LoadCheck]:
    """The load checks the installed package declares (``LOAD_CHECKS`` entry points, each
    a factory ``(plugin_dir, home, actor, run_id) -> check``)."""
    from importlib.metadata import entry_points

    return [
        ep.load()(plugin_dir, home, actor=actor, run_id=run_id)
        for ep in sorted(entry_points(group=LOAD_CHECKS), key=lambda ep: ep.name)
    ]


def deployment_registry(
    directory: Path | None = None,
    home: Path | None = None,
    actor: str = "system",
    run_id: str | None = None,
    **values: Any,
) -> PluginRegistry:
    """A registry under the deployment's pin policy (:func:`deployment_config`), its
    decisions audited as ``actor`` (and ``run_id``): the one the CLI and the Python API
    load through. ``directory`` defaults to ``<home>/plugins``."""
    root = ProjectHome.resolve(home).root
    folder = Path(directory) if directory is not None else root / "plugins"
    config = deployment_config(root, **values)
    on_refused, on_unpinned = audit_hooks(folder, root, actor, run_id)
    return PluginRegistry(
        folder,
        config,
        on_refused=on_refused,
        on_unpinned=on_unpinned,
        load_checks=deployment_load_checks(folder, root, actor, run_id),
    )


def load_plugin(
    wasm_path: Path | str,
    params: dict[str, Any] | None = None,
    limits: Limits | None = None,
    granted: Iterable[str] = (),
    columns: dict[str, str] | None = None,
    cache_dir: Path | None = None,
    *,
    registry: PluginRegistry | None = None,
) -> Plugin:
    """The Python API: load ``<name>.wasm`` (with ``<name>.json`` or ``plugin.json``),
    checked against the pins like every other load. The module's name is its file stem;
    ``registry`` decides the policy (default: :func:`deployment_registry`, i.e. the
    deployment's signed lock, unpinned refused unless ``DATAFLARE_PLUGIN_ALLOW_UNPINNED``
    is true, every decision audited). The bytes checked are the bytes compiled."""
    wasm = Path(wasm_path)
    name = check_plugin_name(wasm.stem, "wasm_path")
    checker = registry or deployment_registry(wasm.parent)
    module = wasm.read_bytes()
    sidecar = manifest_path(wasm)
    manifest_bytes = sidecar.read_bytes()
    checker.verify(name, module, manifest=manifest_bytes)
    manifest = parse_manifest(manifest_bytes, sidecar)
    entitlement = checker.check_licence(manifest, wasm)
    cache = cache_dir if cache_dir is not None else checker.config.cache_dir
    plugin = Plugin(manifest, module, params, limits, granted, columns, cache)
    if entitlement is not None and entitlement.max_rows is not None:
        plugin.entitlement = RowLimitGate(entitlement, checker.rows_used(entitlement))
    checker.attach_usage(plugin)
    return plugin
