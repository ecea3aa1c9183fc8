"""Plugin pins: the SHA-256 of every plugin module a pipeline may run, in a lock file.

A plugin folder is where plugin authors deliver modules, so "the ``.wasm`` that sits
there on the next load" is whatever was last copied in. A lock file records, per plugin
name, the digest of the module that was reviewed; at load a module whose digest differs
is refused with both digests in the error (and audited by the deployment).

Format (``plugins.lock``, JSON, written by ``dataflare plugin lock``; sorted, one
spelling, so it diffs well in review)::

    {
      "format": "dataflare.plugins.lock/1",
      "plugins": {
        "currency": {"sha256": "9f2c...", "manifest_sha256": "41ab...",
                     "version": "1.0.0", "size_bytes": 1432}
      }
    }

``sha256`` (of the ``.wasm`` bytes) and ``manifest_sha256`` (of the ``<name>.json``
sidecar, when present) are enforced; ``version`` and ``size_bytes`` are informative.
Where locks are looked for, first match wins per plugin name:

1. ``plugins.lock`` next to the pipeline (the folder of its ``defs.yaml`` or YAML file,
   or of its ``builders/`` package for Python pipelines);
2. the deployment's lock, ``<DATAFLARE_HOME>/plugins.lock`` (or the file named by
   ``DATAFLARE_PLUGIN_LOCK``).

A plugin no lock names is *unpinned*; what happens to it is the registry's policy
(``RegistryConfig.allow_unpinned``; refused by the deployment unless it explicitly allows
it, see docs/security.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from dataflare_platform.durable import WriterLock, write_atomic
from dataflare_platform.errors import ConfigError
from dataflare_platform.models import StrictModel
from dataflare_platform.streams.fields import PLUGIN_NAME

LOCK_FILE = "plugins.lock"
FORMAT = "dataflare.plugins.lock/1"
SHA256 = r"^[0-9a-f]{64}$"

PluginName = Annotated[str, StringConstraints(pattern=PLUGIN_NAME)]


class PinnedPlugin(StrictModel):
    sha256: str = Field(pattern=SHA256)
    # The manifest sidecar's digest: it declares kind, columns and capabilities, so a
    # swapped manifest is refused like a swapped module (checked when present).
    manifest_sha256: str | None = Field(None, pattern=SHA256)
    version: str | None = None
    size_bytes: int | None = Field(None, ge=0)


class PluginLockFile(StrictModel):
    format: Literal["dataflare.plugins.lock/1"] = FORMAT
    plugins: dict[PluginName, PinnedPlugin] = Field(default_factory=dict)


class PluginPinError(ConfigError):
    """A plugin module is not the one its lock pins, or no lock pins it and unpinned
    plugins are refused. ``expected``/``actual`` are the digests (``expected`` None when
    unpinned), ``lock`` the lock file that pinned it."""

    def __init__(
        self,
        name: str,
        actual: str,
        expected: str | None,
        lock: Path | None,
        field: str = "plugin.name",
        what: str = "module",
    ) -> None:
        self.plugin, self.actual, self.expected, self.lock = name, actual, expected, lock
        self.what = what
        if expected is None:
            message = (
                f"plugin {name!r} (sha256 {actual}) is not pinned by any lock file: run "
                f"`dataflare plugin lock {name}` after reviewing it, or allow unpinned "
                "plugins in the deployment (DATAFLARE_PLUGIN_ALLOW_UNPINNED=true)"
            )
        else:
            message = (
                f"plugin {name!r} {what} has sha256 {actual}, but {lock} pins sha256 "
                f"{expected}: refused (re-run `dataflare plugin lock` only after reviewing "
                "the new module)"
            )
        super().__init__(f"plugin {name}", [(field, message)])


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_lock(path: Path) -> PluginLockFile | None:
    """The lock at ``path``; None if there is none. A malformed lock is a ``ConfigError``
    naming its field (never ignored: a typo must not silently unpin everything)."""
    what = f"plugin lock {path}"
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(what, [("<file>", f"not JSON: {err}")]) from None
    return PluginLockFile.validated(raw, what)


def write_lock(path: Path, pins: Mapping[str, PinnedPlugin], replace: bool = False) -> None:
    """Merge ``pins`` into the lock at ``path`` (or replace its pins), atomically and under
    a file lock, so two writers never lose each other's entries."""
    path = Path(path)
    guard = WriterLock(path.with_name(f".{path.name}.flock"))
    guard.acquire(timeout_s=30)
    try:
        current = {} if replace else dict((read_lock(path) or PluginLockFile()).plugins)
        current.update(pins)
        lock = PluginLockFile(plugins=dict(sorted(current.items())))
        text = json.dumps(lock.model_dump(mode="json", exclude_none=True), indent=2)
        write_atomic(path, (text + "\n").encode())
        path.chmod(0o600)  # owner-only like everything in the home (reviewed in git)
    finally:
        guard.release()


@dataclass(frozen=True)
class Pins:
    """The lock files a load consults, in order; the first that names a plugin decides."""

    files: tuple[Path, ...] = ()

    def with_first(self, extra: Iterable[Path]) -> Pins:
        return Pins((*extra, *(f for f in self.files if f not in set(extra))))

    def lookup(self, name: str) -> tuple[PinnedPlugin, Path] | None:
        for path in self.files:
            lock = read_lock(path)
            if lock is not None and name in lock.plugins:
                return lock.plugins[name], path
        return None
