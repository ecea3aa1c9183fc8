"""WASM plugin runtime of the data plane: users' batch logic, sandboxed (no Dagster here)."""

from dataflare_platform.plugins.manifest import Manifest, load_manifest
from dataflare_platform.plugins.registry import load_plugin
from dataflare_platform.plugins.runtime import Limits, Plugin, PluginError

__all__ = ["Limits", "Manifest", "Plugin", "PluginError", "load_manifest", "load_plugin"]
