"""Consumer lag from a real event log and a real pipeline run's committed checkpoint: events
and seconds behind per partition, against the topic's end now (not the range a run was
given), and the checkpoint read from the DuckDB sink without writing to it."""

from __future__ import annotations

import threading

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from dataflare_platform.component_files import DEFS_DIR
from dataflare_platform.engine.runner import RunnerConfig
from dataflare_platform.events.log import EventLog
from dataflare_platform.streams.lag import (
    CheckpointUnavailableError,
    committed_checkpoint,
    pipeline_lag,
)
from dataflare_platform.streams.ranges import run_range, source_ends
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform.streams.workers import PartitionWorker
from dataflare_platform_tests.processes import holding_duckdb_writer
from dataflare_platform_tests.streams.test_workers import (
    PARTITIONS,
    SCHEMA,
    closers,
    events,
    spec_text,
)


@pytest.fixture
def spec() -> PipelineSpec:
    return PipelineSpec.from_yaml(DEFS_DIR / "streams" / "hot_items" / "defs.yaml")


def _ms(values: pa.ChunkedArray | pa.Array) -> int | None:
    if len(values) == 0:
        return None
    return pc.max(values.cast(pa.timestamp("ms")).cast(pa.int64())).as_py()


def _partition_times(topic, partition: int, start: int, stop: int) -> pa.ChunkedArray:
    """Event times of offsets [start, stop) of one partition, read from the log itself."""
    table = topic.read(partition, start, stop - start, columns=["date_time"])
    return table.column("date_time")


def test_lag_counts_against_the_topic_end_not_the_run_range(tmp_path, spec, small_nexmark):
    bids = small_nexmark["bids"]
    log = EventLog(tmp_path / "log")
    topic = log.create_topic("nexmark.bids", bids.schema, partitions=2, key="auction")
    topic.append(bids)
    ends = topic.end_offsets()
    # A run given only part of each partition (what a sensor range does when producers
    # append during the run): its range is done, the topic is not.
    until = {f"bids/{p}": end // 3 for p, end in ends.items()}
    result = run_range(spec, log, until, tmp_path / "streams")
    assert result.checkpoint.offsets == until

    lag = pipeline_lag(spec, log, result.checkpoint)
    assert lag.events_behind == sum(ends.values()) - sum(until.values()) > 0
    by_key = {p.key: p for p in lag.partitions}
    assert set(by_key) == set(until)
    for p, end in ends.items():
        part = by_key[f"bids/{p}"]
        assert (part.end_offset, part.checkpoint_offset) == (end, end // 3)
        assert part.events_behind == end - end // 3
        newest = _ms(_partition_times(topic, p, 0, end))
        processed = _ms(_partition_times(topic, p, 0, end // 3))
        assert part.newest_event_ms == newest and part.processed_event_ms == processed
        assert part.seconds_behind == pytest.approx((newest - processed) / 1000)
        assert part.seconds_behind > 0
    assert lag.seconds_behind == max(p.seconds_behind for p in lag.partitions)
    assert lag.per_partition()["bids/0"]["events_behind"] == by_key["bids/0"].events_behind

    # The same checkpoint read back from the sink's DuckDB file (read-only).
    stored = committed_checkpoint(spec, tmp_path / "streams")
    assert stored is not None and stored.offsets == until
    assert pipeline_lag(spec, log, stored) == lag

    # Caught up: nothing behind, in events or seconds.
    done = run_range(spec, log, source_ends(spec, log), tmp_path / "streams")
    caught_up = pipeline_lag(spec, log, done.checkpoint)
    assert caught_up.events_behind == 0 and caught_up.seconds_behind == 0.0


def test_a_pipeline_that_never_ran_is_behind_by_the_whole_topic(tmp_path, spec, small_nexmark):
    bids = small_nexmark["bids"]
    log = EventLog(tmp_path / "log")
    topic = log.create_topic("nexmark.bids", bids.schema)
    topic.append(bids.slice(0, 1000))
    topic.append(bids.slice(1000))
    assert committed_checkpoint(spec, tmp_path / "streams") is None  # no sink file yet
    lag = pipeline_lag(spec, log, None)
    (part,) = lag.partitions
    assert part.events_behind == bids.num_rows and part.processed_event_ms is None
    times = bids.column("date_time")
    # Nothing processed: the backlog's event-time span (oldest unread segment onwards).
    assert part.seconds_behind == pytest.approx((_ms(times) - _min_ms(times)) / 1000)
    assert lag.watermark_ms is None


def _min_ms(values: pa.ChunkedArray) -> int:
    return pc.min(values.cast(pa.timestamp("ms")).cast(pa.int64())).as_py()


def test_a_checkpoint_held_by_a_writing_process_is_reported_busy(tmp_path, spec, small_nexmark):
    bids = small_nexmark["bids"]
    log = EventLog(tmp_path / "log")
    log.create_topic("nexmark.bids", bids.schema).append(bids)
    run_range(spec, log, {"bids/0": 100}, tmp_path / "streams")
    with (
        holding_duckdb_writer(tmp_path / "streams" / "hot_items.duckdb"),
        pytest.raises(CheckpointUnavailableError, match="in use"),
    ):
        committed_checkpoint(spec, tmp_path / "streams")
    assert committed_checkpoint(spec, tmp_path / "streams").offsets == {"bids/0": 100}


def test_a_pipeline_run_as_partition_workers_shows_the_lag_of_its_units(tmp_path):
    """Partition workers commit one checkpoint per unit (``name#pN``), none under the
    pipeline's key: the lag reads the units' (it read the pipeline's key alone and
    showed the whole topic behind, for ever)."""
    log = EventLog(tmp_path / "log")
    topic = log.create_topic("bids", SCHEMA, partitions=PARTITIONS, key="auction")
    topic.append(events(0, 4_000, 5))
    topic.append(closers(topic, 3_600_000))
    path = tmp_path / "bid_counts.yaml"
    path.write_text(
        spec_text("unused", "unused").replace(
            'sink: {kind: postgres, dsn: "unused", table: bid_counts, schema_name: unused}',
            "sink: {kind: duckdb, table: bid_counts}",
        )
    )
    spec = PipelineSpec.from_yaml(path)
    ends = topic.committed_ends()
    owned = [0, 2]  # two of the four partitions ran: the other two stay behind
    worker = PartitionWorker(
        spec,
        log,
        tmp_path / "streams",
        owned,
        config=RunnerConfig(batch_rows=500, checkpoint_interval_s=0.2),
    )
    stop = threading.Event()
    seen: dict[int, int] = {}

    def on_report(unit) -> None:
        seen[unit.partition] = unit.report.offsets[f"bids/{unit.partition}"]
        if all(seen.get(p) == ends[p] for p in owned):
            stop.set()

    worker.run(stop, on_report)
    checkpoint = committed_checkpoint(spec, tmp_path / "streams")
    assert checkpoint is not None
    lag = pipeline_lag(spec, log, checkpoint)
    behind = {p.key: p.events_behind for p in lag.partitions}
    assert behind == {f"bids/{p}": 0 if p in owned else ends[p] for p in range(PARTITIONS)}
    assert lag.events_behind == ends[1] + ends[3] > 0
