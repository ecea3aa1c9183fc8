"""The plugin runtime as a resource: plugins loaded by name from a directory, under the
deployment's sandbox limits and granted capabilities."""

from pathlib import Path
from typing import Any, ClassVar

import dagster as dg
from pydantic import PrivateAttr

from dataflare_platform.compliance.override_refusals import actor_from_tags
from dataflare_platform.compliance.plugin_refusals import (
    record_marketplace_refusal,
    record_refusal,
    record_unpinned,
)
from dataflare_platform.defs.deployment_lock import DeploymentLockedResource, deployment_field
from dataflare_platform.home import ProjectHome
from dataflare_platform.marketplace.client import MarketplaceError
from dataflare_platform.marketplace.loadcheck import DEFAULT_REFRESH_S, MarketplaceLoadCheck
from dataflare_platform.plugins.lock import LOCK_FILE, PluginPinError, lock_key_path
from dataflare_platform.plugins.registry import (
    PLATFORM_DIR,
    PluginRegistry,
    deployment_config,
)
from dataflare_platform.plugins.runtime import Plugin


class PluginRuntimeResource(DeploymentLockedResource):
    """Loads ``<plugin_dir>/<name>.wasm`` (+ ``<name>.json``) with these limits.

    ``plugin_dir`` may come from ``dg.EnvVar``; empty means ``<DATAFLARE_HOME>/plugins``.
    With ``build_missing``, shipped sample plugins are compiled there on first use. Every
    field is a deployment setting (the folder decides which code runs, with its compile
    cache ``<plugin_dir>/.cache``; the limits are the sandbox): a run config naming one is
    refused (``defs.deployment_lock``)."""

    deployment_key: ClassVar[str] = "plugins"

    plugin_dir: str = deployment_field(
        "",
        env="DATAFLARE_PLUGIN_DIR",
        description="Plugin directory ('' = <DATAFLARE_HOME>/plugins).",
    )
    deadline_ms: float = deployment_field(
        1000.0, env=None, description="Wall-clock limit of one call into a plugin."
    )
    memory_mb: int = deployment_field(
        256,
        env="DATAFLARE_PLUGIN_MEMORY_MB",
        description="Linear memory limit of one plugin instance.",
    )
    fuel: int | None = deployment_field(
        None,
        env="DATAFLARE_PLUGIN_FUEL",
        description="Instruction budget per call (None = unmetered).",
    )
    granted_capabilities: list[str] = deployment_field(
        env=None, default_factory=list, description="Capabilities plugins may use (e.g. 'log')."
    )
    cache_dir: str = deployment_field(
        "",
        env="DATAFLARE_PLUGIN_CACHE_DIR",
        description="Compile cache ('' = <DATAFLARE_HOME>/platform/plugin-cache), 0700.",
    )
    cache_key_file: str = deployment_field(
        "",
        env="DATAFLARE_PLUGIN_CACHE_KEY_FILE",
        description="MAC key of the compile cache ('' = <cache_dir>.key), 0600.",
    )
    lock_file: str = deployment_field(
        "",
        env="DATAFLARE_PLUGIN_LOCK",
        description="The deployment's plugin pins ('' = <DATAFLARE_HOME>/plugins.lock).",
    )
    allow_unpinned: bool = deployment_field(
        False,
        env="DATAFLARE_PLUGIN_ALLOW_UNPINNED",
        description="Development only: let plugins no lock pins load (refused by default; "
        "every such load is audited as plugin_unpinned_loaded).",
    )
    lock_key_file: str = deployment_field(
        "",
        env="DATAFLARE_PLUGIN_LOCK_KEY_FILE",
        description="HMAC key authenticating the plugin locks ('' = plugins-lock.key in the "
        "home's per-user config folder, outside the home).",
    )
    build_missing: bool = deployment_field(
        True, env=None, description="Build shipped samples missing from the dir."
    )
    marketplace_refresh_s: float = deployment_field(
        DEFAULT_REFRESH_S,
        env="DATAFLARE_MARKETPLACE_REFRESH_S",
        description="Seconds a plugin installed from the signed registry loads on cached, "
        "verified metadata before the next load refreshes it (a revocation reaches runs "
        "within this; past the timestamp's expiry an unrefreshable load is refused).",
    )

    # The run this resource was set up for: its principal and id go into the audit
    # entries of pin decisions (None outside a run).
    _run_id: str | None = PrivateAttr(default=None)
    _actor: str = PrivateAttr(default="system")
    # One load check per resource: its parsed view and offline back-off outlive a load.
    _load_check: MarketplaceLoadCheck | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        super().setup_for_execution(context)
        run = context.run
        if run is not None:
            self._run_id = run.run_id
            self._actor = actor_from_tags(run.tags)

    def registry(self) -> PluginRegistry:
        home = ProjectHome.resolve().root
        directory = Path(self.plugin_dir or home / "plugins")
        config = deployment_config(
            home,
            # Not the plugin folder: plugin authors write there (plugins.cache).
            cache_dir=Path(self.cache_dir or home / PLATFORM_DIR / "plugin-cache"),
            cache_key_file=Path(self.cache_key_file) if self.cache_key_file else None,
            deadline_ms=self.deadline_ms,
            memory_mb=self.memory_mb,
            fuel=self.fuel,
            granted_capabilities=tuple(self.granted_capabilities),
            build_missing=self.build_missing,
            lock_files=(self.lock_path(),),
            allow_unpinned=self.allow_unpinned,
            lock_key_file=Path(self.lock_key_file) if self.lock_key_file else lock_key_path(home),
            lock_scope=home,
        )
        actor, run_id = self._actor, self._run_id

        def refused(error: PluginPinError) -> None:
            record_refusal(error, directory, home, actor=actor, run_id=run_id)

        def unpinned(name: str, sha256: str) -> None:
            record_unpinned(name, sha256, directory, home, actor=actor, run_id=run_id)

        def marketplace_refused(error: MarketplaceError) -> None:
            record_marketplace_refusal(error, home, actor=actor, run_id=run_id)

        if self._load_check is None or self._load_check.plugins_dir != str(directory.resolve()):
            self._load_check = MarketplaceLoadCheck(
                home / PLATFORM_DIR / "marketplace",
                directory,
                self.marketplace_refresh_s,
                on_refused=marketplace_refused,
            )
        return PluginRegistry(
            directory,
            config,
            on_refused=refused,
            on_unpinned=unpinned,
            load_checks=[self._load_check],
        )

    def lock_path(self) -> Path:
        """The deployment's lock: ``lock_file``, else ``<DATAFLARE_HOME>/plugins.lock``."""
        return Path(self.lock_file or ProjectHome.resolve().root / LOCK_FILE)

    def load(
        self,
        name: str,
        params: dict[str, Any] | None = None,
        columns: dict[str, str] | None = None,
        pipeline: str = "",
    ) -> Plugin:
        """A fresh sandboxed instance of plugin ``name`` (its usage recorded under
        ``pipeline`` when usage statistics are on); bad names, params or limits raise
        ``ConfigError`` naming the field."""
        return self.registry().load(name, params, columns, pipeline=pipeline)
