"""The process-wide wasmtime engines, the epoch ticker that enforces deadlines, and the
authenticated on-disk cache of compiled modules (``plugins.cache``).

One engine per fuel setting (fuel metering changes the generated code, so a module
compiled for one cannot run on the other); both have epoch interruption, so every call
is bounded in wall-clock time by a ticker thread, never by trusting the plugin."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import wasmtime

from dataflare_platform.plugins.cache import PluginCache, cache_key

TICK_MS = 2
"""Epoch period: deadlines are enforced with this granularity."""

_lock = threading.Lock()
_engines: dict[bool, wasmtime.Engine] = {}
_ticker: threading.Thread | None = None


def shared_engine(fuel: bool = False) -> wasmtime.Engine:
    """The shared engine (created once) and, on first use, the epoch ticker."""
    global _ticker
    with _lock:
        engine = _engines.get(fuel)
        if engine is None:
            config = wasmtime.Config()
            config.epoch_interruption = True
            config.consume_fuel = fuel
            config.cranelift_opt_level = "speed"
            engine = _engines[fuel] = wasmtime.Engine(config)
        if _ticker is None:
            _ticker = threading.Thread(target=_tick, name="df-wasm-epoch", daemon=True)
            _ticker.start()
        return engine


def _tick() -> None:
    # ctypes releases the GIL while WASM runs, so this thread keeps ticking during a call.
    while True:
        time.sleep(TICK_MS / 1000)
        for engine in list(_engines.values()):
            engine.increment_epoch()


def deadline_ticks(deadline_ms: float) -> int:
    """Epoch ticks that cover at least ``deadline_ms`` (one extra for the partial tick)."""
    return max(1, int(-(-deadline_ms // TICK_MS))) + 1


def default_cache_dir() -> Path:
    """Where compiled modules go when no cache is given (library and CLI use): the user's
    own cache folder, made 0700 (``plugins.cache``). Deployments pass the home's."""
    return Path.home() / ".cache" / "dataflare" / "plugins"


_caches: dict[tuple[Path, Path | None], PluginCache] = {}


def plugin_cache(cache_dir: Path | None = None, key_file: Path | None = None) -> PluginCache:
    """The (process-wide, one per folder) authenticated cache of ``cache_dir``."""
    directory = Path(cache_dir) if cache_dir else default_cache_dir()
    with _lock:
        cache = _caches.get((directory, key_file))
        if cache is None:
            cache = _caches[(directory, key_file)] = PluginCache(directory, key_file)
        return cache


def compile_module(
    source: bytes | str,
    fuel: bool = False,
    cache_dir: Path | PluginCache | None = None,
) -> wasmtime.Module:
    """Compile ``source`` (WASM bytes or WAT text) once: the native code is kept in an
    authenticated cache (``plugins.cache``) under a hash of the content, the wasmtime
    version and the engine settings. Only an artifact whose MAC verifies reaches
    ``Module.deserialize``; any other is discarded with a warning and the module is
    compiled again from ``source``, the bytes whose digest the caller verified."""
    engine = shared_engine(fuel)
    data = source.encode() if isinstance(source, str) else bytes(source)
    cache = cache_dir if isinstance(cache_dir, PluginCache) else plugin_cache(cache_dir)
    key = cache_key(data, fuel)
    artifact = cache.get(key)
    if artifact is not None:
        try:
            return wasmtime.Module.deserialize(engine, artifact)
        except wasmtime.WasmtimeError:
            cache.discard(key)  # authentic but stale (another wasmtime build): recompile
    module = wasmtime.Module(engine, data)
    cache.put(key, module.serialize())
    return module
