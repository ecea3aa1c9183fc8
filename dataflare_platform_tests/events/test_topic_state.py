"""A topic's state as an orchestrator polls it: end offsets, newest event time, last
append, and a version that moves with the end offsets only."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc

from dataflare_platform.events.log import EventLog
from dataflare_platform.events.log.commits import Commit, write_commit
from dataflare_platform.events.topic_state import topic_state, topic_states


def _max_ms(table: pa.Table) -> int:
    return pc.max(table.column("date_time").cast(pa.timestamp("ms")).cast(pa.int64())).as_py()


def test_state_follows_appends_across_partitions(tmp_path, small_nexmark):
    bids = small_nexmark["bids"]
    log = EventLog(tmp_path / "log")
    topic = log.create_topic("bids", bids.schema, partitions=2, key="auction")
    empty = topic_state(topic)
    assert empty.end_offsets == {0: 0, 1: 0} and empty.total_events == 0
    assert empty.newest_event_ms is None and empty.last_append_ms is None

    first = bids.slice(0, 1200)
    topic.append(first)
    before = topic_state(topic)
    assert before.end_offsets == topic.end_offsets()
    assert before.total_events == before.retained_events == 1200
    assert before.newest_event_ms == _max_ms(first)
    newest_file = max(topic.segment_paths(), key=lambda p: p.stat().st_mtime_ns)
    assert before.last_append_ms == newest_file.stat().st_mtime_ns // 1_000_000
    assert topic_state(topic).version == before.version  # nothing new: same version

    topic.append(bids.slice(1200))
    after = topic_state(topic)
    assert after.total_events == bids.num_rows
    assert after.newest_event_ms == _max_ms(bids)
    assert after.version != before.version


def test_retention_and_compaction_leave_the_version_alone(tmp_path, small_nexmark):
    bids = small_nexmark["bids"]
    log = EventLog(tmp_path / "log")
    topic = log.create_topic("bids", bids.schema, retention_ms=1)
    for start in range(0, bids.num_rows, 500):
        topic.append(bids.slice(start, 500))
    before = topic_state(topic)
    assert topic.enforce_retention() > 0  # every segment but the newest is old
    after = topic_state(topic)
    assert after.version == before.version and after.total_events == before.total_events
    assert after.retained_events < before.retained_events
    assert after.start_offsets == topic.start_offsets()


def test_a_transactional_topic_reports_only_what_was_committed(tmp_path, small_nexmark):
    bids = small_nexmark["bids"]
    log = EventLog(tmp_path / "log")
    topic = log.create_topic("out", bids.schema, transactional=True)
    committed, tail = bids.slice(0, 1000), bids.slice(1000)
    topic.append(committed)
    write_commit(topic.dir, Commit("writer", 1, {0: 1000}, b""))
    topic.append(tail)  # written but not committed yet (a crash would truncate it)
    state = topic_state(topic)
    assert state.end_offsets == {0: 1000} and state.total_events == 1000
    assert state.newest_event_ms == _max_ms(committed)
    (committed_segment,) = [s for s in topic.partition(0).segments() if s.end <= 1000]
    stamp = committed_segment.path.stat().st_mtime_ns // 1_000_000
    assert state.last_append_ms == stamp


def test_only_existing_topics_have_a_state(tmp_path, small_nexmark):
    log = EventLog(tmp_path / "log")
    log.create_topic("bids", small_nexmark["bids"].schema).append(small_nexmark["bids"])
    states = topic_states(log, ["bids", "persons"])
    assert set(states) == {"bids"} and states["bids"].total_events == small_nexmark["bids"].num_rows


def test_last_append_is_the_newest_segments_write_time(tmp_path, small_nexmark):
    bids = small_nexmark["bids"]
    log = EventLog(tmp_path / "log")
    topic = log.create_topic("bids", bids.schema)
    topic.append(bids)
    (segment,) = topic.partition(0).segments()
    os.utime(segment.path, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    assert topic_state(topic).last_append_ms == 1_700_000_000_000


def _file_bytes(topic, partition: int) -> int:
    return sum(p.stat().st_size for p in (topic.dir / f"p{partition:05d}").glob("*.arrow"))


def test_bytes_are_the_stored_segment_sizes_per_partition(tmp_path, small_nexmark):
    bids = small_nexmark["bids"]
    log = EventLog(tmp_path / "log")
    topic = log.create_topic("bids", bids.schema, partitions=2, key="auction", retention_ms=1)
    for start in range(0, bids.num_rows, 700):
        topic.append(bids.slice(start, 700))
    state = topic_state(topic)
    assert state.partition_bytes == {p: _file_bytes(topic, p) for p in (0, 1)}
    assert state.total_bytes == sum(state.partition_bytes.values()) > 0
    assert state.total_bytes == topic.describe()["bytes"]
    newest = {p: _max_ms(topic.read(p, 0, end)) for p, end in topic.end_offsets().items()}
    assert state.partition_newest_ms == newest

    # Retention frees bytes without changing the version: no new data to read.
    assert topic.enforce_retention() > 0
    kept = topic_state(log.topic("bids"))
    assert kept.version == state.version
    assert kept.partition_bytes == {p: _file_bytes(topic, p) for p in (0, 1)}
    assert kept.total_bytes < state.total_bytes
    # A fresh reader (another process's view, no cached sizes) agrees.
    assert topic_state(EventLog(tmp_path / "log").topic("bids")) == kept

    topic.append(bids.slice(0, 10))
    grown = topic_state(topic)
    assert grown.version != kept.version and grown.total_bytes > kept.total_bytes
