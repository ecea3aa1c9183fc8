"""Event-time watermarks: bounded out-of-orderness per partition, minimum across partitions.

A watermark ``W`` says no more events with time below ``W`` are expected. Each partition's
watermark is its highest event time minus the out-of-orderness bound; the stream's is the
minimum over partitions, skipping partitions that are idle (no data for ``idle_timeout``)
or finished, so one quiet partition does not stall every window.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

MIN_WATERMARK = -(2**62)
MAX_WATERMARK = 2**62


@dataclass
class WatermarkTracker:
    out_of_orderness_ms: int
    idle_timeout_ms: int | None = None
    max_seen: dict[str, int] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    last_active: dict[str, float] = field(default_factory=dict)
    emitted: int = MIN_WATERMARK

    def register(self, partition: str) -> None:
        self.max_seen.setdefault(partition, MIN_WATERMARK)
        self.last_active.setdefault(partition, time.monotonic())

    def observe(self, partition: str, max_time_ms: int) -> None:
        self.register(partition)
        self.finished.discard(partition)
        if max_time_ms > self.max_seen[partition]:
            self.max_seen[partition] = max_time_ms
        self.last_active[partition] = time.monotonic()

    def finish(self, partition: str) -> None:
        """A bounded partition has no more data: it no longer holds the watermark back."""
        self.register(partition)
        self.finished.add(partition)

    def partition_watermark(self, partition: str) -> int:
        seen = self.max_seen.get(partition, MIN_WATERMARK)
        return MIN_WATERMARK if seen == MIN_WATERMARK else seen - self.out_of_orderness_ms

    def others(self, partition: str, now: float | None = None) -> int:
        """Watermark from every partition except ``partition`` (MAX if there are none)."""
        return self._min(exclude=partition, now=now)

    def current(self, now: float | None = None) -> int:
        """The stream watermark; never moves backwards."""
        self.emitted = max(self.emitted, self._min(exclude=None, now=now))
        return self.emitted

    def _min(self, exclude: str | None, now: float | None) -> int:
        now = time.monotonic() if now is None else now
        values = []
        for partition in self.max_seen:
            if partition == exclude or partition in self.finished:
                continue
            if self._idle(partition, now):
                continue
            values.append(self.partition_watermark(partition))
        if not values:
            if self.max_seen and all(p in self.finished for p in self.max_seen):
                return MAX_WATERMARK
            # Everything else idle: only the active partitions' own progress counts.
            return MAX_WATERMARK if exclude is not None else self._max_active()
        return min(values)

    def _max_active(self) -> int:
        marks = [self.partition_watermark(p) for p in self.max_seen]
        return max(marks) if marks else MIN_WATERMARK

    def _idle(self, partition: str, now: float) -> bool:
        if self.idle_timeout_ms is None:
            return False
        return (now - self.last_active[partition]) * 1000 >= self.idle_timeout_ms

    def snapshot(self) -> dict:
        return {
            "max_seen": dict(self.max_seen),
            "finished": sorted(self.finished),
            "emitted": self.emitted,
        }

    def restore(self, state: dict) -> None:
        now = time.monotonic()
        self.max_seen = {k: int(v) for k, v in state["max_seen"].items()}
        self.finished = set(state["finished"])
        self.emitted = int(state["emitted"])
        self.last_active = dict.fromkeys(self.max_seen, now)
