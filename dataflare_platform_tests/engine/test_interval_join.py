"""The interval-join aggregate against an independent Polars join, for each way it finds
keys (direct table for dense integers, hash join otherwise), every aggregate kind,
null values, and a checkpoint restored mid-stream."""

import numpy as np
import polars as pl
import pytest

from dataflare_platform.engine import count, max_, mean, min_, sum_
from dataflare_platform.engine.operators.interval_tiers import Winner
from dataflare_platform.engine.operators.joins import IntervalJoinAggregate
from dataflare_platform.errors import InvalidInputError

AGGS = [
    count("n"),
    count("priced", column="price"),
    sum_("price", "total"),
    min_("price", "lo"),
    max_("price", "hi"),
    mean("price", "avg"),
    max_("date_time", "last_bid"),
]
OUT = ["n", "priced", "total", "lo", "hi", "avg", "last_bid"]


def make_streams(key_kind: str, seed: int = 0, auctions: int = 300, bids: int = 4_000):
    """Auctions opening over 60 s with 1–8 s lifetimes, and bids on them (some on
    unknown auctions, some outside the interval, some with a null price)."""
    rng = np.random.default_rng(seed)
    opened = np.sort(rng.integers(0, 60_000, auctions))
    ids = np.arange(auctions)
    keys = {"dense": ids + 1_000, "sparse": ids * 1_000_003, "string": ids}[key_kind]
    left = pl.DataFrame(
        {
            "id": keys,
            "category": rng.integers(0, 5, auctions),
            "date_time": opened,
            "expires": opened + rng.integers(1_000, 8_000, auctions),
        }
    )
    which = rng.integers(0, auctions + 20, bids)  # 20 ids beyond: no such auction
    base = np.where(which < auctions, opened[np.minimum(which, auctions - 1)], 30_000)
    price = rng.integers(1, 10_000, bids).astype(float)
    price[rng.random(bids) < 0.1] = np.nan
    right = pl.DataFrame(
        {
            "auction": np.where(which < auctions, keys[np.minimum(which, auctions - 1)], -1),
            "price": pl.Series(price).fill_nan(None).cast(pl.Int64),
            "date_time": base + rng.integers(-500, 9_000, bids),
        }
    )
    if key_kind == "string":
        left = left.with_columns(pl.format("a{}", "id").alias("id"))
        right = right.with_columns(pl.format("a{}", "auction").alias("auction"))
    as_time = [pl.col(c).cast(pl.Datetime("ms")) for c in ("date_time", "expires")]
    return left.with_columns(as_time), right.with_columns(as_time[0])


def expected(left: pl.DataFrame, right: pl.DataFrame) -> pl.DataFrame:
    joined = right.join(left, left_on="auction", right_on="id").filter(
        pl.col("date_time").is_between(pl.col("date_time_right"), pl.col("expires"))
    )
    return joined.group_by(pl.col("auction").alias("id"), "category").agg(
        pl.len().alias("n"),
        pl.col("price").count().alias("priced"),
        pl.col("price").sum().alias("total"),
        pl.col("price").min().alias("lo"),
        pl.col("price").max().alias("hi"),
        pl.col("price").mean().alias("avg"),
        pl.col("date_time").max().alias("last_bid"),
    )


def operator() -> IntervalJoinAggregate:
    op = IntervalJoinAggregate("id", "auction", "expires", ["id", "category"], AGGS)
    op.bind("date_time")
    return op


def feed(left, right, batch_rows, restore_after=None):
    """Both streams in event-time order, ``batch_rows`` at a time, advancing the
    watermark to 10 s behind the stream; optionally checkpoint and restore into a fresh
    operator after ``restore_after`` batches. Returns the emitted rows."""
    tagged = pl.concat(
        [
            left.select("date_time").with_row_index("i").with_columns(pl.lit(0).alias("port")),
            right.select("date_time").with_row_index("i").with_columns(pl.lit(1).alias("port")),
        ]
    ).sort("date_time", "port", maintain_order=True)
    op, out = operator(), []
    for done, chunk in enumerate(tagged.iter_slices(batch_rows), start=1):
        for (port,), part in chunk.partition_by("port", as_dict=True, maintain_order=True).items():
            rows = (left, right)[port][part["i"].to_numpy()]
            op.process(rows, port=port)
        emitted = op.advance(int(chunk["date_time"].max().timestamp() * 1000) - 10_000)
        if emitted is not None:
            out.append(emitted)
        if done == restore_after:
            state = op.snapshot()
            op = operator()
            op.restore(state)
    final = op.advance(2**62)
    if final is not None:
        out.append(final)
    assert op.state_rows() == 0  # every interval closed, nothing pending
    return pl.concat(out, how="vertical_relaxed")


def same(got: pl.DataFrame, want: pl.DataFrame) -> None:
    got = got.select("id", "category", *OUT).sort("id")
    want = want.select("id", "category", *OUT).sort("id")
    assert got.height == want.height
    assert got.drop("avg").equals(want.drop("avg").cast(got.drop("avg").schema))
    assert np.allclose(got["avg"].to_numpy(), want["avg"].to_numpy(), equal_nan=True)


@pytest.mark.parametrize("key_kind", ["dense", "sparse", "string"])
@pytest.mark.parametrize("batch_rows", [1, 37, 5_000])
def test_interval_aggregates_match_a_polars_join(key_kind, batch_rows):
    left, right = make_streams(key_kind)
    if batch_rows == 1:
        left, right = left.head(60), right.filter(pl.col("date_time") < left["date_time"][60])
    want = expected(left, right)
    assert want.height > 10  # the data exercise matching at all
    same(feed(left, right, batch_rows), want)


@pytest.mark.parametrize("key_kind", ["dense", "string"])
def test_restored_checkpoint_continues_the_same_aggregates(key_kind):
    left, right = make_streams(key_kind, seed=1)
    want = expected(left, right)
    for restore_after in (3, 10, 25):
        same(feed(left, right, 200, restore_after=restore_after), want)


def test_state_written_before_the_matched_count_restores():
    """Checkpoints taken by the earlier operator have no ``__matched`` column: a row
    counts as matched when its first partial is set."""
    left, right = make_streams("dense", seed=2)
    op = operator()
    op.process(left, port=0)
    op.process(right.filter(pl.col("date_time") < left["date_time"][150]), port=1)
    state = op.snapshot()
    legacy = {**state, "open": state["open"].drop(["__matched"])}
    fresh, old = operator(), operator()
    fresh.restore(state)
    old.restore(legacy)
    rest = right.filter(pl.col("date_time") >= left["date_time"][150])
    for o in (fresh, old):
        o.process(rest, port=1)
    a, b = fresh.advance(2**62), old.advance(2**62)
    assert a is not None and a.height > 0
    assert a.sort("id").equals(b.sort("id"))


# -- winner (argmax row): Nexmark q9's winning bid -------------------------------------
WIN_ORDER = (("price", True), ("date_time", False), ("bidder", False))
WIN_COLUMNS = (("bidder", "bidder"), ("price", "price"), ("date_time", "bid_time"))


def tied_streams(key_kind: str, seed: int):
    """``make_streams`` with coarse prices and times, so that equal prices and equal
    (price, time) pairs are common and the tie-breaks decide; null prices stay."""
    left, right = make_streams(key_kind, seed=seed)
    rng = np.random.default_rng(seed + 100)
    coarse_time = (pl.col("date_time").cast(pl.Int64) // 2_000 * 2_000).cast(pl.Datetime("ms"))
    right = right.with_columns(
        pl.col("price") // 2_500,
        coarse_time,
        pl.Series("bidder", rng.integers(0, 6, right.height)),
    )
    return left, right


WIN_OUT = ["id", "n", "bidder", "price", "bid_time"]


def winner_operator() -> IntervalJoinAggregate:
    op = IntervalJoinAggregate(
        "id",
        "auction",
        "expires",
        ["id", "category"],
        [count("n")],
        winner=Winner(WIN_ORDER, WIN_COLUMNS),
    )
    op.bind("date_time")
    return op


def expected_winners(left: pl.DataFrame, right: pl.DataFrame) -> pl.DataFrame:
    """Per auction with a bid in its interval: the bid ranking first (a null price
    never wins), by a sort and a first-per-group, independently of the operator."""
    joined = right.join(left, left_on="auction", right_on="id").filter(
        pl.col("date_time").is_between(pl.col("date_time_right"), pl.col("expires"))
    )
    n = joined.group_by(pl.col("auction").alias("id")).agg(pl.len().alias("n"))
    best = (
        joined.drop_nulls("price")
        .sort(["price", "date_time", "bidder"], descending=[True, False, False])
        .group_by("auction", maintain_order=True)
        .first()
        .select(
            pl.col("auction").alias("id"), "bidder", "price", pl.col("date_time").alias("bid_time")
        )
    )
    return n.join(best, on="id", how="left")


@pytest.mark.parametrize("key_kind", ["dense", "sparse", "string"])
@pytest.mark.parametrize("batch_rows", [1, 37, 5_000])
def test_winner_is_the_first_ranked_right_row(monkeypatch, key_kind, batch_rows):
    left, right = tied_streams(key_kind, seed=4)
    if batch_rows == 1:
        left, right = left.head(60), right.filter(pl.col("date_time") < left["date_time"][60])
    want = expected_winners(left, right)
    # The data exercise the tie-breaks: some auction has two bids at its top price.
    joined = right.join(left, left_on="auction", right_on="id").filter(
        pl.col("date_time").is_between(pl.col("date_time_right"), pl.col("expires"))
    )
    top = joined.filter(pl.col("price") == pl.col("price").max().over("auction"))
    assert top.group_by("auction").len()["len"].max() > 1
    monkeypatch.setattr(f"{__name__}.operator", winner_operator)
    got = feed(left, right, batch_rows).select(WIN_OUT).sort("id")
    assert got.equals(want.select(WIN_OUT).sort("id").cast(got.schema))
    # Auctions whose bids all have a null price are emitted without a winner.
    no_winner = pl.col("price").is_null()
    assert got.filter(no_winner).height == want.filter(no_winner).height


@pytest.mark.parametrize("key_kind", ["dense", "string"])
def test_restored_checkpoint_continues_the_same_winners(monkeypatch, key_kind):
    left, right = tied_streams(key_kind, seed=5)
    want = expected_winners(left, right).sort("id")
    monkeypatch.setattr(f"{__name__}.operator", winner_operator)
    for restore_after in (3, 10, 25):
        got = feed(left, right, 200, restore_after=restore_after).select(WIN_OUT).sort("id")
        assert got.equals(want.select(WIN_OUT).cast(got.schema))


def test_a_string_winner_column_is_refused():
    left, right = tied_streams("dense", seed=6)
    op = IntervalJoinAggregate(
        "id", "auction", "expires", ["id"], winner=Winner(WIN_ORDER, (("tag", "tag"),))
    )
    op.bind("date_time")
    op.process(left, port=0)
    with pytest.raises(InvalidInputError, match="tag"):
        op.process(right.with_columns(pl.format("b{}", "bidder").alias("tag")), port=1)


def test_right_rows_with_a_null_key_match_nothing_and_never_wait():
    """A bid without an auction id is dropped (whole batches of them too); bids that
    arrive before their auction wait in the pending form and match when it comes."""
    left, right = make_streams("dense", seed=5, auctions=50, bids=600)
    nulls = right.head(40).with_columns(pl.lit(None, pl.Int64).alias("auction"))
    with_nulls = pl.concat([right, nulls]).sort("date_time", maintain_order=True)
    op = operator()
    op.process(nulls.head(10), port=1)  # only null keys: nothing kept
    assert op.state_rows() == 0
    early = with_nulls.head(300)  # bids first: their auctions come after
    op.process(early, port=1)
    pending = op.state_rows()
    assert pending == early.filter(pl.col("auction").is_not_null()).height
    op.process(left, port=0)
    op.process(with_nulls.slice(300), port=1)
    got = op.advance(2**62)
    assert op.state_rows() == 0
    same(got, expected(left, right))
