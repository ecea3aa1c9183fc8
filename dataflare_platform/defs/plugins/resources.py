"""The plugin runtime as a resource: plugins loaded by name from a directory, under the
deployment's sandbox limits and granted capabilities."""

from pathlib import Path
from typing import Any, ClassVar

from dataflare_platform.defs.deployment_lock import DeploymentLockedResource, deployment_field
from dataflare_platform.home import ProjectHome
from dataflare_platform.plugins.registry import PluginRegistry, RegistryConfig
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
    build_missing: bool = deployment_field(
        True, env=None, description="Build shipped samples missing from the dir."
    )

    def registry(self) -> PluginRegistry:
        directory = Path(self.plugin_dir or ProjectHome.resolve().root / "plugins")
        config = RegistryConfig.load(
            # Compiled modules are cached with the plugins, not in the user's home.
            cache_dir=directory / ".cache",
            deadline_ms=self.deadline_ms,
            memory_mb=self.memory_mb,
            fuel=self.fuel,
            granted_capabilities=tuple(self.granted_capabilities),
            build_missing=self.build_missing,
        )
        return PluginRegistry(directory, config)

    def load(
        self,
        name: str,
        params: dict[str, Any] | None = None,
        columns: dict[str, str] | None = None,
    ) -> Plugin:
        """A fresh sandboxed instance of plugin ``name``; bad names, params or limits raise
        ``ConfigError`` naming the field."""
        return self.registry().load(name, params, columns)
