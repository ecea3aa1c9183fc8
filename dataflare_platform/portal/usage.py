"""The portal's usage numbers from the platform's own data (no Dagster, no hand-made file).

Why computed here from the usage topic: ``plugins.usage.plugin_rollup`` is the function
the ``plugins/usage_daily_by_plugin`` asset writes its partitions with; charting a range of
the same function means the portal and the roll-up asset cannot disagree. The topic is
read rather than the asset's Parquet files because it is the source (today's interim
partition and a day not materialized yet are current); a day the topic no longer holds
(event-log retention) comes from the asset's stored Parquet for that day when there is one.

The error-rate regression check's latest result comes from the copy the asset keeps under
the home (``plugins.usage.check_path``), narrowed to each plugin.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import polars as pl

from dataflare_platform.errors import InvalidInputError
from dataflare_platform.events.log import EventLog
from dataflare_platform.home import ProjectHome
from dataflare_platform.plugins.usage import (
    USAGE_TOPIC,
    latest_check_result,
    plugin_rollup,
    rollup_path,
)

DEFAULT_DAYS = 30


def home_has_usage(home: ProjectHome) -> bool:
    """Whether the home holds any usage (the topic, or stored roll-ups) to show."""
    if EventLog(home.event_log_dir).exists(USAGE_TOPIC):
        return True
    stored = rollup_path(home.root, "by_plugin", "x").parent
    return stored.is_dir() and any(stored.glob("*.parquet"))


def usage_frame(home: ProjectHome, until: date, days: int = DEFAULT_DAYS) -> pl.DataFrame:
    """Per day, plugin, publisher and version over ``until`` and the ``days - 1`` days
    before it: the roll-up asset's rows (``plugin_rollup``) plus a ``day`` column."""
    if not 1 <= days <= 366:
        raise InvalidInputError(f"usage days must be between 1 and 366, got {days}")
    log = EventLog(home.event_log_dir)
    frames = []
    if log.exists(USAGE_TOPIC):
        frames.append(plugin_rollup(log.topic(USAGE_TOPIC), until, days))
    held = set(frames[0]["day"].to_list()) if frames else set()
    for n in range(days):
        day = (until - timedelta(days=n)).isoformat()
        path = rollup_path(home.root, "by_plugin", day)
        if day not in held and path.is_file():
            frames.append(pl.read_parquet(path).with_columns(pl.lit(day).alias("day")))
    frames = [f for f in frames if f.height]
    if not frames:
        return pl.DataFrame()
    return pl.concat(frames, how="diagonal_relaxed").sort(["day", "publisher", "plugin"])


def usage_from_home_data(
    home: ProjectHome, until: date, days: int = DEFAULT_DAYS
) -> dict[str, dict[str, Any]]:
    """``{"<publisher>/<plugin>": {"installs", "days": [...], "check": {...}}}``, the shape
    ``dataflare portal build --usage FILE`` reads (the publisher recorded with the usage
    is the registry namespace ``plugin install`` installed from)."""
    frame = usage_frame(home, until, days)
    out: dict[str, dict[str, Any]] = {}
    for r in frame.iter_rows(named=True) if frame.height else []:
        entry = out.setdefault(f"{r['publisher']}/{r['plugin']}", {"installs": 0, "days": []})
        entry["installs"] += int(r["installs"] or 0)
        entry["days"].append(
            {
                "day": r["day"],
                "version": r["version"],
                "calls": int(r["calls"]),
                "rows": int(r["rows"]),
                "errors": int(r["errors"]),
                "p99_ms": r["p99_ms_max"],
            }
        )
    check = latest_check_result(home.root)
    for ref, entry in out.items() if check is not None else []:
        entry["check"] = _check_for(check, ref.split("/", 1)[1])
    return out


def _check_for(check: dict[str, Any], plugin: str) -> dict[str, Any]:
    """The check's result as it concerns ``plugin`` (the rule judges plugins by name)."""
    mine = [r for r in check.get("regressions") or [] if r.get("plugin") == plugin]
    judged = (check.get("judged") or {}).get(plugin, [])
    return {
        "day": check.get("day"),
        "evaluated_at": check.get("evaluated_at"),
        "passed": not mine,
        "regressions": [r.get("text", "") for r in mine],
        "judged": judged,
        "threshold": check.get("threshold"),
        "min_calls": check.get("min_calls"),
    }
