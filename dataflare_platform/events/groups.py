"""Consumer groups: committed offsets per group and partition, in a SQLite file beside
the topic (WAL mode, so processes commit and read concurrently).

At-least-once: a consumer commits after it has processed what it polled, so a crash
re-delivers the uncommitted tail. Exactly-once is the engine's business: it stores
source offsets in the same transaction as its output and commits them here afterwards
only so that lag is visible.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

import pyarrow as pa

from dataflare_platform.errors import InvalidInputError
from dataflare_platform.events.log import Topic
from dataflare_platform.observability import instruments

_SCHEMA = """
CREATE TABLE IF NOT EXISTS offsets (
    grp TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    committed_at REAL NOT NULL,
    PRIMARY KEY (grp, partition)
)
"""


def _connect(topic: Topic) -> sqlite3.Connection:
    conn = sqlite3.connect(topic.dir / "_groups.sqlite", timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(_SCHEMA)
    return conn


def list_groups(topic: Topic) -> list[str]:
    conn = _connect(topic)
    try:
        return [r[0] for r in conn.execute("SELECT DISTINCT grp FROM offsets ORDER BY grp")]
    finally:
        conn.close()


@dataclass
class Fetched:
    partition: int
    start: int  # offset of the first row
    table: pa.Table

    @property
    def end(self) -> int:
        return self.start + self.table.num_rows


class ConsumerGroup:
    def __init__(self, topic: Topic, name: str) -> None:
        if not name or len(name) > 200:
            raise InvalidInputError("a consumer group needs a name of 1 to 200 characters")
        self.topic = topic
        self.name = name

    def committed(self) -> dict[int, int]:
        """Next offset to read per partition (the log start where nothing is committed)."""
        conn = _connect(self.topic)
        try:
            rows = dict(
                conn.execute(
                    "SELECT partition, next_offset FROM offsets WHERE grp = ?", (self.name,)
                ).fetchall()
            )
        finally:
            conn.close()
        starts = self.topic.start_offsets()
        return {p: max(rows.get(p, starts[p]), starts[p]) for p in starts}

    def commit(self, offsets: dict[int, int]) -> None:
        conn = _connect(self.topic)
        try:
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO offsets (grp, partition, next_offset, committed_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (grp, partition) DO UPDATE SET"
                " next_offset = excluded.next_offset, committed_at = excluded.committed_at",
                [(self.name, int(p), int(o), now) for p, o in offsets.items()],
            )
            conn.execute("COMMIT")
        finally:
            conn.close()
        exported = instruments()
        if exported is not None:
            # Kafka's records-lag of the group, per partition, as of this commit.
            ends = self.topic.committed_ends()
            lag = exported["dataflare_log_consumer_lag"]
            for p, o in offsets.items():
                lag.record(
                    max(ends.get(int(p), 0) - int(o), 0), (self.topic.name, self.name, str(p))
                )

    def lag(self) -> dict[int, int]:
        ends = self.topic.committed_ends()
        return {p: ends[p] - o for p, o in self.committed().items()}

    def consumer(self, partitions: list[int] | None = None) -> Consumer:
        return Consumer(self, partitions)


class Consumer:
    """Polls a group's partitions from their committed offsets; ``commit()`` stores the
    positions reached by the polls so far."""

    def __init__(self, group: ConsumerGroup, partitions: list[int] | None = None) -> None:
        self.group = group
        self.topic = group.topic
        self.partitions = (
            list(range(len(self.topic.parts))) if partitions is None else list(partitions)
        )
        committed = group.committed()
        self.positions = {p: committed[p] for p in self.partitions}

    def poll(self, max_rows: int = 10_000) -> list[Fetched]:
        out = []
        for p in self.partitions:
            table = self.topic.read(p, self.positions[p], max_rows)
            if table.num_rows:
                out.append(Fetched(p, self.positions[p], table))
                self.positions[p] += table.num_rows
        return out

    def seek(self, partition: int, offset: int) -> None:
        self.positions[partition] = offset

    def commit(self) -> None:
        self.group.commit(self.positions)
