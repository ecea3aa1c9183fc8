"""Batch statistics over the event store: the hottest auctions of one hour of bids.

Read straight from the topic's segment files with a Polars lazy scan (the files are the
store; no copy into the warehouse first) and written as one Parquet file per hour,
replaced atomically, so a backfill may recompute any hour any number of times and hours
run in parallel without sharing a writer.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from dataflare_platform.durable import write_atomic
from dataflare_platform.events.log import Topic
from dataflare_platform.times import as_utc

HOUR = timedelta(hours=1)


def hourly_leaderboard(topic: Topic, hour: datetime, top: int = 10) -> pl.DataFrame:
    """Auctions by bids in [hour, hour + 1 h): bids, distinct bidders, highest price."""
    start = as_utc(hour).replace(tzinfo=None)  # the topic's naive UTC event times
    end = start + HOUR
    bids = topic.scan().filter(pl.col("date_time").is_between(start, end, closed="left"))
    return (
        bids.group_by("auction")
        .agg(
            pl.len().alias("bids"),
            pl.col("bidder").n_unique().alias("bidders"),
            pl.col("price").max().alias("max_price"),
        )
        .sort(["bids", "max_price", "auction"], descending=[True, True, False])
        .head(top)
        .with_columns(pl.lit(start).cast(pl.Datetime("ms")).alias("hour"))
        .select("hour", "auction", "bids", "bidders", "max_price")
        .collect()
    )


def write_hour(frame: pl.DataFrame, root: Path, hour: datetime) -> Path:
    """``root/hour=YYYY-MM-DDTHH/leaderboard.parquet``, replaced atomically."""
    directory = Path(root) / f"hour={hour:%Y-%m-%dT%H}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "leaderboard.parquet"
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    write_atomic(path, buffer.getvalue())
    return path
