"""Durations as integer milliseconds, the engine's unit of event time, and the bounds a
pipeline's time settings must stay within.

Every duration is capped (``MAX_DURATION_MS``, 100 years) so event time plus any duration
stays far inside int64: a size near 2^63 ms would otherwise wrap in the pane arithmetic and
silently drop every event. Window sizes, gaps and horizons — state the engine keeps per
key — are capped tighter (``MAX_WINDOW_MS``), and a sliding window may put an event in at
most ``MAX_WINDOWS_PER_EVENT`` windows (size / slide): ``{size: 1d, slide: 1ms}`` would
put each event in 86 400 000 windows and grow without bound.
"""

from __future__ import annotations

import re

from dataflare_platform.errors import InvalidInputError

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PATTERN = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
# More digits than this is over every bound below whatever the unit (and a huge digit
# string must not cost a big-int conversion).
_MAX_DIGITS = 16

DAY_MS = 86_400_000
MAX_DURATION_MS = 36_500 * DAY_MS
"""Upper bound of any duration (100 years)."""
MAX_WINDOW_MS = 366 * DAY_MS
"""Upper bound of a window's size, a session gap, a dedup horizon, an allowed lateness and
the watermark's delays (one year)."""
MAX_WINDOWS_PER_EVENT = 1000
"""A sliding window's size / slide: how many windows each event is counted in."""


def to_ms(value: int | str) -> int:
    """``"10s"`` → 10000; an int is taken as milliseconds already. Negative, malformed and
    over-``MAX_DURATION_MS`` values are refused (``InvalidInputError``)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInputError(f"not a duration: {_short(value)}")
    if isinstance(value, int):
        ms = value
        if ms < 0:
            raise InvalidInputError(f"duration must not be negative: {_short(value)}")
    else:
        match = _PATTERN.match(value)
        if not match:
            raise InvalidInputError(
                f"not a duration: {_short(value)} (use e.g. 500ms, 10s, 5m, 1h)"
            )
        digits = match.group(1).lstrip("0") or "0"
        if len(digits) > _MAX_DIGITS:
            raise InvalidInputError(f"duration {_short(value)} is over the limit of 36500d")
        ms = int(digits) * _UNITS[match.group(2)]
    if ms > MAX_DURATION_MS:
        raise InvalidInputError(f"duration {_short(value)} is over the limit of 36500d")
    return ms


def bounded_ms(value: int | str, *, positive: bool, limit: int = MAX_WINDOW_MS) -> int:
    """``to_ms(value)``, also refused when zero (``positive``) or above ``limit``."""
    ms = to_ms(value)
    if positive and ms == 0:
        raise InvalidInputError(f"duration must be positive, not {_short(value)}")
    if ms > limit:
        raise InvalidInputError(f"duration {_short(value)} is over the limit of {format_ms(limit)}")
    return ms


def format_ms(ms: int) -> str:
    """The largest whole unit: 31622400000 → ``366d``."""
    for unit, size in sorted(_UNITS.items(), key=lambda kv: -kv[1]):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _short(value: object) -> str:
    """``repr(value)``, cut short: an error stays one readable line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
