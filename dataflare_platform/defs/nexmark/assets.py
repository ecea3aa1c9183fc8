"""Nexmark assets: one warehouse table per event kind, and daily summaries over them."""

from collections.abc import Callable, Iterator
from datetime import date

import dagster as dg
import duckdb
import pyarrow as pa

from dataflare_platform.datagen.schemas import SCHEMAS
from dataflare_platform.defs.metadata import table_metadata
from dataflare_platform.defs.pools import WAREHOUSE_POOL, duckdb_file_tags
from dataflare_platform.defs.quality import check_result
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.errors import CorruptInputError
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform.warehouse.loader import load_table
from dataflare_platform.warehouse.quality import (
    QualityReport,
    check_daily_category_stats,
    check_daily_person_activity,
    check_daily_seller_stats,
)
from dataflare_platform.warehouse.stats import (
    DAILY_CATEGORY_STATS_TABLE,
    DAILY_PERSON_ACTIVITY_TABLE,
    DAILY_SELLER_STATS_TABLE,
    compute_daily_category_stats,
    compute_daily_person_activity,
    compute_daily_seller_stats,
    read_daily_category_stats,
    read_daily_person_activity,
    read_daily_seller_stats,
)

GROUP = "nexmark"
# Every step that opens the warehouse file: one at a time within a run (defs/pools.py).
WAREHOUSE_TAGS = duckdb_file_tags(WAREHOUSE_POOL)
KEY_PREFIX = "nexmark"
OWNERS = ["team:data-platform"]
daily_partitions = dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC")


def landing_key(kind: str) -> dg.AssetKey:
    return dg.AssetKey([KEY_PREFIX, "landing", kind])


landing_specs = [
    dg.AssetSpec(
        landing_key(kind),
        description=f"Nexmark {kind} files landed under <home>/events/nexmark/{kind}/ "
        "(written by `dataflare generate` or any producer of the same schema).",
        group_name=GROUP,
        kinds={"parquet"},
        owners=OWNERS,
    )
    for kind in SCHEMAS
]


def build_table_asset(kind: str) -> dg.AssetsDefinition:
    """One DuckDB table per event kind, replaced from every landed file of that kind."""

    @dg.asset(
        key=[KEY_PREFIX, kind],
        pool=WAREHOUSE_POOL,
        op_tags=WAREHOUSE_TAGS,
        deps=[landing_key(kind)],
        group_name=GROUP,
        kinds={"duckdb"},
        owners=OWNERS,
        description=f"All Nexmark {kind} events, loaded from the landing directory into "
        f"the DuckDB warehouse table `{kind}`.",
    )
    def _table(context: dg.AssetExecutionContext, dataflare: ProjectHomeResource):
        directory = dataflare.home.nexmark_dir / kind
        with dataflare.warehouse() as conn:
            try:
                result = load_table(conn, kind, directory, SCHEMAS[kind])
            except (CorruptInputError, FileNotFoundError) as err:
                raise dg.Failure(description=str(err)) from None
            preview = conn.sql(f"SELECT * FROM {quote_identifier(kind)} LIMIT 5").to_arrow_table()
        context.log.info(f"loaded {result.rows} {kind} from {len(result.files)} files")
        return dg.MaterializeResult(
            metadata={
                **table_metadata(kind, preview, result.rows, asset=f"{KEY_PREFIX}/{kind}"),
                "files": len(result.files),
                "source": dg.MetadataValue.path(str(directory)),
            }
        )

    return _table


persons, auctions, bids = (build_table_asset(kind) for kind in ("persons", "auctions", "bids"))

DAILY_SELLER_STATS_KEY = dg.AssetKey([KEY_PREFIX, DAILY_SELLER_STATS_TABLE])
DAILY_SELLER_STATS_CHECK = "daily_seller_stats_rules"


@dg.asset(
    key=DAILY_SELLER_STATS_KEY,
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_TAGS,
    deps=[auctions, bids],
    partitions_def=daily_partitions,
    group_name=GROUP,
    kinds={"duckdb"},
    owners=OWNERS,
    description="Per seller and UTC day: auctions opened, bids received on their auctions, "
    "distinct bidders, min/avg/max bid and bid volume (cents).",
    check_specs=[
        dg.AssetCheckSpec(
            DAILY_SELLER_STATS_CHECK,
            asset=DAILY_SELLER_STATS_KEY,
            blocking=True,
            description="The day's rows exist and are consistent: seller present, "
            "0 < min_bid ≤ avg_bid ≤ max_bid, distinct bidders ≤ bids, activity in every row.",
        )
    ],
)
def daily_seller_stats(context: dg.AssetExecutionContext, dataflare: ProjectHomeResource):
    day = date.fromisoformat(context.partition_key)
    with dataflare.warehouse() as conn:
        rows = compute_daily_seller_stats(conn, day)
        stats = read_daily_seller_stats(conn, day)
        report = check_daily_seller_stats(conn, day)
    metadata = table_metadata(
        DAILY_SELLER_STATS_TABLE, stats, rows, asset=DAILY_SELLER_STATS_KEY.to_user_string()
    )
    if rows:
        metadata["total_bids"] = int(sum(stats.column("bids").to_pylist()))
    yield dg.MaterializeResult(metadata=metadata)
    yield check_result(
        report, asset_key=DAILY_SELLER_STATS_KEY, check_name=DAILY_SELLER_STATS_CHECK
    )


# The warehouse tables are reloaded on demand (nexmark_ingest_job, or whoever lands new
# files), not on a clock, so a cron condition would compute a day from whatever happened
# to be loaded at that minute. ``eager()`` follows the data instead: it computes the latest
# complete UTC day when that day first becomes the latest and again after every reload of
# an upstream table (``in_latest_time_window``: history is left to backfills), waits while
# a load is still running, and does nothing while an upstream table was never loaded. The
# code location's automation sensor (defs/automation.py, on by default) evaluates it; the
# 00:30 schedule of nexmark_daily_stats_job is the clock-driven path. Both replace the
# day's rows idempotently, so an eager and a scheduled run of the same day agree.
DAILY_STATS_AUTOMATION = dg.AutomationCondition.eager()

DailyCompute = Callable[[duckdb.DuckDBPyConnection, date], int]
DailyRead = Callable[[duckdb.DuckDBPyConnection, date], pa.Table]
DailyCheck = Callable[[duckdb.DuckDBPyConnection, date], QualityReport]


def build_daily_stats_asset(
    table: str,
    *,
    deps: list[dg.AssetsDefinition],
    description: str,
    check_description: str,
    compute: DailyCompute,
    read: DailyRead,
    check: DailyCheck,
    totals: tuple[str, ...],
) -> dg.AssetsDefinition:
    """A daily-partitioned DuckDB summary: compute the partition's day in the data plane,
    report row count/schema/preview and the sums of ``totals``, and run the day's
    consistency rules as an asset check inside the same step (so a backfill checks every
    day it computes). The check is blocking: a failing day (ERROR severity) fails its step
    after the materialization is recorded, so the run fails instead of looking green and
    nothing downstream of the day runs on inconsistent rows."""
    key = dg.AssetKey([KEY_PREFIX, table])
    check_name = f"{table}_rules"

    @dg.asset(
        key=key,
        pool=WAREHOUSE_POOL,
        op_tags=WAREHOUSE_TAGS,
        deps=deps,
        partitions_def=daily_partitions,
        group_name=GROUP,
        kinds={"duckdb"},
        owners=OWNERS,
        description=description,
        automation_condition=DAILY_STATS_AUTOMATION,
        check_specs=[
            dg.AssetCheckSpec(check_name, asset=key, blocking=True, description=check_description)
        ],
    )
    def _daily(
        context: dg.AssetExecutionContext, dataflare: ProjectHomeResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        day = date.fromisoformat(context.partition_key)
        with dataflare.warehouse() as conn:
            rows = compute(conn, day)
            stats = read(conn, day)
            report = check(conn, day)
        metadata = table_metadata(table, stats, rows, asset=f"{KEY_PREFIX}/{table}")
        for column in totals:
            metadata[f"total_{column}"] = int(sum(v or 0 for v in stats.column(column).to_pylist()))
        yield dg.MaterializeResult(metadata=metadata)
        yield check_result(report, asset_key=key, check_name=check_name)

    return _daily


DAILY_CATEGORY_STATS_KEY = dg.AssetKey([KEY_PREFIX, DAILY_CATEGORY_STATS_TABLE])
DAILY_CATEGORY_STATS_CHECK = f"{DAILY_CATEGORY_STATS_TABLE}_rules"
DAILY_PERSON_ACTIVITY_KEY = dg.AssetKey([KEY_PREFIX, DAILY_PERSON_ACTIVITY_TABLE])
DAILY_PERSON_ACTIVITY_CHECK = f"{DAILY_PERSON_ACTIVITY_TABLE}_rules"

daily_category_stats = build_daily_stats_asset(
    DAILY_CATEGORY_STATS_TABLE,
    deps=[auctions, bids],
    description="Per auction category and UTC day: auctions opened, auctions that closed "
    "(expired) that day with a winning bid, their average winning price (highest bid within "
    "[opening, expiry], cents) and bids placed on the category's auctions.",
    check_description="The day's rows exist and are consistent: category present, counts "
    "≥ 0, a positive average winning price exactly when auctions closed, activity in every "
    "row.",
    compute=compute_daily_category_stats,
    read=read_daily_category_stats,
    check=check_daily_category_stats,
    totals=("auctions_opened", "auctions_closed", "bids"),
)

daily_person_activity = build_daily_stats_asset(
    DAILY_PERSON_ACTIVITY_TABLE,
    deps=[persons, auctions, bids],
    description="Per person and UTC day: bids placed, auctions opened, distinct auctions "
    "bid on, amount bid (cents) and first/last activity time; persons who registered that "
    "day are flagged `is_new`.",
    check_description="The day's rows exist and are consistent: person present, first ≤ "
    "last activity within the day, distinct auctions ≤ bids, amount ≥ bids, and every row "
    "is new or active.",
    compute=compute_daily_person_activity,
    read=read_daily_person_activity,
    check=check_daily_person_activity,
    totals=("bids", "auctions_opened"),
)
