"""A directory of plugins, loaded by name: ``<dir>/<name>.wasm`` with its manifest sidecar
``<dir>/<name>.json``. Limits and granted capabilities are set once for the registry (the
deployment's policy) and may be tightened per load; sample plugins whose module is missing
can be built from their shipped C source on demand.

    registry = PluginRegistry("plugins", RegistryConfig(deadline_ms=200, build_missing=True))
    mask = registry.load("pii_mask", params={"min_digits": 12}, columns={"text": "email"})
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import Field

from dataflare_platform.errors import ConfigError
from dataflare_platform.models import StrictModel
from dataflare_platform.plugins.build import SAMPLES_DIR, build_plugin
from dataflare_platform.plugins.engine import plugin_cache
from dataflare_platform.plugins.lock import (
    PinnedPlugin,
    Pins,
    PluginPinError,
    digest,
    write_lock,
)
from dataflare_platform.plugins.manifest import Manifest, load_manifest, parse_manifest
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

    def __init__(
        self,
        directory: Path | str,
        config: RegistryConfig | None = None,
        on_refused: Callable[[PluginPinError], None] | None = None,
    ) -> None:
        """``on_refused`` is told of every pin refusal before it is raised (the deployment
        appends it to the audit log; the data plane does not know the audit store)."""
        self.directory = Path(directory)
        self.config = config or RegistryConfig()
        self.on_refused = on_refused
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
    ) -> Plugin:
        """A new instance of plugin ``name``: bad params are refused as a ``ConfigError``
        naming ``params.<field>``; a column binding naming no manifest column likewise.
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
        grants = self.config.granted_capabilities if granted is None else tuple(granted)
        return Plugin(
            manifest,
            module,
            params,
            limits or self.config.limits(),
            grants,
            columns,
            plugin_cache(self.config.cache_dir, self.config.cache_key_file),
        )

    # -- pins ----------------------------------------------------------------------------
    def pins(self, first: Iterable[Path] = ()) -> Pins:
        return Pins(self.config.lock_files).with_first(tuple(first))

    def verify(
        self,
        name: str,
        module: bytes,
        first: Iterable[Path] = (),
        manifest: bytes | None = None,
    ) -> str:
        """The module's digest if its pin matches (and the manifest's, when both the pin
        and ``manifest`` have one), or it may run unpinned; else the refusal, told to
        ``on_refused`` and raised as ``PluginPinError`` (both digests)."""
        actual = digest(module)
        found = self.pins(first).lookup(name)
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
        write_lock(lock, {name: pin})
        return actual

    def _refuse(self, error: PluginPinError) -> None:
        if self.on_refused is not None:
            self.on_refused(error)
        raise error


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
