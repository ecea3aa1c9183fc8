"""Hourly hot-auction leaderboards from the ``nexmark.bids`` topic.

The asset materializes on its own: ``on_cron`` requests the hour that just ended once
the cron has ticked *and* its upstream topic has been updated since, which the
``topic_observations`` sensor reports (``defs/streams/topics.py``); the
``dataflare_automation`` sensor evaluates the condition (``defs/automation.py``).

``DATAFLARE_LEADERBOARD_CRON`` (a 5-field cron string), read when the code location
loads, replaces the hourly ``0 * * * *`` (tests and demos recompute every minute).
"""

import os

import dagster as dg

from dataflare_platform.defs.metadata import markdown_preview
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.defs.streams.topics import topic_key
from dataflare_platform.errors import ConfigError
from dataflare_platform.events.log import EventLog, TopicNotFoundError
from dataflare_platform.queries.leaderboards import hourly_leaderboard, write_hour

GROUP = "leaderboards"
BIDS_TOPIC = "nexmark.bids"
hourly_partitions = dg.HourlyPartitionsDefinition(start_date="2026-01-01-00:00", timezone="UTC")
CRON_ENV_VAR = "DATAFLARE_LEADERBOARD_CRON"
DEFAULT_CRON = "0 * * * *"


def leaderboard_cron() -> str:
    """The recompute cron: ``DATAFLARE_LEADERBOARD_CRON`` when set, else hourly. A bad
    value fails the code location naming the variable (a cron that never ticks would
    silently stop the leaderboards)."""
    from dagster._utils.schedules import is_valid_cron_string  # what schedules validate with

    value = os.environ.get(CRON_ENV_VAR, "").strip()
    if not value:
        return DEFAULT_CRON
    if not is_valid_cron_string(value):
        raise ConfigError(
            "leaderboard automation", [(CRON_ENV_VAR, f"{value!r} is not a 5-field cron string")]
        )
    return value


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
    # Recomputed after each hour ends, as soon as the topic has new events (by then late
    # events of that hour have arrived); backfills recompute any hour idempotently.
    automation_condition=dg.AutomationCondition.on_cron(leaderboard_cron()),
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
            "preview": markdown_preview(board.to_arrow(), asset=context.asset_key.to_user_string()),
        }
    )
