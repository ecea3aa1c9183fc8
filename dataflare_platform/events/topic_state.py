"""What a topic holds right now, read from its segment names alone: end offsets per
partition, the newest event time and when it was last appended to.

Orchestrators poll this to notice new data (the Dagster layer turns it into asset
observations), so it must stay cheap on a long log: a segment's name carries its offsets
and event-time range, and the partition listing is cached while the directory does not
change, so a poll of an idle topic costs a ``stat`` per partition and opens no file.

Only what readers may see counts: a transactional topic's uncommitted tail is left out,
so a reported end offset is one a consumer can actually read up to.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from dataflare_platform.events.log import EventLog, Partition, Topic
from dataflare_platform.events.log.segments import NO_TIME, list_segments


@dataclass(frozen=True)
class TopicState:
    topic: str
    start_offsets: dict[int, int]
    end_offsets: dict[int, int]  # committed (visible) end per partition
    newest_event_ms: int | None  # largest event time of the visible events
    last_append_ms: int | None  # when the newest visible segment was written (wall clock)

    @property
    def total_events(self) -> int:
        """Events ever appended and visible (offsets are dense from 0 per partition)."""
        return sum(self.end_offsets.values())

    @property
    def retained_events(self) -> int:
        """Events still stored (retention removes the oldest)."""
        return sum(
            max(0, end - self.start_offsets.get(p, 0)) for p, end in self.end_offsets.items()
        )

    @property
    def version(self) -> str:
        """Changes exactly when an end offset changes: new events (or a truncation), not
        retention or compaction, which leave what a reader can reach next unchanged."""
        ends = json.dumps(sorted(self.end_offsets.items()))
        return hashlib.sha256(ends.encode()).hexdigest()[:16]


def _partition_state(part: Partition, end: int) -> tuple[int, int | None, int | None]:
    """(start offset, newest event ms, last append ms) of the segments below ``end``."""
    segments = part.segments()
    for _ in range(3):
        visible = [s for s in segments if s.end <= end]
        timed = [s.max_time for s in visible if s.min_time != NO_TIME]
        newest = max(timed) if timed else None
        try:
            appended = visible[-1].path.stat().st_mtime_ns // 1_000_000 if visible else None
        except FileNotFoundError:
            # Compaction merged that segment since the cached listing (possible only
            # for a transactional topic's last committed one): list the directory.
            segments = list_segments(part.dir)
            continue
        return part.start_offset(), newest, appended
    raise RuntimeError(f"topic {part.topic.name!r} partition {part.index} keeps changing")


def topic_state(topic: Topic) -> TopicState:
    ends = topic.committed_ends()
    starts: dict[int, int] = {}
    newest: list[int] = []
    appended: list[int] = []
    for part in topic.parts:
        start, part_newest, part_appended = _partition_state(part, ends[part.index])
        starts[part.index] = start
        if part_newest is not None:
            newest.append(part_newest)
        if part_appended is not None:
            appended.append(part_appended)
    return TopicState(
        topic=topic.name,
        start_offsets=starts,
        end_offsets=ends,
        newest_event_ms=max(newest) if newest else None,
        last_append_ms=max(appended) if appended else None,
    )


def topic_states(log: EventLog, names: list[str]) -> dict[str, TopicState]:
    """The state of each named topic that exists (a topic nobody created yet has none)."""
    return {name: topic_state(log.topic(name)) for name in names if log.exists(name)}
