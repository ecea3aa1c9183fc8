"""What a topic holds right now, read from its segment names alone: end offsets per
partition, the newest event time, the bytes stored and when it was last appended to.

Orchestrators poll this to notice new data (the Dagster layer turns it into asset
observations), so it must stay cheap on a long log: a segment's name carries its offsets
and event-time range, and the partition listing is cached while the directory does not
change, so a poll of an idle topic costs a ``stat`` per partition and opens no file.
Bytes are the segment files' sizes: a segment is immutable once published (its name
carries its checksum), so each file's size is taken once per process and remembered
while the segment lives.

Only what readers may see counts: a transactional topic's uncommitted tail is left out,
so a reported end offset is one a consumer can actually read up to.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from dataflare_platform.events.log import EventLog, Partition, Topic
from dataflare_platform.events.log.segments import NO_TIME, Segment, list_segments


@dataclass(frozen=True)
class TopicState:
    topic: str
    start_offsets: dict[int, int]
    end_offsets: dict[int, int]  # committed (visible) end per partition
    newest_event_ms: int | None  # largest event time of the visible events
    last_append_ms: int | None  # when the newest visible segment was written (wall clock)
    # Per partition: bytes of the visible segments still stored, and their newest event time.
    partition_bytes: dict[int, int] = field(default_factory=dict)
    partition_newest_ms: dict[int, int | None] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        """Bytes of the visible segments still stored (retention and compaction lower it)."""
        return sum(self.partition_bytes.values())

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
        retention or compaction, which leave what a reader can reach next unchanged (they
        change ``partition_bytes``, which is therefore not part of the version)."""
        ends = json.dumps(sorted(self.end_offsets.items()))
        return hashlib.sha256(ends.encode()).hexdigest()[:16]


# Segment file sizes by partition directory, then by file name (names are unique per
# content, so a size never goes stale): a poll stats only segments it has not seen.
_SIZES: dict[Path, dict[str, int]] = {}


def _sizes(part: Partition, segments: list[Segment]) -> int:
    known = _SIZES.get(part.dir, {})
    sizes = {s.path.name: known.get(s.path.name) or s.size for s in segments}
    _SIZES[part.dir] = sizes  # one assignment: only segments still listed are kept
    return sum(sizes.values())


@dataclass(frozen=True)
class _PartState:
    start: int
    newest_ms: int | None
    appended_ms: int | None
    size: int


def _partition_state(part: Partition, end: int) -> _PartState:
    """Start offset, newest event ms, last append ms and bytes of the segments below
    ``end``."""
    segments = part.segments()
    for _ in range(3):
        visible = [s for s in segments if s.end <= end]
        timed = [s.max_time for s in visible if s.min_time != NO_TIME]
        newest = max(timed) if timed else None
        try:
            appended = visible[-1].path.stat().st_mtime_ns // 1_000_000 if visible else None
            size = _sizes(part, visible)
        except FileNotFoundError:
            # Compaction or retention changed a segment since the cached listing: list
            # the directory again.
            segments = list_segments(part.dir)
            continue
        return _PartState(part.start_offset(), newest, appended, size)
    raise RuntimeError(f"topic {part.dir.parent.name!r} partition {part.index} keeps changing")


def topic_state(topic: Topic) -> TopicState:
    ends = topic.committed_ends()
    parts = {part.index: _partition_state(part, ends[part.index]) for part in topic.parts}
    newest = [p.newest_ms for p in parts.values() if p.newest_ms is not None]
    appended = [p.appended_ms for p in parts.values() if p.appended_ms is not None]
    return TopicState(
        topic=topic.name,
        start_offsets={i: p.start for i, p in parts.items()},
        end_offsets=ends,
        newest_event_ms=max(newest) if newest else None,
        last_append_ms=max(appended) if appended else None,
        partition_bytes={i: p.size for i, p in parts.items()},
        partition_newest_ms={i: p.newest_ms for i, p in parts.items()},
    )


def topic_states(log: EventLog, names: list[str]) -> dict[str, TopicState]:
    """The state of each named topic that exists (a topic nobody created yet has none)."""
    return {name: topic_state(log.topic(name)) for name in names if log.exists(name)}
