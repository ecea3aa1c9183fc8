"""Nexmark assets: one warehouse table per event kind, and a daily seller summary."""

from datetime import date

import dagster as dg

from dataflare_platform.datagen.schemas import SCHEMAS
from dataflare_platform.defs.metadata import table_metadata
from dataflare_platform.defs.quality import check_result
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.errors import CorruptInputError
from dataflare_platform.warehouse.loader import load_table
from dataflare_platform.warehouse.quality import check_daily_seller_stats
from dataflare_platform.warehouse.stats import (
    DAILY_SELLER_STATS_TABLE,
    compute_daily_seller_stats,
    read_daily_seller_stats,
)

GROUP = "nexmark"
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
            preview = conn.sql(f'SELECT * FROM "{kind}" LIMIT 5').to_arrow_table()
        context.log.info(f"loaded {result.rows} {kind} from {len(result.files)} files")
        return dg.MaterializeResult(
            metadata={
                **table_metadata(kind, preview, result.rows),
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
    metadata = table_metadata(DAILY_SELLER_STATS_TABLE, stats, rows)
    if rows:
        metadata["total_bids"] = int(sum(stats.column("bids").to_pylist()))
    yield dg.MaterializeResult(metadata=metadata)
    yield check_result(
        report, asset_key=DAILY_SELLER_STATS_KEY, check_name=DAILY_SELLER_STATS_CHECK
    )
