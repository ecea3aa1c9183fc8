"""A Kafka topic as an engine source: its partitions, addressed by Kafka's own offsets.

**Offsets.** The engine's checkpoint holds, per partition, the Kafka offset to read next,
exactly what a consumer group would commit. Kafka offsets are not dense: transaction
markers and records of aborted transactions occupy offsets a ``read_committed`` reader
never sees. So this source tells the runner where the next read starts
(``next_offset``, the engine's hook for non-dense sources) instead of the runner
counting rows, and a read of ``n`` from offset ``o`` returns only messages with offsets
in ``[o, o + n)``, which keeps offset-range runs (``until``) exact.

**Reading.** One consumer, ``isolation.level=read_committed``, partitions *assigned*
(``incremental_assign`` at the checkpoint's offsets), not subscribed: partition
ownership is decided by the platform's partition-parallel workers (one lease per
partition, ``streams.workers``), and a partition's state and offsets move with it in the
engine's checkpoint, committed with the output. The consumer group (``group``, default
``dataflare.<pipeline>``) gets each committed checkpoint's offsets afterwards
(``on_commit``), so Kafka's own tooling shows the pipeline's lag; those group offsets are
informational, the checkpoint is the truth. Fetched messages are buffered per partition
and a partition whose buffer is full is paused, so memory stays bounded whatever order
the runner reads partitions in.

**Bad messages** never stop a run: each becomes one all-null row (the runner
dead-letters it: null event time) plus a dead letter with its raw bytes and the reason,
kept in ``dead_letters`` or handed to ``on_dead_letter``. So records in = rows out +
dead letters.

Nothing here depends on a particular broker: the tests run librdkafka's mock cluster
(there is no Kafka broker package on the test machines), production runs real Kafka.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from dataflare_platform.connectors.broker import BrokerError, BrokerUnavailableError, MessageCodec
from dataflare_platform.connectors.kafka.settings import KafkaSettings
from dataflare_platform.engine import arrays
from dataflare_platform.errors import ConfigError, InvalidInputError
from dataflare_platform.events.codec import dead_letters
from dataflare_platform.observability.connectors import for_connector

log = logging.getLogger(__name__)

POLL_S = 0.05  # one read waits at most this long for a message that is not there yet
# ...except the first read after an assign or seek, which waits this long for the fetch
# to start, so that a read of data that is there does not come back empty.
SEEK_WAIT_S = 5.0
PAUSE_FACTOR = 4  # a partition's buffer above this many fetches pauses it


def partition_count(consumer: Any, topic: str, timeout_s: float, where: str) -> int:
    """Partitions of ``topic``; ``ConfigError`` naming ``where`` if it does not exist."""
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
    except KafkaException as err:
        raise BrokerUnavailableError(f"Kafka: cannot read metadata of {topic!r}: {err}") from None
    info = metadata.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        why = info.error.str() if info is not None and info.error is not None else "not found"
        raise ConfigError("kafka source", [(where, f"topic {topic!r}: {why}")])
    return len(info.partitions)


@dataclass
class SourceStats:
    messages: int = 0
    good_messages: int = 0
    dead_messages: int = 0
    rows: int = 0


@dataclass
class _Partition:
    number: int
    position: int  # the offset the next read() starts at
    buffer: deque[Message] = field(default_factory=deque)
    eof: int | None = None  # consumer position when it last reached the end
    paused: bool = False
    fresh: bool = True  # assigned or sought, and nothing (message or end) fetched since


class KafkaSource:
    """Engine ``Source`` over a Kafka topic (see the module docstring)."""

    def __init__(
        self,
        settings: KafkaSettings,
        schema: pa.Schema,
        *,
        name: str | None = None,
        time_column: str = "date_time",
        bounded: bool = False,
        partitions: tuple[int, ...] | None = None,
        group: str = "dataflare",
        partition_key: str | None = None,
        on_dead_letter: Callable[[pa.Table], None] | None = None,
        commit_offsets: bool = True,
        where: str = "source",
    ) -> None:
        if time_column not in schema.names:
            raise InvalidInputError(f"time column {time_column!r} is not in the schema")
        self.settings = settings
        self.name = name or settings.topic
        self.time_column = time_column
        self.partition_key = partition_key
        self.bounded = bounded
        self.on_dead_letter = on_dead_letter
        self.commit_offsets = commit_offsets
        self.dead_letters: list[pa.Table] = []
        self.stats = SourceStats()
        self._schema = schema
        self.codec = MessageCodec(settings.format, schema, settings.batch_rows)
        self.codec.on_schema_mismatch = settings.on_schema_mismatch
        self._metrics = for_connector("kafka", settings.topic)
        self._consumer = Consumer(
            settings.properties(
                where,
                **{
                    "group.id": group,
                    "isolation.level": "read_committed",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "enable.partition.eof": True,
                    "auto.offset.reset": "earliest",
                },
            )
        )
        try:
            count = partition_count(
                self._consumer, settings.topic, settings.timeout_s, f"{where}.topic"
            )
            numbers = list(range(count)) if partitions is None else sorted(set(partitions))
            missing = [p for p in numbers if not 0 <= p < count]
            if missing:
                raise ConfigError(
                    "kafka source",
                    [(where, f"topic {settings.topic!r} has no partition(s) {missing}")],
                )
        except BaseException:
            self._consumer.close()
            raise
        self._numbers = numbers
        self._count = count
        self._parts: dict[int, _Partition] = {}
        self._ends: dict[str, int] = {}

    # -- the Source protocol -------------------------------------------------------------
    @property
    def schema(self) -> pa.Schema:
        return self._schema

    def partitions(self) -> list[str]:
        return [str(p) for p in self._numbers]

    def key_partitions(self, values: pl.Series) -> np.ndarray:
        """The partition each value of ``partitioned_by`` goes to when our producers
        key a message by it (``str(value)`` as UTF-8, Java's murmur2 partitioner, as
        ``connectors.kafka.producer`` sends): how a split checkpoint attributes keyed
        state. Producers that key otherwise put keys elsewhere; the split cannot know."""
        return np.array(
            [murmur2_partition(str(v).encode(), self._count) for v in values.to_list()],
            dtype=np.int64,
        )

    def end_offset(self, partition: str) -> int | None:
        """None while the topic grows, unless ``bounded``: then the committed end (the
        last stable offset) as of the first call, so a bounded run reads a snapshot."""
        if not self.bounded:
            return None
        if partition not in self._ends:
            self._ends[partition] = self.committed_end(int(partition))
        return self._ends[partition]

    def committed_end(self, number: int) -> int:
        """The offset after the last message a ``read_committed`` reader can see now."""
        with self._metrics.request("offsets"):
            try:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.settings.topic, number),
                    timeout=self.settings.timeout_s,
                    cached=False,
                )
            except KafkaException as err:
                raise BrokerError(
                    f"Kafka: end offset of {self.settings.topic}/{number}: {err}"
                ) from None
        return int(high)

    def read(self, partition: str, offset: int, max_rows: int) -> pa.Table:
        part = self._seek(int(partition), offset)
        limit = offset + max_rows
        taken: list[Message] = []
        rows = 0
        fetched = False
        deadline = time.monotonic() + SEEK_WAIT_S
        while True:
            while part.buffer and part.buffer[0].offset() < limit:
                claimed = 1 if self.codec.format == "json" else _claimed_rows(part.buffer[0])
                if taken and rows + claimed > max_rows:
                    break
                taken.append(part.buffer.popleft())
                rows += claimed
                if rows >= max_rows:
                    break
            if taken or part.buffer:  # (a buffer past ``limit`` has nothing for this read)
                break
            if fetched and part.eof is not None:
                break  # at the end of the partition: nothing (yet)
            if not self._fetch():
                if part.fresh and time.monotonic() < deadline:
                    continue  # the fetch after a seek has not started yet
                break  # nothing arrived for any partition within the poll
            fetched = True
        if part.paused and len(part.buffer) < self.settings.fetch_messages:
            self._consumer.resume([self._tp(part.number)])
            part.paused = False
        if taken:
            part.position = taken[-1].offset() + 1
        # Offsets between what was taken and the next message (or the end) hold no
        # record a read_committed reader sees (transaction markers, aborted records).
        following = part.buffer[0].offset() if part.buffer else part.eof
        if following is not None and following > part.position:
            part.position = min(following, limit)
        return self._decode(partition, taken)

    def next_offset(self, partition: str) -> int:
        """Where the read after the last one starts (the engine advances to it)."""
        return self._parts[int(partition)].position

    def on_commit(self, offsets: dict[str, int]) -> None:
        """The engine committed these offsets with its output: let the consumer group
        show them (lag in Kafka's tooling). Informational, so a failure is logged. Not
        when the workers own partitions as group members (``membership``): a coordinator
        refuses commits from a reader outside the group's generation, and the member
        commits them instead (``kafka.membership``)."""
        if not self.commit_offsets:
            return
        tps = [self._tp(int(p), o) for p, o in offsets.items() if int(p) in self._parts]
        if not tps:
            return
        try:
            with self._metrics.request("commit_offsets"):
                self._consumer.commit(offsets=tps, asynchronous=True)
        except KafkaException as err:
            log.warning("Kafka: group offsets of %s not committed: %s", self.name, err)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # already closed
            self._consumer.close()

    # -- internals -----------------------------------------------------------------------
    def _tp(self, number: int, offset: int | None = None) -> TopicPartition:
        if offset is None:
            return TopicPartition(self.settings.topic, number)
        return TopicPartition(self.settings.topic, number, offset)

    def _seek(self, number: int, offset: int) -> _Partition:
        part = self._parts.get(number)
        if part is not None and part.position == offset:
            return part
        if number not in self._numbers:
            raise InvalidInputError(f"{self.name}: partition {number} is not read by this source")
        if part is None:
            self._consumer.incremental_assign([self._tp(number, offset)])
            part = self._parts[number] = _Partition(number, offset)
        else:
            if part.paused:
                self._consumer.resume([self._tp(number)])
            self._consumer.seek(self._tp(number, offset))
            part.buffer.clear()
            part.position, part.eof, part.paused, part.fresh = offset, None, False, True
        return part

    def _fetch(self) -> bool:
        """One consume call into the partitions' buffers; False if nothing arrived."""
        with self._metrics.request("fetch"):
            messages = self._consumer.consume(self.settings.fetch_messages, POLL_S)
        arrived = False
        for message in messages:
            part = self._parts.get(message.partition())
            if part is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    part.eof = message.offset()
                    part.fresh = False
                    arrived = True
                    continue
                if error.fatal() or not error.retriable():
                    raise BrokerError(f"Kafka: reading {self.settings.topic}: {error.str()}")
                log.warning("Kafka: %s (retrying)", error.str())
                continue
            if message.offset() < part.position or (
                part.buffer and message.offset() <= part.buffer[-1].offset()
            ):
                continue  # fetched before a seek: not what this partition reads now
            part.buffer.append(message)
            part.eof, part.fresh = None, False
            arrived = True
            if not part.paused and len(part.buffer) > PAUSE_FACTOR * self.settings.fetch_messages:
                self._consumer.pause([self._tp(part.number)])
                part.paused = True
        return arrived

    def _decode(self, partition: str, messages: list[Message]) -> pa.Table:
        if not messages:
            return arrays.empty_table(self._schema)
        payloads = [m.value() or b"" for m in messages]
        offsets = [m.offset() for m in messages]
        result = self.codec.decode(payloads, offsets, self.name, partition)
        dead = result.dead
        bad = dead.num_rows
        self.stats.messages += len(messages)
        self.stats.dead_messages += bad
        self.stats.good_messages += len(messages) - bad
        table = result.table
        if bad:
            # One all-null row per bad message: the runner dead-letters it (null event
            # time) and counts it, so records in = rows out + dead letters.
            nulls = pa.table(
                {f.name: pa.nulls(bad, f.type) for f in self._schema}, schema=self._schema
            )
            table = pa.concat_tables([table, nulls]) if table.num_rows else nulls
            reasons = dead.column("reason").to_pylist()
            where = dead.column("offset").to_pylist()
            dead = dead_letters(
                self.name,
                partition,
                where,
                [f"{r} [message {partition}:{o}]" for r, o in zip(reasons, where, strict=True)],
                dead.column("payload").to_pylist(),
            )
            if self.on_dead_letter is not None:
                self.on_dead_letter(dead)
            else:
                self.dead_letters.append(dead)
        self.stats.rows += table.num_rows
        return table


def _claimed_rows(message: Message) -> int:
    """Rows an arrow message says it holds (its ``rows`` header), else 1: only used to
    size a read, the decoded message decides."""
    for key, value in message.headers() or []:
        if key == "rows" and value:
            try:
                return max(1, int(value))
            except ValueError:
                return 1
    return 1


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's ``Utils.murmur2``), as a signed 32-bit int."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length % 4
    base = length - tail
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a keyed message."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
