"""Daily roll-ups of plugin usage (issue 20 §4): per plugin version and per publisher,
from the usage events the runtime writes to the event log (``plugins.usage``), with an
asset check flagging an error-rate regression after an upgrade.

Thin: reading, rolling up and judging are ``plugins.usage`` functions; this module turns
them into daily partitioned assets, Parquet files under ``<home>/plugins/usage/`` and an
asset check result."""

from datetime import date

import dagster as dg
import polars as pl
from pydantic import Field

from dataflare_platform.defs.metadata import markdown_preview
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.events.log import EventLog
from dataflare_platform.plugins.usage import (
    USAGE_TOPIC,
    daily_rollup,
    day_events,
    error_rate_regressions,
    judged_versions,
    plugin_rollup,
    rollup_path,
    usage_topic,
    write_check_result,
)

GROUP = "plugins"
BY_PLUGIN = dg.AssetKey([GROUP, "usage_daily_by_plugin"])
BY_PUBLISHER = dg.AssetKey([GROUP, "usage_daily_by_publisher"])
REGRESSION_CHECK = "error_rate_regression"
# Today is a partition too (end_offset=1): an interim roll-up of the day so far.
daily = dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC", end_offset=1)


class UsageRollupConfig(dg.Config):
    regression_threshold: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Flag the newest version of a plugin when its error rate exceeds the "
        "previous version's by more than this (absolute: 0.05 = 5 points).",
    )
    regression_days: int = Field(
        1,
        ge=1,
        le=31,
        description="Compare both versions over the partition day and the "
        "days before it (1 = the partition day only).",
    )
    min_calls: int = Field(
        100, ge=1, description="Versions with fewer calls in the window are not judged."
    )


def _frame_meta(frame: pl.DataFrame, asset: str, path: str) -> dict[str, object]:
    return {
        "dagster/row_count": frame.height,
        "calls": int(frame["calls"].sum()) if frame.height else 0,
        "rows": int(frame["rows"].sum()) if frame.height else 0,
        "errors": int(frame["errors"].sum()) if frame.height else 0,
        "path": dg.MetadataValue.path(path),
        "preview": markdown_preview(frame.to_arrow(), asset=asset),
    }


def _write(dataflare: ProjectHomeResource, name: str, day: str, frame: pl.DataFrame) -> str:
    path = rollup_path(dataflare.home.root, name, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    return str(path)


def _topic(dataflare: ProjectHomeResource):
    return usage_topic(EventLog(dataflare.home.event_log_dir), USAGE_TOPIC)


@dg.asset(
    key=BY_PLUGIN,
    group_name=GROUP,
    partitions_def=daily,
    kinds={"parquet"},
    owners=["team:data-platform"],
    check_specs=[
        dg.AssetCheckSpec(
            REGRESSION_CHECK,
            asset=BY_PLUGIN,
            description="The newest version of each plugin errs no more than the previous "
            "version (by regression_threshold) over the same day(s).",
        )
    ],
    description="Plugin usage of one UTC day per plugin version (installs, calls, rows, "
    "errors by kind, error rate, pipelines, tenants, worst window p99) from the event log's "
    f"{USAGE_TOPIC} topic, written to <home>/plugins/usage/by_plugin/<day>.parquet.",
)
def usage_daily_by_plugin(
    context: dg.AssetExecutionContext, config: UsageRollupConfig, dataflare: ProjectHomeResource
) -> dg.MaterializeResult:
    day = date.fromisoformat(context.partition_key)
    topic = _topic(dataflare)
    # The same function the developer portal charts usage with (one partition of it).
    frame = plugin_rollup(topic, day).drop("day")
    path = _write(dataflare, "by_plugin", context.partition_key, frame)
    window = daily_rollup(day_events(topic, day, config.regression_days), ["plugin", "version"])
    found = error_rate_regressions(window, config.regression_threshold, config.min_calls)
    # Kept under the home too, so the portal (no Dagster) shows the latest verdict.
    write_check_result(
        dataflare.home.root,
        context.partition_key,
        found,
        judged_versions(window, config.min_calls),
        config.regression_threshold,
        config.regression_days,
        config.min_calls,
    )
    check = dg.AssetCheckResult(
        check_name=REGRESSION_CHECK,
        passed=not found,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(str(r) for r in found) or "no error-rate regression",
        metadata={
            "regressions": [str(r) for r in found],
            "threshold": config.regression_threshold,
            "days": config.regression_days,
            "min_calls": config.min_calls,
            "versions_judged": int((window["calls"] >= config.min_calls).sum())
            if window.height
            else 0,
        },
    )
    return dg.MaterializeResult(
        metadata=_frame_meta(frame, context.asset_key.to_user_string(), path),
        check_results=[check],
    )


@dg.asset(
    key=BY_PUBLISHER,
    group_name=GROUP,
    partitions_def=daily,
    kinds={"parquet"},
    owners=["team:data-platform"],
    description="Plugin usage of one UTC day per publisher (every plugin and version of "
    "the publisher), written to <home>/plugins/usage/by_publisher/<day>.parquet.",
)
def usage_daily_by_publisher(
    context: dg.AssetExecutionContext, dataflare: ProjectHomeResource
) -> dg.MaterializeResult:
    day = date.fromisoformat(context.partition_key)
    frame = daily_rollup(day_events(_topic(dataflare), day), ["publisher"])
    path = _write(dataflare, "by_publisher", context.partition_key, frame)
    return dg.MaterializeResult(
        metadata=_frame_meta(frame, context.asset_key.to_user_string(), path)
    )
