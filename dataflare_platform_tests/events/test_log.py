"""The embedded event log: offsets, partitioning, recovery, retention, compaction, scans."""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest

from dataflare_platform.errors import ConfigError
from dataflare_platform.events.log import (
    EventLog,
    OffsetOutOfRangeError,
    TopicNotFoundError,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def bids(small_nexmark) -> pa.Table:
    return small_nexmark["bids"]


@pytest.fixture
def log(tmp_path: Path) -> EventLog:
    return EventLog(tmp_path / "log")


def _append_in_batches(topic, table: pa.Table, rows: int, partition=None) -> None:
    for start in range(0, table.num_rows, rows):
        topic.append(table.slice(start, rows), partition=partition)


def test_offsets_are_dense_and_reads_cross_segments(log, bids):
    topic = log.create_topic("bids", bids.schema)
    _append_in_batches(topic, bids, 250)
    assert topic.end_offsets() == {0: bids.num_rows}
    assert len(topic.partition(0).segments()) == -(-bids.num_rows // 250)
    # A read spanning three segments returns exactly the rows at those offsets.
    got = topic.read(0, 100, 600)
    assert got.equals(bids.slice(100, 600))
    assert topic.read(0, bids.num_rows, 10).num_rows == 0
    assert topic.read_all().equals(bids)


def test_key_partitioning_keeps_every_row_once(log, bids):
    topic = log.create_topic("bids", bids.schema, partitions=4, key="auction")
    _append_in_batches(topic, bids, 500)
    ends = topic.end_offsets()
    assert sum(ends.values()) == bids.num_rows
    assert all(n > 0 for n in ends.values())
    for p in range(4):  # each auction lands in exactly one partition
        auctions = set(topic.read(p, 0, ends[p]).column("auction").to_pylist())
        for q in range(p + 1, 4):
            assert not auctions & set(topic.read(q, 0, ends[q]).column("auction").to_pylist())
    got = pl.from_arrow(topic.read_all()).sort(pl.all())
    assert got.equals(pl.from_arrow(bids).sort(pl.all()))


def test_bad_appends_are_refused_with_the_reason(log, bids):
    topic = log.create_topic("bids", bids.schema)
    with pytest.raises(ValueError, match="missing required fields"):
        topic.append(bids.drop_columns(["price"]))
    no_time = bids.slice(0, 3).set_column(
        bids.schema.get_field_index("date_time"),
        "date_time",
        pa.nulls(3, pa.timestamp("ms")),
    )
    with pytest.raises(ValueError, match="3 rows without event time"):
        topic.append(no_time)
    assert topic.end_offsets() == {0: 0}


def test_bad_topic_config_names_the_field(log, bids):
    with pytest.raises(ConfigError) as err:
        log.create_topic("bids", bids.schema, partitions=0)
    assert err.value.fields == ["partitions"]
    with pytest.raises(ConfigError) as err:
        log.create_topic("bids", bids.schema, time_column="nope")
    assert err.value.fields == ["time_column"]
    with pytest.raises(ConfigError) as err:
        log.create_topic("bad name!", bids.schema)
    assert err.value.fields == ["name"]
    with pytest.raises(TopicNotFoundError, match="no topic 'missing'"):
        log.topic("missing")


def test_corrupt_tail_is_truncated_at_open_never_served(log, bids, caplog):
    topic = log.create_topic("bids", bids.schema)
    _append_in_batches(topic, bids.slice(0, 1000), 250)
    EventLog(log.root).topic("bids")  # a first open verifies the four segments
    _append_in_batches(topic, bids.slice(1000, 500), 250)
    segs = topic.partition(0).segments()
    assert len(segs) == 6
    # Damage the fifth segment as a power loss would: a torn write leaves zeros.
    data = bytearray(segs[4].path.read_bytes())
    data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)
    segs[4].path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        reopened = EventLog(log.root).topic("bids")
    assert "(offsets 1000 to 1249) is damaged (checksum mismatch" in caplog.text
    assert "moved it and 1 later segment(s), offsets 1000 to 1499, aside" in caplog.text
    assert "dataflare topics restore-quarantine bids" in caplog.text
    # Moved aside, not deleted: the damaged segment and the intact one after it.
    assert [p.name for p in reopened.partition(0).quarantined()] == [
        segs[4].path.name,
        segs[5].path.name,
    ]
    assert reopened.end_offsets() == {0: 1000}
    assert reopened.read_all().equals(bids.slice(0, 1000))
    # The log goes on from the truncation point with dense offsets.
    reopened.append(bids.slice(1000, 10))
    assert reopened.read(0, 995, 100).equals(bids.slice(995, 15))


def test_retention_by_size_and_age_keeps_the_newest_segment(log, bids):
    topic = log.create_topic("bids", bids.schema, retention_bytes=1)
    _append_in_batches(topic, bids, 1000)
    assert topic.enforce_retention() == 2
    n = bids.num_rows  # 2760: segments of 1000, 1000 and 760 rows
    assert topic.start_offsets() == {0: 2000} and topic.end_offsets() == {0: n}
    with pytest.raises(OffsetOutOfRangeError, match="now starts at 2000"):
        topic.read(0, 0, 10)
    aged = log.create_topic("aged", bids.schema, retention_ms=60_000)
    _append_in_batches(aged, bids, 1000)
    newest = aged.partition(0).segments()[-1].max_time
    assert aged.enforce_retention(now_ms=newest) == 0  # the data spans 30 s of event time
    assert aged.enforce_retention(now_ms=newest + 10**9) == 2
    aged.append(bids.slice(0, 5))
    assert aged.end_offsets() == {0: n + 5}


def test_compaction_merges_small_segments_and_keeps_offsets(log, bids):
    topic = log.create_topic("bids", bids.schema, segment_rows=1000)
    _append_in_batches(topic, bids, 100)
    before = topic.read_all()
    assert topic.compact() > 0
    segs = topic.partition(0).segments()
    # 2760 rows in 28 appends: 10 + 10 + 7 merged, the newest (60 rows) left alone.
    assert [s.rows for s in segs] == [1000, 1000, 700, 60]
    assert topic.read_all().equals(before)
    assert topic.read(0, 950, 100).equals(bids.slice(950, 100))


def test_duckdb_and_polars_scan_a_topic(log, bids):
    topic = log.create_topic("bids", bids.schema, partitions=2, key="bidder")
    _append_in_batches(topic, bids, 700)
    expected = pl.from_arrow(bids).group_by("auction").agg(pl.len()).sort("auction")
    got = topic.scan().group_by("auction").agg(pl.len()).sort("auction").collect()
    assert got.equals(expected)
    conn = duckdb.connect()
    conn.register("bids", topic.dataset())
    total = conn.sql("SELECT count(*), sum(price) FROM bids").fetchall()[0]
    assert total == (bids.num_rows, pl.from_arrow(bids)["price"].sum())


def test_event_time_index_covers_an_interval(log, bids):
    topic = log.create_topic("bids", bids.schema)
    _append_in_batches(topic, bids, 200)
    times = pl.from_arrow(bids)["date_time"].cast(pl.Int64)
    lo, hi = int(times.quantile(0.4)), int(times.quantile(0.6))
    ((start, end),) = topic.offsets_for_time(lo, hi).values()
    inside = pl.from_arrow(topic.read(0, start, end - start)).filter(
        pl.col("date_time").cast(pl.Int64).is_between(lo, hi, closed="left")
    )
    expected = pl.from_arrow(bids).filter(
        pl.col("date_time").cast(pl.Int64).is_between(lo, hi, closed="left")
    )
    assert inside.equals(expected)
    assert start > 0 and end < bids.num_rows  # the index narrows the read


def test_a_reader_notices_retention_and_compaction_done_by_another_process(log, bids):
    topic = log.create_topic("bids", bids.schema, retention_bytes=1, segment_rows=2000)
    _append_in_batches(topic, bids, 500)
    reader = EventLog(log.root).topic("bids")  # another process's view, listed once
    assert reader.read(0, 0, 10).equals(bids.slice(0, 10))
    assert EventLog(log.root).topic("bids").compact() > 0  # merges what the reader listed
    assert reader.read(0, 1200, 100).equals(bids.slice(1200, 100))
    deleted = EventLog(log.root).topic("bids").enforce_retention()
    assert deleted > 0
    start = reader.start_offsets()[0]
    assert start > 0
    with pytest.raises(OffsetOutOfRangeError, match=f"now starts at {start}"):
        reader.read(0, 0, 10)
    assert reader.read(0, start, 10).equals(bids.slice(start, 10))
