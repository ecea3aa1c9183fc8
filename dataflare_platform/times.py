"""The one time helper: instants are aware UTC datetimes or epoch milliseconds (the event
log's and the engine's unit), and a naive datetime means UTC. Mixing naive and aware
datetimes raises, or worse shifts silently by the local offset, so every conversion
goes through here."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def as_utc(value: datetime | int) -> datetime:
    """An aware UTC datetime from a datetime (naive = UTC) or epoch milliseconds."""
    if isinstance(value, bool):
        raise TypeError(f"not a time: {value!r}")
    if isinstance(value, int):
        return _EPOCH + value * _MS
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def epoch_ms(value: datetime | int | str) -> int:
    """Epoch milliseconds from an int (already ms), a datetime or an ISO 8601 string
    (naive = UTC); exact integer arithmetic, sub-millisecond parts rounded down."""
    if isinstance(value, bool):
        raise TypeError(f"not a time: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return (as_utc(value) - _EPOCH) // _MS


def utc_now() -> datetime:
    return datetime.now(UTC)


def now_ms() -> int:
    """Wall-clock epoch milliseconds (arrival times, retention ages)."""
    return time.time_ns() // 1_000_000
