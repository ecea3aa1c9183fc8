"""The process-wide wasmtime engines, the epoch ticker that enforces deadlines, and the
on-disk cache of compiled modules.

One engine per fuel setting (fuel metering changes the generated code, so a module
compiled for one cannot run on the other); both have epoch interruption, so every call
is bounded in wall-clock time by a ticker thread, never by trusting the plugin."""

from __future__ import annotations

import hashlib
import importlib.metadata
import threading
import time
from pathlib import Path

import wasmtime

_WASMTIME_VERSION = importlib.metadata.version("wasmtime")

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
    return Path.home() / ".cache" / "dataflare" / "plugins"


def compile_module(
    source: bytes | str, fuel: bool = False, cache_dir: Path | None = None
) -> wasmtime.Module:
    """Compile ``source`` (WASM bytes or WAT text) once: the native code is kept on disk
    under a hash of the content, the wasmtime version and the engine settings. The cache
    directory is host-owned; deserialising trusts it, so it must not be user-writable."""
    engine = shared_engine(fuel)
    data = source.encode() if isinstance(source, str) else bytes(source)
    key = hashlib.sha256(data + f"|{_WASMTIME_VERSION}|fuel={fuel}".encode()).hexdigest()
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cached = cache_dir / f"{key}.cwasm"
    if cached.exists():
        try:
            return wasmtime.Module.deserialize_file(engine, str(cached))
        except wasmtime.WasmtimeError:
            cached.unlink(missing_ok=True)  # stale or truncated: recompile below
    module = wasmtime.Module(engine, data)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{threading.get_ident()}.tmp")
    tmp.write_bytes(module.serialize())
    tmp.replace(cached)  # atomic: concurrent loaders never see a half-written file
    return module
