"""Jobs and schedules of the Nexmark domain."""

import dagster as dg

from dataflare_platform.defs.nexmark.assets import (
    DAILY_SELLER_STATS_KEY,
    GROUP,
)

ingest_job = dg.define_asset_job(
    "nexmark_ingest_job",
    selection=dg.AssetSelection.groups(GROUP) - dg.AssetSelection.assets(DAILY_SELLER_STATS_KEY),
    description="Load every landed Nexmark file into the warehouse and check the tables.",
)

daily_stats_job = dg.define_asset_job(
    "nexmark_daily_stats_job",
    selection=dg.AssetSelection.assets(DAILY_SELLER_STATS_KEY),
    description="Compute one UTC day of seller statistics (one run per partition).",
)

daily_stats_schedule = dg.build_schedule_from_partitioned_job(
    daily_stats_job,
    hour_of_day=0,
    minute_of_hour=30,
    description="Every day at 00:30 UTC, compute the day that just ended.",
)
