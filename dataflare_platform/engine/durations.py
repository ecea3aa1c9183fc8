"""Durations as integer milliseconds, the engine's unit of event time."""

from __future__ import annotations

import re

from dataflare_platform.errors import InvalidInputError

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PATTERN = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")


def to_ms(value: int | str) -> int:
    """``"10s"`` → 10000; an int is taken as milliseconds already."""
    if isinstance(value, bool):
        raise InvalidInputError(f"not a duration: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise InvalidInputError(f"duration must not be negative: {value}")
        return value
    match = _PATTERN.match(str(value))
    if not match:
        raise InvalidInputError(f"not a duration: {value!r} (use e.g. 500ms, 10s, 5m, 1h)")
    return int(match.group(1)) * _UNITS[match.group(2)]
