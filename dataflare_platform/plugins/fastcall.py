"""A lean call path into WASM for the per-batch entry points.

``wasmtime.Func.__call__`` re-reads the function type and converts every argument through
``Val`` on each call (~30 us); the hot path instead calls ``wasmtime_func_call_unchecked``
with a preallocated slot array (~1.5 us). "Unchecked" only means the C API trusts the
argument types, so the signature is checked once here, at bind time, against what the ABI
requires. If the private bindings this relies on are missing (another wasmtime-py
version), the checked ``Func.__call__`` is used instead."""

from __future__ import annotations

import ctypes
from typing import Any

import wasmtime

from dataflare_platform.errors import DataflareError

try:  # private API of wasmtime-py; guarded so a different version still works
    from wasmtime import _ffi as _wffi
    from wasmtime._func import maybe_raise_last_exn as _raise_pending

    _unchecked = _wffi.wasmtime_func_call_unchecked
    _RAW = _wffi.wasmtime_val_raw_t
    _TRAP_PTR = ctypes.POINTER(_wffi.wasm_trap_t)
    _FAST = True
except (ImportError, AttributeError):  # pragma: no cover - depends on the wasmtime build
    _FAST = False


class SignatureError(DataflareError):
    """The export's type is not the one the ABI prescribes."""


class I32Func:
    """``func(*args) -> int | None`` for an export taking ``nparams`` i32 and returning
    ``nresults`` (0 or 1) i32; raises ``wasmtime.Trap`` / ``wasmtime.WasmtimeError`` exactly
    like the checked call."""

    def __init__(self, store: wasmtime.Store, func: wasmtime.Func, nparams: int, nresults: int):
        ty = func.type(store)
        i32 = wasmtime.ValType.i32()
        if [str(t) for t in ty.params] != [str(i32)] * nparams or [str(t) for t in ty.results] != [
            str(i32)
        ] * nresults:
            raise SignatureError(
                f"expected ({', '.join(['i32'] * nparams)}) -> ({', '.join(['i32'] * nresults)}),"
                f" got ({', '.join(map(str, ty.params))}) -> ({', '.join(map(str, ty.results))})"
            )
        self._store, self._func = store, func
        self._nparams, self._nresults = nparams, nresults
        if _FAST:
            self._slots = (_RAW * max(nparams, nresults, 1))()
            self._ctx = store._context()
            self._ref = ctypes.byref(func._func)
            self._size = max(nparams, nresults)

    def __call__(self, *args: int) -> Any:
        if not _FAST:  # pragma: no cover
            return self._func(self._store, *args)
        slots = self._slots
        for i, value in enumerate(args):
            slots[i].i32 = value
        trap = _TRAP_PTR()
        error = _unchecked(self._ctx, self._ref, slots, self._size, ctypes.byref(trap))
        if error:
            _raise_pending()
            raise wasmtime.WasmtimeError._from_ptr(error)
        if trap:
            exc = wasmtime.Trap._from_ptr(trap)
            _raise_pending()
            raise exc
        return slots[0].i32 if self._nresults else None
