"""Run a WASM plugin over Polars batches inside a sandbox.

One call into WASM per batch (a call costs 12-44 us in wasmtime-py). Input columns are
copied into a host-owned arena in linear memory through a numpy view (grow-only, reused
across batches); outputs are validated against the memory bounds before a single byte is
read. Every failure becomes a :class:`PluginError`; after one, the instance is thrown away
and rebuilt, so the next batch starts from a clean state."""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl
import pyarrow as pa
import wasmtime

from dataflare_platform.errors import BatchRejectedError, InvalidInputError, WrongTypeError
from dataflare_platform.forks import reset_in_forked_child
from dataflare_platform.plugins import abi
from dataflare_platform.plugins.cache import PluginCache
from dataflare_platform.plugins.engine import (
    compile_module,
    deadline_ticks,
    one_line,
    shared_engine,
)
from dataflare_platform.plugins.fastcall import I32Func, SignatureError
from dataflare_platform.plugins.manifest import ColumnSpec, Manifest
from dataflare_platform.plugins.shape import ModuleRefusedError

PAGE = 65536
LOG_CAP = 64 * 1024
STATE_MAGIC = b"DFPLUGST"
"""Checkpointed aggregate state: magic, u32 header length, JSON header naming the plugin
(name, version, module digest) and the state's own digest, then the state bytes."""


class PluginError(BatchRejectedError):
    """A plugin failed in a contained way. ``kind`` is one of: timeout, fuel, out_of_memory,
    trap, abi, abi_version, import, status, schema, init, quarantined, too_complex (the
    module's shape or its compilation exceeded a limit), state (a checkpointed state that
    does not belong to this plugin or does not decode)."""

    def __init__(self, kind: str, plugin: str, detail: str) -> None:
        self.kind, self.plugin, self.detail = kind, plugin, detail
        super().__init__(f"plugin {plugin}: {kind}: {detail}")


class UsageTap(Protocol):
    """Told of every call into the plugin (``plugins.usage.PluginUsage``)."""

    def record(self, seconds: float, rows: int, error_kind: str | None) -> None: ...


class BatchGate(Protocol):
    """Asked before every batch and told after it (``plugins.entitlements``)."""

    def before_batch(self, rows: int) -> None: ...

    def after_batch(self, rows: int) -> None: ...


# A PluginError kind that means a limit was hit -> the stat counting it.
_LIMIT_STATS = {"timeout": "deadline_hits", "fuel": "fuel_hits", "out_of_memory": "memory_hits"}


@dataclass(frozen=True)
class Limits:
    """Per-plugin sandbox limits; the defaults are safe for untrusted code."""

    deadline_ms: float = 1000.0
    memory_bytes: int = 256 * 1024 * 1024  # per instance: a module has at most one memory
    table_elements: int = 100_000  # per instance: table.grow beyond this returns -1
    fuel: int | None = None  # instructions-ish per call; None = no fuel metering
    max_failures: int = 3  # circuit breaker: this many failures ...
    failure_window_s: float = 60.0  # ... within this window ...
    quarantine_s: float = 300.0  # ... quarantine the plugin for this long
    pool_size: int = 1  # instances per plugin, i.e. calls that can run at once


@dataclass
class CircuitBreaker:
    """Quarantine a plugin that keeps failing, so a broken one stops costing every batch."""

    max_failures: int
    window_s: float
    quarantine_s: float
    failures: deque[float] = field(default_factory=deque)
    until: float = 0.0

    def check(self, plugin: str) -> None:
        now = time.monotonic()
        if now < self.until:
            raise PluginError("quarantined", plugin, f"quarantined for {self.until - now:.0f}s")
        if self.until:
            self.until = 0.0  # cool-down over: half-open, start counting afresh
            self.failures.clear()

    def record(self) -> bool:
        now = time.monotonic()
        self.failures.append(now)
        while self.failures and self.failures[0] < now - self.window_s:
            self.failures.popleft()
        if len(self.failures) >= self.max_failures:
            self.until = now + self.quarantine_s
            return True
        return False

    @property
    def quarantined(self) -> bool:
        return time.monotonic() < self.until


class Plugin:
    """A loaded plugin: ``map(table)`` / ``filter(table)``, and the engine's ``BatchPlugin``
    protocol (``__call__``, ``snapshot``, ``restore``) so ``Stream.plugin(p)`` runs it.

    ``columns`` binds manifest column names to table column names (default: same name).

    Thread-safe: each call checks an instance (its own ``Store`` and linear memory) out of
    a pool of up to ``pool_size`` (default ``limits.pool_size``), so up to that many calls
    run at once (wasmtime releases the GIL while WASM runs). The first instance is built at
    load, so a bad module is refused there; the others on demand. An aggregate has one
    instance: its state is a single sequence of updates (parallel partial aggregates are
    separate plugins combined with ``merge``)."""

    def __init__(
        self,
        manifest: Manifest,
        module: bytes | str,
        params: dict[str, Any] | None = None,
        limits: Limits | None = None,
        granted: Iterable[str] = (),
        columns: dict[str, str] | None = None,
        cache_dir: Path | PluginCache | None = None,
        pool_size: int | None = None,
    ) -> None:
        self.manifest = manifest
        self.name = manifest.name
        self.limits = limits or Limits()
        self.params = manifest.resolve_params(params)
        self.columns = dict(columns or {})
        self.logs = bytearray()  # the ``log`` capability's output, up to LOG_CAP bytes
        self.memory_at_failure = 0  # linear memory size when the last call failed
        self.stats: dict[str, int | float] = {
            "calls": 0,
            "rows": 0,
            "seconds": 0.0,
            "errors": 0,
            "log_bytes": 0,  # captured (see ``captured()``)
            "log_dropped_bytes": 0,  # written past the cap, not kept
            # Limits hit (error kinds timeout, fuel, out_of_memory), exported as metrics.
            "deadline_hits": 0,
            "fuel_hits": 0,
            "memory_hits": 0,
            "pool_waits": 0,  # calls that found every instance busy
            "pool_wait_seconds": 0.0,
            "restarts": 0,  # instances rebuilt after a failed call
        }
        # Optional per-batch hooks set by whoever loads the plugin (``plugins.usage``,
        # ``plugins.entitlements``): the runtime only calls them at batch boundaries, so a
        # batch in flight is never stopped by them and they cost nothing when unset.
        self.usage: UsageTap | None = None
        self.entitlement: BatchGate | None = None
        self.breaker = CircuitBreaker(
            self.limits.max_failures, self.limits.failure_window_s, self.limits.quarantine_s
        )
        size = self.limits.pool_size if pool_size is None else pool_size
        if size < 1:
            raise InvalidInputError(f"pool_size must be at least 1, got {size}")
        self.pool_size = 1 if manifest.kind == "aggregate" else size
        self._fuel = self.limits.fuel is not None
        self._deadline = deadline_ticks(self.limits.deadline_ms)
        self._in_codes = [abi.TYPE_CODES[c.type] for c in manifest.input]
        self._out_codes = [abi.TYPE_CODES[c.type] for c in manifest.output]
        self._zero_caps = [0] * len(manifest.output)
        self._replaces: set[str] | None = None
        self._state_len = manifest.state_bytes
        self._state: bytes | None = None  # aggregate: last committed state
        self._initial_state: bytes | None = None  # aggregate: what dataflare_agg_init made
        self._lock = threading.Lock()  # stats, breaker, logs
        self._link_lock = threading.Lock()
        self._engine = shared_engine(self._fuel)
        # What exactly was loaded, for the audit trail (the module, not its compiled cache).
        raw = module.encode() if isinstance(module, str) else bytes(module)
        self.sha256 = hashlib.sha256(raw).hexdigest()
        try:
            self._module = compile_module(module, self._fuel, cache_dir)
        except ModuleRefusedError as err:
            raise PluginError(err.kind, self.name, err.detail) from None
        except wasmtime.WasmtimeError as err:
            raise PluginError(
                "abi", self.name, f"not a valid WASM module: {one_line(err)}"
            ) from None
        self._linker = self._make_linker(set(granted))
        self._pool = _Pool(lambda: _Instance(self), self.pool_size, self._waited)
        reset_in_forked_child(self)

    def _after_fork(self) -> None:
        """In a forked child (``dataflare_platform.forks``): new locks, and an empty pool. Another
        thread of the parent may have been inside a call, holding a lock or an instance
        mid-call; the next call here builds a fresh instance, which starts from the last
        committed aggregate state (a batch in flight in the parent was never committed)."""
        self._lock = threading.Lock()
        self._link_lock = threading.Lock()
        self._pool.after_fork()

    def captured(self) -> bytes:
        """What the plugin wrote through the ``log`` capability so far (at most LOG_CAP
        bytes; ``stats["log_dropped_bytes"]`` counts what did not fit)."""
        with self._lock:
            return bytes(self.logs)

    def clear_captured(self) -> bytes:
        """``captured()``, and start capturing afresh (the cap applies again)."""
        with self._lock:
            out = bytes(self.logs)
            self.logs.clear()
            self.stats["log_bytes"] = 0
            return out

    # -- load --------------------------------------------------------------------------
    def _make_linker(self, granted: set[str]) -> wasmtime.Linker:
        allowed: set[tuple[str, str]] = set()
        for cap in self.manifest.capabilities:
            if cap in granted:
                allowed |= abi.CAPABILITY_IMPORTS.get(cap, set())
        for imp in self._module.imports:
            if (imp.module, imp.name) not in allowed:
                raise PluginError(
                    "import",
                    self.name,
                    f"module imports {imp.module}.{imp.name}, which no granted capability"
                    " provides; refused",
                )
        linker = wasmtime.Linker(self._engine)
        if ("dataflare", "log") in allowed:
            i32 = wasmtime.ValType.i32()
            linker.define_func(
                "dataflare", "log", wasmtime.FuncType([i32, i32], []), self._log, True
            )
        return linker

    def _log(self, caller: wasmtime.Caller, ptr: int, length: int) -> None:
        """The ``log`` capability: plugin output captured up to LOG_CAP bytes (the rest is
        counted in ``stats["log_dropped_bytes"]``); a bad pointer or length is ignored."""
        mem = caller.get("memory")
        if not isinstance(mem, wasmtime.Memory) or length <= 0:
            return
        if ptr < 0 or ptr + length > mem.data_len(caller):
            return
        with self._lock:
            keep = max(0, min(length, LOG_CAP - len(self.logs)))
            if keep:
                self.logs += mem.read(caller, ptr, ptr + keep)
            self.stats["log_bytes"] = len(self.logs)
            self.stats["log_dropped_bytes"] += length - keep

    # -- calls ---------------------------------------------------------------------------
    def _waited(self, seconds: float) -> None:
        """A call found every instance busy and waited ``seconds`` for one."""
        with self._lock:
            self.stats["pool_waits"] += 1
            self.stats["pool_wait_seconds"] += seconds

    def _guarded(self, table: pl.DataFrame, run: Any) -> Any:
        """``run(instance, table)`` on a checked-out instance; any failure is a
        ``PluginError``, counted by the breaker, and the instance is replaced."""
        with self._lock:
            self.breaker.check(self.name)
        gate = self.entitlement
        if gate is not None:
            gate.before_batch(table.height)  # a refusal here is a batch boundary
        t0 = time.perf_counter()
        inst: _Instance | None = None
        failed: str | None = None
        try:
            inst = self._pool.checkout()
            result = run(inst, table)
        except PluginError as err:
            failed = err.kind
            self._fail(inst, err.kind)
            raise err from None
        except Exception as err:  # a host-side bug in marshalling: still contained
            failed = "abi"
            self._fail(inst)
            raise PluginError("abi", self.name, f"{type(err).__name__}: {err}") from None
        except BaseException:  # e.g. KeyboardInterrupt mid-call: the instance is suspect
            if inst is not None:
                self._pool.discard(inst)
            raise
        else:
            self._pool.give_back(inst)
            return result
        finally:
            elapsed = time.perf_counter() - t0
            with self._lock:
                self.stats["calls"] += 1
                self.stats["rows"] += table.height
                self.stats["seconds"] += elapsed
            if gate is not None:
                gate.after_batch(table.height)
            tap = self.usage
            if tap is not None:
                tap.record(elapsed, table.height, failed)

    def _fail(self, inst: _Instance | None, kind: str = "abi") -> None:
        """Throw ``inst`` away (it may hold half-updated state) and build its replacement
        now, so the next batch starts clean; if even that fails, quarantine the plugin."""
        with self._lock:
            self.stats["errors"] += 1
            limit = _LIMIT_STATS.get(kind)
            if limit is not None:
                self.stats[limit] += 1
            self.breaker.record()
        if inst is None:  # building the instance itself failed
            return
        self._pool.discard(inst)
        try:
            self._pool.add(_Instance(self))
            with self._lock:
                self.stats["restarts"] += 1
        except PluginError:
            with self._lock:
                self.breaker.until = time.monotonic() + self.limits.quarantine_s

    # -- public API ---------------------------------------------------------------------
    def map(self, table: pl.DataFrame) -> pl.DataFrame:
        """``table`` with the plugin's output columns added or replaced."""
        self._need_kind("map")
        return self._guarded(table, _Instance.map)

    def filter(self, table: pl.DataFrame) -> pl.Series:
        """A boolean mask: True for the rows the plugin keeps."""
        self._need_kind("filter")
        return self._guarded(table, _Instance.filter)

    def update(self, table: pl.DataFrame) -> None:
        """Fold ``table`` into the aggregate's state. On failure the state stays what it
        was before this batch (the host keeps the last committed copy)."""
        self._need_kind("aggregate")
        self._guarded(table, _Instance.update)

    def result(self) -> pl.DataFrame:
        """The aggregate's current answer (``dataflare_agg_finalize``; state unchanged)."""
        self._need_kind("aggregate")
        return self._guarded(pl.DataFrame(), lambda inst, _: inst.finalize())

    def merge(self, state: bytes) -> None:
        """Merge another instance's state (its ``snapshot()``, e.g. from a parallel worker
        running the same plugin) into this one."""
        self._need_kind("aggregate")
        raw = self._open_state(state, "state to merge")
        self._guarded(pl.DataFrame(), lambda inst, _: inst.merge(raw))

    def reset(self) -> None:
        """Back to the empty aggregate state."""
        self._need_kind("aggregate")
        inst = self._pool.checkout()
        self._pool.discard(inst)
        self._state = None
        self._pool.add(_Instance(self))

    def __call__(self, batch: pl.DataFrame) -> pl.DataFrame:
        kind = self.manifest.kind
        if kind == "map":
            return self.map(batch)
        if kind == "filter":
            return batch.filter(self.filter(batch))
        # aggregate: emit the running answer after every batch. Update and finalize are
        # one unit: if finalize fails after update committed, the state goes back to what
        # it was before the batch (the batch is dead-lettered; a redrive counts it once).
        before = self._state
        try:
            self.update(batch)
            return self.result()
        except BatchRejectedError:
            if self._state != before:
                self._put_state(before)
            raise

    # -- states held by the caller (one per window and key) --------------------------------
    def fold(self, state: bytes | None, table: pl.DataFrame) -> bytes:
        """The raw aggregate state ``state`` (None: the empty aggregate) with ``table``
        folded in. The plugin's own running state is left as it was: one loaded plugin
        serves the states of many groups (a window operator's panes and keys), which
        the caller holds. A failure raises ``PluginError`` and changes no state."""
        self._need_kind("aggregate")
        with self._holding(state):
            self.update(table)
            return self._committed()

    def combine(self, states: list[bytes]) -> bytes:
        """One raw state that is the merge (``dataflare_agg_merge``) of ``states``: the
        panes of a sliding window, or partial states of parallel workers."""
        self._need_kind("aggregate")
        if not states:
            return self._committed(self._initial_state)
        with self._holding(states[0]):
            for other in states[1:]:
                raw = bytes(other)
                self._guarded(pl.DataFrame(), lambda inst, _, raw=raw: inst.merge(raw))
            return self._committed()

    def finish(self, state: bytes) -> pl.DataFrame:
        """The answer (``dataflare_agg_finalize``) for the raw state ``state``."""
        self._need_kind("aggregate")
        with self._holding(state):
            return self.result()

    def seal(self, state: bytes) -> bytes:
        """``state`` in the checkpoint envelope of ``snapshot`` (this plugin's identity
        and the state's digest), for an operator that checkpoints states it holds."""
        with self._holding(state):
            return self.snapshot()

    def unseal(self, blob: bytes) -> bytes:
        """The raw state inside a ``seal``/``snapshot`` envelope, refused (``PluginError``
        of kind ``state``) if another plugin, version or module wrote it or it is damaged."""
        return self._open_state(blob, "checkpointed state")

    @contextlib.contextmanager
    def _holding(self, state: bytes | None) -> Iterator[None]:
        before = self._state
        self._put_state(self._committed(self._initial_state if state is None else state))
        try:
            yield
        finally:
            self._put_state(before)

    def _committed(self, state: bytes | None = None) -> bytes:
        chosen = self._state if state is None else state
        if chosen is None:
            chosen = self._initial_state
        if chosen is None:
            raise PluginError("state", self.name, "the aggregate has no initial state")
        return bytes(chosen)

    def savepoint(self) -> bytes | None:
        """The committed aggregate state as it is now (None: fresh, or a stateless kind),
        for ``rollback`` when a later step of the same pipeline batch fails: the engine
        then dead-letters the batch and this plugin must not count it either."""
        return self._state

    def rollback(self, saved: bytes | None) -> None:
        """Back to the state ``savepoint`` returned (a no-op when nothing changed)."""
        if self.manifest.kind == "aggregate" and self._state != saved:
            self._put_state(saved)

    def state(self) -> bytes:
        """The aggregate's raw state bytes (host-owned); b"" for map/filter."""
        return bytes(self._state) if self._state is not None else b""

    def snapshot(self) -> bytes:
        """The aggregate's state for a checkpoint, tied to this plugin: an envelope naming
        the plugin, its version and module digest, with the state's own digest (so a
        restore can refuse state written by another plugin or version, or damaged);
        b"" for the stateless map/filter kinds."""
        if self._state is None:
            return b""
        header = json.dumps(
            {
                "plugin": self.name,
                "version": self.manifest.version,
                "module_sha256": self.sha256,
                "state_bytes": len(self._state),
                "state_sha256": hashlib.sha256(self._state).hexdigest(),
            },
            separators=(",", ":"),
        ).encode()
        return STATE_MAGIC + struct.pack("<I", len(header)) + header + self._state

    def restore(self, state: bytes) -> None:
        """Continue from a checkpoint's ``snapshot()``. Refused (``PluginError`` of kind
        ``state``, naming the state and what to do) if it was written by another plugin,
        version or module, is damaged, or does not decode: finalize must accept it."""
        if self.manifest.kind != "aggregate":
            return None
        raw = self._open_state(state, "checkpointed state")
        previous = self._state
        try:
            self._put_state(raw)
            self._guarded(pl.DataFrame(), lambda inst, _: inst.finalize())
        except PluginError as err:
            self._put_state(previous)
            raise PluginError(
                "state",
                self.name,
                f"checkpointed state ({len(raw)} bytes) does not decode: {err.kind}: "
                f"{err.detail}; {_STATE_ADVICE}",
            ) from None
        return None

    def _open_state(self, blob: bytes, what: str) -> bytes:
        """The raw state inside ``blob`` (a ``snapshot()``), after checking it belongs to
        this plugin, version and module and is intact."""
        blob = bytes(blob)
        if not blob.startswith(STATE_MAGIC) or len(blob) < len(STATE_MAGIC) + 4:
            raise PluginError(
                "state",
                self.name,
                f"{what} ({len(blob)} bytes) carries no plugin identity (written before"
                f" states were tied to their plugin, or not a plugin state); {_STATE_ADVICE}",
            )
        at = len(STATE_MAGIC)
        (n,) = struct.unpack_from("<I", blob, at)
        try:
            header = json.loads(blob[at + 4 : at + 4 + n])
            raw = blob[at + 4 + n :]
            written = (
                f"{header['plugin']} {header['version']} (module {header['module_sha256'][:12]})"
            )
            ok_digest = hashlib.sha256(raw).hexdigest() == header["state_sha256"]
        except (ValueError, KeyError, TypeError, IndexError):
            raise PluginError(
                "state", self.name, f"{what} has a damaged identity header; {_STATE_ADVICE}"
            ) from None
        here = f"{self.name} {self.manifest.version} (module {self.sha256[:12]})"
        if (header["plugin"], header["version"], header["module_sha256"]) != (
            self.name,
            self.manifest.version,
            self.sha256,
        ):
            raise PluginError(
                "state",
                self.name,
                f"{what} was written by plugin {written}, this is {here}; {_STATE_ADVICE}",
            )
        if not ok_digest or len(raw) != self._state_len:
            raise PluginError(
                "state",
                self.name,
                f"{what} is damaged (its bytes do not match the digest recorded with it,"
                f" or it is not {self._state_len} bytes); {_STATE_ADVICE}",
            )
        return raw

    def _put_state(self, state: bytes | None) -> None:
        """Make ``state`` (None: a fresh aggregate) the committed state of the instance."""
        inst = self._pool.checkout()
        if state is None:
            self._pool.discard(inst)
            self._state = None
            self._pool.add(_Instance(self))
            return
        try:
            self._state = bytes(state)
            inst.write_state(self._state)
        finally:
            self._pool.give_back(inst)

    @property
    def quarantined(self) -> bool:
        return self.breaker.quarantined

    def _need_kind(self, kind: str) -> None:
        if self.manifest.kind != kind:
            raise WrongTypeError(f"plugin {self.name} is a {self.manifest.kind} plugin, not {kind}")


def state_identity(blob: bytes) -> dict[str, object] | None:
    """The identity a checkpointed plugin state carries (plugin, version, module and
    state digests, size), or None if it carries none or it does not decode: for audit
    entries and messages about a state, never the state's bytes."""
    blob = bytes(blob)
    if not blob.startswith(STATE_MAGIC) or len(blob) < len(STATE_MAGIC) + 4:
        return None
    (n,) = struct.unpack_from("<I", blob, len(STATE_MAGIC))
    try:
        header = json.loads(blob[len(STATE_MAGIC) + 4 : len(STATE_MAGIC) + 4 + n])
    except ValueError:
        return None
    if not isinstance(header, dict):
        return None
    keys = ("plugin", "version", "module_sha256", "state_bytes", "state_sha256")
    return {k: header[k] for k in keys if isinstance(header.get(k), str | int)}


_STATE_ADVICE = (
    "reset the plugin's state (`dataflare pipeline reset-state PIPELINE_FILE --step STEP"
    " --yes` drops only this step's state, keeping the offsets and the other steps') or"
    " migrate it with the plugin version that wrote it"
)


class _Pool:
    """Up to ``size`` instances: idle ones are handed out (most recently used first, its
    memory is warm), a new one is built while fewer than ``size`` exist, otherwise a caller
    waits for one to come back (``waited(seconds)`` is told; the wait is timed only when
    it happens). Instances are built outside the lock (that takes ms)."""

    def __init__(self, make: Any, size: int, waited: Any = None) -> None:
        self._make, self.size = make, size
        self._waited = waited
        self._cond = threading.Condition()
        self._idle: list[_Instance] = [make()]
        self.live = 1

    def checkout(self) -> _Instance:
        with self._cond:
            if not self._idle and self.live >= self.size:
                t0 = time.perf_counter()
                while not self._idle and self.live >= self.size:
                    self._cond.wait()
                if self._waited is not None:
                    self._waited(time.perf_counter() - t0)
            if self._idle:
                return self._idle.pop()
            self.live += 1
        try:
            return self._make()
        except BaseException:
            with self._cond:
                self.live -= 1
                self._cond.notify()
            raise

    def after_fork(self) -> None:
        """In a forked child: a new condition (its lock may have been held) and no
        instances; the parent's threads are gone and one may have left an instance
        mid-call, so none is reused and the next checkout builds one."""
        self._cond = threading.Condition()
        self._idle = []
        self.live = 0

    def give_back(self, inst: _Instance) -> None:
        with self._cond:
            self._idle.append(inst)
            self._cond.notify()

    def discard(self, inst: _Instance) -> None:
        with self._cond:
            self.live -= 1
            self._cond.notify()

    def add(self, inst: _Instance) -> None:
        """A replacement built by the caller; dropped if the pool has filled meanwhile."""
        with self._cond:
            if self.live < self.size:
                self.live += 1
                self._idle.append(inst)
                self._cond.notify()


class _Instance:
    """One store + instance + host arena, used by one thread at a time (the pool ensures
    it). All marshalling lives here; the shared settings are on the owning ``Plugin``."""

    def __init__(self, plugin: Plugin) -> None:
        """A fresh store + instance, ABI checked and params passed: used at load and after
        any failure, so a plugin that trapped midway never sees its half-updated state.
        An aggregate gets its last committed state back (or a fresh one)."""
        self.p = plugin
        store = wasmtime.Store(plugin._engine)
        # Per instance, not per memory or table: one instance, one memory, one table (the
        # shape check refuses more before compiling; this holds even if it did not), the
        # table capped in elements so table.grow cannot allocate host memory unbounded.
        store.set_limits(
            memory_size=self.p.limits.memory_bytes,
            table_elements=self.p.limits.table_elements,
            instances=1,
            tables=1,
            memories=1,
        )
        self._store = store
        self._memory = None
        self._mem_len = -1
        self._phase: str | None = (
            "instantiation (data and element segments, then the module's start function)"
        )
        self._arm()
        try:
            with plugin._link_lock:  # instantiation is rare: keep the linker single-user
                inst = plugin._linker.instantiate(store, plugin._module)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as err:
            raise self._at_load(self._classify(err)) from None
        exports = inst.exports(store)

        def need(name: str, kind: type) -> Any:
            item = exports.get(name) if hasattr(exports, "get") else None
            if not isinstance(item, kind):
                raise PluginError("abi", self.p.name, f"missing export {name!r}")
            return item

        def bind(name: str, nparams: int, nresults: int = 1) -> I32Func:
            try:
                return I32Func(store, need(name, wasmtime.Func), nparams, nresults)
            except SignatureError as err:
                raise PluginError("abi", self.p.name, f"export {name!r}: {err}") from None

        self._memory = need("memory", wasmtime.Memory)
        self._refresh()
        top = self._memory.type(store).limits.max
        if top is not None and top * PAGE < 2 * PAGE:
            # the host arena alone takes a page, beside the module's own data and stack
            self._module_max_too_small(PAGE)
        self._phase = abi.EXPORT_VERSION
        version = self._call(bind(abi.EXPORT_VERSION, 0))
        if version != abi.ABI_VERSION:
            raise PluginError(
                "abi_version", self.p.name, f"module speaks ABI {version}, host speaks 1"
            )
        self._alloc = bind(abi.EXPORT_ALLOC, 1)
        kind = self.p.manifest.kind
        self._entry = bind(abi.ENTRY_POINTS[kind], 3) if kind != "aggregate" else None
        self._arena_ptr, self._arena_cap = 0, 0
        if isinstance(exports.get(abi.EXPORT_INIT), wasmtime.Func):
            self._phase = abi.EXPORT_INIT
            payload = json.dumps(self.p.params, separators=(",", ":")).encode()
            ptr = self._reserve(len(payload) + 1)
            self._mv[ptr : ptr + len(payload)] = np.frombuffer(payload, np.uint8)
            status = self._call(bind(abi.EXPORT_INIT, 2), ptr, len(payload))
            if status != abi.STATUS_OK:
                raise PluginError("init", self.p.name, f"dataflare_init returned {status}")
        if kind == "aggregate":
            self._agg_init = bind(abi.EXPORT_AGG_INIT, 2)
            self._agg_update = bind(abi.EXPORT_AGG_UPDATE, 3)
            self._agg_merge = bind(abi.EXPORT_AGG_MERGE, 2)
            self._agg_finalize = bind(abi.EXPORT_AGG_FINALIZE, 3)
            self._phase = abi.EXPORT_AGG_INIT
            self._state_ptr = self._allocate(self.p._state_len)
            self._arena_ptr, self._arena_cap = 0, 0  # the arena starts after the state
            if self.p._state is None:
                self._agg_status(self._agg_init, "init", self._state_ptr, self.p._state_len)
                self.p._state = self._read_state()
                if self.p._initial_state is None:
                    self.p._initial_state = self.p._state
            else:
                self.write_state(self.p._state)
        self._phase = None

    def _at_load(self, err: PluginError) -> PluginError:
        """``err`` naming the load phase it happened in (start function, init, ...)."""
        if self._phase is None:
            return err
        return PluginError(err.kind, err.plugin, f"at load, in {self._phase}: {err.detail}")

    # -- calls ---------------------------------------------------------------------------
    def _arm(self) -> None:
        self._store.set_epoch_deadline(self.p._deadline)
        if self.p._fuel:
            self._store.set_fuel(int(self.p.limits.fuel or 0))

    def _call(self, fn: I32Func, *args: int) -> Any:
        self._arm()
        try:
            result = fn(*args)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as err:
            raise self._at_load(self._classify(err)) from None
        self._refresh()
        return result

    def _refresh(self) -> None:
        """Keep the numpy views of linear memory current: memory only grows inside a call,
        so one ``data_len`` after each call tells whether the views must be re-taken."""
        size = self._memory.data_len(self._store)
        if size != self._mem_len:
            self._mv = np.frombuffer(self._memory.get_buffer_ptr(self._store), np.uint8)
            self._mv32 = self._mv[: size - size % 4].view(np.uint32)
            self._mem_len = size

    def _classify(self, err: Exception) -> PluginError:
        code = getattr(err, "trap_code", None)
        if code == wasmtime.TrapCode.INTERRUPT:
            return PluginError("timeout", self.p.name, f"exceeded {self.p.limits.deadline_ms} ms")
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            return PluginError("fuel", self.p.name, f"exceeded {self.p.limits.fuel} fuel")
        if self._near_memory_limit():
            return PluginError(
                "out_of_memory",
                self.p.name,
                f"hit {self.p.limits.memory_bytes} bytes: {one_line(err)}",
            )
        what = code.name.lower() if code is not None else "error"
        return PluginError("trap", self.p.name, f"{what}: {one_line(err)}")

    def _near_memory_limit(self) -> bool:
        mem = getattr(self, "_memory", None)
        if mem is None:
            return False
        self.p.memory_at_failure = mem.data_len(self._store)
        # memory.grow past the limit returns -1 rather than trapping, so a trap with memory
        # (nearly) at the limit is read as out-of-memory; the slack covers coarse growth.
        slack = max(PAGE, self.p.limits.memory_bytes // 8)
        return mem.data_len(self._store) + slack > self.p.limits.memory_bytes

    def _view(self) -> np.ndarray:
        """A numpy view of linear memory (current after every call)."""
        return self._mv

    def _allocate(self, nbytes: int) -> int:
        ptr = self._call(self._alloc, nbytes)
        if not isinstance(ptr, int) or ptr <= 0 or ptr + nbytes > self._mem_len:
            self._module_max_too_small(nbytes)
            if self._near_memory_limit() or ptr == 0:
                raise PluginError("out_of_memory", self.p.name, f"could not allocate {nbytes}")
            raise PluginError("abi", self.p.name, f"dataflare_alloc returned bad {ptr!r}")
        return ptr

    def _module_max_too_small(self, nbytes: int) -> None:
        """A module whose own memory maximum leaves no room for the host's arena can never
        run: say so, and what it needs (raising the host's limit would not help)."""
        top = self._memory.type(self._store).limits.max
        if top is None or (self._mem_len + nbytes <= top * PAGE and top > 1):
            return
        need = -(-(self._mem_len + nbytes) // PAGE)
        raise PluginError(
            "abi",
            self.p.name,
            f"the module caps its memory at {top} page{'s' * (top != 1)} ({top * PAGE} bytes)"
            " and cannot give"
            f" the host the {nbytes} bytes its arena needs (at least {PAGE} bytes, one page):"
            f" declare a memory maximum of at least {need} pages, or none, in the module",
        )

    def _reserve(self, nbytes: int) -> int:
        """The host arena, at least ``nbytes``: reused across batches, grown by doubling."""
        if nbytes > self._arena_cap:
            cap = max(abi.align(nbytes, PAGE), 2 * self._arena_cap, PAGE)
            if cap > self.p.limits.memory_bytes:
                raise PluginError(
                    "out_of_memory", self.p.name, f"batch needs {cap} bytes of plugin memory"
                )
            self._arena_ptr, self._arena_cap = self._allocate(cap), cap
        return self._arena_ptr

    # -- marshalling ----------------------------------------------------------------------
    def _column(self, spec: ColumnSpec) -> str:
        return self.p.columns.get(spec.name, spec.name)

    def _inputs(self, table: pl.DataFrame) -> list[_Parts]:
        """Per input column: (validity bitmap | None, values bytes, utf8 data | None), as
        numpy views of the table's own buffers where possible (no copy)."""
        parts: list[_Parts] = []
        for spec in self.p.manifest.input:
            col = self._column(spec)
            try:
                series = table.get_column(col)
            except pl.exceptions.ColumnNotFoundError:
                raise PluginError("schema", self.p.name, f"input column {col!r} missing") from None
            fixed = spec.type != "utf8" and series.dtype == abi.POLARS_TYPES[spec.type]
            if fixed and not series.has_nulls():  # the common case: a zero-copy numpy view
                parts.append((None, series.to_numpy().view(np.uint8), None))
                continue
            if spec.type == "utf8" and series.dtype == pl.String:
                # Polars keeps strings as views; exporting those is zero-copy and Arrow's
                # view -> offsets cast is cheaper than Polars' own large_string export
                arr = series.to_arrow(compat_level=pl.CompatLevel.newest())
            else:
                arr = series.to_arrow()
            parts.append(self._arrow_parts(spec, arr, col))
        return parts

    def _arrow_parts(self, spec: ColumnSpec, arr: pa.Array, col: str) -> _Parts:
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        target = abi.ARROW_TYPES[spec.type]
        if arr.type != target:
            try:
                arr = arr.cast(target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise PluginError(
                    "schema", self.p.name, f"column {col!r} is not {spec.type}: {err}"
                ) from None
        n = len(arr)
        validity = abi.validity_bytes(arr)
        bufs = arr.buffers()
        if spec.type == "utf8":
            offsets = np.frombuffer(bufs[1], np.int32)[arr.offset : arr.offset + n + 1]
            lo = int(offsets[0]) if n else 0
            hi = int(offsets[-1]) if n else 0
            data = np.frombuffer(bufs[2], np.uint8)[lo:hi] if bufs[2] is not None else _EMPTY
            return validity, (offsets - np.int32(lo)).view(np.uint8), data
        w = abi.WIDTHS[spec.type]
        return (
            validity,
            np.frombuffer(bufs[1], np.uint8)[arr.offset * w : (arr.offset + n) * w],
            None,
        )

    def _write_inputs(self, parts: list[_Parts], extra: int) -> tuple[int, int]:
        """Lay out descriptors + input buffers (+ ``extra`` bytes for outputs) in the arena,
        writing straight through the memory view; returns (input descriptor address, first
        free address)."""
        align = abi.align
        head = align(abi.DESC_BYTES * len(parts))
        size = head
        for validity, values, data in parts:
            size += align(values.nbytes)
            if validity is not None:
                size += align(validity.nbytes)
            if data is not None:
                size += align(data.nbytes)
        base = self._reserve(size + extra)
        mv, mv32 = self._mv, self._mv32
        cursor = base + head
        for i, (validity, values, data) in enumerate(parts):
            d = (base >> 2) + i * abi.DESC_FIELDS
            mv32[d : d + abi.DESC_FIELDS] = 0
            mv32[d + abi.F_TYPE] = self.p._in_codes[i]
            if validity is not None:
                mv[cursor : cursor + validity.nbytes] = validity
                mv32[d + abi.F_VALIDITY] = cursor
                cursor += align(validity.nbytes)
            mv[cursor : cursor + values.nbytes] = values
            mv32[d + abi.F_VALUES] = cursor
            mv32[d + abi.F_VALUES_LEN] = values.nbytes
            cursor += align(values.nbytes)
            if data is not None:
                mv[cursor : cursor + data.nbytes] = data
                mv32[d + abi.F_DATA] = cursor
                mv32[d + abi.F_DATA_LEN] = mv32[d + abi.F_DATA_CAP] = data.nbytes
                cursor += align(data.nbytes)
        return base, cursor

    def _out_bytes(self, rows: int, caps: list[int]) -> int:
        size = abi.align(abi.DESC_BYTES * len(self.p.manifest.output))
        for code, cap in zip(self.p._out_codes, caps, strict=True):
            width = 4 * (rows + 1) if code == abi.UTF8 else abi.CODE_WIDTHS[code] * rows
            size += abi.align(abi.bitmap_bytes(rows)) + abi.align(width) + abi.align(cap)
        return size

    def _prepare_outputs(self, at: int, rows: int, caps: list[int]) -> None:
        """Pre-fill the output descriptors at ``at``: an all-valid bitmap, a values buffer
        of the right size and, for utf8, ``cap`` bytes of data."""
        mv, mv32, align = self._mv, self._mv32, abi.align
        cursor = at + align(abi.DESC_BYTES * len(self.p._out_codes))
        nbm = abi.bitmap_bytes(rows)
        for i, (code, cap) in enumerate(zip(self.p._out_codes, caps, strict=True)):
            d = (at >> 2) + i * abi.DESC_FIELDS
            mv32[d : d + abi.DESC_FIELDS] = 0
            mv32[d + abi.F_TYPE] = code
            mv32[d + abi.F_VALIDITY] = cursor
            mv[cursor : cursor + nbm] = 0xFF  # all valid unless the plugin says so
            cursor += align(nbm)
            width = 4 * (rows + 1) if code == abi.UTF8 else abi.CODE_WIDTHS[code] * rows
            mv32[d + abi.F_VALUES], mv32[d + abi.F_VALUES_LEN] = cursor, width
            cursor += align(width)
            if code == abi.UTF8:
                mv32[d + abi.F_DATA], mv32[d + abi.F_DATA_CAP] = cursor, cap
                cursor += align(cap)

    def _read_descs(self, at: int) -> np.ndarray:
        d = at >> 2
        return (
            self._mv32[d : d + abi.DESC_FIELDS * len(self.p._out_codes)]
            .reshape(-1, abi.DESC_FIELDS)
            .copy()
        )

    def map(self, table: pl.DataFrame) -> pl.DataFrame:
        n = table.height
        outs = self.p.manifest.output
        if n == 0:
            return table.with_columns(
                pl.Series(self._column(s), pa.array([], abi.ARROW_TYPES[s.type])) for s in outs
            )
        parts = self._inputs(table)
        in_utf8 = sum(p[2].nbytes for p in parts if p[2] is not None)
        caps = [in_utf8 + in_utf8 // 4 + 256 if c == abi.UTF8 else 0 for c in self.p._out_codes]
        for _attempt in range(3):
            in_desc, out_desc = self._write_inputs(parts, self._out_bytes(n, caps))
            self._prepare_outputs(out_desc, n, caps)
            status = self._call(self._entry, in_desc, n, out_desc)
            result = self._read_descs(out_desc)
            if status == abi.STATUS_NEED_MORE:
                grown = False
                for i, code in enumerate(self.p._out_codes):
                    need = int(result[i, abi.F_DATA_LEN])
                    if code == abi.UTF8 and need > caps[i]:
                        if need > self.p.limits.memory_bytes:
                            raise PluginError("abi", self.p.name, f"asks for {need} output bytes")
                        caps[i], grown = abi.align(need), True
                if not grown:
                    raise PluginError("abi", self.p.name, "NEED_MORE without a larger data_len")
                continue
            if status != abi.STATUS_OK:
                raise PluginError("status", self.p.name, f"dataflare_map returned {status}")
            series = [self._read_output(spec, result[i], n) for i, spec in enumerate(outs)]
            if self.p._replaces is None:
                self.p._replaces = {self._column(s) for s in outs}
            if self.p._replaces.isdisjoint(table.columns):
                return table.hstack(series)
            return table.with_columns(series)
        raise PluginError("abi", self.p.name, "output capacity still too small after 3 tries")

    def _span(self, ptr: int, nbytes: int, what: str) -> pa.Buffer:
        """``memory[ptr:ptr+nbytes]`` copied out, after checking it lies inside memory, into
        a buffer from Arrow's pool (which recycles memory: a fresh numpy array per batch
        would page-fault on every output)."""
        if ptr <= 0 or nbytes < 0 or ptr + nbytes > self._mem_len:
            raise PluginError(
                "abi",
                self.p.name,
                f"{what} [{ptr}, {ptr + nbytes}) outside linear memory ({self._mem_len} bytes)",
            )
        buf = pa.allocate_buffer(nbytes)
        np.frombuffer(buf, np.uint8)[:] = self._mv[ptr : ptr + nbytes]
        return buf

    def _read_output(self, spec: ColumnSpec, d: np.ndarray, n: int) -> pl.Series:
        name = self._column(spec)
        if int(d[abi.F_TYPE]) != abi.TYPE_CODES[spec.type]:
            raise PluginError("abi", self.p.name, f"output {name!r} changed its type code")
        vptr = int(d[abi.F_VALIDITY])
        validity = self._span(vptr, abi.bitmap_bytes(n), f"{name} validity") if vptr else None
        if spec.type == "utf8":
            offsets_buf = self._span(int(d[abi.F_VALUES]), 4 * (n + 1), f"{name} offsets")
            offsets = np.frombuffer(offsets_buf, np.int32)
            data_len = int(d[abi.F_DATA_LEN])
            lo, hi = int(offsets[0]), int(offsets[-1])
            if lo < 0 or hi > data_len or np.any(offsets[1:] < offsets[:-1]):
                raise PluginError("abi", self.p.name, f"output {name!r} has invalid offsets")
            data = self._span(int(d[abi.F_DATA]) + lo, hi - lo, f"{name} data")
            if lo:
                offsets_buf = pa.py_buffer(offsets - np.int32(lo))
            # offsets are checked above; the bytes go in as binary and Polars' strict cast
            # validates the UTF-8 (invalid UTF-8 must never reach a String column)
            arr = pa.Array.from_buffers(pa.binary(), n, [validity, offsets_buf, data])
            try:
                return pl.Series(name, arr).cast(pl.String)
            except pl.exceptions.ComputeError as err:
                raise PluginError("abi", self.p.name, f"output {name!r}: {err}") from None
        else:
            nbytes = abi.WIDTHS[spec.type] * n
            values = self._span(int(d[abi.F_VALUES]), nbytes, f"{name} values")
            arr = pa.Array.from_buffers(abi.ARROW_TYPES[spec.type], n, [validity, values])
        return pl.Series(name, arr)

    def filter(self, table: pl.DataFrame) -> pl.Series:
        n = table.height
        if n == 0:
            return pl.Series("mask", [], pl.Boolean)
        in_desc, mask_ptr = self._write_inputs(self._inputs(table), abi.align(n))
        self._mv[mask_ptr : mask_ptr + n] = 0
        status = self._call(self._entry, in_desc, n, mask_ptr)
        if status != abi.STATUS_OK:
            raise PluginError("status", self.p.name, f"dataflare_filter returned {status}")
        return pl.Series("mask", self._mv[mask_ptr : mask_ptr + n] != 0)

    # -- aggregate ------------------------------------------------------------------------
    def _read_state(self) -> bytes:
        return self._mv[self._state_ptr : self._state_ptr + self.p._state_len].tobytes()

    def write_state(self, state: bytes) -> None:
        self._mv[self._state_ptr : self._state_ptr + self.p._state_len] = np.frombuffer(
            state, np.uint8
        )

    def _agg_status(self, fn: I32Func, what: str, *args: int) -> int:
        status = self._call(fn, *args)
        if status < 0 or (what != "finalize" and status != abi.STATUS_OK):
            raise PluginError("status", self.p.name, f"dataflare_agg_{what} returned {status}")
        return status

    def update(self, table: pl.DataFrame) -> None:
        if table.height == 0:
            return
        in_desc, _ = self._write_inputs(self._inputs(table), 0)
        self._agg_status(self._agg_update, "update", self._state_ptr, in_desc, table.height)
        self.p._state = self._read_state()  # committed: a later failure rolls back to here

    def merge(self, state: bytes) -> None:
        other = self._reserve(self.p._state_len)
        self._mv[other : other + self.p._state_len] = np.frombuffer(state, np.uint8)
        self._agg_status(self._agg_merge, "merge", self._state_ptr, other)
        self.p._state = self._read_state()

    def finalize(self) -> pl.DataFrame:
        rows = self.p.manifest.max_output_rows
        out_desc = self._reserve(self._out_bytes(rows, self.p._zero_caps))
        self._prepare_outputs(out_desc, rows, self.p._zero_caps)
        got = self._agg_status(self._agg_finalize, "finalize", self._state_ptr, out_desc, rows)
        if got > rows:
            raise PluginError("abi", self.p.name, f"finalize returned {got} rows, room for {rows}")
        result = self._read_descs(out_desc)
        # the state region must be left as it was: finalize is a read-only view of it
        if self._read_state() != self.p._state:
            raise PluginError("abi", self.p.name, "dataflare_agg_finalize modified the state")
        outs = self.p.manifest.output
        return pl.DataFrame(
            [self._read_output(spec, result[i], got) for i, spec in enumerate(outs)]
        )


_Parts = tuple[np.ndarray | None, np.ndarray, np.ndarray | None]
_EMPTY = np.zeros(0, np.uint8)
