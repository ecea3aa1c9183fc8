"""The compile cache of plugin modules: native code wasmtime produced, authenticated.

``wasmtime.Module.deserialize`` trusts its input completely (it is native code, run as
is), and the cache is looked up by a name anyone can compute (the module's SHA-256 with
the wasmtime version and engine settings). So whoever can write a file under that name
decides what code runs for a plugin, while the audit trail records the digest of the
module that was *verified*, not of what ran. Two walls:

- the cache lives in a folder the platform owns (0700, owned by the running user; a
  folder owned by someone else is not used at all), not in the plugin folder that plugin
  authors write to;
- every artifact carries an HMAC-SHA256 over its cache name and its bytes, with a key
  (32 random bytes, 0600) that plugin authors cannot read: it is created beside the
  cache folder, in the platform's own folder (``<home>/platform`` by default), or kept
  wherever the deployment says (``DATAFLARE_PLUGIN_CACHE_KEY_FILE``, e.g. next to the
  audit keys, outside the home). The MAC is checked before ``Module.deserialize``; a
  mismatch (a planted file, another plugin's artifact copied under this name, a file
  from another host) is logged as a warning, removed, and the module is compiled again
  from the bytes whose digest was verified.

Binding the cache name into the MAC matters: a genuine artifact of plugin A, copied
under plugin B's name, carries a valid MAC for A's name only.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import importlib.metadata
import logging
import os
import secrets
import stat
import threading
from pathlib import Path

from dataflare_platform.errors import DataflareError
from dataflare_platform.forks import reset_in_forked_child

log = logging.getLogger(__name__)

_WASMTIME_VERSION = importlib.metadata.version("wasmtime")
MAGIC = b"DFCWASM1"
_MAC_BYTES = 32
_KEY_BYTES = 32
_DOMAIN = b"dataflare.plugin-cache/1\x00"
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)


class CacheRefusedError(DataflareError):
    """The cache folder or key is not the platform's own: the cache is not used."""


def cache_key(data: bytes, fuel: bool) -> str:
    """The cache name of a module: public on purpose (anyone can compute it); what makes
    an artifact trusted is its MAC, not its name."""
    # cfg=2: the engine with unneeded proposals off (plugins.engine.FEATURES)
    return hashlib.sha256(data + f"|{_WASMTIME_VERSION}|fuel={fuel}|cfg=2".encode()).hexdigest()


def default_key_file(directory: Path) -> Path:
    """``<dir>.key`` beside the cache folder (in the same platform-owned parent)."""
    return directory.with_name(f"{directory.name}.key")


class PluginCache:
    """Authenticated compiled-module cache in ``directory`` with its MAC key in
    ``key_file`` (default ``<directory>.key``). ``get``/``put`` never raise for a bad
    cache: a refused folder or key only means compiling every time (warned once)."""

    def __init__(self, directory: Path | str, key_file: Path | str | None = None) -> None:
        self.directory = Path(directory)
        self.key_file = Path(key_file) if key_file else default_key_file(self.directory)
        self.rejected = 0  # artifacts whose MAC did not verify (for tests and metrics)
        self._key: bytes | None = None
        self._refused: str | None = None
        self._lock = threading.Lock()
        reset_in_forked_child(self)

    def _after_fork(self) -> None:
        """In a forked child: the parent's threads may have held the lock."""
        self._lock = threading.Lock()

    # -- folder and key ------------------------------------------------------------------
    def _ready(self) -> bytes | None:
        """The MAC key once the folder is checked; None if the cache must not be used."""
        with self._lock:
            if self._key is not None or self._refused is not None:
                return self._key
            try:
                _private_dir(self.directory)
                _private_dir(self.key_file.parent)
                self._key = _load_or_create_key(self.key_file)
            except (OSError, CacheRefusedError) as err:
                self._refused = str(err)
                log.warning("plugin compile cache not used: %s", err)
            return self._key

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.cwasm"

    # -- artifacts -----------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        """The verified artifact of ``key``, or None (absent, unusable cache, bad MAC)."""
        mac_key = self._ready()
        if mac_key is None:
            return None
        path = self.path(key)
        try:
            fd = os.open(path, _READ_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as err:
            if err.errno != errno.ELOOP:
                raise
            return self._reject(path, "a symbolic link")
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return self._reject(path, "not a regular file")
            blob = f.read()
        head = len(MAGIC) + _MAC_BYTES
        if len(blob) < head or blob[: len(MAGIC)] != MAGIC:
            return self._reject(path, "no authenticated header")
        artifact = blob[head:]
        if not hmac.compare_digest(blob[len(MAGIC) : head], _mac(mac_key, key, artifact)):
            return self._reject(path, "its MAC does not verify")
        return artifact

    def put(self, key: str, artifact: bytes) -> None:
        """Store ``artifact`` under ``key`` with its MAC (atomically, 0600)."""
        mac_key = self._ready()
        if mac_key is None:
            return
        path = self.path(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + _mac(mac_key, key, artifact) + artifact)
            tmp.replace(path)  # atomic: concurrent loaders never see a half-written file
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def discard(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def _reject(self, path: Path, why: str) -> None:
        self.rejected += 1
        log.warning(
            "plugin compile cache: %s refused (%s); recompiling from the verified module",
            path.name,
            why,
        )
        try:
            path.unlink(missing_ok=True)
        except OSError:  # a directory planted under the name: it stays, never read
            log.warning("plugin compile cache: could not remove %s", path.name)
        return None


def _mac(key: bytes, name: str, artifact: bytes) -> bytes:
    return hmac.new(key, _DOMAIN + name.encode() + b"\x00" + artifact, "sha256").digest()


def _private_dir(directory: Path) -> None:
    """Create ``directory`` 0700, or check an existing one is ours (not a link, owned by
    this user); one that others can reach is tightened to 0700."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = directory.lstat()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise CacheRefusedError(f"{directory} is not a directory of its own")
    if st.st_uid != os.geteuid():
        raise CacheRefusedError(f"{directory} is owned by uid {st.st_uid}, not this user")
    if stat.S_IMODE(st.st_mode) & 0o077:
        directory.chmod(0o700)
        log.warning("plugin compile cache folder %s tightened to 0700", directory)


def _load_or_create_key(path: Path) -> bytes:
    return load_key(path, create=True)


def load_key(path: Path, create: bool = True) -> bytes:
    """The 32-byte MAC key in ``path`` (0600, ours), created on first use when ``create``
    (else a missing file raises ``FileNotFoundError``). Shared by the compile cache and
    the plugin lock's authenticator (``plugins.lock``)."""
    if create and not path.exists():
        # Written whole under a temporary name, then linked: a concurrent first use never
        # reads a half-written key, and the first link wins.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(_KEY_BYTES))
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    fd = os.open(path, _READ_FLAGS)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise CacheRefusedError(f"key file {path} is not a file owned by this user")
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise CacheRefusedError(f"key file {path} is readable by others (must be 0600)")
        key = f.read()
    if len(key) != _KEY_BYTES:
        raise CacheRefusedError(f"key file {path} does not hold a {_KEY_BYTES}-byte key")
    return key
