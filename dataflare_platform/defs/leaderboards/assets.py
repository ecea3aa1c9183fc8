"""Hourly hot-auction leaderboards from the ``nexmark.bids`` topic."""

import dagster as dg

from dataflare_platform.defs.metadata import markdown_preview
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.defs.streams.factory import topic_key
from dataflare_platform.events.log import EventLog, TopicNotFoundError
from dataflare_platform.pipelines.leaderboards import hourly_leaderboard, write_hour

GROUP = "leaderboards"
BIDS_TOPIC = "nexmark.bids"
hourly_partitions = dg.HourlyPartitionsDefinition(start_date="2026-01-01-00:00", timezone="UTC")


@dg.asset(
    key=[GROUP, "hourly_hot_auctions"],
    deps=[topic_key(BIDS_TOPIC)],
    partitions_def=hourly_partitions,
    group_name=GROUP,
    kinds={"polars", "parquet"},
    owners=["team:analytics"],
    description=(
        "The 10 auctions with the most bids in each UTC hour, with distinct bidders and"
        " highest price, read straight from the nexmark.bids topic's files."
    ),
    # Recomputed an hour after each hour ends (late events have arrived by then);
    # backfills recompute any hour idempotently.
    automation_condition=dg.AutomationCondition.on_cron("0 * * * *"),
)
def hourly_hot_auctions(
    context: dg.AssetExecutionContext, dataflare: ProjectHomeResource
) -> dg.MaterializeResult:
    hour = context.partition_time_window.start
    home = dataflare.home
    try:
        topic = EventLog(home.event_log_dir).topic(BIDS_TOPIC)
    except TopicNotFoundError as err:
        raise dg.Failure(f"{err}: produce bids first (dataflare produce {BIDS_TOPIC} ...)") from err
    board = hourly_leaderboard(topic, hour)
    path = write_hour(board, home.root / "leaderboards" / "hourly_hot_auctions", hour)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": board.height,
            "top_bids": int(board["bids"].max() or 0) if board.height else 0,
            "path": dg.MetadataValue.path(str(path)),
            "preview": markdown_preview(board.to_arrow()),
        }
    )
