"""Data-quality rules over warehouse tables, as plain functions returning findings.

They know nothing of Dagster: the control plane turns a ``QualityReport`` into an asset
check result, and anything else (CLI, tests) can run them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import duckdb

from dataflare_platform.sql_names import quote_identifier
from dataflare_platform.warehouse.connection import scalar
from dataflare_platform.warehouse.stats import (
    DAILY_CATEGORY_STATS_DDL,
    DAILY_CATEGORY_STATS_TABLE,
    DAILY_PERSON_ACTIVITY_DDL,
    DAILY_PERSON_ACTIVITY_TABLE,
    DAILY_SELLER_STATS_DDL,
    DAILY_SELLER_STATS_TABLE,
)


@dataclass(frozen=True)
class QualityReport:
    """Outcome of one rule set: which rules failed, how many rows each, and examples."""

    rows_checked: int
    failures: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[dict]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    def describe(self) -> str:
        if self.passed:
            return f"all rules passed on {self.rows_checked} rows"
        parts = [f"{rule}: {count} rows" for rule, count in self.failures.items()]
        return "failed " + "; ".join(parts)


def _run_rules(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    rules: dict[str, str],
    where: str = "TRUE",
    params: dict | None = None,
    empty_is_failure: bool = False,
) -> QualityReport:
    """Each rule is a SQL predicate a *bad* row satisfies."""
    params = params or {}
    total = scalar(conn, f"SELECT count(*) FROM {quote_identifier(table)} WHERE {where}", params)
    failures: dict[str, int] = {}
    samples: dict[str, list[dict]] = {}
    if empty_is_failure and total == 0:
        failures["non_empty"] = 1
    for name, bad in rules.items():
        count = scalar(
            conn,
            f"SELECT count(*) FROM {quote_identifier(table)} WHERE ({where}) AND ({bad})",
            params,
        )
        if count:
            failures[name] = count
            sample = conn.sql(
                f"SELECT * FROM {quote_identifier(table)} WHERE ({where}) AND ({bad}) LIMIT 5",
                params=params,
            ).to_arrow_table()
            samples[name] = sample.to_pylist()
    return QualityReport(rows_checked=total, failures=failures, samples=samples)


BID_RULES = {
    "price_positive": "price IS NULL OR price <= 0",
    "event_time_present": "date_time IS NULL",
    "ids_present": "auction IS NULL OR bidder IS NULL",
}

AUCTION_RULES = {
    "reserve_not_below_initial_bid": "reserve < initial_bid",
    "expires_after_creation": "expires <= date_time",
    "seller_present": "seller IS NULL",
}

DAILY_SELLER_STATS_RULES = {
    "seller_present": "seller IS NULL",
    "bid_order": "NOT (min_bid <= avg_bid AND avg_bid <= max_bid)",
    "prices_positive": "min_bid <= 0",
    "bidders_not_above_bids": "distinct_bidders > bids",
    "activity_present": "auctions_created = 0 AND bids = 0",
}

DAILY_CATEGORY_STATS_RULES = {
    "category_present": "category IS NULL",
    "counts_not_negative": "auctions_opened < 0 OR auctions_closed < 0 OR bids < 0",
    # A closed auction has a winning bid, hence a positive price; none closed, no price.
    # (spelt out: ``NOT (NULL > 0)`` is NULL, which would let a missing price pass)
    "winning_price_positive": "auctions_closed > 0 "
    "AND (avg_winning_price IS NULL OR avg_winning_price <= 0)",
    "no_price_without_winner": "auctions_closed = 0 AND avg_winning_price IS NOT NULL",
    "activity_present": "auctions_opened = 0 AND auctions_closed = 0 AND bids = 0",
}

DAILY_PERSON_ACTIVITY_RULES = {
    "person_present": "person IS NULL",
    "activity_order": "first_activity > last_activity",
    "activity_on_the_day": "CAST(first_activity AS DATE) <> day "
    "OR CAST(last_activity AS DATE) <> day",
    "distinct_auctions_not_above_bids": "distinct_auctions_bid > bids",
    # Prices are positive cents: n bids amount to at least n, and no bids to nothing.
    "amount_matches_bids": "amount_bid < bids OR (bids = 0 AND amount_bid <> 0)",
    "activity_present": "NOT is_new AND bids = 0 AND auctions_opened = 0",
}


def check_bids(conn: duckdb.DuckDBPyConnection) -> QualityReport:
    return _run_rules(conn, "bids", BID_RULES, empty_is_failure=True)


def check_auctions(conn: duckdb.DuckDBPyConnection) -> QualityReport:
    return _run_rules(conn, "auctions", AUCTION_RULES, empty_is_failure=True)


def check_daily_seller_stats(conn: duckdb.DuckDBPyConnection, day: date) -> QualityReport:
    conn.execute(DAILY_SELLER_STATS_DDL)  # a day never computed is empty, not an error
    return _run_rules(
        conn,
        DAILY_SELLER_STATS_TABLE,
        DAILY_SELLER_STATS_RULES,
        where="day = $day",
        params={"day": day},
        empty_is_failure=True,
    )


def check_daily_category_stats(conn: duckdb.DuckDBPyConnection, day: date) -> QualityReport:
    conn.execute(DAILY_CATEGORY_STATS_DDL)
    return _run_rules(
        conn,
        DAILY_CATEGORY_STATS_TABLE,
        DAILY_CATEGORY_STATS_RULES,
        where="day = $day",
        params={"day": day},
        empty_is_failure=True,
    )


def check_daily_person_activity(conn: duckdb.DuckDBPyConnection, day: date) -> QualityReport:
    conn.execute(DAILY_PERSON_ACTIVITY_DDL)
    return _run_rules(
        conn,
        DAILY_PERSON_ACTIVITY_TABLE,
        DAILY_PERSON_ACTIVITY_RULES,
        where="day = $day",
        params={"day": day},
        empty_is_failure=True,
    )
