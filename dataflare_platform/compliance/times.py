"""Time normalisation shared by the freshness and retention checks: everything is
compared as aware UTC, because mixing naive and aware datetimes raises (or, worse,
silently shifts by the local offset)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def as_utc(value: datetime | int) -> datetime:
    """An aware UTC datetime from a datetime (naive = UTC) or epoch milliseconds."""
    if isinstance(value, bool):
        raise TypeError(f"not a time: {value!r}")
    if isinstance(value, int):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_epoch_ms(value: datetime | int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return (as_utc(value) - _EPOCH) // timedelta(milliseconds=1)
