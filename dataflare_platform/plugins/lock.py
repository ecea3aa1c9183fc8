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

Authentication. Whoever can write the home could otherwise re-pin an evil module in the
deployment's lock. The deployment's lock (and any lock inside the home) therefore carries
``"mac": "hmac-sha256:<hex>"``, an HMAC-SHA256 over the canonical JSON of its format,
its pins and the home it serves (``scope``), with a 32-byte key kept *outside* the home:
``$DATAFLARE_PLUGIN_LOCK_KEY_FILE``, else ``<user config dir of the home>/plugins-lock.key``
(``home.user_config_dir``, the folder of the audit keys; 0700, key 0600). A lock whose
MAC is missing or wrong, or that was written for another home (other key, other scope),
is refused as a whole (:class:`LockAuthenticationError`) and audited; ``dataflare plugin
lock`` writes and signs it (``--resign`` signs an existing lock after review). Locks
outside the home (beside a pipeline in its repository) are part of the pipeline's code,
reviewed with it, and are not MAC-checked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from dataflare_platform.durable import WriterLock, write_atomic
from dataflare_platform.errors import ConfigError, DataflareError
from dataflare_platform.home import path_inside, user_config_dir
from dataflare_platform.models import StrictModel
from dataflare_platform.plugins.cache import load_key
from dataflare_platform.streams.fields import PLUGIN_NAME

LOCK_FILE = "plugins.lock"
FORMAT = "dataflare.plugins.lock/1"
SHA256 = r"^[0-9a-f]{64}$"
MAC_PREFIX = "hmac-sha256:"
LOCK_KEY_ENV = "DATAFLARE_PLUGIN_LOCK_KEY_FILE"
LOCK_KEY_FILE = "plugins-lock.key"

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
    # The authenticator (module docstring); None in a lock nobody signed.
    mac: str | None = Field(None, pattern=r"^hmac-sha256:[0-9a-f]{64}$")


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
        self.reason = "digest_mismatch" if expected else "unpinned"
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


class LockAuthenticationError(PluginPinError):
    """A lock that must be authenticated is not: no MAC, a MAC that does not match (its
    pins were edited, or it was copied from another home), or no key to check it with.
    The whole lock is refused (a partly trusted lock is not trusted)."""

    def __init__(self, lock: Path, problem: str, plugin: str = "*") -> None:
        try:
            actual = digest(Path(lock).read_bytes())
        except OSError:
            actual = ""
        self.plugin, self.actual, self.expected, self.lock = plugin, actual, None, lock
        self.what, self.reason, self.problem = "lock", "lock_unauthenticated", problem
        message = (
            f"plugin lock {lock} {problem}: refused (review its pins, then sign it with "
            "`dataflare plugin lock --resign`)"
        )
        ConfigError.__init__(self, f"plugin {plugin}", [("plugin.name", message)])


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


def lock_key_path(home_root: Path, environ: Mapping[str, str] | None = None) -> Path:
    """Where the lock key of this home lives: ``$DATAFLARE_PLUGIN_LOCK_KEY_FILE``, else
    ``<user_config_dir(home)>/plugins-lock.key`` (outside the home)."""
    env = os.environ if environ is None else environ
    if env.get(LOCK_KEY_ENV):
        return Path(env[LOCK_KEY_ENV])
    return user_config_dir(home_root, env) / LOCK_KEY_FILE


@dataclass(frozen=True)
class LockAuth:
    """How locks are authenticated: HMAC-SHA256 with the key in ``key_file`` over the
    lock's format, pins and ``scope`` (the resolved home it serves, so a lock copied from
    another home fails even under a shared key)."""

    key_file: Path
    scope: str

    @classmethod
    def for_home(cls, home_root: Path, environ: Mapping[str, str] | None = None) -> LockAuth:
        return cls(lock_key_path(home_root, environ), str(Path(home_root).resolve()))

    def covers(self, path: Path) -> bool:
        """True for a lock inside the home this authenticates (it must carry a MAC)."""
        return path_inside(path, Path(self.scope))

    def key(self, create: bool = False, lock: Path | None = None) -> bytes:
        """The key; created (in a 0700 folder) only on a write, never to check a lock."""
        try:
            if create:
                self.key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            return load_key(self.key_file, create=create)
        except FileNotFoundError:
            raise LockAuthenticationError(
                lock or self.key_file, f"cannot be checked: no lock key at {self.key_file}"
            ) from None
        except DataflareError as err:  # a key file others can read, or not ours
            raise LockAuthenticationError(lock or self.key_file, f"key refused: {err}") from None

    def mac(self, lock: PluginLockFile, key: bytes) -> str:
        body = {
            "format": lock.format,
            "scope": self.scope,
            "plugins": {
                k: v.model_dump(mode="json", exclude_none=True) for k, v in lock.plugins.items()
            },
        }
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return MAC_PREFIX + hmac.new(key, canonical, hashlib.sha256).hexdigest()

    def check(self, path: Path, lock: PluginLockFile) -> None:
        """Raise ``LockAuthenticationError`` unless ``lock`` carries this home's MAC."""
        if lock.mac is None:
            raise LockAuthenticationError(path, "is not signed (no mac)")
        if not hmac.compare_digest(lock.mac, self.mac(lock, self.key(lock=path))):
            raise LockAuthenticationError(
                path, "does not match its authenticator (edited, or written for another home)"
            )


def write_lock(
    path: Path,
    pins: Mapping[str, PinnedPlugin],
    replace: bool = False,
    auth: LockAuth | None = None,
) -> None:
    """Merge ``pins`` into the lock at ``path`` (or replace its pins), atomically and under
    a file lock, so two writers never lose each other's entries. With ``auth`` the lock
    is signed, and an existing lock is merged only if its own MAC holds (merging would
    otherwise launder a tampered pin into a signed lock): ``replace`` after review."""
    path = Path(path)
    guard = WriterLock(path.with_name(f".{path.name}.flock"))
    guard.acquire(timeout_s=30)
    try:
        existing = None if replace else read_lock(path)
        if existing is not None and auth is not None:
            auth.check(path, existing)
        current = dict((existing or PluginLockFile()).plugins)
        current.update(pins)
        lock = PluginLockFile(plugins=dict(sorted(current.items())))
        if auth is not None:
            lock = lock.model_copy(update={"mac": auth.mac(lock, auth.key(create=True))})
        text = json.dumps(lock.model_dump(mode="json", exclude_none=True), indent=2)
        write_atomic(path, (text + "\n").encode())
        path.chmod(0o600)  # owner-only like everything in the home (reviewed in git)
    finally:
        guard.release()


@dataclass(frozen=True)
class Pins:
    """The lock files a load consults, in order; the first that names a plugin decides.
    With ``auth``, the ``authenticated`` files (the deployment's locks, and any inside
    the home) must carry a valid MAC, checked whether or not they name the plugin."""

    files: tuple[Path, ...] = ()
    auth: LockAuth | None = None
    authenticated: frozenset[Path] = frozenset()

    def with_first(self, extra: Iterable[Path]) -> Pins:
        extra = tuple(extra)
        files = (*extra, *(f for f in self.files if f not in set(extra)))
        checked = set(self.authenticated)
        if self.auth is not None:
            checked |= {f for f in extra if self.auth.covers(f)}
        return Pins(files, self.auth, frozenset(checked))

    def lookup(self, name: str) -> tuple[PinnedPlugin, Path] | None:
        for path in self.files:
            lock = read_lock(path)
            if lock is not None and self.auth is not None and path in self.authenticated:
                try:
                    self.auth.check(path, lock)
                except LockAuthenticationError as err:
                    raise LockAuthenticationError(path, err.problem, name) from None
            if lock is not None and name in lock.plugins:
                return lock.plugins[name], path
        return None
