"""The aggregate plugin kind: host-owned state, merge, finalize, and checkpoints
(snapshot -> new instance -> restore) with the hll_distinct sample."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, Stream, TableSource
from dataflare_platform.plugins import PluginError, load_plugin

P, M = 12, 4096
U64 = np.uint64


def registers(values: pl.Series) -> np.ndarray:
    """The HyperLogLog registers the C sample builds, in numpy (nulls ignored)."""
    x = values.drop_nulls().cast(pl.Int64).to_numpy().astype(np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        z = x + U64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
        z = z ^ (z >> U64(31))
    idx = (z >> U64(64 - P)).astype(np.int64)
    low = z & U64((1 << (64 - P)) - 1)
    lowest = low & (~low + U64(1))  # the lowest set bit, a power of two: log2 is exact
    rank = np.where(low == 0, 64 - P + 1, np.log2(np.maximum(lowest, 1).astype(float)) + 1)
    reg = np.zeros(M, np.uint8)
    np.maximum.at(reg, idx, rank.astype(np.uint8))
    return reg


def estimate(reg: np.ndarray) -> int:
    total = 0.0
    for r in reg.tolist():  # the same summation order as the C loop
        total += 2.0**-r
    est = (0.7213 / (1.0 + 1.079 / M)) * M * M / total
    zeros = int((reg == 0).sum())
    if est <= 2.5 * M and zeros:
        est = M * math.log(M / zeros)
    return int(est + 0.5)


def values(n: int, distinct: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    v = pl.Series("value", rng.integers(-(2**62), 2**62, distinct))[rng.integers(0, distinct, n)]
    nulls = pl.Series(rng.random(n) < 0.05)
    return pl.DataFrame({"value": v}).with_columns(
        pl.when(nulls).then(None).otherwise(pl.col("value")).alias("value")
    )


@pytest.fixture
def hll(built, cache_dir):
    return load_plugin(built["hll_distinct"], cache_dir=cache_dir)


@pytest.mark.parametrize("distinct", [1, 50, 3_000, 200_000])
@pytest.mark.parametrize("batch", [1_000, 65_536])
def test_equals_the_reference_across_batch_boundaries(hll, distinct, batch):
    df = values(300_000, distinct)
    for start in range(0, df.height, batch):
        hll.update(df.slice(start, batch))
    hll.update(df.clear())  # an empty batch changes nothing
    reg = registers(df["value"])
    assert hll.state() == reg.tobytes()
    got = hll.result()
    assert got.columns == ["approx_distinct"] and got.dtypes == [pl.Int64]
    assert got.item() == estimate(reg)
    truth = df["value"].drop_nulls().n_unique()
    assert abs(got.item() - truth) <= max(2, 0.06 * truth)  # HLL with m=4096: ~1.6% error


def test_state_survives_snapshot_new_instance_restore(built, cache_dir):
    df = values(100_000, 20_000, seed=3)
    first = load_plugin(built["hll_distinct"], cache_dir=cache_dir)
    first.update(df.slice(0, 40_000))
    state = first.snapshot()
    second = load_plugin(built["hll_distinct"], cache_dir=cache_dir)
    second.restore(state)
    second.update(df.slice(40_000))
    assert second.result().item() == estimate(registers(df["value"]))
    with pytest.raises(PluginError) as err:
        second.restore(b"short")
    assert err.value.kind == "state"


def test_merge_of_partial_states_equals_one_pass(built, cache_dir):
    df = values(60_000, 9_000, seed=4)
    a = load_plugin(built["hll_distinct"], cache_dir=cache_dir)
    b = load_plugin(built["hll_distinct"], cache_dir=cache_dir)
    a.update(df.slice(0, 25_000))
    b.update(df.slice(25_000))
    a.merge(b.snapshot())
    assert a.state() == registers(df["value"]).tobytes()
    a.reset()
    assert a.result().item() == 0


def test_aggregate_in_a_pipeline_checkpoints_its_state(built, cache_dir):
    """Through the engine: the running answer after every batch; the operator snapshot
    carries the registers, and a fresh plugin restored from it continues the count."""
    df = values(20_000, 5_000, seed=5).with_columns(date_time=pl.lit(0, pl.Int64))
    table = df.to_arrow()
    plugin = load_plugin(built["hll_distinct"], cache_dir=cache_dir)
    sink = CollectSink()
    stream = Stream.source(TableSource.single("v", table)).plugin(plugin).sink(sink)
    Runner(stream, RunnerConfig(batch_rows=4_096)).run()
    out = sink.result()
    assert out.height == 5  # one running answer per batch
    assert out["approx_distinct"][-1] == estimate(registers(df["value"]))
    assert plugin.state() == registers(df["value"]).tobytes()
