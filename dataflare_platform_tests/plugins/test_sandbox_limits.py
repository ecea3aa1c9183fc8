"""Sandbox limits that hold per instance, and load errors that say what happened: tables
capped in elements, one memory and one table per module, the wasm proposals the ABI does
not need turned off, a module memory maximum too small for the host arena named as such,
the load phase named, trap reasons on one line, and deadlines that still fire in a
process forked (or spawned) after the plugin was loaded."""

from __future__ import annotations

import multiprocessing
import queue

import polars as pl
import pytest
import wasmtime

from dataflare_platform.plugins import Limits, Plugin, PluginError
from dataflare_platform.plugins.engine import shared_engine
from dataflare_platform_tests.plugins.hostile import DEADLINE_MS, LOOP, MANIFEST, TRAP, module

LIMITS = Limits(deadline_ms=DEADLINE_MS, memory_bytes=8 * 1024 * 1024, max_failures=1000)
GROW = 30_000


def x(first: int, n: int = 10) -> pl.DataFrame:
    return pl.DataFrame({"x": [first, *range(1, n)]}, schema={"x": pl.Int64})


def table_grower() -> str:
    """Grows its table by GROW elements on every call and reports the table size as y."""
    return module(
        imports="(table $t 1 funcref)",
        body=f"""
    (drop (table.grow $t (ref.null func) (i32.const {GROW})))
    (i64.store (i32.load offset=12 (local.get $out)) (i64.extend_i32_u (table.size $t)))
    (i32.const 0)""",
    )


def test_table_growth_stops_at_the_per_instance_cap(cache_dir):
    plugin = Plugin(MANIFEST, table_grower(), limits=LIMITS, cache_dir=cache_dir)
    sizes = [plugin.map(x(0))["y"][0] for _ in range(2 * LIMITS.table_elements // GROW)]
    assert max(sizes) <= LIMITS.table_elements  # growth past the cap returns -1
    assert sizes[0] == 1 + GROW  # growth below the cap works


def test_a_module_with_a_huge_initial_table_is_refused_before_compiling(cache_dir):
    wat = module(imports="(table $t 50000000 funcref)")
    with pytest.raises(PluginError) as err:
        Plugin(MANIFEST, wat, limits=LIMITS, cache_dir=cache_dir)
    assert err.value.kind == "too_complex" and "table's initial elements" in err.value.detail


@pytest.mark.parametrize(
    ("extra", "what"),
    [("(memory $m2 1)", "2 memories"), ("(table $a 1 funcref) (table $b 1 funcref)", "2 tables")],
)
def test_a_second_memory_or_table_is_refused_at_load(cache_dir, extra, what):
    with pytest.raises(PluginError) as err:
        Plugin(MANIFEST, module(imports=extra), limits=LIMITS, cache_dir=cache_dir)
    assert err.value.kind == "abi" and what in err.value.detail


@pytest.mark.parametrize(
    ("proposal", "wat"),
    [
        ("multi-memory", "(module (memory 1) (memory 1))"),
        ("threads", "(module (memory 1 1 shared))"),
        ("memory64", "(module (memory i64 1))"),
        ("tail calls", "(module (func $f (return_call $f)))"),
        ("gc", "(module (type (struct (field i32))))"),
        ("exceptions", "(module (tag $e) (func (throw $e)))"),
        (
            "wide arithmetic",
            "(module (func (drop (drop (i64.add128 "
            "(i64.const 0) (i64.const 0) (i64.const 0) (i64.const 0))))))",
        ),
    ],
)
def test_proposals_the_abi_does_not_need_are_off_in_the_engine(proposal, wat):
    """The engine itself refuses them (not only the shape check): both fuel settings."""
    for fuel in (False, True):
        with pytest.raises(wasmtime.WasmtimeError):
            wasmtime.Module(shared_engine(fuel), wat)


def test_a_memory_maximum_too_small_for_the_host_arena_is_named_at_load(cache_dir):
    wat = module().replace('(memory (export "memory") 2)', '(memory (export "memory") 1 1)')
    with pytest.raises(PluginError) as err:
        Plugin(MANIFEST, wat, limits=LIMITS, cache_dir=cache_dir)
    detail = err.value.detail
    assert err.value.kind == "abi" and "caps its memory at 1 page (65536 bytes)" in detail
    assert "at least 2 pages" in detail and "65536" in detail
    assert "limit" not in detail  # raising the host's memory limit would not help


def test_load_errors_name_the_phase(cache_dir):
    start_loop = "(start $s) (func $s (loop $l (br $l)))"
    with pytest.raises(PluginError) as err:
        Plugin(MANIFEST, module(imports=start_loop), limits=LIMITS, cache_dir=cache_dir)
    assert err.value.kind == "timeout" and "start function" in err.value.detail
    init_trap = '(func (export "dataflare_init") (param i32 i32) (result i32) unreachable)'
    with pytest.raises(PluginError) as err:
        Plugin(MANIFEST, module(imports=init_trap), limits=LIMITS, cache_dir=cache_dir)
    assert err.value.kind == "trap" and "at load, in dataflare_init" in err.value.detail


def test_a_data_segment_past_the_memory_is_not_blamed_on_a_start_function(cache_dir):
    """A module without a start function whose data segment does not fit its memory was
    reported as failing "in the module's start function"."""
    too_big = '(data (i32.const 131000) "' + "x" * 200 + '")'  # memory is 2 pages
    with pytest.raises(PluginError) as err:
        Plugin(MANIFEST, module(imports=too_big), limits=LIMITS, cache_dir=cache_dir)
    assert err.value.kind == "trap" and "data and element segments" in err.value.detail


def test_trap_reasons_are_one_line_without_wasmtime_indentation(cache_dir):
    plugin = Plugin(MANIFEST, module(), limits=LIMITS, cache_dir=cache_dir)
    with pytest.raises(PluginError) as err:
        plugin.map(x(TRAP))
    message = str(err.value)
    assert "\n" not in message and "  " not in message
    assert message.endswith("unreachable: wasm trap: wasm `unreachable` instruction executed")


# -- deadlines across fork / forkserver / spawn ------------------------------------------
_LOADED: Plugin | None = None  # loaded in the parent before a fork


def _loop_in_child(wat: str, cache_dir: str, out: multiprocessing.Queue) -> None:
    plugin = _LOADED or Plugin(MANIFEST, wat, limits=LIMITS, cache_dir=cache_dir)
    try:
        plugin.map(x(LOOP))
        out.put("returned")
    except PluginError as err:
        out.put(err.kind)


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_an_infinite_loop_hits_its_deadline_in_a_child_process(cache_dir, method):
    global _LOADED
    wat = module()
    _LOADED = Plugin(MANIFEST, wat, limits=LIMITS, cache_dir=cache_dir)
    _LOADED.map(x(0))  # the ticker thread is running in this process
    ctx = multiprocessing.get_context(method)
    out = ctx.Queue()
    child = ctx.Process(target=_loop_in_child, args=(wat, str(cache_dir), out))
    child.start()
    try:
        got = out.get(timeout=120)  # generous: only a hang (no deadline) gets near it
    except queue.Empty:
        got = "hung: no deadline fired in the child"
    finally:
        _LOADED = None
        if child.is_alive():
            child.kill()
        child.join(30)
    assert got == "timeout"
