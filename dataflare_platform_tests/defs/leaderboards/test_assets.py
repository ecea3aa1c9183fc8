"""Hourly leaderboards from the event store, materialized partition by partition as a
backfill would, against a Polars reference over the same bids."""

from datetime import datetime, timedelta

import dagster as dg
import polars as pl

from dataflare_platform.datagen import NexmarkConfig
from dataflare_platform.defs.leaderboards.assets import hourly_hot_auctions
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.events.log import EventLog
from dataflare_platform_tests.nexmark_data import nexmark_tables

# ~2.8 hours of event time.
CONFIG = NexmarkConfig(events=30_000, events_per_second=3.0, seed=9)


def test_hours_backfilled_one_by_one_equal_a_polars_reference(home):
    bids = nexmark_tables(CONFIG)["bids"]
    topic = EventLog(home.event_log_dir).create_topic(
        "nexmark.bids", bids.schema, partitions=2, key="auction"
    )
    for start in range(0, bids.num_rows, 4_000):
        topic.append(bids.slice(start, 4_000))
    df = pl.from_arrow(bids)
    resources = {"dataflare": ProjectHomeResource(path=str(home.root))}
    for hour in ["2026-01-01-00:00", "2026-01-01-01:00", "2026-01-01-02:00", "2026-01-01-05:00"]:
        for _ in range(2):  # recomputing an hour gives the same file
            result = dg.materialize([hourly_hot_auctions], partition_key=hour, resources=resources)
            assert result.success
        start = datetime.strptime(hour, "%Y-%m-%d-%H:%M")
        expected = df.filter(
            pl.col("date_time").is_between(start, start + timedelta(hours=1), closed="left")
        )
        got = pl.read_parquet(
            home.root
            / "leaderboards"
            / "hourly_hot_auctions"
            / f"hour={start:%Y-%m-%dT%H}"
            / "leaderboard.parquet"
        )
        reference = (
            expected.group_by("auction")
            .agg(
                pl.len().alias("bids"),
                pl.col("bidder").n_unique().alias("bidders"),
                pl.col("price").max().alias("max_price"),
            )
            .sort(["bids", "max_price", "auction"], descending=[True, True, False])
            .head(10)
        )
        columns = ["auction", "bids", "bidders", "max_price"]
        assert got.select(columns).equals(
            reference.select(columns).cast(got.select(columns).schema)
        )
        if hour.endswith("05:00"):
            assert got.height == 0  # no bids that hour: an empty leaderboard, not an error
        else:
            assert got.height == 10
