"""Checking a partition key before a launch, and naming the nearest valid keys.

Dagster accepts any ``dagster/partition`` tag at launch and only fails inside the run
("Cannot access partition_key", or a raw ``PythonError`` for a key that does not parse),
so the client checks the key against the partition keys the server lists first. Pure
logic over those keys: no GraphQL here, so it is unit-tested on its own.

Time-window partitions are recognised by their keys (Dagster's daily, hourly, weekly and
monthly formats): a key that does not parse in that format is *malformed*; one that
parses but is not a partition gets the keys closest in time. Other keys (static, dynamic,
multi-dimensional) get the keys closest by string similarity.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from datetime import datetime

from dataflare_platform.client.errors import (
    MalformedPartitionError,
    MissingPartitionError,
    NotPartitionedError,
    UnknownPartitionError,
)

# Dagster's TimeWindowPartitionsDefinition default formats (daily, hourly, monthly).
TIME_FORMATS = ("%Y-%m-%d", "%Y-%m-%d-%H:%M", "%Y-%m")
NEAREST = 3


def _parse(key: str, fmt: str) -> datetime | None:
    try:
        parsed = datetime.strptime(key, fmt)
    except ValueError:
        return None
    # strptime accepts "2026-1-5" for %Y-%m-%d; a partition key round-trips exactly.
    return parsed if parsed.strftime(fmt) == key else None


def time_format(keys: Sequence[str]) -> str | None:
    """The time format every key is written in, or None for non-time partitions."""
    if not keys:
        return None
    for fmt in TIME_FORMATS:
        if all(_parse(k, fmt) is not None for k in keys):
            return fmt
    return None


def nearest_keys(key: str, keys: Sequence[str], n: int = NEAREST) -> list[str]:
    """The ``n`` valid keys closest to ``key``: in time for time partitions whose format
    ``key`` is written in (ties: the earlier first), else by string similarity (falling
    back to the newest keys when nothing is similar)."""
    if not keys or n <= 0:
        return []
    fmt = time_format(keys)
    moment = _parse(key, fmt) if fmt else None
    if fmt is not None and moment is not None:
        order = sorted(
            keys,
            key=lambda k: (abs((_parse(k, fmt) - moment).total_seconds()), k),  # type: ignore[operator]
        )
        return sorted(order[:n])
    similar = difflib.get_close_matches(key, list(keys), n=n, cutoff=0.5)
    return similar or list(keys)[-n:]


def check_partition(key: str | None, keys: Sequence[str] | None, what: str) -> None:
    """Refuse a launch whose partition key does not fit ``what`` (e.g. "job 'x'").

    ``keys`` is every partition key of the target, oldest first, or None when the target
    is not partitioned. Raises a ``PartitionError`` subclass naming the field
    (``partition``) and what would be valid.
    """
    if keys is None:
        if key is not None:
            raise NotPartitionedError(what, key)
        return
    if key is None:
        raise MissingPartitionError(what, keys)
    if key in keys:
        return
    fmt = time_format(keys)
    if fmt is not None and _parse(key, fmt) is None:
        raise MalformedPartitionError(what, key, fmt, keys[-1])
    raise UnknownPartitionError(what, key, nearest_keys(key, keys), keys)
