"""Concurrent use through the instance pool, captured ``log`` output with its cap, and
exports with the wrong signature refused at load."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from dataflare_platform.plugins import Limits, Plugin, PluginError, load_plugin
from dataflare_platform.plugins.runtime import LOG_CAP
from dataflare_platform_tests.plugins.hostile import MANIFEST, OK, TRAP, module
from dataflare_platform_tests.plugins.test_samples import mask_reference, texts

LOG = '(import "dataflare" "log" (func $log (param i32 i32)))'
PATTERN = "abcdefghij" * 100  # 1000 bytes at address 16


def batch(first: int, n: int = 1000) -> pl.DataFrame:
    return pl.DataFrame({"x": [first, *range(1, n)]}, schema={"x": pl.Int64})


def expected(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.col("x").alias("y"))


def test_one_plugin_from_many_threads_at_once(built, cache_dir):
    plugin = load_plugin(built["pii_mask"], limits=Limits(pool_size=4), cache_dir=cache_dir)
    frames = [texts(3_000, seed=s) for s in range(16)]
    start = threading.Barrier(8)

    def work(i: int) -> bool:
        start.wait()
        ok = True
        for values in frames[i::8] * 3:
            df = pl.DataFrame({"text": pl.Series(values, dtype=pl.String)})
            ok &= plugin.map(df)["text"].to_list() == [mask_reference(v) for v in values]
        return ok

    with ThreadPoolExecutor(8) as ex:
        assert all(ex.map(work, range(8)))
    assert 1 <= plugin._pool.live <= 4
    assert plugin.stats["calls"] == 48 and plugin.stats["errors"] == 0


def test_pool_instances_are_separate_stores_and_bounded(cache_dir):
    plugin = Plugin(MANIFEST, module(), pool_size=2, cache_dir=cache_dir)
    a, b = plugin._pool.checkout(), plugin._pool.checkout()
    assert a is not b and a._store is not b._store
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(plugin._pool.checkout()))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and not got  # both out: a third caller waits ...
    plugin._pool.give_back(a)
    waiter.join(5)
    assert got == [a]  # ... and gets the one given back, not a third instance
    assert plugin._pool.live == 2


def test_failures_in_one_thread_leave_the_others_correct(cache_dir):
    limits = Limits(max_failures=1_000, pool_size=3)
    plugin = Plugin(MANIFEST, module(), limits=limits, cache_dir=cache_dir)

    def work(i: int) -> str:
        if i % 3 == 0:
            with pytest.raises(PluginError) as err:
                plugin.map(batch(TRAP))
            return err.value.kind
        df = batch(OK, n=500 + i)
        assert_frame_equal(plugin.map(df), expected(df))
        return "ok"

    with ThreadPoolExecutor(6) as ex:
        kinds = list(ex.map(work, range(60)))
    assert kinds.count("trap") == 20 and kinds.count("ok") == 40
    assert plugin.stats["errors"] == 20
    assert 1 <= plugin._pool.live <= 3  # every broken instance was replaced, no leak
    assert_frame_equal(plugin.map(batch(OK)), expected(batch(OK)))


def test_pool_size_option(built, cache_dir):
    assert Plugin(MANIFEST, module(), cache_dir=cache_dir).pool_size == 1
    assert (
        Plugin(MANIFEST, module(), limits=Limits(pool_size=3), cache_dir=cache_dir).pool_size == 3
    )
    assert Plugin(MANIFEST, module(), pool_size=5, cache_dir=cache_dir).pool_size == 5
    with pytest.raises(ValueError, match="pool_size"):
        Plugin(MANIFEST, module(), pool_size=0, cache_dir=cache_dir)
    hll = load_plugin(built["hll_distinct"], limits=Limits(pool_size=4), cache_dir=cache_dir)
    assert hll.pool_size == 1  # one state, one sequence of updates


# -- captured output ----------------------------------------------------------------------
def logging_plugin(cache_dir, **kw) -> Plugin:
    """Logs the first n bytes of PATTERN per call (n = rows), or a bad pointer if x[0] < 0."""
    body = """
    (if (i64.lt_s (i64.load (i32.load offset=12 (local.get $in))) (i64.const 0))
      (then (call $log (i32.const 0x7ffffff0) (i32.const 100)))
      (else (call $log (i32.const 16) (local.get $n))))
    (memory.copy
      (i32.load offset=12 (local.get $out))
      (i32.load offset=12 (local.get $in))
      (i32.mul (local.get $n) (i32.const 8)))
    (i32.const 0)"""
    wat = module(imports=f'{LOG} (data (i32.const 16) "{PATTERN}")', body=body)
    manifest = MANIFEST.model_copy(update={"capabilities": ["log"]})
    return Plugin(manifest, wat, granted={"log"}, cache_dir=cache_dir, **kw)


def test_log_output_is_captured_up_to_the_cap(cache_dir):
    plugin = logging_plugin(cache_dir)
    assert_frame_equal(plugin.map(batch(0, n=10)), expected(batch(0, n=10)))
    assert plugin.captured() == PATTERN[:10].encode()
    assert plugin.stats["log_bytes"] == 10
    for _ in range(70):  # 70_000 more bytes: past the 64 KiB cap
        plugin.map(batch(0))
    got = plugin.captured()
    assert len(got) == LOG_CAP == 64 * 1024
    assert got == ((PATTERN[:10] + PATTERN * 70).encode())[:LOG_CAP]
    assert plugin.stats["log_bytes"] == LOG_CAP
    assert plugin.stats["log_dropped_bytes"] == 10 + 70_000 - LOG_CAP
    assert plugin.clear_captured() == got and plugin.captured() == b""
    assert plugin.stats["log_bytes"] == 0
    plugin.map(batch(0, n=3))  # capturing again after clearing
    assert plugin.captured() == b"abc"


def test_log_with_a_bad_pointer_is_ignored(cache_dir):
    plugin = logging_plugin(cache_dir)
    assert_frame_equal(plugin.map(batch(-1, n=5)), expected(batch(-1, n=5)))
    assert plugin.captured() == b""


def test_log_from_many_threads_goes_to_one_capture(cache_dir):
    plugin = logging_plugin(cache_dir, pool_size=3)
    with ThreadPoolExecutor(6) as ex:
        list(ex.map(lambda _: plugin.map(batch(0, n=7)), range(30)))
    assert plugin.captured() == PATTERN[:7].encode() * 30


# -- wrong export signatures ----------------------------------------------------------------
MAP_SIG = "(param $in i32) (param $n i32) (param $out i32) (result i32)"


@pytest.mark.parametrize(
    ("old", "new", "export"),
    [
        (MAP_SIG, "(param $in i32) (param $n i32) (result i32)", "dataflare_map"),
        (MAP_SIG, "(param $in i32) (param $n i32) (param $out i32)", "dataflare_map"),
        (MAP_SIG, "(param $in i32) (param $n i64) (param $out i32) (result i32)", "dataflare_map"),
        (
            '(func (export "dataflare_alloc") (param $size i32)',
            '(func (export "dataflare_alloc") (param $size i32) (param $align i32)',
            "dataflare_alloc",
        ),
        (
            '"dataflare_abi_version") (result i32)',
            '"dataflare_abi_version") (result i64)',
            "dataflare_abi_version",
        ),
    ],
)
def test_wrong_export_signature_is_refused_at_load(cache_dir, old, new, export):
    body = "(i32.const 0)" if "(result i32)" in new or export != "dataflare_map" else "nop"
    wat = module(body=body)
    assert old in wat
    wat = wat.replace(old, new)
    if export == "dataflare_abi_version":
        wat = wat.replace("(i32.const 1))", "(i64.const 1))", 1)
    with pytest.raises(PluginError) as err:
        Plugin(MANIFEST, wat, cache_dir=cache_dir)
    assert err.value.kind == "abi"
    assert export in err.value.detail and "expected" in err.value.detail
