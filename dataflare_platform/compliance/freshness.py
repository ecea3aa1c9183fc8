"""Freshness: how far behind "now" a dataset may fall before its consumers are misled.

``now`` is always passed in, never read from the clock here, so a check is a pure
function of its inputs: tests pin time, and a backfill can ask "was it fresh then?".
Naive datetimes are taken as UTC, the platform's event-time zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl
import pyarrow as pa
from pydantic import field_validator

from dataflare_platform.engine.durations import to_ms
from dataflare_platform.errors import WrongTypeError
from dataflare_platform.models import StrictModel
from dataflare_platform.times import as_utc


class FreshnessPolicy(StrictModel):
    max_lag: str | int  # "2h", "30m"… or milliseconds

    @field_validator("max_lag")
    @classmethod
    def _is_duration(cls, value: str | int) -> str | int:
        if to_ms(value) == 0:
            raise ValueError("max_lag must be positive")
        return value

    @property
    def max_lag_ms(self) -> int:
        return to_ms(self.max_lag)


@dataclass(frozen=True)
class FreshnessResult:
    fresh: bool
    lag: timedelta | None  # None: the dataset has never been updated
    max_lag: timedelta
    last_update: datetime | None
    now: datetime
    message: str


def newest_time(data: pl.DataFrame | pa.Table, column: str) -> datetime | None:
    """The newest event time of ``column`` (one vectorised max), None if all null/empty."""
    frame = data if isinstance(data, pl.DataFrame) else pl.from_arrow(data)
    assert isinstance(frame, pl.DataFrame)
    values = frame.get_column(column)
    if values.dtype == pl.Date:
        values = values.cast(pl.Datetime("ms"))
    if not values.dtype.is_temporal() and not values.dtype.is_integer():
        raise WrongTypeError(f"column {column!r} is {values.dtype}, not a time")
    newest = values.max()
    if newest is None:
        return None
    return as_utc(newest if isinstance(newest, datetime) else int(newest))  # type: ignore[arg-type]


def check_freshness(
    last_update: datetime | int | None, now: datetime | int, policy: FreshnessPolicy
) -> FreshnessResult:
    """Fresh when ``now - last_update <= max_lag``. A last update in the future (clock
    skew between producer and checker) counts as fresh but says so."""
    now_utc = as_utc(now)
    max_lag = timedelta(milliseconds=policy.max_lag_ms)
    if last_update is None:
        return FreshnessResult(
            False, None, max_lag, None, now_utc, "stale: no update has ever been recorded"
        )
    last = as_utc(last_update)
    lag = now_utc - last
    if lag < timedelta(0):
        message = f"fresh: last update {last.isoformat()} is {-lag} ahead of now (clock skew?)"
        return FreshnessResult(True, lag, max_lag, last, now_utc, message)
    fresh = lag <= max_lag
    verdict = "fresh" if fresh else "stale"
    message = f"{verdict}: last update {last.isoformat()} is {lag} old (limit {max_lag})"
    return FreshnessResult(fresh, lag, max_lag, last, now_utc, message)
