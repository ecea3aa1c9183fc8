"""The embedded event log: named topics of N partitions, each an append-only sequence
of Arrow segments with dense offsets. No server: processes share a directory.

Concurrency: appenders to a partition serialise on an ``flock`` of its lock file (the
next offset is read from the directory under the lock); readers take no lock, because a
segment appears by atomic rename, whole or not at all. Retention and compaction take the
same lock. A torn or corrupt segment (a power loss before the bytes reached the disk) is
found by its checksum when a process opens the topic: it and everything after it are
truncated with a warning, never served.
"""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dataflare_platform.durable import fsync_dir, fsync_file
from dataflare_platform.errors import ConfigError
from dataflare_platform.events.codec import conform
from dataflare_platform.events.segments import (
    NO_TIME,
    Segment,
    list_segments,
    write_segment,
)

log = logging.getLogger(__name__)

TOPIC_FILE = "topic.json"
_SETTLE_NS = 50_000_000
_TOPIC_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$"


class TopicNotFoundError(KeyError):
    def __str__(self) -> str:
        return f"no topic {self.args[0]!r}"


class OffsetOutOfRangeError(ValueError):
    pass


class TopicConfig(BaseModel):
    """A topic's durable settings (``topic.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_TOPIC_NAME)
    partitions: int = Field(default=1, ge=1, le=1024)
    time_column: str
    key: str | None = None  # rows are hash-partitioned by this column when set
    schema_ipc: str  # base64 of the Arrow schema's IPC serialisation
    retention_ms: int | None = Field(default=None, gt=0)
    retention_bytes: int | None = Field(default=None, gt=0)  # per partition
    segment_rows: int = Field(default=65_536, ge=1)  # compaction merges up to this size
    fsync: bool = False  # fsync each segment (power-loss durability) or trust the OS cache
    transactional: bool = False  # readers see only what a LogSink committed
    commit_topic: str | None = None  # a side topic committed with its parent's record

    @field_validator("schema_ipc")
    @classmethod
    def _schema_decodes(cls, value: str) -> str:
        try:
            pa.ipc.read_schema(pa.py_buffer(base64.b64decode(value)))
        except Exception as err:
            raise ValueError(f"not a serialised Arrow schema: {err}") from err
        return value

    @property
    def schema(self) -> pa.Schema:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(self.schema_ipc)))

    @staticmethod
    def encode_schema(schema: pa.Schema) -> str:
        return base64.b64encode(schema.serialize().to_pybytes()).decode()


def time_bounds(table: pa.Table, time_column: str) -> tuple[int, int]:
    column = table.column(time_column)
    if column.null_count == len(column):
        return NO_TIME, NO_TIME
    bounds = pc.min_max(column.cast(pa.timestamp("ms")).cast(pa.int64()))
    return bounds["min"].as_py(), bounds["max"].as_py()


class Partition:
    """One partition directory; safe to use from several processes at once."""

    def __init__(self, topic: Topic, index: int) -> None:
        self.topic = topic
        self.index = index
        self.dir = topic.dir / f"p{index:05d}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._segments: list[Segment] = []
        self._listed_at = -1
        self._cache: tuple[Path, pa.Table] | None = None

    @property
    def name(self) -> str:
        return str(self.index)

    @contextmanager
    def locked(self) -> Iterator[None]:
        with (self.dir / ".lock").open("a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- index ---------------------------------------------------------------------------
    def segments(self, refresh: bool = True) -> list[Segment]:
        """The live segments. Listing is skipped while the directory's change time
        stands still (every publish, truncation and deletion moves it), so polling the
        tail costs one ``stat``."""
        if refresh or not self._segments:
            stamp = self.dir.stat().st_mtime_ns
            if stamp != self._listed_at or not self._segments:
                self._segments = self._relist()
                # File times tick coarsely (a few ms): a change in the same tick as this
                # listing would not move the stamp, so a listing made while the stamp
                # was recent is not trusted next time.
                settled = time.time_ns() - stamp > _SETTLE_NS
                self._listed_at = stamp if settled else -1
        return self._segments

    def _relist(self) -> list[Segment]:
        """Only names from the newest known segment on are read, when that segment is
        still there unchanged; anything else (truncation, retention) lists everything.
        Older segments replaced by compaction are found when a read misses them."""
        known = self._segments
        if known:
            tail = list_segments(self.dir, from_base=known[-1].base)
            if tail and tail[0] == known[-1]:
                return known[:-1] + tail
        return list_segments(self.dir)

    def start_offset(self) -> int:
        segs = self.segments()
        if segs and not segs[0].path.exists():
            # Retention or compaction elsewhere: the incremental listing only looks
            # forward, so look again from the start.
            self._segments = []
            segs = self.segments()
        return segs[0].base if segs else 0

    def end_offset(self) -> int:
        segs = self.segments()
        return segs[-1].end if segs else 0

    def size_bytes(self) -> int:
        return sum(s.size for s in self.segments())

    # -- writes --------------------------------------------------------------------------
    def append(self, table: pa.Table, metadata: dict[str, str] | None = None) -> tuple[int, int]:
        """Append rows already conformed to the topic schema; returns (first, end)."""
        bounds = time_bounds(table, self.topic.config.time_column)
        with self.locked():
            base = self.end_offset()
            seg = write_segment(
                self.dir, base, table, bounds, self.topic.config.fsync, metadata=metadata
            )
        self._segments.append(seg)
        self._listed_at = -1
        return base, seg.end

    def truncate(self, end: int) -> int:
        """Drop every segment at or after ``end`` (used to discard an uncommitted tail;
        ``end`` must be a segment boundary). Returns rows removed."""
        removed = 0
        with self.locked():
            for seg in self.segments():
                if seg.base >= end:
                    seg.path.unlink(missing_ok=True)
                    removed += seg.rows
                elif seg.end > end:
                    raise ValueError(f"offset {end} is inside segment {seg.path.name}")
        self._segments = []
        return removed

    def recover(self) -> list[str]:
        """Check segments not yet verified; truncate from the first bad one on. Returns
        warnings. The verified mark only moves past segments flushed to disk."""
        warnings: list[str] = []
        mark_file = self.dir / ".verified"
        with self.locked():
            for tmp in self.dir.glob(".tmp-*"):
                pid = int(tmp.name.split("-")[1]) if tmp.name.split("-")[1].isdigit() else 0
                if not _alive(pid):
                    tmp.unlink(missing_ok=True)
            try:
                mark = int(mark_file.read_text())
            except (OSError, ValueError):
                mark = -1
            segs = list_segments(self.dir)
            verified = mark
            for i, seg in enumerate(segs):
                if seg.base <= mark:
                    continue
                reason = seg.verify()
                if reason is None:
                    fsync_file(seg.path)
                    verified = seg.base
                    continue
                for bad in segs[i:]:
                    bad.path.unlink(missing_ok=True)
                message = (
                    f"topic {self.topic.name!r} partition {self.index}: segment at offset"
                    f" {seg.base} is damaged ({reason}); truncated {len(segs) - i} segment(s)"
                    f" from offset {seg.base}"
                )
                log.warning(message)
                warnings.append(message)
                break
            if verified != mark:
                tmp = self.dir / ".verified.tmp"
                tmp.write_text(str(verified))
                tmp.replace(mark_file)
        self._segments = []
        return warnings

    # -- reads ---------------------------------------------------------------------------
    def read(
        self,
        offset: int,
        max_rows: int,
        columns: list[str] | None = None,
        end: int | None = None,
    ) -> pa.Table:
        """Up to ``max_rows`` rows from ``offset`` (fewer at the end; empty if none)."""
        limit = offset + max_rows if end is None else min(offset + max_rows, end)
        segs = self._segments
        if not segs or segs[-1].end < limit:
            segs = self.segments()
        if segs and offset < segs[0].base:
            raise OffsetOutOfRangeError(
                f"offset {offset} of topic {self.topic.name!r} partition {self.index} was"
                f" removed by retention; the log now starts at {segs[0].base}"
            )
        parts = []
        pos = offset
        for seg in segs:
            if pos >= limit:
                break
            if seg.end <= pos:
                continue
            table = self._read_segment(seg, columns)
            take = min(limit, seg.end) - pos
            parts.append(table.slice(pos - seg.base, take))
            pos += take
        if not parts:
            schema = self.topic.schema
            if columns is not None:
                schema = pa.schema([schema.field(c) for c in columns])
            return schema.empty_table()
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)

    def _read_segment(self, seg: Segment, columns: list[str] | None) -> pa.Table:
        if self._cache is not None and self._cache[0] == seg.path:
            table = self._cache[1]
        else:
            try:
                table = seg.read()
            except FileNotFoundError:
                # Replaced by compaction since it was listed (a merged segment holds the
                # same offsets) or deleted by retention (the offsets are gone).
                self._segments = []
                merged = next((s for s in self.segments() if s.base <= seg.base < s.end), None)
                if merged is None:
                    raise OffsetOutOfRangeError(
                        f"offset {seg.base} of topic {self.topic.name!r} partition"
                        f" {self.index} was removed by retention; the log now starts at"
                        f" {self.start_offset()}"
                    ) from None
                table = merged.read().slice(seg.base - merged.base, seg.rows)
            self._cache = (seg.path, table)
        return table.select(columns) if columns is not None else table

    # -- maintenance ---------------------------------------------------------------------
    def enforce_retention(self, now_ms: int | None = None) -> list[Segment]:
        """Delete the oldest segments past the age or size limit. The newest segment is
        always kept: it carries the partition's end offset."""
        cfg = self.topic.config
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        deleted: list[Segment] = []
        with self.locked():
            segs = list_segments(self.dir)
            total = sum(s.size for s in segs)
            for seg in segs[:-1]:
                too_old = cfg.retention_ms is not None and seg.max_time < now_ms - cfg.retention_ms
                too_big = cfg.retention_bytes is not None and total > cfg.retention_bytes
                if not (too_old or too_big):
                    break
                total -= seg.size
                seg.path.unlink(missing_ok=True)
                deleted.append(seg)
        self._segments = []
        return deleted

    def compact(self) -> int:
        """Merge runs of adjacent small segments into segments of up to ``segment_rows``
        rows. Publish the merged file first, then delete the small ones: readers in
        between see both and prefer the merged one. Returns segments removed."""
        target = self.topic.config.segment_rows
        removed = 0
        with self.locked():
            segs = list_segments(self.dir)
            # Never the newest segment: an appender's next base is read from it.
            run: list[Segment] = []
            for seg in [*segs[:-1], None]:
                if (
                    seg is not None
                    and seg.rows < target
                    and (sum(s.rows for s in run) + seg.rows <= target)
                ):
                    run.append(seg)
                    continue
                if len(run) > 1:
                    self._merge(run)
                    removed += len(run)
                run = [seg] if seg is not None and seg.rows < target else []
        self._segments = []
        self._cache = None
        return removed

    def _merge(self, run: list[Segment]) -> None:
        table = pa.concat_tables([s.read() for s in run]).combine_chunks()
        times = [(s.min_time, s.max_time) for s in run if s.min_time != NO_TIME]
        bounds = (
            (min(t[0] for t in times), max(t[1] for t in times)) if times else (NO_TIME, NO_TIME)
        )
        write_segment(self.dir, run[0].base, table, bounds, fsync=True)
        for seg in run:
            seg.path.unlink(missing_ok=True)
        fsync_dir(self.dir)


class Topic:
    def __init__(self, root: Path, config: TopicConfig) -> None:
        self.config = config
        self.name = config.name
        self.dir = Path(root) / config.name
        self.schema = config.schema
        self.parts = [Partition(self, i) for i in range(config.partitions)]
        self._next = 0

    def __repr__(self) -> str:
        return f"Topic({self.name!r}, partitions={len(self.parts)})"

    @property
    def time_column(self) -> str:
        return self.config.time_column

    def partition(self, index: int | str) -> Partition:
        i = int(index)
        if not 0 <= i < len(self.parts):
            raise ValueError(f"topic {self.name!r} has no partition {index}")
        return self.parts[i]

    # -- writes --------------------------------------------------------------------------
    def append(
        self,
        data: pa.Table | pa.RecordBatch | pl.DataFrame,
        partition: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> dict[int, tuple[int, int]]:
        """Append rows; returns {partition: (first offset, end offset)}.

        Rows go to ``partition`` if given, else by hash of the key column, else the whole
        batch to the next partition in turn. Rows that do not fit the schema or have no
        event time are refused with a ValueError (decode and dead-letter before appending).
        """
        table = self._conform(data)
        if table.num_rows == 0:
            return {}
        n = len(self.parts)
        if partition is not None or n == 1:
            target = 0 if partition is None else partition
            return {target: self.partition(target).append(table, metadata)}
        if self.config.key is None:
            target, self._next = self._next % n, self._next + 1
            return {target: self.parts[target].append(table, metadata)}
        df = pl.from_arrow(table)
        assert isinstance(df, pl.DataFrame)
        ids = (df.get_column(self.config.key).hash(seed=0) % n).to_numpy()
        out = {}
        for i in range(n):
            mask = ids == i
            if mask.any():
                out[i] = self.parts[i].append(table.filter(pa.array(mask)), metadata)
        return out

    def _conform(self, data: pa.Table | pa.RecordBatch | pl.DataFrame) -> pa.Table:
        if isinstance(data, pl.DataFrame):
            data = data.to_arrow()
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        try:
            table = conform(data, self.schema)
        except ValueError as err:
            raise ValueError(f"topic {self.name!r}: {err}") from err
        nulls = table.column(self.time_column).null_count
        if nulls:
            raise ValueError(f"topic {self.name!r}: {nulls} rows without event time")
        return table

    # -- reads and state -----------------------------------------------------------------
    def start_offsets(self) -> dict[int, int]:
        return {p.index: p.start_offset() for p in self.parts}

    def end_offsets(self) -> dict[int, int]:
        """Physical end per partition (including any uncommitted transactional tail)."""
        return {p.index: p.end_offset() for p in self.parts}

    def committed_ends(self) -> dict[int, int]:
        """What readers may see: the physical end, or for a transactional topic what its
        writer last committed."""
        if not self.config.transactional:
            return self.end_offsets()
        from dataflare_platform.events.transactions import read_commit

        if self.config.commit_topic is not None:
            # A side topic: one partition, its end kept under -1 in the parent's record.
            commit = read_commit(self.dir.parent / self.config.commit_topic)
            return {0: commit.ends.get(-1, 0) if commit else 0}
        commit = read_commit(self)
        return {p.index: commit.ends.get(p.index, 0) if commit else 0 for p in self.parts}

    def read(
        self, partition: int | str, offset: int, max_rows: int, columns: list[str] | None = None
    ) -> pa.Table:
        end = None
        if self.config.transactional:
            end = self.committed_ends()[int(partition)]
        return self.partition(partition).read(offset, max_rows, columns, end=end)

    def read_all(self, columns: list[str] | None = None) -> pa.Table:
        """Every visible row, partition by partition (small topics, tests, the CLI)."""
        ends = self.committed_ends()
        tables = []
        for p in self.parts:
            start = p.start_offset()
            if ends[p.index] > start:
                tables.append(p.read(start, ends[p.index] - start, columns, end=ends[p.index]))
        if not tables:
            schema = self.schema
            return (
                schema.empty_table()
                if columns is None
                else pa.schema([schema.field(c) for c in columns]).empty_table()
            )
        return pa.concat_tables(tables)

    def segment_paths(self) -> list[Path]:
        """Live segment files of every partition (what ad-hoc scans read)."""
        return [s.path for p in self.parts for s in p.segments()]

    def scan(self) -> pl.LazyFrame:
        """A Polars lazy scan over the topic's files (an ad-hoc query, not a consumer:
        a transactional topic's uncommitted tail is included)."""
        paths = self.segment_paths()
        if not paths:
            return pl.LazyFrame(schema=pl.Schema(self.schema))
        return pl.scan_ipc([str(p) for p in paths])

    def dataset(self) -> ds.Dataset:
        """A pyarrow dataset over the topic's files; DuckDB queries it after
        ``conn.register(name, topic.dataset())``."""
        return ds.dataset([str(p) for p in self.segment_paths()], schema=self.schema, format="ipc")

    def offsets_for_time(self, start_ms: int, end_ms: int) -> dict[int, tuple[int, int]]:
        """Per partition, the offset range of the segments whose event times overlap
        [start_ms, end_ms): every event of that interval lies inside it (events arrive out
        of order, so the range can hold a few from outside; filter by time after reading)."""
        out: dict[int, tuple[int, int]] = {}
        for p in self.parts:
            hits = [s for s in p.segments() if s.max_time >= start_ms and s.min_time < end_ms]
            if hits:
                out[p.index] = (hits[0].base, hits[-1].end)
        return out

    def describe(self) -> dict[str, object]:
        cfg = self.config
        parts = []
        for p in self.parts:
            segs = p.segments()
            timed = [s for s in segs if s.min_time != NO_TIME]
            parts.append(
                {
                    "partition": p.index,
                    "start_offset": segs[0].base if segs else 0,
                    "end_offset": segs[-1].end if segs else 0,
                    "segments": len(segs),
                    "bytes": sum(s.size for s in segs),
                    "min_time": min((s.min_time for s in timed), default=None),
                    "max_time": max((s.max_time for s in timed), default=None),
                }
            )
        return {
            "topic": self.name,
            "partitions": cfg.partitions,
            "time_column": cfg.time_column,
            "key": cfg.key,
            "schema": {f.name: str(f.type) for f in self.schema},
            "retention_ms": cfg.retention_ms,
            "retention_bytes": cfg.retention_bytes,
            "transactional": cfg.transactional,
            "rows": sum(p["end_offset"] - p["start_offset"] for p in parts),  # type: ignore[operator]
            "bytes": sum(p["bytes"] for p in parts),  # type: ignore[misc]
            "partition_details": parts,
        }

    def enforce_retention(self, now_ms: int | None = None) -> int:
        return sum(len(p.enforce_retention(now_ms)) for p in self.parts)

    def compact(self) -> int:
        return sum(p.compact() for p in self.parts)

    def recover(self) -> list[str]:
        return [w for p in self.parts for w in p.recover()]

    def group(self, name: str):  # -> ConsumerGroup (import cycle otherwise)
        from dataflare_platform.events.groups import ConsumerGroup

        return ConsumerGroup(self, name)


class EventLog:
    """A directory of topics. Opening a topic recovers it (checks unverified segments)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._open: dict[str, Topic] = {}

    def topics(self) -> list[str]:
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and (p / TOPIC_FILE).exists()
        )

    def exists(self, name: str) -> bool:
        return (self.root / name / TOPIC_FILE).exists()

    def create_topic(
        self,
        name: str,
        schema: pa.Schema,
        time_column: str = "date_time",
        partitions: int = 1,
        exist_ok: bool = False,
        **settings: object,
    ) -> Topic:
        if time_column not in schema.names:
            raise ConfigError(
                f"topic {name!r}", [("time_column", f"{time_column!r} is not a column")]
            )
        key = settings.get("key")
        if key is not None and key not in schema.names:
            raise ConfigError(f"topic {name!r}", [("key", f"{key!r} is not a column")])
        try:
            config = TopicConfig(
                name=name,
                partitions=partitions,
                time_column=time_column,
                schema_ipc=TopicConfig.encode_schema(schema),
                **settings,  # type: ignore[arg-type]
            )
        except ValidationError as err:
            raise ConfigError.from_validation(f"topic {name!r}", err) from err
        if self.exists(name):
            existing = self.topic(name)
            if exist_ok and existing.schema.equals(schema):
                return existing
            raise ConfigError(f"topic {name!r}", [("name", "a topic of that name exists")])
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{TOPIC_FILE}.tmp-{os.getpid()}"
        tmp.write_text(config.model_dump_json(indent=2))
        tmp.replace(directory / TOPIC_FILE)
        return self.topic(name)

    def topic(self, name: str) -> Topic:
        if name in self._open:
            return self._open[name]
        if not re.match(_TOPIC_NAME, name) or not self.exists(name):
            raise TopicNotFoundError(name)
        path = self.root / name / TOPIC_FILE
        try:
            config = TopicConfig.model_validate(json.loads(path.read_text()))
        except ValidationError as err:
            raise ConfigError.from_validation(str(path), err) from err
        topic = Topic(self.root, config)
        topic.recover()
        self._open[name] = topic
        return topic

    def delete_topic(self, name: str) -> None:
        import shutil

        topic = self.topic(name)
        shutil.rmtree(topic.dir)
        self._open.pop(name, None)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
