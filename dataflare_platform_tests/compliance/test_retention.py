from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from pydantic import ValidationError

from dataflare_platform.compliance.retention import (
    RetentionPolicy,
    delete_duckdb_rows,
    delete_parquet_partitions,
    delete_topic_segments,
    partition_span,
)
from dataflare_platform.events.log import EventLog
from dataflare_platform.queries.leaderboards import write_hour

NOW = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)
START = datetime(2026, 3, 1, tzinfo=UTC)


def _events(hours: int = 30 * 24) -> pl.DataFrame:
    """One row every 10 minutes over 30 days up to NOW, plus two rows without a time."""
    times = pl.datetime_range(
        START.replace(tzinfo=None), NOW.replace(tzinfo=None), "10m", closed="left", eager=True
    )
    frame = pl.DataFrame({"ts": times, "value": np.arange(len(times))})
    nulls = pl.DataFrame({"ts": [None, None], "value": [-1, -2]}, schema=frame.schema)
    return pl.concat([frame, nulls])


def _write_db(path: Path, frame: pl.DataFrame, ts_type: str = "TIMESTAMP") -> None:
    with duckdb.connect(str(path)) as con:
        con.register("src", frame.to_arrow())
        con.execute(f"CREATE TABLE events AS SELECT ts::{ts_type} AS ts, value FROM src")


def _count(path: Path, where: str = "true") -> int:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(f"SELECT count(*) FROM events WHERE {where}").fetchall()[0][0]


def test_duckdb_rows_older_than_the_cutoff_are_deleted_exactly(tmp_path: Path):
    db = tmp_path / "warehouse.duckdb"
    frame = _events()
    _write_db(db, frame)
    policy = RetentionPolicy(keep="7d", time_column="ts")
    cutoff = NOW - timedelta(days=7)
    naive = cutoff.replace(tzinfo=None)
    older = frame.filter(pl.col("ts") < naive)
    before = _count(db)

    action = delete_duckdb_rows(db, "events", policy, NOW, dataset="streams/events")

    assert action.cutoff == cutoff and action.what == "rows" and not action.dry_run
    assert action.rows_deleted == older.height > 0
    assert before == action.rows_deleted + _count(db)
    assert _count(db, f"ts < '{naive}'") == 0
    assert _count(db, "ts IS NULL") == 2  # unknown age: kept
    assert action.oldest_deleted == START
    assert action.newest_deleted == cutoff - timedelta(minutes=10)
    audit = action.to_audit()
    assert json.loads(json.dumps(audit))["cutoff"] == cutoff.isoformat()
    assert audit["dataset"] == "streams/events"


@pytest.mark.parametrize("ts_type", ["TIMESTAMPTZ", "DATE"])
def test_duckdb_retention_handles_zoned_and_date_columns(tmp_path: Path, ts_type: str):
    db = tmp_path / "w.duckdb"
    _write_db(db, _events(), ts_type)
    before = _count(db)
    action = delete_duckdb_rows(db, "events", RetentionPolicy(keep="7d", time_column="ts"), NOW)
    cutoff = action.cutoff.replace(tzinfo=None)
    assert action.rows_deleted > 0 and before == action.rows_deleted + _count(db)
    assert _count(db, f"ts < TIMESTAMP '{cutoff}'") == 0


def test_duckdb_retention_on_epoch_ms_through_an_open_connection():
    con = duckdb.connect()
    stamps = np.arange(0, 100) * 3_600_000  # hourly from the epoch
    con.register("src", pa.table({"ms": stamps}))
    con.execute("CREATE TABLE main.hits AS SELECT ms FROM src")
    now = int(stamps[-1])
    action = delete_duckdb_rows(
        con, "main.hits", RetentionPolicy(keep="10h", time_column="ms"), now
    )
    assert action.rows_deleted == 89  # hours 0..88 are older than hour 89
    assert con.execute("SELECT min(ms) FROM hits").fetchall()[0][0] == 89 * 3_600_000
    assert action.newest_deleted == datetime(1970, 1, 4, 16, tzinfo=UTC)  # hour 88


def test_duckdb_dry_run_reports_and_deletes_nothing(tmp_path: Path):
    db = tmp_path / "w.duckdb"
    _write_db(db, _events())
    before = _count(db)
    policy = RetentionPolicy(keep="7d", time_column="ts")
    dry = delete_duckdb_rows(db, "events", policy, NOW, dry_run=True)
    assert dry.dry_run and dry.rows_deleted > 0 and _count(db) == before
    real = delete_duckdb_rows(db, "events", policy, NOW)
    assert real.rows_deleted == dry.rows_deleted


def test_duckdb_retention_refuses_unknown_tables_and_columns(tmp_path: Path):
    db = tmp_path / "w.duckdb"
    _write_db(db, _events())
    with pytest.raises(ValueError, match="no table 'nope'"):
        delete_duckdb_rows(db, "nope", RetentionPolicy(keep="1d", time_column="ts"), NOW)
    with pytest.raises(ValueError, match="no column 'when'"):
        delete_duckdb_rows(db, "events", RetentionPolicy(keep="1d", time_column="when"), NOW)
    with pytest.raises(ValueError, match="needs a time_column"):
        delete_duckdb_rows(db, "events", RetentionPolicy(keep="1d"), NOW)


def _write_hours(root: Path, hours: list[datetime]) -> int:
    rows = 0
    for i, hour in enumerate(hours):
        frame = pl.DataFrame({"auction": np.arange(i + 1), "bids": np.ones(i + 1, dtype=np.int64)})
        write_hour(frame, root, hour)
        rows += frame.height
    return rows


def test_parquet_partitions_entirely_older_than_the_cutoff_are_removed(tmp_path: Path):
    root = tmp_path / "leaderboards"
    hours = [NOW - timedelta(hours=h) for h in range(1, 49)]  # the last two days
    total = _write_hours(root, hours)
    (root / "day=2026-03-01").mkdir()
    pl.DataFrame({"x": [1, 2, 3]}).write_parquet(root / "day=2026-03-01" / "part.parquet")
    (root / "hour=not-a-time").mkdir()
    (root / "_staging").mkdir()
    total += 3
    policy = RetentionPolicy(keep="24h")
    cutoff = NOW - timedelta(hours=24)

    dry = delete_parquet_partitions(root, policy, NOW, dry_run=True)
    assert len(list(root.glob("hour=*/*.parquet"))) == 48
    action = delete_parquet_partitions(root, policy, NOW, dataset="leaderboards")

    kept = sorted(p.name for p in root.iterdir())
    expected_kept = sorted(
        f"hour={h:%Y-%m-%dT%H}" for h in hours if h + timedelta(hours=1) > cutoff
    )
    assert kept == sorted([*expected_kept, "_staging", "hour=not-a-time"])
    assert action.items == dry.items and action.rows_deleted == dry.rows_deleted
    assert len(action.items) == 48 - 24 + 1 and action.files_deleted == 25
    kept_rows = pl.scan_parquet(root / "hour=*" / "*.parquet").select(pl.len()).collect().item()
    assert total == action.rows_deleted + kept_rows
    assert action.oldest_deleted == START
    assert action.newest_deleted == cutoff
    assert any("hour=not-a-time" in note for note in action.notes)


def test_partition_names_parse_to_their_time_span():
    assert partition_span("hour=2026-03-01T13") == (
        datetime(2026, 3, 1, 13, tzinfo=UTC),
        datetime(2026, 3, 1, 14, tzinfo=UTC),
    )
    assert partition_span("day=2026-03-01")[1] == datetime(2026, 3, 2, tzinfo=UTC)
    assert partition_span("region=eu") is None
    with pytest.raises(ValueError):
        partition_span("day=2026-13-01")


def test_topic_segments_go_through_the_logs_own_retention(tmp_path: Path):
    log = EventLog(tmp_path / "events")
    schema = pa.schema([("date_time", pa.timestamp("ms")), ("v", pa.int64())])
    topic = log.create_topic("clicks", schema, partitions=2)
    base = START.replace(tzinfo=None)
    for day in range(30):  # one segment per day and partition, 10 rows each
        for part in (0, 1):
            times = [base + timedelta(days=day, minutes=m) for m in range(10)]
            topic.append(pa.table({"date_time": times, "v": [day] * 10}, schema=schema), part)
    total = topic.read_all().num_rows
    policy = RetentionPolicy(keep="10d", time_column="date_time")

    dry = delete_topic_segments(log, "clicks", policy, NOW, dry_run=True)
    assert log.topic("clicks").read_all().num_rows == total
    action = delete_topic_segments(log, "clicks", policy, NOW, dataset="clicks")

    remaining = log.topic("clicks").read_all()
    assert total == action.rows_deleted + remaining.num_rows
    # Days 0–20 (1–21 March, each before 21 March 12:00) go in both partitions.
    assert action.items == dry.items and action.files_deleted == 2 * 21
    assert action.rows_deleted == 2 * 21 * 10
    oldest_kept = pl.from_arrow(remaining).get_column("date_time").min()
    assert oldest_kept >= action.cutoff.replace(tzinfo=None)
    assert action.newest_deleted < action.cutoff
    assert log.topic("clicks").config.retention_ms is None  # the topic's settings untouched
    with pytest.raises(ValueError, match="keeps event time in 'date_time'"):
        delete_topic_segments(log, "clicks", RetentionPolicy(keep="1d", time_column="ts"), NOW)


def test_the_newest_segment_is_kept_and_noted(tmp_path: Path):
    log = EventLog(tmp_path / "events")
    schema = pa.schema([("date_time", pa.timestamp("ms")), ("v", pa.int64())])
    topic = log.create_topic("old", schema)
    topic.append(pa.table({"date_time": [START.replace(tzinfo=None)], "v": [1]}, schema=schema))
    action = delete_topic_segments(log, "old", RetentionPolicy(keep="1d"), NOW)
    assert action.rows_deleted == 0 and "kept" in action.notes[0]
    assert log.topic("old").read_all().num_rows == 1


@pytest.mark.parametrize("bad", ["forever", "0d", -5])
def test_retention_policies_refuse_bad_durations(bad: str | int):
    with pytest.raises(ValidationError) as err:
        RetentionPolicy(keep=bad)
    assert err.value.errors()[0]["loc"][0] == "keep"
