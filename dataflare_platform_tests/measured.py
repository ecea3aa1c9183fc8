"""What a test may say about a time or a rate a benchmark measured: that it was reported,
as a finite number. How large it is belongs to the benchmark command and its ratios
(docs/benchmarks.md), not to a test: a coarse clock or a loaded machine moves it."""

from __future__ import annotations

import math


def measured(value: object) -> bool:
    """A finite number (not a bool, not None, not NaN or infinite)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
