"""The embedded log as an engine source and as an exactly-once engine sink."""

from __future__ import annotations

import fcntl
from typing import IO

import numpy as np
import polars as pl
import pyarrow as pa

from dataflare_platform.durable import open_lock_file
from dataflare_platform.engine import arrays
from dataflare_platform.engine.checkpoint import Checkpoint
from dataflare_platform.engine.io import TransactionalSink
from dataflare_platform.errors import ConflictError, InvalidInputError
from dataflare_platform.events.codec import DEAD_LETTER_SCHEMA
from dataflare_platform.events.groups import ConsumerGroup
from dataflare_platform.events.log import EventLog, Topic
from dataflare_platform.events.log.commits import Commit, read_commit, write_commit
from dataflare_platform.observability.connectors import for_connector
from dataflare_platform.times import now_ms


class LogSource:
    """Engine source over a topic; its offsets are the topic's offsets.

    ``bounded=True`` fixes the end at the offsets committed when the source is made (a
    bounded run then drains it and closes every window); otherwise the end is open and a
    bounded run is limited with the runner's ``until`` (a sensor's offset range).
    """

    def __init__(
        self,
        topic: Topic,
        columns: list[str] | None = None,
        partitions: list[int] | None = None,
        bounded: bool = False,
        group: str | None = None,
        name: str | None = None,
    ) -> None:
        """``name`` keys the offsets in checkpoints (default: the topic's name)."""
        self.topic = topic
        # The engine's checkpoint is what makes processing exactly-once; the group's
        # offsets follow each commit so that lag shows in ``dataflare topics describe``.
        self.group = ConsumerGroup(topic, group) if group is not None else None
        self.name = name or topic.name
        self.time_column = topic.time_column
        self.columns = list(columns) if columns is not None else None
        if self.columns is not None and self.time_column not in self.columns:
            self.columns.append(self.time_column)
        self._partitions = list(range(len(topic.parts))) if partitions is None else list(partitions)
        self._ends = topic.committed_ends() if bounded else None
        schema = topic.schema
        self._schema = (
            schema if self.columns is None else pa.schema([schema.field(c) for c in self.columns])
        )

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    @property
    def partition_key(self) -> str | None:
        """The column the topic hash-partitions rows by (``key:``), or ``None`` (rows
        go in turn): what decides whether keyed state may be split by partition."""
        return self.topic.config.key

    def partitions(self) -> list[str]:
        return [str(p) for p in self._partitions]

    def key_partitions(self, values: pl.Series) -> np.ndarray:
        """The partition each value of the ``key:`` column lands in (the topic's own
        partitioner over all its partitions): how a split checkpoint attributes keyed
        state to partitions (``streams.split``)."""
        return (values.hash(seed=0) % len(self.topic.parts)).to_numpy()

    def read(self, partition: str, offset: int, max_rows: int) -> pa.Table:
        if self._ends is not None:
            max_rows = max(0, min(max_rows, self._ends[int(partition)] - offset))
            if max_rows == 0:
                return arrays.empty_table(self._schema)
        return self.topic.read(partition, offset, max_rows, self.columns)

    def end_offset(self, partition: str) -> int | None:
        return None if self._ends is None else self._ends[int(partition)]

    def latest_offset(self, partition: str) -> int:
        """Where the partition's readable data ends now, bounded or not (Kafka's log end
        offset): the engine's ``records-lag`` metric is this minus the next offset."""
        return self.topic.committed_ends()[int(partition)]

    def on_commit(self, offsets: dict[str, int]) -> None:
        if self.group is not None and offsets:
            self.group.commit({int(p): o for p, o in offsets.items()})


def side_topic_name(topic: str) -> str:
    return f"{topic}.side"


def ensure_output_topic(
    log: EventLog,
    name: str,
    schema: pa.Schema,
    time_column: str,
    partitions: int = 1,
    key: str | None = None,
) -> Topic:
    """A transactional output topic and its side topic (late rows and dead letters)."""
    topic = log.create_topic(
        name,
        schema,
        time_column=time_column,
        partitions=partitions,
        key=key,
        transactional=True,
        exist_ok=True,
    )
    log.create_topic(
        side_topic_name(name),
        DEAD_LETTER_SCHEMA,
        time_column="received_at",
        transactional=True,
        commit_topic=name,
        exist_ok=True,
    )
    return topic


class LogSink(TransactionalSink):
    """Writes a pipeline's output to a transactional topic, exactly once.

    Each commit appends the output (and side rows to ``<topic>.side``), then publishes the
    commit record with the checkpoint; readers stop at the committed ends, and a restart
    truncates whatever was appended after the last commit. The topic has one writer: an
    exclusive lock is held from ``open`` to ``close``.
    """

    def __init__(self, log: EventLog, topic: str, time_column: str | None = None) -> None:
        """A missing topic is created at the first commit from the output's schema, with
        ``time_column`` as its event time (default: ``window_start`` if the output has
        one, else ``date_time``)."""
        self.log = log
        self.name = topic
        self.time_column = time_column
        self.topic: Topic | None = None
        self.side: Topic | None = None
        if log.exists(topic):
            self._attach()
        self._lock: IO[bytes] | None = None
        self._pipeline = ""
        self._sequence = 0
        self._metrics = for_connector("log", topic)

    def _attach(self) -> None:
        self.topic = self.log.topic(self.name)
        if not self.topic.config.transactional:
            msg = f"topic {self.name!r} is not transactional (see ensure_output_topic)"
            raise InvalidInputError(msg)
        self.side = self.log.topic(side_topic_name(self.name))

    def _create(self, schema: pa.Schema) -> None:
        time_column = self.time_column or next(
            (c for c in ("window_start", "date_time") if c in schema.names), None
        )
        if time_column is None:
            raise InvalidInputError(
                f"output topic {self.name!r}: no window_start or date_time column; give time_column"
            )
        ensure_output_topic(self.log, self.name, schema, time_column)
        self.topic = self.log.topic(self.name)

    def open(self, pipeline: str) -> Checkpoint | None:
        directory = self.log.root / self.name
        directory.mkdir(parents=True, exist_ok=True)
        lock = open_lock_file(directory / ".writer.lock")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            lock.close()
            msg = f"topic {self.name!r} is being written by another run"
            raise ConflictError(msg) from err
        self._lock = lock
        self._pipeline = pipeline
        self.discard_pending()
        if self.topic is None:
            if not self.log.exists(self.name):
                # No output yet, so no topic: commits so far sit in its directory, and
                # side rows in the side topic, which needs no output schema.
                self.side = self.log.create_topic(
                    side_topic_name(self.name),
                    DEAD_LETTER_SCHEMA,
                    time_column="received_at",
                    transactional=True,
                    commit_topic=self.name,
                    exist_ok=True,
                )
                early = read_commit(directory)
                self.side.parts[0].truncate(early.ends.get(-1, 0) if early else 0)
                if early is None:
                    return None
                self._sequence = early.sequence
                return Checkpoint.decode(early.checkpoint)
            self._attach()
        assert self.topic is not None and self.side is not None
        commit = read_commit(self.topic.dir)
        if commit is not None and commit.writer != pipeline:
            raise ConflictError(
                f"topic {self.topic.name!r} is the output of pipeline {commit.writer!r},"
                f" not {pipeline!r}"
            )
        ends = commit.ends if commit else {}
        for p in self.topic.parts:
            p.truncate(ends.get(p.index, 0))
        self.side.parts[0].truncate(ends.get(-1, 0))
        if commit is None:
            return None
        self._sequence = commit.sequence
        return Checkpoint.decode(commit.checkpoint)

    def commit_batch(
        self, output: pl.DataFrame | None, side: pl.DataFrame | None, checkpoint: Checkpoint
    ) -> None:
        with self._metrics.request("commit"):
            self._commit_batch(output, side, checkpoint)

    def _commit_batch(
        self, output: pl.DataFrame | None, side: pl.DataFrame | None, checkpoint: Checkpoint
    ) -> None:
        out = output.to_arrow() if output is not None else None
        if self.topic is None and out is not None:
            self._create(out.schema)
        assert self.side is not None, "open() first"
        self._sequence += 1
        if out is not None:
            n = len(self.topic.parts)
            # Deterministic placement, so a replay after a crash writes the same layout.
            partition = None if self.topic.config.key else self._sequence % n
            self.topic.append(out, partition=partition)
        if side is not None:
            self.side.append(_side_as_dead_letters(side, self._pipeline), 0)
        # Before the output topic exists (no output yet to take its schema from) the
        # record is kept in its directory, so a restart or the next range resumes here.
        parts = self.topic.parts if self.topic is not None else []
        ends = {p.index: p.end_offset() for p in parts}
        ends[-1] = self.side.parts[0].end_offset()
        record = Commit(self._pipeline, self._sequence, ends, checkpoint.encode())
        if self.topic is not None:
            write_commit(self.topic.dir, record, fsync=self.topic.config.fsync)
        else:
            write_commit(self.log.root / self.name, record)

    def close(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None


def _side_as_dead_letters(side: pl.DataFrame, pipeline: str) -> pa.Table:
    """The engine's side rows (kind, operator, reason, payload JSON) in the dead-letter
    shape, so every dead letter of the platform can be queried the same way."""
    return (
        side.select(
            pl.lit(pipeline).alias("source"),
            pl.col("kind").alias("partition"),
            pl.lit(-1, pl.Int64).alias("offset"),
            (pl.col("operator") + ": " + pl.col("reason")).alias("reason"),
            pl.col("payload").cast(pl.Binary).alias("payload"),
            pl.lit(now_ms()).cast(pl.Datetime("ms")).alias("received_at"),
        )
        .to_arrow()
        .cast(DEAD_LETTER_SCHEMA)
    )
