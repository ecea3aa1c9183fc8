"""The fraud_filter sample (kind filter, with parameters) equals the Polars filter, on its
own and through the engine."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, Stream, TableSource
from dataflare_platform.plugins import PluginError, load_plugin


def bids(n: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    df = pl.DataFrame(
        {
            "auction": np.arange(n),
            "bidder": rng.integers(1, 200, n),
            "price": rng.integers(1, 20_000, n),
            "date_time": np.arange(n) * 10,
        }
    )
    return df.with_columns(
        pl.when(pl.lit(pl.Series(rng.random(n) < 0.05)))
        .then(None)
        .otherwise("price")
        .alias("price"),
        pl.when(pl.lit(pl.Series(rng.random(n) < 0.05)))
        .then(None)
        .otherwise("bidder")
        .alias("bidder"),
    )


def reference(df: pl.DataFrame, threshold: int, watch: list[int]) -> pl.DataFrame:
    cond = (pl.col("price") > threshold) | pl.col("bidder").is_in(watch)
    return df.filter(cond.fill_null(False))


@pytest.mark.parametrize("n", [0, 1, 999, 65_536])
@pytest.mark.parametrize(("threshold", "watch"), [(15_000, []), (19_000, [3, 77, 150])])
def test_equals_the_polars_filter(built, cache_dir, n, threshold, watch):
    params = {"threshold": threshold, "bidders": ",".join(map(str, watch))}
    plugin = load_plugin(built["fraud_filter"], params=params, cache_dir=cache_dir)
    df = bids(n)
    assert_frame_equal(plugin(df), reference(df, threshold, watch))


def test_a_bad_watch_list_fails_init(built, cache_dir):
    with pytest.raises(PluginError) as err:
        load_plugin(built["fraud_filter"], params={"bidders": "1,x"}, cache_dir=cache_dir)
    assert err.value.kind == "init"


def test_through_the_engine(built, cache_dir):
    df = bids(50_000, seed=2)
    params = {"threshold": 18_000, "bidders": "5, 6, 7"}
    plugin = load_plugin(built["fraud_filter"], params=params, cache_dir=cache_dir)
    sink = CollectSink()
    stream = Stream.source(TableSource.single("bids", df.to_arrow())).plugin(plugin).sink(sink)
    Runner(stream, RunnerConfig(batch_rows=8_192)).run()
    assert_frame_equal(sink.result(), reference(df, 18_000, [5, 6, 7]))
    assert plugin.stats["rows"] == 50_000
