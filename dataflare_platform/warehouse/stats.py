"""Daily batch statistics over the Nexmark warehouse tables, computed in DuckDB."""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import pyarrow as pa

from dataflare_platform.sql_names import quote_identifier
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


DAILY_CATEGORY_STATS_TABLE = "daily_category_stats"

DAILY_CATEGORY_STATS_DDL = f"""
CREATE TABLE IF NOT EXISTS {DAILY_CATEGORY_STATS_TABLE} (
    day DATE NOT NULL,
    category BIGINT,
    auctions_opened BIGINT NOT NULL,
    auctions_closed BIGINT NOT NULL,
    avg_winning_price DOUBLE,
    bids BIGINT NOT NULL
)
"""

# One row per category with activity on the day. An auction *closes* on the day its
# ``expires`` falls in, and counts as closed with a winner only if a bid arrived within
# [date_time, expires]; its winning price is the highest such bid (Nexmark q4's rule). The
# winning bids may have been placed on earlier days, so they are looked up over all bids.
_DAILY_CATEGORY_STATS_SELECT = """
WITH opened AS (
    SELECT category, count(*) AS auctions_opened
    FROM auctions
    WHERE date_time >= $start AND date_time < $stop
    GROUP BY category
), winners AS (
    SELECT a.category, max(b.price) AS winning_price
    FROM auctions a JOIN bids b
      ON b.auction = a.id AND b.date_time BETWEEN a.date_time AND a.expires
    WHERE a.expires >= $start AND a.expires < $stop
    GROUP BY a.id, a.category
), closed AS (
    SELECT category, count(*) AS auctions_closed, avg(winning_price) AS avg_winning_price
    FROM winners
    GROUP BY category
), bidding AS (
    SELECT a.category, count(*) AS bids
    FROM bids b JOIN auctions a ON b.auction = a.id
    WHERE b.date_time >= $start AND b.date_time < $stop
    GROUP BY a.category
), categories AS (
    SELECT category FROM opened
    UNION SELECT category FROM closed
    UNION SELECT category FROM bidding
)
SELECT CAST($start AS DATE) AS day,
       k.category,
       coalesce(o.auctions_opened, 0) AS auctions_opened,
       coalesce(c.auctions_closed, 0) AS auctions_closed,
       c.avg_winning_price,
       coalesce(g.bids, 0) AS bids
FROM categories k
LEFT JOIN opened o ON o.category IS NOT DISTINCT FROM k.category
LEFT JOIN closed c ON c.category IS NOT DISTINCT FROM k.category
LEFT JOIN bidding g ON g.category IS NOT DISTINCT FROM k.category
"""

DAILY_PERSON_ACTIVITY_TABLE = "daily_person_activity"

DAILY_PERSON_ACTIVITY_DDL = f"""
CREATE TABLE IF NOT EXISTS {DAILY_PERSON_ACTIVITY_TABLE} (
    day DATE NOT NULL,
    person BIGINT,
    is_new BOOLEAN NOT NULL,
    bids BIGINT NOT NULL,
    auctions_opened BIGINT NOT NULL,
    distinct_auctions_bid BIGINT NOT NULL,
    amount_bid BIGINT NOT NULL,
    first_activity TIMESTAMP NOT NULL,
    last_activity TIMESTAMP NOT NULL
)
"""

# One row per person who did anything on the day: registered (``is_new``), bid or opened
# an auction. First/last activity span all three kinds of event on that day.
_DAILY_PERSON_ACTIVITY_SELECT = """
WITH registered AS (
    SELECT id AS person, min(date_time) AS registered_at
    FROM persons
    WHERE date_time >= $start AND date_time < $stop
    GROUP BY id
), bidding AS (
    SELECT bidder AS person,
           count(*) AS bids,
           count(DISTINCT auction) AS distinct_auctions_bid,
           CAST(sum(price) AS BIGINT) AS amount_bid,
           min(date_time) AS first_bid,
           max(date_time) AS last_bid
    FROM bids
    WHERE date_time >= $start AND date_time < $stop
    GROUP BY bidder
), selling AS (
    SELECT seller AS person,
           count(*) AS auctions_opened,
           min(date_time) AS first_auction,
           max(date_time) AS last_auction
    FROM auctions
    WHERE date_time >= $start AND date_time < $stop
    GROUP BY seller
), people AS (
    SELECT person FROM registered
    UNION SELECT person FROM bidding
    UNION SELECT person FROM selling
)
SELECT CAST($start AS DATE) AS day,
       p.person,
       r.person IS NOT NULL AS is_new,
       coalesce(b.bids, 0) AS bids,
       coalesce(s.auctions_opened, 0) AS auctions_opened,
       coalesce(b.distinct_auctions_bid, 0) AS distinct_auctions_bid,
       coalesce(b.amount_bid, 0) AS amount_bid,
       least(r.registered_at, b.first_bid, s.first_auction) AS first_activity,
       greatest(r.registered_at, b.last_bid, s.last_auction) AS last_activity
FROM people p
LEFT JOIN registered r ON r.person IS NOT DISTINCT FROM p.person
LEFT JOIN bidding b ON b.person IS NOT DISTINCT FROM p.person
LEFT JOIN selling s ON s.person IS NOT DISTINCT FROM p.person
"""


def _bounds(day: date) -> dict[str, object]:
    return {"start": day, "stop": day + timedelta(days=1)}


def _replace_day(
    conn: duckdb.DuckDBPyConnection, table: str, ddl: str, select: str, day: date
) -> int:
    """Replace ``table``'s rows of ``day`` by ``select``'s in one transaction; row count.

    Delete-then-insert in one transaction makes a re-run of the same day idempotent,
    which is what a Dagster partition re-materialization or backfill needs, and a failure
    half-way leaves the previous rows of the day in place.
    """
    conn.execute(ddl)
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute(f"DELETE FROM {table} WHERE day = $day", {"day": day})
        conn.execute(f"INSERT INTO {table} {select}", _bounds(day))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return scalar(conn, f"SELECT count(*) FROM {table} WHERE day = $day", {"day": day})


def _read_day(conn: duckdb.DuckDBPyConnection, table: str, day: date, order: str) -> pa.Table:
    return conn.sql(
        f"SELECT * FROM {table} WHERE day = $day ORDER BY {order}", params={"day": day}
    ).to_arrow_table()


def compute_daily_seller_stats(conn: duckdb.DuckDBPyConnection, day: date) -> int:
    """(Re)compute one day of seller statistics atomically; returns its row count."""
    return _replace_day(
        conn, DAILY_SELLER_STATS_TABLE, DAILY_SELLER_STATS_DDL, _DAILY_SELLER_STATS_SELECT, day
    )


def read_daily_seller_stats(conn: duckdb.DuckDBPyConnection, day: date) -> pa.Table:
    return _read_day(conn, DAILY_SELLER_STATS_TABLE, day, "seller")


def compute_daily_category_stats(conn: duckdb.DuckDBPyConnection, day: date) -> int:
    """(Re)compute one day of category statistics atomically; returns its row count.

    Reads the ``auctions`` and ``bids`` tables (whole history: a winning bid can predate
    the day its auction closes).
    """
    return _replace_day(
        conn,
        DAILY_CATEGORY_STATS_TABLE,
        DAILY_CATEGORY_STATS_DDL,
        _DAILY_CATEGORY_STATS_SELECT,
        day,
    )


def read_daily_category_stats(conn: duckdb.DuckDBPyConnection, day: date) -> pa.Table:
    return _read_day(conn, DAILY_CATEGORY_STATS_TABLE, day, "category")


def compute_daily_person_activity(conn: duckdb.DuckDBPyConnection, day: date) -> int:
    """(Re)compute one day of per-person activity atomically; returns its row count.

    Reads ``persons``, ``auctions`` and ``bids``.
    """
    return _replace_day(
        conn,
        DAILY_PERSON_ACTIVITY_TABLE,
        DAILY_PERSON_ACTIVITY_DDL,
        _DAILY_PERSON_ACTIVITY_SELECT,
        day,
    )


def read_daily_person_activity(conn: duckdb.DuckDBPyConnection, day: date) -> pa.Table:
    return _read_day(conn, DAILY_PERSON_ACTIVITY_TABLE, day, "person")


def event_days(conn: duckdb.DuckDBPyConnection, table: str = "bids") -> list[date]:
    """Days (UTC) on which ``table`` has events, oldest first."""
    rows = conn.execute(
        f"SELECT DISTINCT CAST(date_time AS DATE) AS d FROM {quote_identifier(table)} ORDER BY d"
    ).fetchall()
    return [r[0] for r in rows]
