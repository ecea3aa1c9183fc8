"""Run a WASM plugin over Polars batches inside a sandbox.

One call into WASM per batch (a call costs 12-44 us in wasmtime-py). Input columns are
copied into a host-owned arena in linear memory through a numpy view (grow-only, reused
across batches); outputs are validated against the memory bounds before a single byte is
read. Every failure becomes a :class:`PluginError`; after one, the instance is thrown away
and rebuilt, so the next batch starts from a clean state."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import wasmtime

from dataflare_platform.errors import BatchRejectedError
from dataflare_platform.plugins import abi
from dataflare_platform.plugins.engine import compile_module, deadline_ticks, shared_engine
from dataflare_platform.plugins.manifest import ColumnSpec, Manifest, load_manifest, manifest_path

PAGE = 65536
LOG_CAP = 64 * 1024


class PluginError(BatchRejectedError):
    """A plugin failed in a contained way. ``kind`` is one of: timeout, fuel, out_of_memory,
    trap, abi, abi_version, import, status, schema, init, quarantined."""

    def __init__(self, kind: str, plugin: str, detail: str) -> None:
        self.kind, self.plugin, self.detail = kind, plugin, detail
        super().__init__(f"plugin {plugin}: {kind}: {detail}")


@dataclass(frozen=True)
class Limits:
    """Per-plugin sandbox limits; the defaults are safe for untrusted code."""

    deadline_ms: float = 1000.0
    memory_bytes: int = 256 * 1024 * 1024
    fuel: int | None = None  # instructions-ish per call; None = no fuel metering
    max_failures: int = 3  # circuit breaker: this many failures ...
    failure_window_s: float = 60.0  # ... within this window ...
    quarantine_s: float = 300.0  # ... quarantine the plugin for this long


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


def load_plugin(
    wasm_path: Path | str,
    params: dict[str, Any] | None = None,
    limits: Limits | None = None,
    granted: Iterable[str] = (),
    columns: dict[str, str] | None = None,
    cache_dir: Path | None = None,
) -> Plugin:
    """Load ``<name>.wasm`` with its sidecar manifest (``<name>.json`` or ``plugin.json``)."""
    wasm_path = Path(wasm_path)
    manifest = load_manifest(manifest_path(wasm_path))
    return Plugin(manifest, wasm_path.read_bytes(), params, limits, granted, columns, cache_dir)


class Plugin:
    """A loaded plugin: ``map(table)`` / ``filter(table)``, and the engine's ``BatchPlugin``
    protocol (``__call__``, ``snapshot``, ``restore``) so ``Stream.plugin(p)`` runs it.

    ``columns`` binds manifest column names to table column names (default: same name)."""

    def __init__(
        self,
        manifest: Manifest,
        module: bytes | str,
        params: dict[str, Any] | None = None,
        limits: Limits | None = None,
        granted: Iterable[str] = (),
        columns: dict[str, str] | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.manifest = manifest
        self.name = manifest.name
        self.limits = limits or Limits()
        self.params = manifest.resolve_params(params)
        self.columns = dict(columns or {})
        self.logs = bytearray()
        self.memory_at_failure = 0  # linear memory size when the last call failed
        self.stats = {"calls": 0, "rows": 0, "seconds": 0.0, "errors": 0}
        self.breaker = CircuitBreaker(
            self.limits.max_failures, self.limits.failure_window_s, self.limits.quarantine_s
        )
        self._fuel = self.limits.fuel is not None
        self._lock = threading.Lock()
        self._engine = shared_engine(self._fuel)
        try:
            self._module = compile_module(module, self._fuel, cache_dir)
        except wasmtime.WasmtimeError as err:
            raise PluginError("abi", self.name, f"not a valid WASM module: {err}") from None
        self._linker = self._make_linker(set(granted))
        self._instantiate()

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
        """The ``log`` capability: plugin output captured up to LOG_CAP bytes."""
        mem = caller.get("memory")
        room = LOG_CAP - len(self.logs)
        if not isinstance(mem, wasmtime.Memory) or room <= 0 or length <= 0:
            return
        if ptr < 0 or ptr + length > mem.data_len(caller):
            return
        self.logs += mem.read(caller, ptr, ptr + min(length, room))

    def _instantiate(self) -> None:
        """A fresh store + instance, ABI checked and params passed: used at load and after
        any failure, so a plugin that trapped midway never sees its half-updated state."""
        store = wasmtime.Store(self._engine)
        store.set_limits(memory_size=self.limits.memory_bytes)
        self._store = store
        self._arm()
        try:
            inst = self._linker.instantiate(store, self._module)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as err:
            raise self._classify(err) from None
        exports = inst.exports(store)

        def need(name: str, kind: type) -> Any:
            item = exports.get(name) if hasattr(exports, "get") else None
            if not isinstance(item, kind):
                raise PluginError("abi", self.name, f"missing export {name!r}")
            return item

        self._memory = need("memory", wasmtime.Memory)
        version_fn = need(abi.EXPORT_VERSION, wasmtime.Func)
        version = self._call(version_fn)
        if version != abi.ABI_VERSION:
            raise PluginError(
                "abi_version", self.name, f"module speaks ABI {version}, host speaks 1"
            )
        self._alloc = need(abi.EXPORT_ALLOC, wasmtime.Func)
        entry = abi.EXPORT_MAP if self.manifest.kind == "map" else abi.EXPORT_FILTER
        self._entry = need(entry, wasmtime.Func)
        self._arena_ptr, self._arena_cap = 0, 0
        init = exports.get(abi.EXPORT_INIT) if hasattr(exports, "get") else None
        if isinstance(init, wasmtime.Func):
            payload = json.dumps(self.params, separators=(",", ":")).encode()
            ptr = self._reserve(len(payload) + 1)
            self._view()[ptr : ptr + len(payload)] = np.frombuffer(payload, np.uint8)
            status = self._call(init, ptr, len(payload))
            if status != abi.STATUS_OK:
                raise PluginError("init", self.name, f"dataflare_init returned {status}")

    # -- calls ---------------------------------------------------------------------------
    def _arm(self) -> None:
        self._store.set_epoch_deadline(deadline_ticks(self.limits.deadline_ms))
        if self._fuel:
            self._store.set_fuel(int(self.limits.fuel or 0))

    def _call(self, fn: wasmtime.Func, *args: int) -> Any:
        self._arm()
        try:
            return fn(self._store, *args)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as err:
            raise self._classify(err) from None

    def _classify(self, err: Exception) -> PluginError:
        code = getattr(err, "trap_code", None)
        if code == wasmtime.TrapCode.INTERRUPT:
            return PluginError("timeout", self.name, f"exceeded {self.limits.deadline_ms} ms")
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            return PluginError("fuel", self.name, f"exceeded {self.limits.fuel} fuel")
        if self._near_memory_limit():
            return PluginError(
                "out_of_memory", self.name, f"hit {self.limits.memory_bytes} bytes: {err}"
            )
        what = code.name.lower() if code is not None else "error"
        return PluginError("trap", self.name, f"{what}: {str(err).splitlines()[-1]}")

    def _near_memory_limit(self) -> bool:
        mem = getattr(self, "_memory", None)
        if mem is None:
            return False
        self.memory_at_failure = mem.data_len(self._store)
        # memory.grow past the limit returns -1 rather than trapping, so a trap with memory
        # (nearly) at the limit is read as out-of-memory; the slack covers coarse growth.
        slack = max(PAGE, self.limits.memory_bytes // 8)
        return mem.data_len(self._store) + slack > self.limits.memory_bytes

    def _view(self) -> np.ndarray:
        """A numpy view of linear memory; re-taken after every call that may have grown it."""
        return np.frombuffer(self._memory.get_buffer_ptr(self._store), np.uint8)

    def _reserve(self, nbytes: int) -> int:
        """The host arena, at least ``nbytes``: reused across batches, grown by doubling."""
        if nbytes > self._arena_cap:
            cap = max(abi.align(nbytes, PAGE), 2 * self._arena_cap, PAGE)
            if cap > self.limits.memory_bytes:
                raise PluginError(
                    "out_of_memory", self.name, f"batch needs {cap} bytes of plugin memory"
                )
            ptr = self._call(self._alloc, cap)
            if (
                not isinstance(ptr, int)
                or ptr <= 0
                or ptr + cap > self._memory.data_len(self._store)
            ):
                if self._near_memory_limit() or ptr == 0:
                    raise PluginError("out_of_memory", self.name, f"could not allocate {cap}")
                raise PluginError("abi", self.name, f"dataflare_alloc returned bad {ptr!r}")
            self._arena_ptr, self._arena_cap = ptr, cap
        return self._arena_ptr

    def _guarded(self, table: pl.DataFrame, run: Any) -> Any:
        with self._lock:
            self.breaker.check(self.name)
            t0 = time.perf_counter()
            try:
                return run(table)
            except PluginError as err:
                self._fail()
                raise err from None
            except Exception as err:  # a host-side bug in marshalling: still contained
                self._fail()
                raise PluginError("abi", self.name, f"{type(err).__name__}: {err}") from None
            finally:
                self.stats["calls"] += 1
                self.stats["rows"] += table.height
                self.stats["seconds"] += time.perf_counter() - t0

    def _fail(self) -> None:
        self.stats["errors"] += 1
        self.breaker.record()
        try:
            self._instantiate()
        except PluginError:
            self.breaker.until = time.monotonic() + self.limits.quarantine_s

    # -- public API ---------------------------------------------------------------------
    def map(self, table: pl.DataFrame) -> pl.DataFrame:
        """``table`` with the plugin's output columns added or replaced."""
        if self.manifest.kind != "map":
            raise TypeError(f"plugin {self.name} is a {self.manifest.kind} plugin")
        return self._guarded(table, self._map)

    def filter(self, table: pl.DataFrame) -> pl.Series:
        """A boolean mask: True for the rows the plugin keeps."""
        if self.manifest.kind != "filter":
            raise TypeError(f"plugin {self.name} is a {self.manifest.kind} plugin")
        return self._guarded(table, self._filter)

    def __call__(self, batch: pl.DataFrame) -> pl.DataFrame:
        if self.manifest.kind == "map":
            return self.map(batch)
        return batch.filter(self.filter(batch))

    def snapshot(self) -> bytes:
        return b""  # map/filter plugins are stateless in ABI v1

    def restore(self, state: bytes) -> None:
        return None

    @property
    def quarantined(self) -> bool:
        return self.breaker.quarantined

    # -- marshalling ----------------------------------------------------------------------
    def _column(self, spec: ColumnSpec) -> str:
        return self.columns.get(spec.name, spec.name)

    def _inputs(self, table: pl.DataFrame) -> list[pa.Array]:
        arrays = []
        for spec in self.manifest.input:
            col = self._column(spec)
            if col not in table.columns:
                raise PluginError("schema", self.name, f"input column {col!r} missing")
            arr = table.get_column(col).to_arrow()
            if isinstance(arr, pa.ChunkedArray):
                arr = arr.combine_chunks()
            target = abi.ARROW_TYPES[spec.type]
            if arr.type != target:
                try:
                    arr = arr.cast(target)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                    raise PluginError(
                        "schema", self.name, f"column {col!r} is not {spec.type}: {err}"
                    ) from None
            arrays.append(arr)
        return arrays

    def _write_inputs(self, arrays: list[pa.Array], n: int, extra: int) -> tuple[int, int]:
        """Lay out descriptors + input buffers (+ ``extra`` bytes for outputs) in the arena;
        returns (input descriptor address, first free address)."""
        plan: list[tuple[np.ndarray | None, np.ndarray, np.ndarray | None]] = []
        size = abi.align(abi.DESC_BYTES * len(arrays))
        for spec, arr in zip(self.manifest.input, arrays, strict=True):
            validity = abi.validity_bytes(arr)
            bufs = arr.buffers()
            if spec.type == "utf8":
                offsets = np.frombuffer(bufs[1], np.int32)[arr.offset : arr.offset + n + 1]
                data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else None
                lo = int(offsets[0]) if n else 0
                hi = int(offsets[-1]) if n else 0
                data = data[lo:hi] if data is not None else np.zeros(0, np.uint8)
                values = offsets - np.int32(lo)
            else:
                w = abi.WIDTHS[spec.type]
                values = np.frombuffer(bufs[1], np.uint8)[arr.offset * w : (arr.offset + n) * w]
                data = None
            plan.append((validity, values, data))
            for part in (validity, values, data):
                if part is not None:
                    size += abi.align(part.nbytes)
        base = self._reserve(size + extra)
        view = self._view()
        descs = np.zeros((len(arrays), abi.DESC_FIELDS), np.uint32)
        cursor = base + abi.align(abi.DESC_BYTES * len(arrays))

        def put(part: np.ndarray) -> int:
            nonlocal cursor
            at = cursor
            view[at : at + part.nbytes] = part.view(np.uint8).reshape(-1)
            cursor += abi.align(part.nbytes)
            return at

        for i, (spec, (validity, values, data)) in enumerate(
            zip(self.manifest.input, plan, strict=True)
        ):
            descs[i, abi.F_TYPE] = abi.TYPE_CODES[spec.type]
            descs[i, abi.F_VALIDITY] = put(validity) if validity is not None else 0
            descs[i, abi.F_VALUES] = put(values)
            descs[i, abi.F_VALUES_LEN] = values.nbytes
            if data is not None:
                descs[i, abi.F_DATA] = put(data)
                descs[i, abi.F_DATA_LEN] = descs[i, abi.F_DATA_CAP] = data.nbytes
        view[base : base + descs.nbytes] = descs.view(np.uint8).reshape(-1)
        return base, cursor

    def _map(self, table: pl.DataFrame) -> pl.DataFrame:
        n = table.height
        outs = self.manifest.output
        if n == 0:
            return table.with_columns(
                pl.Series(self._column(s), pa.array([], abi.ARROW_TYPES[s.type])) for s in outs
            )
        arrays = self._inputs(table)
        in_utf8 = sum(a.buffers()[2].size for a in arrays if pa.types.is_string(a.type)) or 0
        caps = [in_utf8 + in_utf8 // 4 + 256 if s.type == "utf8" else 0 for s in outs]
        for _attempt in range(3):
            out_bytes = abi.align(abi.DESC_BYTES * len(outs))
            for spec, cap in zip(outs, caps, strict=True):
                width = 4 * (n + 1) if spec.type == "utf8" else abi.WIDTHS[spec.type] * n
                out_bytes += abi.align(abi.bitmap_bytes(n)) + abi.align(width) + abi.align(cap)
            in_desc, free = self._write_inputs(arrays, n, out_bytes)
            out_desc = free
            descs = np.zeros((len(outs), abi.DESC_FIELDS), np.uint32)
            cursor = out_desc + abi.align(abi.DESC_BYTES * len(outs))
            view = self._view()
            for i, (spec, cap) in enumerate(zip(outs, caps, strict=True)):
                nbm = abi.bitmap_bytes(n)
                descs[i, abi.F_TYPE] = abi.TYPE_CODES[spec.type]
                descs[i, abi.F_VALIDITY] = cursor
                view[cursor : cursor + nbm] = 0xFF  # all valid unless the plugin says so
                cursor += abi.align(nbm)
                width = 4 * (n + 1) if spec.type == "utf8" else abi.WIDTHS[spec.type] * n
                descs[i, abi.F_VALUES], descs[i, abi.F_VALUES_LEN] = cursor, width
                cursor += abi.align(width)
                if spec.type == "utf8":
                    descs[i, abi.F_DATA], descs[i, abi.F_DATA_CAP] = cursor, cap
                    cursor += abi.align(cap)
            view[out_desc : out_desc + descs.nbytes] = descs.view(np.uint8).reshape(-1)
            status = self._call(self._entry, in_desc, n, out_desc)
            view = self._view()
            result = view[out_desc : out_desc + descs.nbytes].copy().view(np.uint32)
            result = result.reshape(len(outs), abi.DESC_FIELDS)
            if status == abi.STATUS_NEED_MORE:
                grown = False
                for i, spec in enumerate(outs):
                    need = int(result[i, abi.F_DATA_LEN])
                    if spec.type == "utf8" and need > caps[i]:
                        if need > self.limits.memory_bytes:
                            raise PluginError("abi", self.name, f"asks for {need} output bytes")
                        caps[i], grown = abi.align(need), True
                if not grown:
                    raise PluginError("abi", self.name, "NEED_MORE without a larger data_len")
                continue
            if status != abi.STATUS_OK:
                raise PluginError("status", self.name, f"dataflare_map returned {status}")
            series = [self._read_output(view, spec, result[i], n) for i, spec in enumerate(outs)]
            return table.with_columns(series)
        raise PluginError("abi", self.name, "output capacity still too small after 3 tries")

    def _span(self, view: np.ndarray, ptr: int, nbytes: int, what: str) -> np.ndarray:
        """``view[ptr:ptr+nbytes]`` copied out, after checking it lies inside memory."""
        if ptr <= 0 or nbytes < 0 or ptr + nbytes > view.size:
            raise PluginError(
                "abi",
                self.name,
                f"{what} [{ptr}, {ptr + nbytes}) outside linear memory ({view.size} bytes)",
            )
        return view[ptr : ptr + nbytes].copy()

    def _read_output(self, view: np.ndarray, spec: ColumnSpec, d: np.ndarray, n: int) -> pl.Series:
        name = self._column(spec)
        if int(d[abi.F_TYPE]) != abi.TYPE_CODES[spec.type]:
            raise PluginError("abi", self.name, f"output {name!r} changed its type code")
        vptr = int(d[abi.F_VALIDITY])
        validity = (
            pa.py_buffer(self._span(view, vptr, abi.bitmap_bytes(n), f"{name} validity"))
            if vptr
            else None
        )
        if spec.type == "utf8":
            offsets = self._span(view, int(d[abi.F_VALUES]), 4 * (n + 1), f"{name} offsets")
            offsets = offsets.view(np.int32)
            data_len = int(d[abi.F_DATA_LEN])
            lo, hi = int(offsets[0]), int(offsets[-1])
            if lo < 0 or hi > data_len or np.any(np.diff(offsets) < 0):
                raise PluginError("abi", self.name, f"output {name!r} has invalid offsets")
            data = self._span(view, int(d[abi.F_DATA]) + lo, hi - lo, f"{name} data")
            arr = pa.Array.from_buffers(
                pa.string(), n, [validity, pa.py_buffer(offsets - lo), pa.py_buffer(data)]
            )
            try:
                arr.validate(full=True)  # invalid UTF-8 must never reach Polars
            except pa.ArrowInvalid as err:
                raise PluginError("abi", self.name, f"output {name!r}: {err}") from None
        else:
            nbytes = abi.WIDTHS[spec.type] * n
            values = self._span(view, int(d[abi.F_VALUES]), nbytes, f"{name} values")
            arr = pa.Array.from_buffers(
                abi.ARROW_TYPES[spec.type], n, [validity, pa.py_buffer(values)]
            )
        return pl.Series(name, arr)

    def _filter(self, table: pl.DataFrame) -> pl.Series:
        n = table.height
        if n == 0:
            return pl.Series("mask", [], pl.Boolean)
        arrays = self._inputs(table)
        in_desc, mask_ptr = self._write_inputs(arrays, n, abi.align(n))
        view = self._view()
        view[mask_ptr : mask_ptr + n] = 0
        status = self._call(self._entry, in_desc, n, mask_ptr)
        if status != abi.STATUS_OK:
            raise PluginError("status", self.name, f"dataflare_filter returned {status}")
        mask = self._view()[mask_ptr : mask_ptr + n] != 0
        return pl.Series("mask", mask)
