from datetime import date

import polars as pl
import pytest

from dataflare_platform.datagen import SCHEMAS
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform.warehouse.connection import connect, scalar
from dataflare_platform.warehouse.loader import load_table
from dataflare_platform.warehouse.quality import (
    check_auctions,
    check_bids,
    check_daily_category_stats,
    check_daily_person_activity,
    check_daily_seller_stats,
)
from dataflare_platform.warehouse.stats import (
    compute_daily_category_stats,
    compute_daily_person_activity,
    compute_daily_seller_stats,
    event_days,
    read_daily_category_stats,
    read_daily_person_activity,
    read_daily_seller_stats,
)


@pytest.fixture
def warehouse(landed_home):
    with connect(landed_home.warehouse_path) as conn:
        for kind in ("persons", "auctions", "bids"):
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


def _landed(home, kind: str) -> pl.DataFrame:
    return pl.read_parquet(home.nexmark_dir / kind / "*.parquet")


def _polars_category_truth(home, day: date) -> pl.DataFrame:
    """Category statistics of ``day`` computed with Polars from the landed files."""
    auctions = _landed(home, "auctions")
    bids = _landed(home, "bids")
    opened = (
        auctions.filter(pl.col("date_time").dt.date() == day)
        .group_by("category")
        .agg(auctions_opened=pl.len())
    )
    closing = auctions.filter(pl.col("expires").dt.date() == day)
    closed = (
        closing.join(bids, left_on="id", right_on="auction", suffix="_bid")
        .filter(pl.col("date_time_bid").is_between(pl.col("date_time"), pl.col("expires")))
        .group_by("id", "category")
        .agg(winning_price=pl.col("price").max())
        .group_by("category")
        .agg(auctions_closed=pl.len(), avg_winning_price=pl.col("winning_price").mean())
    )
    bidding = (
        bids.filter(pl.col("date_time").dt.date() == day)
        .join(auctions.select("id", "category"), left_on="auction", right_on="id")
        .group_by("category")
        .agg(bids=pl.len())
    )
    return (
        opened.join(closed, on="category", how="full", coalesce=True)
        .join(bidding, on="category", how="full", coalesce=True)
        .with_columns(pl.col("auctions_opened", "auctions_closed", "bids").fill_null(0))
        .sort("category")
    )


def _polars_person_truth(home, day: date) -> pl.DataFrame:
    """Per-person activity of ``day`` computed with Polars from the landed files."""
    on_day = pl.col("date_time").dt.date() == day
    persons = _landed(home, "persons").filter(on_day)
    auctions = _landed(home, "auctions").filter(on_day)
    bids = _landed(home, "bids").filter(on_day)
    events = pl.concat(
        [
            persons.select(person="id", date_time="date_time", kind=pl.lit("register")),
            auctions.select(person="seller", date_time="date_time", kind=pl.lit("auction")),
            bids.select(person="bidder", date_time="date_time", kind=pl.lit("bid")),
        ]
    )
    activity = events.group_by("person").agg(
        is_new=(pl.col("kind") == "register").any(),
        auctions_opened=(pl.col("kind") == "auction").sum().cast(pl.Int64),
        first_activity=pl.col("date_time").min(),
        last_activity=pl.col("date_time").max(),
    )
    bidding = bids.group_by(person="bidder").agg(
        bids=pl.len(),
        distinct_auctions_bid=pl.col("auction").n_unique(),
        amount_bid=pl.col("price").sum(),
    )
    return (
        activity.join(bidding, on="person", how="left")
        .with_columns(pl.col("bids", "distinct_auctions_bid", "amount_bid").fill_null(0))
        .sort("person")
    )


def _assert_frames_equal(got: pl.DataFrame, truth: pl.DataFrame) -> None:
    truth = truth.select(got.columns)
    assert got.height == truth.height > 0
    assert got.cast(truth.schema).equals(truth), (got, truth)


def test_daily_category_stats_match_an_independent_polars_computation(warehouse, landed_home):
    """Every day of the generated data, including days where auctions closed with winning
    bids placed the day before (the lookup must span all bids, not the day's)."""
    days = event_days(warehouse)
    assert len(days) >= 2
    closed_total = 0
    for day in days:
        rows = compute_daily_category_stats(warehouse, day)
        got = pl.from_arrow(read_daily_category_stats(warehouse, day)).drop("day")
        truth = _polars_category_truth(landed_home, day)
        assert rows == truth.height
        _assert_frames_equal(got, truth)
        closed_total += int(got["auctions_closed"].sum())
    assert closed_total > 0  # the data exercises the winning-bid path, not only nulls


def test_daily_person_activity_matches_an_independent_polars_computation(warehouse, landed_home):
    days = event_days(warehouse)
    new_people = 0
    for day in days:
        rows = compute_daily_person_activity(warehouse, day)
        got = pl.from_arrow(read_daily_person_activity(warehouse, day)).drop("day")
        truth = _polars_person_truth(landed_home, day)
        assert rows == truth.height
        _assert_frames_equal(got, truth)
        new_people += int(got["is_new"].sum())
    persons = scalar(warehouse, "SELECT count(*) FROM persons")
    assert new_people == persons  # every registration is flagged new on exactly one day


def test_new_tables_recompute_idempotently_and_pass_their_rules(warehouse):
    day = event_days(warehouse)[0]
    for compute, check, table in (
        (compute_daily_category_stats, check_daily_category_stats, "daily_category_stats"),
        (compute_daily_person_activity, check_daily_person_activity, "daily_person_activity"),
    ):
        first = compute(warehouse, day)
        assert compute(warehouse, day) == first > 0
        assert scalar(warehouse, f"SELECT count(*) FROM {quote_identifier(table)}") == first
        report = check(warehouse, day)
        assert report.passed, report.describe()
        assert report.rows_checked == first


def test_new_table_rules_catch_inconsistent_rows(warehouse):
    day = event_days(warehouse)[0]
    compute_daily_category_stats(warehouse, day)
    compute_daily_person_activity(warehouse, day)
    warehouse.execute(
        "UPDATE daily_category_stats SET avg_winning_price = NULL "
        "WHERE day = $day AND auctions_closed > 0",
        {"day": day},
    )
    broken = scalar(
        warehouse,
        "SELECT count(*) FROM daily_category_stats WHERE day = $day AND auctions_closed > 0",
        {"day": day},
    )
    assert broken > 0
    report = check_daily_category_stats(warehouse, day)
    assert report.failures == {"winning_price_positive": broken}

    warehouse.execute(
        "UPDATE daily_person_activity SET distinct_auctions_bid = bids + 1 "
        "WHERE day = $day AND bids > 0",
        {"day": day},
    )
    bidders = scalar(
        warehouse,
        "SELECT count(*) FROM daily_person_activity WHERE day = $day AND bids > 0",
        {"day": day},
    )
    report = check_daily_person_activity(warehouse, day)
    assert report.failures == {"distinct_auctions_not_above_bids": bidders}
    assert len(report.samples["distinct_auctions_not_above_bids"]) == min(bidders, 5)
    empty = check_daily_person_activity(warehouse, date(2030, 1, 1))
    assert empty.failures == {"non_empty": 1}
