"""One-off counts of rare events (an audit entry, an alert firing, a suite's outcomes).

These happen a few times per run, not per batch, so looking the process's instruments up
at each event costs nothing worth binding ahead; with metrics off it is one check.
"""

from __future__ import annotations

from dataflare_platform.observability import instruments


def count(metric: str, labels: tuple[str, ...], n: float = 1) -> None:
    """Add ``n`` to the counter ``metric`` (a name of the metric list) when metrics are on."""
    exported = instruments()
    if exported is not None and n:
        exported[metric].record(n, labels)
