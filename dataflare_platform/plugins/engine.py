"""The process-wide wasmtime engines, the epoch ticker that enforces deadlines, and the
authenticated on-disk cache of compiled modules (``plugins.cache``).

One engine per fuel setting (fuel metering changes the generated code, so a module
compiled for one cannot run on the other); both have epoch interruption, so every call
is bounded in wall-clock time by a ticker thread, never by trusting the plugin."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import wasmtime

from dataflare_platform.plugins.cache import PluginCache, cache_key
from dataflare_platform.plugins.shape import ModuleRefusedError, ShapeLimits, check_module

TICK_MS = 2
"""Epoch period: deadlines are enforced with this granularity."""

COMPILE_TIMEOUT_S = 30.0
"""Wall-clock bound on compiling one module (in a child process, killed at the bound)."""
COMPILE_MEMORY_BYTES = 4 * 1024 * 1024 * 1024
"""Address-space bound of the compiling child (a compiler running away in memory)."""

# Proposals the ABI does not use are off: fewer features, less attack surface, and the
# memory limit holds per instance only if a module cannot define a second memory (wasmtime
# enables multi-memory by default). Kept: SIMD (the SDK builds with -msimd128), bulk
# memory and multi-value (clang emits them), reference types (wasmtime 50 aborts the
# process if it is off while its component-model-async default is on; a second table is
# refused by the shape check and the store limits instead). Order matters: a proposal is
# turned off before one it depends on.
FEATURES: dict[str, bool] = {
    "wasm_gc": False,
    "wasm_function_references": False,
    "wasm_exceptions": False,
    "wasm_stack_switching": False,
    "wasm_component_model": False,
    "wasm_threads": False,
    "shared_memory": False,
    "wasm_multi_memory": False,
    "wasm_memory64": False,
    "wasm_custom_page_sizes": False,
    "wasm_wide_arithmetic": False,
    "wasm_tail_call": False,
    "wasm_relaxed_simd": False,
    "wasm_simd": True,
    "wasm_bulk_memory": True,
    "wasm_multi_value": True,
    "wasm_reference_types": True,
}


def engine_settings(fuel: bool) -> dict[str, object]:
    """The engine configuration, as attribute -> value (the compiling child builds the
    same engine from it, so its artifact deserializes here)."""
    return {
        **FEATURES,
        "epoch_interruption": True,
        "consume_fuel": fuel,
        "cranelift_opt_level": "speed",
    }


_lock = threading.Lock()
_engines: dict[bool, wasmtime.Engine] = {}
_ticker: threading.Thread | None = None


def shared_engine(fuel: bool = False) -> wasmtime.Engine:
    """The shared engine (created once) and, on first use, the epoch ticker."""
    with _lock:
        engine = _engines.get(fuel)
        if engine is None:
            config = wasmtime.Config()
            for key, value in engine_settings(fuel).items():
                setattr(config, key, value)
            engine = _engines[fuel] = wasmtime.Engine(config)
        _ensure_ticker()
        return engine


def _ensure_ticker() -> None:
    global _ticker
    if _ticker is None or not _ticker.is_alive():
        _ticker = threading.Thread(target=_tick, name="df-wasm-epoch", daemon=True)
        _ticker.start()


def _after_fork_in_child() -> None:
    """Threads do not survive ``fork``: without this, a plugin loaded before the fork
    (multiprocessing's default start method on Linux) would run in the child with no
    deadline at all. The lock is replaced too (the parent may have held it); plugins,
    caches and registries reset their own (``dataflare_platform.forks``)."""
    global _lock, _ticker
    _lock = threading.Lock()
    _ticker = None
    if _engines:
        _ensure_ticker()


os.register_at_fork(after_in_child=_after_fork_in_child)


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


def to_binary(source: bytes | str) -> bytes:
    """WASM bytes of ``source`` (WAT text is assembled; that is a parser, not a compiler)."""
    if isinstance(source, str):
        return wasmtime.wat2wasm(source)
    data = bytes(source)
    return data if data[:4] == b"\0asm" else wasmtime.wat2wasm(data.decode("utf-8", "replace"))


def compile_module(
    source: bytes | str,
    fuel: bool = False,
    cache_dir: Path | PluginCache | None = None,
    shape: ShapeLimits | None = None,
    timeout_s: float = COMPILE_TIMEOUT_S,
) -> wasmtime.Module:
    """Compile ``source`` (WASM bytes or WAT text) once: the native code is kept in an
    authenticated cache (``plugins.cache``) under a hash of the content, the wasmtime
    version and the engine settings. Only an artifact whose MAC verifies reaches
    ``Module.deserialize``; any other is discarded with a warning and the module is
    compiled again from ``source``, the bytes whose digest the caller verified.

    Before compiling, the module's shape is checked (``plugins.shape``: size, functions,
    locals, body size, one memory, one table); the compilation itself runs in a child
    process killed after ``timeout_s`` (nothing inside wasmtime can interrupt Cranelift),
    so a module built to make the compiler take minutes costs the caller at most that.
    Refusals are :class:`ModuleRefusedError` (``too_complex`` or ``abi``)."""
    engine = shared_engine(fuel)
    data = source.encode() if isinstance(source, str) else bytes(source)
    try:
        binary = to_binary(source)
    except wasmtime.WasmtimeError as err:
        raise ModuleRefusedError("abi", f"not a valid WASM module: {one_line(err)}") from None
    check_module(binary, shape)
    cache = cache_dir if isinstance(cache_dir, PluginCache) else plugin_cache(cache_dir)
    key = cache_key(data, fuel)
    artifact = cache.get(key)
    if artifact is not None:
        try:
            return wasmtime.Module.deserialize(engine, artifact)
        except wasmtime.WasmtimeError:
            cache.discard(key)  # authentic but stale (another wasmtime build): recompile
    artifact = compile_isolated(binary, fuel, timeout_s)
    module = wasmtime.Module.deserialize(engine, artifact)
    cache.put(key, artifact)
    return module


CHILD = Path(__file__).with_name("_compile_child.py")


def compile_isolated(binary: bytes, fuel: bool, timeout_s: float = COMPILE_TIMEOUT_S) -> bytes:
    """The serialized native code of ``binary``, compiled by a child process that is killed
    after ``timeout_s`` (and limited in CPU time and address space by itself)."""
    settings = {
        **engine_settings(fuel),
        "_cpu_s": int(timeout_s) + 5,
        "_memory_bytes": COMPILE_MEMORY_BYTES,
    }
    cmd = [sys.executable, "-I", str(CHILD), json.dumps(settings)]
    try:
        proc = subprocess.run(
            cmd, input=binary, capture_output=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise ModuleRefusedError(
            "too_complex",
            f"compiling the module took longer than {timeout_s:g} s; refused (simplify the"
            " module: fewer locals and smaller functions)",
        ) from None
    if proc.returncode == 3:
        message = one_line(proc.stderr.decode("utf-8", "replace"))
        raise ModuleRefusedError("abi", f"not a valid WASM module: {message}")
    if proc.returncode != 0:
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"status {proc.returncode}"
        raise ModuleRefusedError(
            "too_complex",
            f"the compiler ran out of its CPU or memory budget ({how}); refused",
        )
    return proc.stdout


def one_line(err: BaseException | str) -> str:
    """A wasmtime message on one line: what follows ``Caused by:`` (the cause chain,
    joined with ``; ``) without wasmtime's indentation and without the backtrace frames
    (they name no source); a message without a cause chain is its lines joined."""
    lines = [ln.strip() for ln in str(err).splitlines()]
    head = ""
    if "Caused by:" in lines:
        if lines[0] and not lines[0].endswith("wasm backtrace:"):
            head = lines[0] + ": "
        lines = lines[lines.index("Caused by:") + 1 :]
    kept = [
        ln
        for ln in lines
        if ln
        and not ln.endswith("wasm backtrace:")
        and not re.match(r"^\d+:\s+0x[0-9a-f]+ - ", ln)
        and not ln.startswith("note: using the `WASMTIME_BACKTRACE_DETAILS")
    ]
    return head + "; ".join(kept) if kept else " ".join(str(err).split())
