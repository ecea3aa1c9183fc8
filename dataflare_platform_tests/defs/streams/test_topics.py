"""Topic assets observed from the real embedded log: the ``topic_observations`` sensor
reports each append once (data version = digest of the end offsets), a run of the
observable asset reports the same, and freshness checks read the observations."""

import os
from datetime import timedelta

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from dataflare_platform.compliance.spec import GovernedDataset
from dataflare_platform.definitions import defs as root_defs
from dataflare_platform.defs.governance.definitions import dataset_checks
from dataflare_platform.defs.streams.topics import topic_key
from dataflare_platform.events.log import EventLog
from dataflare_platform.events.topic_state import topic_state
from dataflare_platform_tests.defs.topic_observations import (
    data_version,
    observations,
    tick_topic_observations,
)

BIDS = topic_key("nexmark.bids")
PERSONS = topic_key("nexmark.persons")


def _newest_s(table: pa.Table) -> float:
    ms = pc.max(table.column("date_time").cast(pa.timestamp("ms")).cast(pa.int64())).as_py()
    return ms / 1000


def test_every_topic_of_the_pipelines_is_an_observable_asset():
    graph = root_defs.resolve_asset_graph()
    topics = {k for k in graph.get_all_asset_keys() if k.path[0] == "topics"}
    assert {BIDS, PERSONS} <= topics
    for key in topics:
        node = graph.get(key)
        # Observable, so automation counts its observations as updates.
        assert node.is_observable and node.is_external and node.group_name == "topics"
    sensor = root_defs.resolve_sensor_def("topic_observations")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_the_sensor_reports_each_append_once(home, small_nexmark):
    bids, persons = small_nexmark["bids"], small_nexmark["persons"]
    with dg.DagsterInstance.get() as instance:
        skipped, cursor = tick_topic_observations(root_defs, instance, home, None)
        assert isinstance(skipped, dg.SkipReason)
        assert "not created yet: nexmark.bids" in str(skipped.skip_message)

        log = EventLog(home.event_log_dir)
        topic = log.create_topic("nexmark.bids", bids.schema, partitions=2, key="auction")
        topic.append(bids.slice(0, 1000))
        result, cursor = tick_topic_observations(root_defs, instance, home, cursor)
        (first,) = result.asset_events
        assert first.asset_key == BIDS
        assert data_version(first) == topic_state(topic).version
        meta = first.metadata
        assert meta["end_offsets"].value == {str(p): e for p, e in topic.end_offsets().items()}
        assert meta["total_events"].value == 1000 == meta["retained_events"].value
        assert meta["newest_event_time"].value == _newest_s(bids.slice(0, 1000))
        last_append = topic_state(topic).last_append_ms / 1000
        assert meta["dagster/last_updated_timestamp"].value == last_append
        # Bytes stored: an int in total (plotted), a table row per partition.
        state = topic_state(topic)
        assert isinstance(meta["bytes"], dg.IntMetadataValue)
        assert meta["bytes"].value == state.total_bytes > 0
        table = meta["partition_state"]
        assert isinstance(table, dg.TableMetadataValue)
        rows = {r.data["partition"]: r.data for r in table.records}
        assert {p: r["bytes"] for p, r in rows.items()} == state.partition_bytes
        assert sum(r["bytes"] for r in rows.values()) == state.total_bytes
        assert {p: r["end_offset"] for p, r in rows.items()} == topic.end_offsets()

        # Nothing appended: the tick skips and nothing is written to the event log.
        again, cursor = tick_topic_observations(root_defs, instance, home, cursor)
        assert isinstance(again, dg.SkipReason)

        topic.append(bids.slice(1000))
        log.create_topic("nexmark.persons", persons.schema).append(persons)
        result, cursor = tick_topic_observations(root_defs, instance, home, cursor)
        assert {e.asset_key for e in result.asset_events} == {BIDS, PERSONS}

        stored = observations(instance, BIDS)
        assert len(stored) == 2 and data_version(stored[0]) != data_version(stored[1])
        assert stored[1].metadata["total_events"].value == bids.num_rows
        assert stored[1].metadata["newest_event_time"].value == _newest_s(bids)
        (person,) = observations(instance, PERSONS)
        assert person.metadata["total_events"].value == persons.num_rows
        # What Dagster reads as the topics' data versions (staleness, automation).
        record = instance.get_latest_data_version_record(BIDS, is_source=True)
        assert record.asset_observation.tags == stored[1].tags


def test_a_run_of_the_observable_asset_reports_the_same_observation(home, small_nexmark):
    bids = small_nexmark["bids"]
    topic = EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema)
    topic.append(bids)
    assets = root_defs.resolve_assets_def(BIDS)
    with dg.DagsterInstance.get() as instance:
        # nexmark.persons does not exist: it is skipped, the run still succeeds.
        result = dg.materialize([assets], instance=instance, selection=[BIDS, PERSONS])
        assert result.success
        (observed,) = observations(instance, BIDS)
        assert not observations(instance, PERSONS)
        sensor_result, _ = tick_topic_observations(root_defs, instance, home, None)
        (reported,) = sensor_result.asset_events
    assert data_version(observed) == data_version(reported) == topic_state(topic).version
    assert observed.metadata == reported.metadata


def _freshness(instance: dg.DagsterInstance, check: dg.AssetChecksDefinition) -> bool:
    assets = root_defs.resolve_assets_def(BIDS)
    result = dg.materialize(
        [assets, check], instance=instance, selection=dg.AssetSelection.checks(check)
    )
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation.passed


def test_a_freshness_check_on_a_topic_reads_the_last_append(home, small_nexmark):
    """A governance file may declare ``freshness`` for a topic: the check judges the
    time of the last append the observations carry, not when they were reported."""
    bids = small_nexmark["bids"]
    spec = GovernedDataset.model_validate(
        {"asset": "topics/nexmark.bids", "freshness": {"max_lag": "1h"}}
    )
    (check,) = dataset_checks(spec)
    topic = EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema)
    topic.append(bids.slice(0, 1000))
    (segment,) = topic.partition(0).segments()
    two_hours_ago = segment.path.stat().st_mtime - timedelta(hours=2).total_seconds()
    os.utime(segment.path, (two_hours_ago, two_hours_ago))
    with dg.DagsterInstance.get() as instance:
        assert not _freshness(instance, check)  # never observed: unknown is not fresh
        _, cursor = tick_topic_observations(root_defs, instance, home, None)
        assert not _freshness(instance, check)  # observed now, but appended 2 h ago
        topic.append(bids.slice(1000))
        tick_topic_observations(root_defs, instance, home, cursor)
        assert _freshness(instance, check)
