"""Retention: delete what is older than ``now - keep``, and say exactly what went.

Three stores, three granularities: rows of a DuckDB table (one transaction), whole
Hive-style partition directories of Parquet files (a partition goes only once all of
its time span is past the cutoff, so nothing newer than the cutoff is ever lost), and
whole segments of an event-log topic (the log's own retention does the deleting).
Every deleter returns a ``RetentionAction`` meant for the audit log, and takes
``dry_run`` to report the same action without deleting anything.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow.parquet as pq
from pydantic import field_validator

from dataflare_platform.engine.durations import to_ms
from dataflare_platform.errors import InvalidInputError
from dataflare_platform.events.log import EventLog, Topic
from dataflare_platform.events.log.segments import NO_TIME, Segment, list_segments
from dataflare_platform.models import StrictModel
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform.times import as_utc, epoch_ms
from dataflare_platform.warehouse.connection import open_duckdb


class RetentionPolicy(StrictModel):
    keep: str | int  # "30d", "12h"… or milliseconds
    time_column: str | None = None  # needed for row deletion; partitions carry their time

    @field_validator("keep")
    @classmethod
    def _is_duration(cls, value: str | int) -> str | int:
        if to_ms(value) == 0:
            raise ValueError("keep must be positive")
        return value

    @property
    def keep_ms(self) -> int:
        return to_ms(self.keep)

    def cutoff(self, now: datetime | int) -> datetime:
        """Data strictly older than this goes."""
        return as_utc(now) - timedelta(milliseconds=self.keep_ms)


@dataclass(frozen=True)
class RetentionAction:
    dataset: str
    target: str  # "duckdb:<file>#<table>", "parquet:<dir>", "topic:<name>"
    what: Literal["rows", "partitions", "segments"]
    cutoff: datetime
    rows_deleted: int
    files_deleted: int
    oldest_deleted: datetime | None  # event time (rows, segments) or partition bounds
    newest_deleted: datetime | None
    dry_run: bool
    items: tuple[str, ...] = ()  # partitions or segment files removed (or that would be)
    notes: tuple[str, ...] = ()  # what was kept although old, and why

    def to_audit(self) -> dict[str, Any]:
        """A JSON-ready dict: times as ISO 8601, tuples as lists."""
        out = asdict(self)
        for key in ("cutoff", "oldest_deleted", "newest_deleted"):
            value = out[key]
            out[key] = value.isoformat() if value is not None else None
        out["items"] = list(self.items)
        out["notes"] = list(self.notes)
        return out


# -- DuckDB rows ---------------------------------------------------------------------------
def _column_type(con: duckdb.DuckDBPyConnection, table: str, column: str) -> str:
    schema, _, name = table.rpartition(".")
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_name = ? AND (? = '' OR table_schema = ?)",
        [name, schema, schema],
    ).fetchall()
    if not rows:
        raise InvalidInputError(f"no table {table!r} in the database")
    types = {c: t for c, t in rows}
    if column not in types:
        raise InvalidInputError(
            f"table {table!r} has no column {column!r} (columns: {sorted(types)})"
        )
    return types[column]


def delete_duckdb_rows(
    database: Path | str | duckdb.DuckDBPyConnection,
    table: str,
    policy: RetentionPolicy,
    now: datetime | int,
    dataset: str | None = None,
    dry_run: bool = False,
    lock_attempts: int = 5,
    lock_backoff_s: float = 0.5,
) -> RetentionAction:
    """Delete the rows whose ``policy.time_column`` is older than the cutoff, in one
    transaction that also measures what it deletes. Rows with a null time are kept (their
    age is unknown). The time column may be a TIMESTAMP[TZ], a DATE or epoch ms
    (integer). A file held by another process (a continuous stream run writing it) is
    tried ``lock_attempts`` times with a doubling backoff, then ``StoreLockedError``:
    nothing deleted, try again later."""
    column = policy.time_column
    if column is None:
        raise InvalidInputError(f"retention of table {table!r} needs a time_column")
    cutoff = policy.cutoff(now)
    own = not isinstance(database, duckdb.DuckDBPyConnection)
    con = (
        open_duckdb(database, read_only=dry_run, attempts=lock_attempts, backoff_s=lock_backoff_s)
        if own
        else database
    )
    label = f"duckdb:{database if own else 'connection'}#{table}"
    try:
        kind = _column_type(con, table, column)
        integer = "INT" in kind.upper()
        tz_aware = "TIME ZONE" in kind.upper()
        naive = cutoff if tz_aware else cutoff.replace(tzinfo=None)
        bound: object = epoch_ms(cutoff) if integer else naive
        where = f"{quote_identifier(column)} < ?"
        target = ".".join(quote_identifier(part) for part in table.split("."))
        con.begin()
        try:
            count, oldest, newest = con.execute(
                f"SELECT count(*), min({quote_identifier(column)}), max({quote_identifier(column)})"
                f" FROM {target} WHERE {where}",
                [bound],
            ).fetchall()[0]
            if count and not dry_run:
                deleted = con.execute(f"DELETE FROM {target} WHERE {where}", [bound]).fetchall()
                if deleted[0][0] != count:
                    raise RuntimeError(f"{table}: counted {count} rows, deleted {deleted[0][0]}")
            con.commit()
        except BaseException:
            con.rollback()
            raise
    finally:
        if own:
            con.close()

    def when(value: object) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return as_utc(value)
        if isinstance(value, int):
            return as_utc(value)
        return as_utc(datetime(value.year, value.month, value.day))  # type: ignore[attr-defined]

    return RetentionAction(
        dataset=dataset or table,
        target=label,
        what="rows",
        cutoff=cutoff,
        rows_deleted=int(count),
        files_deleted=0,
        oldest_deleted=when(oldest),
        newest_deleted=when(newest),
        dry_run=dry_run,
    )


# -- Parquet partitions ----------------------------------------------------------------------
_PARTITION = re.compile(r"^(hour|day)=(.+)$")
_FORMATS = {"hour": ("%Y-%m-%dT%H", timedelta(hours=1)), "day": ("%Y-%m-%d", timedelta(days=1))}


def partition_span(name: str) -> tuple[datetime, datetime] | None:
    """``hour=2024-05-01T13`` → [13:00, 14:00) UTC; None if the name is not a time
    partition. Raises ValueError for a time partition whose value does not parse."""
    match = _PARTITION.match(name)
    if match is None:
        return None
    fmt, length = _FORMATS[match.group(1)]
    start = as_utc(datetime.strptime(match.group(2), fmt))
    return start, start + length


def _partitions(root: Path) -> tuple[list[tuple[Path, datetime, datetime]], list[str]]:
    """Time partitions under ``root`` (at any depth, not below another time partition),
    and the names that look like partitions but do not parse."""
    found: list[tuple[Path, datetime, datetime]] = []
    unparsed: list[str] = []
    for directory, subdirs, _ in os.walk(root):
        keep_walking = []
        for sub in sorted(subdirs):
            if sub.startswith("."):
                continue
            path = Path(directory) / sub
            try:
                span = partition_span(sub)
            except ValueError:
                unparsed.append(str(path.relative_to(root)))
                continue
            if span is None:
                keep_walking.append(sub)
            else:
                found.append((path, *span))
        subdirs[:] = keep_walking
    return found, unparsed


def delete_parquet_partitions(
    root: Path | str,
    policy: RetentionPolicy,
    now: datetime | int,
    dataset: str | None = None,
    dry_run: bool = False,
) -> RetentionAction:
    """Remove each ``hour=``/``day=`` partition whose whole span ends at or before the
    cutoff. A partition is first renamed out of sight, then removed, so a reader never
    sees half of one. Partition names that do not parse are kept and noted."""
    root = Path(root)
    cutoff = policy.cutoff(now)
    if not root.is_dir():
        raise InvalidInputError(f"no partition directory {root}")
    partitions, unparsed = _partitions(root)
    expired = sorted((p for p in partitions if p[2] <= cutoff), key=lambda p: p[1])
    notes = [f"{name}: not a valid time partition name, kept" for name in unparsed]
    rows = files = 0
    for path, _, _ in expired:
        for file in path.rglob("*"):
            if not file.is_file():
                continue
            files += 1
            if file.suffix == ".parquet":
                try:
                    rows += pq.ParquetFile(file).metadata.num_rows
                except Exception as err:
                    notes.append(f"{file.relative_to(root)}: unreadable ({err}), rows not counted")
        if not dry_run:
            hidden = path.with_name(f".{path.name}.deleting-{os.getpid()}")
            path.rename(hidden)
            shutil.rmtree(hidden)
    return RetentionAction(
        dataset=dataset or str(root),
        target=f"parquet:{root}",
        what="partitions",
        cutoff=cutoff,
        rows_deleted=rows,
        files_deleted=files,
        oldest_deleted=expired[0][1] if expired else None,
        newest_deleted=max(p[2] for p in expired) if expired else None,
        dry_run=dry_run,
        items=tuple(str(p[0].relative_to(root)) for p in expired),
        notes=tuple(notes),
    )


# -- event-log segments ----------------------------------------------------------------------
def _expired_segments(segments: list[Segment], cutoff_ms: int) -> list[Segment]:
    """What ``Partition.enforce_retention`` deletes by age (for the dry run): the leading
    run of segments older than the cutoff, never the newest segment."""
    out: list[Segment] = []
    for seg in segments[:-1]:
        if seg.max_time >= cutoff_ms:
            break
        out.append(seg)
    return out


def delete_topic_segments(
    log: EventLog,
    topic: str,
    policy: RetentionPolicy,
    now: datetime | int,
    dataset: str | None = None,
    dry_run: bool = False,
) -> RetentionAction:
    """Delete whole segments whose newest event is older than the cutoff, through the
    log's own retention (same lock, same rules) applied with this policy's age limit and
    no size limit. The newest segment of a partition always stays: it carries the
    partition's end offset; that is noted when it is past the cutoff."""
    source = log.topic(topic)
    if policy.time_column is not None and policy.time_column != source.time_column:
        raise InvalidInputError(
            f"topic {topic!r} keeps event time in {source.time_column!r},"
            f" not {policy.time_column!r}"
        )
    cutoff = policy.cutoff(now)
    cutoff_ms = epoch_ms(cutoff)
    view = Topic(
        log.root,
        source.config.model_copy(update={"retention_ms": policy.keep_ms, "retention_bytes": None}),
    )
    deleted: list[Segment] = []
    notes: list[str] = []
    for part in view.parts:
        if dry_run:
            deleted.extend(_expired_segments(list_segments(part.dir), cutoff_ms))
        else:
            deleted.extend(part.enforce_retention(now_ms=cutoff_ms + policy.keep_ms))
        remaining = list_segments(part.dir)
        if remaining and remaining[-1].max_time < cutoff_ms:
            notes.append(
                f"partition {part.index}: newest segment is older than the cutoff but kept"
                " (it carries the end offset)"
            )
    times = [t for s in deleted for t in (s.min_time, s.max_time) if t != NO_TIME]
    return RetentionAction(
        dataset=dataset or topic,
        target=f"topic:{topic}",
        what="segments",
        cutoff=cutoff,
        rows_deleted=sum(s.rows for s in deleted),
        files_deleted=len(deleted),
        oldest_deleted=as_utc(min(times)) if times else None,
        newest_deleted=as_utc(max(times)) if times else None,
        dry_run=dry_run,
        items=tuple(f"{s.path.parent.name}/{s.path.name}" for s in deleted),
        notes=tuple(notes),
    )
