"""A directory of plugins, loaded by name: ``<dir>/<name>.wasm`` with its manifest sidecar
``<dir>/<name>.json``. Limits and granted capabilities are set once for the registry (the
deployment's policy) and may be tightened per load; sample plugins whose module is missing
can be built from their shipped C source on demand.

    registry = PluginRegistry("plugins", RegistryConfig(deadline_ms=200, build_missing=True))
    mask = registry.load("pii_mask", params={"min_digits": 12}, columns={"text": "email"})
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import Field

from dataflare_platform.errors import ConfigError
from dataflare_platform.models import StrictModel
from dataflare_platform.plugins.build import SAMPLES_DIR, build_plugin
from dataflare_platform.plugins.manifest import Manifest, load_manifest
from dataflare_platform.plugins.names import is_plugin_name, plugin_file
from dataflare_platform.plugins.runtime import Limits, Plugin

MB = 1024 * 1024


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
    cache_dir: Path | None = None

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


class PluginRegistry:
    """Plugins found in one directory; ``load`` gives a fresh, sandboxed instance each time
    (so two pipeline steps never share stats, state or a lock)."""

    def __init__(self, directory: Path | str, config: RegistryConfig | None = None) -> None:
        self.directory = Path(directory)
        self.config = config or RegistryConfig()
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
    ) -> Plugin:
        """A new instance of plugin ``name``: bad params are refused as a ``ConfigError``
        naming ``params.<field>``; a column binding naming no manifest column likewise."""
        wasm = self.path(name)
        manifest = load_manifest(wasm.with_suffix(".json"))
        params = manifest.resolve_params(params)  # ConfigError naming params.<field>
        check_columns(manifest, columns)
        grants = self.config.granted_capabilities if granted is None else tuple(granted)
        return Plugin(
            manifest,
            wasm.read_bytes(),
            params,
            limits or self.config.limits(),
            grants,
            columns,
            self.config.cache_dir,
        )


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
