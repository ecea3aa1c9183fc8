"""Session windows: the operator keeps per-session partials (not raw events) and must give
what a gap-based sessionization of all the events gives, whatever the batch size, across
a snapshot and restore, and from a checkpoint of the earlier raw-events format."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from dataflare_platform.engine.aggregations import count, count_distinct, max_, mean, min_, sum_
from dataflare_platform.engine.operators.windows import SessionAggregate, _running_max
from dataflare_platform_tests.engine.helpers import drive

T0 = 1_700_000_000_000
GAP = 3_000
JITTER = 1_500  # events arrive up to this much out of order; the watermark is 2 s behind
AGGS = [
    count("n"),
    count("n_value", "value"),
    sum_("value", "total"),
    min_("value", "lo"),
    max_("value", "hi"),
    mean("value", "avg"),
    count_distinct("tag", "tags"),
    max_("date_time", "last_seen"),
]


def events(seed: int, n: int = 3_000, keys: int = 200, null_keys: bool = False) -> pl.DataFrame:
    """Out-of-order events over ~100 s: most keys a few seconds apart (around the gap,
    so sessions open, close, and get bridged by late-arriving events), a few hot keys
    whose sessions last the whole stream."""
    rng = np.random.default_rng(seed)
    base = np.sort(rng.integers(0, 100_000, n))
    times = T0 + np.clip(base - rng.integers(0, JITTER, n), 0, None)
    hot = rng.random(n) < 0.2
    key = pl.Series(np.where(hot, rng.integers(0, 3, n), rng.integers(3, keys, n)))
    if null_keys:
        key = key.set(pl.Series(rng.random(n) < 0.05), None)
    return pl.DataFrame(
        {
            "key": key,
            "value": pl.Series(rng.integers(-500, 500, n)).set(
                pl.Series(rng.random(n) < 0.1), None
            ),
            "tag": rng.integers(0, 20, n),
            "date_time": pl.Series(times).cast(pl.Datetime("ms")),
        }
    )


def truth(df: pl.DataFrame) -> pl.DataFrame:
    """Every event at once, sessionized by gaps (as the raw-events operator did)."""
    ts = pl.col("date_time").dt.epoch("ms")
    return (
        df.with_columns(ts.alias("t"))
        .sort("key", "t")
        .with_columns(
            (pl.col("t").diff().over("key").fill_null(GAP) >= GAP).cum_sum().over("key").alias("s")
        )
        .group_by("key", "s")
        .agg(
            pl.col("t").min().alias("start"),
            (pl.col("t").max() + GAP).alias("end"),
            pl.len().alias("n"),
            pl.col("value").count().alias("n_value"),
            pl.col("value").sum().alias("total"),
            pl.col("value").min().alias("lo"),
            pl.col("value").max().alias("hi"),
            pl.col("value").mean().alias("avg"),
            pl.col("tag").n_unique().alias("tags"),
            pl.col("date_time").max().alias("last_seen"),
        )
        .drop("s")
        .sort("start", "key")
    )


def operator() -> SessionAggregate:
    op = SessionAggregate(GAP, ["key"], list(AGGS))
    op.time_column = "date_time"
    return op


def finish(op: SessionAggregate, out: list[pl.DataFrame]) -> pl.DataFrame:
    fired = op.advance(2**62)
    if fired is not None:
        out.append(fired)
    assert op.state_rows() == 0
    return as_truth(pl.concat(out))


def as_truth(got: pl.DataFrame) -> pl.DataFrame:
    return got.with_columns(
        pl.col("window_start").dt.epoch("ms").alias("start"),
        pl.col("window_end").dt.epoch("ms").alias("end"),
    ).select(truth(events(0, n=10)).columns)


def assert_same(got: pl.DataFrame, want: pl.DataFrame) -> None:
    got = got.sort("start", "key")
    assert got.height == want.height > 0
    assert got.drop("avg").equals(want.drop("avg").cast(got.drop("avg").schema))
    assert got["avg"].to_numpy() == pytest.approx(want["avg"].to_numpy(), nan_ok=True)


@pytest.mark.parametrize("batch_rows", [1, 7, 100, 1_000, 10_000])
@pytest.mark.parametrize("seed", [1, 2])
def test_sessions_do_not_depend_on_the_batch_size(batch_rows, seed):
    df = events(seed, n=600 if batch_rows == 1 else 3_000)
    op = operator()
    assert_same(finish(op, drive(op, df, batch_rows)), truth(df))


def test_null_keys_make_their_own_sessions():
    df = events(3, null_keys=True)
    op = operator()
    got = finish(op, drive(op, df, 250))
    assert got["key"].null_count() > 0
    assert_same(got, truth(df))


def test_an_event_bridging_two_open_sessions_merges_them():
    # key 1: sessions [0, 1000] and [4000, 5000] (gap 3 s), then a late event at 2500
    # joins them into one; key 2 keeps its two sessions.
    times = [0, 1_000, 4_000, 5_000, 0, 4_000, 2_500]
    df = pl.DataFrame(
        {
            "key": [1, 1, 1, 1, 2, 2, 1],
            "value": list(range(7)),
            "tag": [0] * 7,
            "date_time": pl.Series([T0 + t for t in times]).cast(pl.Datetime("ms")),
        }
    )
    op = operator()
    op.process(df.slice(0, 6))
    assert op.state_rows() == 4
    op.process(df.slice(6))
    assert op.state_rows() == 3
    got = finish(op, [])
    assert_same(got, truth(df))
    assert got.filter(pl.col("key") == 1)["n"].to_list() == [5]


@pytest.mark.parametrize("cut", [1, 999, 1_777])
def test_sessions_survive_snapshot_and_restore_mid_stream(cut):
    df = events(4)
    first = operator()
    out = drive(first, df, 300, stop=cut)
    state = first.snapshot()
    assert set(state) == {"sessions"}
    second = operator()
    second.restore(state)
    assert second.state_rows() == first.state_rows()
    out += drive(second, df, 300, start=cut)
    assert_same(finish(second, out), truth(df))


@pytest.mark.parametrize("cut", [500, 1_777])
def test_a_checkpoint_of_raw_events_restores(cut):
    """The earlier checkpoint format held the open sessions' raw events under
    ``events``: those are the events seen so far minus the sessions already emitted."""
    df = events(5)
    first = operator()
    out = drive(first, df, 300, stop=cut)
    emitted = as_truth(pl.concat(out)) if out else truth(df.clear())
    seen = df.slice(0, cut).with_columns(pl.col("date_time").dt.epoch("ms").alias("t"))
    done = seen.join(emitted.select("key", "start", "end"), on="key").filter(
        (pl.col("t") >= pl.col("start")) & (pl.col("t") < pl.col("end"))
    )
    raw = seen.join(done.select("key", "t").unique(), on=["key", "t"], how="anti").drop("t")
    assert raw.height > 0
    second = operator()
    second.restore({"events": raw.to_arrow()})
    assert second.state_rows() == first.state_rows()
    out += drive(second, df, 300, start=cut)
    assert_same(finish(second, out), truth(df))


def test_a_failed_batch_rolls_back_to_the_savepoint():
    df = events(6)
    op = operator()
    out = drive(op, df, 500, stop=1_000)
    saved = op.savepoint()
    rows = op.state_rows()
    op.process(df.slice(1_000, 500))  # as if a later step failed on this batch
    op.rollback(saved)
    assert op.state_rows() == rows
    out += drive(op, df, 500, start=1_000)
    assert_same(finish(op, out), truth(df))


def test_running_max_restarts_per_segment_and_survives_huge_spans():
    values = np.array([5, 3, 9, 1, 2, 8, 4], np.int64)
    segment = np.array([0, 0, 0, 1, 1, 2, 2])
    assert _running_max(values, segment).tolist() == [5, 5, 9, 1, 2, 8, 8]
    huge = np.array([5, 3, 2**61, -(2**61), 2, 8, 4], np.int64)
    assert _running_max(huge, segment).tolist() == [5, 5, 2**61, -(2**61), 2, 8, 8]


COUNTS = [count("n"), count("n_value", "value")]


def counts_operator() -> SessionAggregate:
    op = SessionAggregate(GAP, ["key"], list(COUNTS))
    op.time_column = "date_time"
    return op


def counts_of(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select("start", "end", "key", "n", "n_value").sort("start", "key")


@pytest.mark.parametrize("batch_rows", [1, 7, 100, 10_000])
def test_count_only_sessions_folded_in_numpy_match(batch_rows, monkeypatch):
    """Counts per integer key are folded in numpy (q11); the same as the truth, and
    the same state frame as the Polars fold gives."""
    df = events(7, n=600 if batch_rows == 1 else 3_000)
    op = counts_operator()
    out = drive(op, df, batch_rows, stop=df.height // 2)
    numpy_state = op.snapshot()["sessions"]
    polars = counts_operator()
    monkeypatch.setattr(SessionAggregate, "_counts_only", lambda self, rows: False)
    drive(polars, df, batch_rows, stop=df.height // 2)
    monkeypatch.undo()
    assert (
        pl.from_arrow(numpy_state)
        .sort("key", "__start")
        .equals(pl.from_arrow(polars.snapshot()["sessions"]).sort("key", "__start"))
    )
    out += drive(op, df, batch_rows, start=df.height // 2)
    got = pl.concat([*out, op.advance(2**62)])
    assert counts_of(as_truth_counts(got)).equals(
        counts_of(truth(df)).cast(counts_of(as_truth_counts(got)).schema)
    )


def as_truth_counts(got: pl.DataFrame) -> pl.DataFrame:
    return got.with_columns(
        pl.col("window_start").dt.epoch("ms").alias("start"),
        pl.col("window_end").dt.epoch("ms").alias("end"),
    )


def test_a_null_key_moves_count_sessions_to_polars_and_restores():
    df = events(8, null_keys=True)
    head = df.filter(pl.col("key").is_not_null()).slice(0, 1_000)
    rest = df.join(head, on=df.columns, how="anti", nulls_equal=True)
    df = pl.concat([head, rest])
    first = counts_operator()
    out = drive(first, df, 250, stop=1_000)  # numpy
    second = counts_operator()
    second.restore(first.snapshot())
    out += drive(second, df, 250, start=1_000)  # null keys: Polars from here
    got = pl.concat([*out, second.advance(2**62)])
    assert got["key"].null_count() > 0
    assert counts_of(as_truth_counts(got)).equals(
        counts_of(truth(df)).cast(counts_of(as_truth_counts(got)).schema)
    )
