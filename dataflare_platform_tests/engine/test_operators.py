"""Operators against independent Polars computations over the same events."""

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from dataflare_platform.engine import (
    CollectSink,
    Runner,
    RunnerConfig,
    Stream,
    TableSource,
    count,
    max_,
    mean,
    min_,
    session,
    sliding,
    sum_,
    tumbling,
)
from dataflare_platform.errors import InvalidInputError
from dataflare_platform_tests.engine.helpers import T0, events


def run(pipeline_fn, table: pa.Table, batch_rows: int = 64, ooo_ms: int = 2_000):
    sink = CollectSink()
    stream = Stream.source(TableSource.single("e", table), out_of_orderness_ms=ooo_ms)
    result = Runner(pipeline_fn(stream).sink(sink), RunnerConfig(batch_rows=batch_rows)).run()
    assert result.metrics.late_events == 0
    return sink.result(), result


def random_events(n=3_000, keys=7, seed=0, span_ms=120_000, jitter_ms=1_500):
    rng = np.random.default_rng(seed)
    base = np.sort(rng.integers(0, span_ms, n))
    times = np.clip(base - rng.integers(0, jitter_ms, n), 0, None)
    return events(times, rng.integers(0, keys, n), rng.integers(1, 1_000, n))


def frame(table: pa.Table) -> pl.DataFrame:
    return pl.from_arrow(table).with_columns((pl.col("date_time").dt.epoch("ms") - T0).alias("t"))


@pytest.mark.parametrize("batch_rows", [1, 64, 10_000])
def test_sliding_window_aggregates_match_polars(batch_rows):
    table = random_events(n=600 if batch_rows == 1 else 3_000)
    got, _ = run(
        lambda s: (
            s.key_by("key")
            .window(sliding("10s", "5s"))
            .agg(
                count("n"),
                sum_("value", "total"),
                min_("value", "lo"),
                max_("value", "hi"),
                mean("value", "avg"),
            )
        ),
        table,
        batch_rows,
    )
    df = frame(table)
    truth = (
        pl.concat(
            [
                df.with_columns(((pl.col("t") // 5000) * 5000 - k * 5000).alias("ws"))
                for k in range(2)
            ]
        )
        .group_by("ws", "key")
        .agg(
            n=pl.len(),
            total=pl.col("value").sum(),
            lo=pl.col("value").min(),
            hi=pl.col("value").max(),
            avg=pl.col("value").mean(),
        )
        .sort("ws", "key")
    )
    got = got.with_columns((pl.col("window_start").dt.epoch("ms") - T0).alias("ws"))
    got = got.select(truth.columns).sort("ws", "key")
    assert got.height == truth.height
    assert got.drop("avg").equals(truth.drop("avg").cast(got.drop("avg").schema))
    assert got["avg"].to_numpy() == pytest.approx(truth["avg"].to_numpy())


def test_session_windows_match_a_gap_based_polars_sessionization():
    table = random_events(n=400, keys=5, span_ms=600_000, seed=2)
    got, result = run(
        lambda s: s.key_by("key").window(session("8s")).agg(count("n"), sum_("value", "total")),
        table,
        batch_rows=37,
    )
    df = frame(table).sort("key", "t")
    truth = (
        df.with_columns(
            (pl.col("t").diff().over("key").fill_null(8000) >= 8000)
            .cum_sum()
            .over("key")
            .alias("sid")
        )
        .group_by("key", "sid")
        .agg(start=pl.col("t").min(), n=pl.len(), total=pl.col("value").sum())
        .drop("sid")
        .sort("key", "start")
    )
    got = got.with_columns((pl.col("window_start").dt.epoch("ms") - T0).alias("start"))
    assert got.select(truth.columns).sort("key", "start").equals(truth)
    assert result.metrics.state_rows() == 0


def test_dedup_keeps_the_first_row_per_key_within_the_horizon():
    # key 1 at 0 s, 3 s (dup), 12 s (new: past the 10 s horizon), 15 s (dup of 12 s)
    table = events([0, 1_000, 3_000, 12_000, 15_000, 40_000], keys=[1, 2, 1, 1, 1, 1])
    for batch_rows in (1, 2, 100):
        got, _ = run(lambda s: s.key_by("key").dedup("10s"), table, batch_rows)
        assert got["value"].to_list() == [0, 1, 3, 5], batch_rows


def test_reduce_emits_running_totals_per_key():
    table = events(range(0, 1_000, 100), keys=[1, 2] * 5, values=range(10))
    got, _ = run(
        lambda s: s.key_by("key").reduce(sum_("value", "total"), count("n")), table, batch_rows=3
    )
    final = got.group_by("key", maintain_order=True).last().sort("key")
    assert final.rows() == [(1, 20, 5), (2, 25, 5)]


def test_enrichment_join_flat_map_and_map_batches():
    table = events([0, 1, 2], keys=[1, 2, 3])
    names = pl.DataFrame({"id": [1, 2], "name": ["one", "two"]})
    got, _ = run(
        lambda s: (
            s.enrich(names, left_on="key", right_on="id")
            .with_columns(pl.int_ranges(0, pl.col("key")).alias("copies"))
            .flat_map("copies")
            .map_batches(lambda df: df.with_columns(pl.col("value") * 10), name="times_ten")
        ),
        table,
    )
    assert got.select("key", "name", "value").rows() == [
        (1, "one", 0),
        (2, "two", 10),
        (2, "two", 10),
        (3, None, 20),
        (3, None, 20),
        (3, None, 20),
    ]


class CountingPlugin:
    """A stand-in for a WASM module in the plugin slot: numbers rows across batches."""

    name = "row_number"

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, batch: pl.DataFrame) -> pl.DataFrame:
        out = batch.with_columns(pl.int_range(self.seen, self.seen + batch.height).alias("rn"))
        self.seen += batch.height
        return out

    def snapshot(self) -> bytes:
        return self.seen.to_bytes(8, "little")

    def restore(self, state: bytes) -> None:
        self.seen = int.from_bytes(state, "little")


def test_plugin_slot_is_called_per_batch_and_its_state_is_checkpointed():
    table = events(range(0, 10_000, 10))
    sink = CollectSink()
    config = RunnerConfig(batch_rows=100, checkpoint_every=2)

    def build():
        return Stream.source(TableSource.single("e", table)).plugin(CountingPlugin()).sink(sink)

    Runner(build(), config).run(until={"e/0": 430})
    Runner(build(), config).run()
    assert sink.result()["rn"].to_list() == list(range(1_000))


def test_keyed_operations_need_a_key():
    stream = Stream.source(TableSource.single("e", events([0])))
    with pytest.raises(ValueError, match="key_by"):
        stream.reduce(count())
    with pytest.raises(ValueError, match="slide must"):
        sliding("10s", "3s")
    with pytest.raises(ValueError, match="not a duration"):
        tumbling("ten seconds")


@pytest.mark.parametrize(
    ("keys", "n", "descending"), [((), 1, True), (("key",), 2, True), ((), 3, False)]
)
@pytest.mark.parametrize("batch_rows", [1, 50, 10_000])
def test_top_rows_match_polars_ranks_ties_kept(keys, n, descending, batch_rows):
    rng = np.random.default_rng(4)
    count_ = 400 if batch_rows == 1 else 2_000
    times = np.sort(rng.integers(0, 60_000, count_))
    table = events(times, rng.integers(0, 4, count_), rng.integers(0, 30, count_))  # ties
    got, result = run(
        lambda s: s.key_by(*keys).window(tumbling("10s")).top_rows("value", n, descending),
        table,
        batch_rows,
    )
    df = frame(table).with_columns(((pl.col("t") // 10_000) * 10_000).alias("ws"))
    group = ["ws", *keys]
    rank = pl.col("value").rank("min", descending=descending).over(group)
    truth = df.filter(rank <= n).sort("ws", *keys, "date_time", "value")
    got = got.with_columns((pl.col("window_start").dt.epoch("ms") - T0).alias("ws"))
    got = got.sort("ws", *keys, "date_time", "value")
    truth = truth.drop("t")
    assert got.select(truth.columns).equals(truth)
    assert result.metrics.state_rows() == 0


@pytest.mark.parametrize("batch_rows", [1, 5, 64, 10_000])
def test_reduce_last_aggregates_each_keys_last_n_rows(batch_rows):
    """Every row emits its key's aggregates over that key's last 3 rows in time order,
    itself included: checked against a plain loop. Within a batch the rows are
    shuffled, so the operator's own ordering by ``order_by`` is what makes it right."""
    rng = np.random.default_rng(7)
    n_rows, n = 400, 3
    times = np.arange(n_rows) * 10
    keys, values = rng.integers(0, 9, n_rows), rng.integers(1, 1_000, n_rows)
    starts = range(0, n_rows, batch_rows)
    order = np.concatenate(
        [rng.permutation(np.arange(s, min(s + batch_rows, n_rows))) for s in starts]
    )
    table = events(times[order], keys[order], values[order])
    got, _ = run(
        lambda s: s.key_by("key").reduce_last(
            n,
            sum_("value", "total"),
            mean("value", "avg"),
            min_("value", "lo"),
            max_("value", "hi"),
            count("rows"),
            order_by=["date_time"],
        ),
        table,
        batch_rows=batch_rows,
        ooo_ms=60_000,
    )
    want: dict[int, list[tuple]] = {}
    recent: dict[int, list[int]] = {}
    for key, value in zip(keys.tolist(), values.tolist(), strict=True):
        last = recent.setdefault(key, [])
        last.append(value)
        del last[:-n]
        want.setdefault(key, []).append(
            (sum(last), sum(last) / len(last), min(last), max(last), len(last))
        )
    columns = ["total", "avg", "lo", "hi", "rows"]
    for (key,), rows in got.partition_by("key", as_dict=True, maintain_order=True).items():
        flat = [v for row in rows.select(columns).iter_rows() for v in row]
        assert flat == pytest.approx([v for row in want[key] for v in row])
    assert got.height == n_rows


def test_reduce_last_needs_a_key_and_a_positive_n():
    stream = Stream.source(TableSource.single("e", events([0])))
    with pytest.raises(InvalidInputError, match="key_by"):
        stream.reduce_last(3, count("n"))
    with pytest.raises(InvalidInputError, match="n >= 1"):
        stream.key_by("key").reduce_last(0, count("n"))
