"""Daily batch statistics over the Nexmark warehouse tables, computed in DuckDB."""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import pyarrow as pa

from dataflare_platform.warehouse.connection import scalar

DAILY_SELLER_STATS_TABLE = "daily_seller_stats"

DAILY_SELLER_STATS_DDL = f"""
CREATE TABLE IF NOT EXISTS {DAILY_SELLER_STATS_TABLE} (
    day DATE NOT NULL,
    seller BIGINT,
    auctions_created BIGINT NOT NULL,
    bids BIGINT NOT NULL,
    distinct_bidders BIGINT NOT NULL,
    min_bid BIGINT,
    max_bid BIGINT,
    avg_bid DOUBLE,
    bid_volume BIGINT NOT NULL
)
"""

# One row per seller active on the day: auctions they opened that day, and the bids placed
# that day on any of their auctions (joined through auctions.id).
_DAILY_SELLER_STATS_SELECT = """
WITH created AS (
    SELECT seller, count(*) AS auctions_created
    FROM auctions
    WHERE date_time >= $start AND date_time < $stop
    GROUP BY seller
), bidding AS (
    SELECT a.seller,
           count(*) AS bids,
           count(DISTINCT b.bidder) AS distinct_bidders,
           min(b.price) AS min_bid,
           max(b.price) AS max_bid,
           avg(b.price) AS avg_bid,
           CAST(sum(b.price) AS BIGINT) AS bid_volume
    FROM bids b JOIN auctions a ON b.auction = a.id
    WHERE b.date_time >= $start AND b.date_time < $stop
    GROUP BY a.seller
)
SELECT CAST($start AS DATE) AS day,
       coalesce(c.seller, g.seller) AS seller,
       coalesce(c.auctions_created, 0) AS auctions_created,
       coalesce(g.bids, 0) AS bids,
       coalesce(g.distinct_bidders, 0) AS distinct_bidders,
       g.min_bid,
       g.max_bid,
       g.avg_bid,
       coalesce(g.bid_volume, 0) AS bid_volume
FROM created c FULL OUTER JOIN bidding g ON c.seller = g.seller
"""


def _bounds(day: date) -> dict[str, object]:
    return {"start": day, "stop": day + timedelta(days=1)}


def compute_daily_seller_stats(conn: duckdb.DuckDBPyConnection, day: date) -> int:
    """(Re)compute one day's partition atomically; returns its row count.

    Delete-then-insert in one transaction makes a re-run of the same day idempotent,
    which is what a Dagster partition re-materialization or backfill needs.
    """
    conn.execute(DAILY_SELLER_STATS_DDL)
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute(f"DELETE FROM {DAILY_SELLER_STATS_TABLE} WHERE day = $day", {"day": day})
        conn.execute(
            f"INSERT INTO {DAILY_SELLER_STATS_TABLE} {_DAILY_SELLER_STATS_SELECT}", _bounds(day)
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return scalar(
        conn, f"SELECT count(*) FROM {DAILY_SELLER_STATS_TABLE} WHERE day = $day", {"day": day}
    )


def read_daily_seller_stats(conn: duckdb.DuckDBPyConnection, day: date) -> pa.Table:
    return conn.sql(
        f"SELECT * FROM {DAILY_SELLER_STATS_TABLE} WHERE day = $day ORDER BY seller",
        params={"day": day},
    ).to_arrow_table()


def event_days(conn: duckdb.DuckDBPyConnection, table: str = "bids") -> list[date]:
    """Days (UTC) on which ``table`` has events, oldest first."""
    rows = conn.execute(
        f'SELECT DISTINCT CAST(date_time AS DATE) AS d FROM "{table}" ORDER BY d'
    ).fetchall()
    return [r[0] for r in rows]
