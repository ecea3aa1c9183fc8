"""How far a running pipeline is: its current rate over a recent window, and how many
events each source partition still has ahead of the checkpoint.

A lifetime average hides what a pipeline does now (a run that idled an hour and then
takes 5 k events/s shows a few hundred), so the rate a user watches is the one over the
last ``window_s`` seconds; the lifetime average is kept beside it under its own name.
No Dagster here: the continuous job and ``dataflare pipelines status`` both use it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping

from dataflare_platform.errors import InvalidInputError

DEFAULT_RATE_WINDOW_S = 20.0


class RateWindow:
    """Events per second over the last ``window_s`` seconds, from samples of a
    cumulative count taken at given times (the caller's clock, so tests control it).

    The rate at ``now`` is the count added since the newest sample at least
    ``window_s`` old (the baseline; the oldest sample while the window is not yet
    full), divided by the time from that sample to ``now``. A stream that stops
    therefore decays to 0 as ``now`` moves on, even with no new sample.
    """

    def __init__(self, window_s: float = DEFAULT_RATE_WINDOW_S) -> None:
        if window_s <= 0:
            raise InvalidInputError(f"rate window must be positive seconds, not {window_s}")
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()  # samples come from the sink thread, reads from others

    def add(self, now: float, count: int) -> None:
        """Record the cumulative ``count`` at time ``now`` (seconds, non-decreasing)."""
        with self._lock:
            if self._samples and now < self._samples[-1][0]:
                raise AssertionError("samples must come in time order")  # the caller's clock
            self._samples.append((now, count))
            # Keep one sample at or before the window's start as the baseline.
            while len(self._samples) > 1 and self._samples[1][0] <= now - self.window_s:
                self._samples.popleft()

    def rate(self, now: float) -> float:
        """Events/s over the window ending at ``now``; 0.0 before two points in time."""
        with self._lock:
            if not self._samples:
                return 0.0
            start = self._samples[0]
            for sample in self._samples:
                if sample[0] <= now - self.window_s:
                    start = sample
            newest = self._samples[-1]
        elapsed = now - start[0]
        if elapsed <= 0:
            return 0.0
        return (newest[1] - start[1]) / elapsed


def partition_lag(offsets: Mapping[str, int], ends: Mapping[str, int]) -> dict[str, int]:
    """Events behind per ``source/partition``: the committed end of each partition minus
    the next offset the checkpoint will read (a partition the checkpoint has not reached
    yet is behind by all its events)."""
    return {key: max(0, end - offsets.get(key, 0)) for key, end in sorted(ends.items())}
