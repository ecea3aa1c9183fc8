"""Hostile modules are contained: each failure is a structured PluginError, the host
keeps running, and the same plugin processes the next batch correctly."""

from __future__ import annotations

import time

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from dataflare_platform.plugins import Limits, Plugin, PluginError
from dataflare_platform_tests.plugins.hostile import (
    BAD_STATUS,
    BOMB,
    DEADLINE_MS,
    LOOP,
    MANIFEST,
    OOB_VALIDITY,
    OOB_VALUES,
    TRAP,
    module,
)

LIMITS = Limits(deadline_ms=DEADLINE_MS, memory_bytes=8 * 1024 * 1024, max_failures=100)


def batch(first: int, n: int = 1000) -> pl.DataFrame:
    return pl.DataFrame({"x": [first, *range(1, n)]}, schema={"x": pl.Int64})


def assert_recovers(plugin: Plugin) -> None:
    df = batch(0).with_columns(pl.when(pl.col("x") % 7 == 3).then(None).otherwise("x").alias("x"))
    assert_frame_equal(plugin.map(df), df.with_columns(pl.col("x").alias("y")))


@pytest.fixture
def hostile(cache_dir) -> Plugin:
    return Plugin(MANIFEST, module(), limits=LIMITS, cache_dir=cache_dir)


@pytest.mark.parametrize(
    ("mode", "kind", "detail"),
    [
        (LOOP, "timeout", str(DEADLINE_MS)),
        (BOMB, "out_of_memory", str(8 * 1024 * 1024)),
        (TRAP, "trap", "unreachable"),
        (OOB_VALUES, "abi", "outside linear memory"),
        (OOB_VALIDITY, "abi", "validity"),
        (BAD_STATUS, "status", "-7"),
    ],
)
def test_misbehaviour_is_contained_and_the_plugin_recovers(hostile, mode, kind, detail):
    assert_recovers(hostile)
    # The loop case ends by itself: the deadline stops it (kind "timeout"); how fast is
    # for the benchmark, not the test.
    with pytest.raises(PluginError) as err:
        hostile.map(batch(mode))
    assert (err.value.kind, err.value.plugin) == (kind, "hostile")
    assert detail in err.value.detail
    assert_recovers(hostile)
    assert hostile.stats["errors"] == 1


def test_memory_bomb_never_exceeds_the_limit(hostile):
    with pytest.raises(PluginError):
        hostile.map(batch(BOMB))
    assert 0 < hostile.memory_at_failure <= LIMITS.memory_bytes


def test_fuel_stops_a_loop_before_the_deadline(cache_dir):
    limits = Limits(deadline_ms=10_000, fuel=1_000_000, max_failures=100)
    plugin = Plugin(MANIFEST, module(), limits=limits, cache_dir=cache_dir)
    with pytest.raises(PluginError) as err:
        plugin.map(batch(LOOP))
    assert err.value.kind == "fuel"
    assert_recovers(plugin)


def test_undeclared_import_is_refused_at_load_naming_it(cache_dir):
    wasi = (
        '(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))'
    )
    with pytest.raises(PluginError) as err:
        Plugin(MANIFEST, module(imports=wasi), cache_dir=cache_dir)
    assert err.value.kind == "import"
    assert "wasi_snapshot_preview1.fd_write" in err.value.detail


def test_capability_import_needs_manifest_and_grant(cache_dir):
    log = '(import "dataflare" "log" (func $log (param i32 i32)))'
    wat = module(imports=log)
    with pytest.raises(PluginError, match=r"dataflare\.log"):
        Plugin(MANIFEST.model_copy(update={"capabilities": ["log"]}), wat, cache_dir=cache_dir)
    with pytest.raises(PluginError, match=r"dataflare\.log"):
        Plugin(MANIFEST, wat, granted={"log"}, cache_dir=cache_dir)
    manifest = MANIFEST.model_copy(update={"capabilities": ["log"]})
    assert_recovers(Plugin(manifest, wat, granted={"log"}, cache_dir=cache_dir))


def test_wrong_abi_version_is_refused_at_load(cache_dir):
    with pytest.raises(PluginError) as err:
        Plugin(MANIFEST, module(version=2), cache_dir=cache_dir)
    assert err.value.kind == "abi_version"


def test_missing_entry_point_is_refused_at_load(cache_dir):
    filt = MANIFEST.model_copy(update={"kind": "filter", "output": []})
    with pytest.raises(PluginError, match="dataflare_filter"):
        Plugin(filt, module(), cache_dir=cache_dir)


def test_repeated_failures_quarantine_the_plugin(cache_dir):
    limits = Limits(max_failures=2, failure_window_s=60, quarantine_s=60)
    plugin = Plugin(MANIFEST, module(), limits=limits, cache_dir=cache_dir)
    for _ in range(2):
        with pytest.raises(PluginError, match="trap"):
            plugin.map(batch(TRAP))
    assert plugin.quarantined
    with pytest.raises(PluginError) as err:
        plugin.map(batch(0))
    assert err.value.kind == "quarantined"
    plugin.breaker.until = time.monotonic()  # cool-down elapsed
    assert_recovers(plugin)


def test_missing_input_column_is_a_schema_error(hostile):
    with pytest.raises(PluginError) as err:
        hostile.map(pl.DataFrame({"z": [1]}))
    assert err.value.kind == "schema"
    assert_recovers(hostile)
