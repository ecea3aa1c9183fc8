from datetime import date

import polars as pl
import pytest

from dataflare_platform.datagen import SCHEMAS
from dataflare_platform.warehouse.connection import connect, scalar
from dataflare_platform.warehouse.loader import load_table
from dataflare_platform.warehouse.quality import (
    check_auctions,
    check_bids,
    check_daily_seller_stats,
)
from dataflare_platform.warehouse.stats import (
    compute_daily_seller_stats,
    event_days,
    read_daily_seller_stats,
)


@pytest.fixture
def warehouse(landed_home):
    with connect(landed_home.warehouse_path) as conn:
        for kind in ("auctions", "bids"):
            load_table(conn, kind, landed_home.nexmark_dir / kind, SCHEMAS[kind])
        yield conn


def _polars_truth(home, day: date) -> pl.DataFrame:
    """The same statistic computed independently with Polars from the landed files."""
    auctions = pl.read_parquet(home.nexmark_dir / "auctions" / "*.parquet")
    bids = pl.read_parquet(home.nexmark_dir / "bids" / "*.parquet")
    on_day = pl.col("date_time").dt.date() == day
    created = auctions.filter(on_day).group_by("seller").agg(auctions_created=pl.len())
    bidding = (
        bids.filter(on_day)
        .join(auctions.select("id", "seller"), left_on="auction", right_on="id")
        .group_by("seller")
        .agg(
            bids=pl.len(),
            distinct_bidders=pl.col("bidder").n_unique(),
            min_bid=pl.col("price").min(),
            max_bid=pl.col("price").max(),
            avg_bid=pl.col("price").mean(),
            bid_volume=pl.col("price").sum(),
        )
    )
    return (
        created.join(bidding, on="seller", how="full", coalesce=True)
        .with_columns(
            pl.col("auctions_created", "bids", "distinct_bidders", "bid_volume").fill_null(0)
        )
        .sort("seller")
    )


def test_daily_seller_stats_match_an_independent_polars_computation(warehouse, landed_home):
    days = event_days(warehouse)
    assert len(days) >= 2
    for day in days:
        rows = compute_daily_seller_stats(warehouse, day)
        got = pl.from_arrow(read_daily_seller_stats(warehouse, day)).drop("day")
        truth = _polars_truth(landed_home, day).select(got.columns)
        assert rows == len(truth) > 0
        assert got.cast(truth.schema).equals(truth)


def test_recomputing_a_day_is_idempotent(warehouse):
    day = event_days(warehouse)[0]
    first = compute_daily_seller_stats(warehouse, day)
    assert compute_daily_seller_stats(warehouse, day) == first
    assert scalar(warehouse, "SELECT count(*) FROM daily_seller_stats") == first


def test_good_data_passes_every_rule(warehouse):
    day = event_days(warehouse)[0]
    compute_daily_seller_stats(warehouse, day)
    for report in (
        check_bids(warehouse),
        check_auctions(warehouse),
        check_daily_seller_stats(warehouse, day),
    ):
        assert report.passed, report.describe()
        assert report.rows_checked > 0


def test_bad_rows_fail_the_rules_with_counts_and_samples(warehouse):
    warehouse.execute(
        "INSERT INTO bids VALUES (1000, 1001, -5, 'x', 'u', TIMESTAMP '2026-01-01 01:00', ''),"
        " (1000, 1001, 0, 'x', 'u', NULL, '')"
    )
    report = check_bids(warehouse)
    assert not report.passed
    assert report.failures == {"price_positive": 2, "event_time_present": 1}
    assert {r["price"] for r in report.samples["price_positive"]} == {-5, 0}


def test_a_day_without_data_fails_its_check(warehouse):
    report = check_daily_seller_stats(warehouse, date(2030, 1, 1))
    assert report.failures == {"non_empty": 1}
