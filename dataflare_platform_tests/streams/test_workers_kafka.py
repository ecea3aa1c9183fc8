"""Partition-parallel workers over a Kafka topic (librdkafka's mock cluster: see
``kafka_cluster``): 4 partitions keyed by auction, two worker processes, one SIGKILLed
and succeeded by another that takes its partitions over from their checkpoints; the
PostgreSQL table equals the ground truth exactly once, as for the embedded log
(``test_workers``). Then the same with the consumer group owning the partitions
(``membership:``): the second worker's join and the first one's death move partitions
by Kafka rebalances."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition

from dataflare_platform.connectors import kafka
from dataflare_platform.errors import ConfigError, InvalidInputError
from dataflare_platform.events.log import EventLog
from dataflare_platform.streams.parallel import ParallelismError
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform.streams.workers import (
    PartitionWorker,
    check_splittable,
    group_membership,
    unit_key,
)
from dataflare_platform_tests.kafka_cluster import (
    create_topic,
    kafka_bootstrap,
    unique_topic,
)
from dataflare_platform_tests.streams.test_workers import (
    PARTITIONS,
    SCHEMA,
    Feed,
    check_takeover,
    committed,
    counts_spec,
    events,
    table,
    truth,
)
from dataflare_platform_tests.waits import wait_until

__all__ = ["kafka_bootstrap"]


# The fastest group timeouts a broker accepts by default (group.min.session.timeout.ms).
MEMBERSHIP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def spec_text(
    bootstrap: str,
    topic: str,
    dsn: str,
    schema: str,
    key: str = "auction",
    membership: dict | None = None,
) -> str:
    source = {
        "kind": "kafka",
        "bootstrap_servers": bootstrap,
        "topic": topic,
        "partitioned_by": "auction" if key == "auction" else "price",
        "schema": {"auction": "int64", "price": "int64", "date_time": "int64"},
    }
    if membership is not None:
        source["membership"] = membership
    return counts_spec(source, dsn, schema)


@pytest.fixture
def kafka_setup(tmp_path, dsn, pg_schema, kafka_bootstrap):
    topic = unique_topic("bids")
    assert create_topic(kafka_bootstrap, topic) == PARTITIONS
    settings = kafka.KafkaSettings(bootstrap_servers=kafka_bootstrap, topic=topic)
    spec_path = tmp_path / "bid_counts.yaml"
    spec_path.write_text(spec_text(kafka_bootstrap, topic, dsn, pg_schema))
    return settings, spec_path, EventLog(tmp_path / "log"), tmp_path / "streams"


def send(settings: kafka.KafkaSettings, rows: pa.Table) -> None:
    """Keyed by auction: Kafka's partitioner puts each auction in one partition."""
    producer = kafka.KafkaProducer(settings, SCHEMA, key="auction")
    producer.send(rows)
    producer.close()


def close_windows(settings: kafka.KafkaSettings, at_ms: int) -> None:
    """One event far ahead in every partition: closes every earlier window there."""
    for p in range(PARTITIONS):
        producer = kafka.KafkaProducer(settings, SCHEMA, partition=p)
        producer.send(pa.table({"auction": [10_000 + p], "price": [0], "date_time": [at_ms]}))
        producer.close()


def ends(settings: kafka.KafkaSettings) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "dftest"})
    try:
        return {
            p: consumer.get_watermark_offsets(
                TopicPartition(settings.topic, p), timeout=30, cached=False
            )[1]
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()


def test_killed_kafka_worker_is_taken_over_and_the_table_is_exactly_once(
    kafka_setup, dsn, pg_schema
):
    settings, spec_path, log, streams = kafka_setup
    feed = Feed(
        lambda rows: send(settings, rows),
        lambda at_ms: close_windows(settings, at_ms),
        lambda: ends(settings),
    )
    check_takeover(spec_path, log, streams, feed, dsn, pg_schema)


def test_kafka_partitions_split_only_when_the_state_key_is_the_partitioning_key(
    kafka_setup, dsn, pg_schema, kafka_bootstrap
):
    settings, spec_path, log, streams = kafka_setup
    assert check_splittable(PipelineSpec.from_yaml(spec_path), log, streams) == list(
        range(PARTITIONS)
    )
    refused = spec_path.with_name("refused.yaml")
    refused.write_text(spec_text(kafka_bootstrap, settings.topic, dsn, pg_schema, key="price"))
    with pytest.raises(ParallelismError, match="partitioned by 'price'"):
        PartitionWorker(PipelineSpec.from_yaml(refused), log, streams, [0])


def test_a_kafka_pipeline_switches_from_one_run_to_two_workers_exactly_once(
    kafka_setup, dsn, pg_schema
):
    """The split puts each auction's window state in the partition Kafka's murmur2
    put the auction's messages in (where our producer sent them): checked row by row
    against a real read of every partition, then end to end against the ground truth."""
    import polars as pl

    from dataflare_platform.connectors.kafka.source import KafkaSource
    from dataflare_platform.engine.checkpoint import split_into
    from dataflare_platform_tests.streams.test_split import checkpoints, run_single, run_workers
    from dataflare_platform_tests.streams.test_workers import events, table, truth

    settings, spec_path, log, streams = kafka_setup
    spec = PipelineSpec.from_yaml(spec_path)
    first = events(0, 4_000, 3)
    send(settings, first)
    source = KafkaSource(settings, SCHEMA, bounded=True)
    try:
        for p in range(PARTITIONS):
            rows = source.read(str(p), 0, 10_000)
            assert rows.num_rows > 0
            placed = source.key_partitions(pl.Series(rows.column("auction")))
            assert set(placed.tolist()) == {p}
    finally:
        source.close()
    run_single(spec, log, streams, ends(settings))
    single = checkpoints(dsn, pg_schema)["bid_counts"]
    assert sum(t.num_rows for s in single.states.values() for t in s.values()) > 0
    rest = events(12_000, 4_000, 4)
    send(settings, rest)
    close_windows(settings, 3_600_000)
    assert run_workers(spec, log, streams, [[0, 2], [1, 3]], ends(settings)) == []
    assert split_into(checkpoints(dsn, pg_schema)["bid_counts"]) == PARTITIONS
    assert table(dsn, pg_schema).to_dicts() == truth([first, rest], 3_600_000).to_dicts()


class GroupWorker:
    """A worker process over every partition (``worker_proc``), its report lines
    collected as they come: which partitions it has committed, and its final ones."""

    def __init__(self, spec_path: Path, log: EventLog, streams: Path, name: str) -> None:
        self.stderr = (streams.parent / f"{name}.stderr").open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dataflare_platform_tests.streams.worker_proc",
                *("--spec", str(spec_path), "--log", str(log.root), "--dir", str(streams)),
                *("--partitions", ",".join(str(p) for p in range(PARTITIONS))),
            ],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def reported(self) -> set[int]:
        return {line["partition"] for line in list(self.lines) if "offsets" in line}

    def finish(self) -> list[dict]:
        """SIGTERM: every unit commits and the worker exits 0; its final lines."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(60) == 0, (Path(self.stderr.name).read_text())[-2000:]
        self._reader.join(10)
        return [line for line in self.lines if "final" in line]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.stderr.close()


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_consumer_group_moves_partitions_between_worker_processes_exactly_once(
    tmp_path, dsn, pg_schema, kafka_bootstrap, strategy
):
    """Two worker processes over all 4 partitions, members of one consumer group: the
    first owns every partition until the second joins, then the rebalance splits them
    (each revoked unit commits before it goes: all of them with ``range``, only the
    moved ones with ``cooperative-sticky``); the first is SIGKILLed and, once its
    session times out, the survivor takes its partitions over from their checkpoints.
    The table equals the ground truth: every window exactly once."""
    topic = unique_topic("bids")
    assert create_topic(kafka_bootstrap, topic) == PARTITIONS
    settings = kafka.KafkaSettings(bootstrap_servers=kafka_bootstrap, topic=topic)
    spec_path = tmp_path / "bid_counts.yaml"
    spec_path.write_text(spec_text(kafka_bootstrap, topic, dsn, pg_schema, membership=MEMBERSHIP))
    log, streams = EventLog(tmp_path / "log"), tmp_path / "streams"
    streams.mkdir()
    appended = [events(0, 6_000, 1)]
    send(settings, appended[0])
    first = GroupWorker(spec_path, log, streams, "first")
    second = None
    try:
        keys = {unit_key("bid_counts", p) for p in range(PARTITIONS)}
        wait_until(
            "the first member committing every partition",
            lambda: first.reported() == set(range(PARTITIONS)),
        )
        second = GroupWorker(spec_path, log, streams, "second")
        start_ms = 18_000

        def second_commits() -> bool:
            """Rows keep coming (a member commits only what it reads) until the
            rebalance has given the second member partitions and it committed them."""
            nonlocal start_ms
            if second.reported():
                return True
            appended.append(events(start_ms, 600, len(appended) + 1))
            send(settings, appended[-1])
            start_ms += 2_000
            return False

        wait_until("the second member committing partitions", second_commits, poll_s=1.0)
        assert keys <= set(committed(dsn, pg_schema))
        first.kill()  # SIGKILL: no last checkpoint, no LeaveGroup; the session times out
        appended.append(events(start_ms, 6_000, len(appended) + 1))
        send(settings, appended[-1])
        close_windows(settings, 3_600_000)
        done = ends(settings)

        def caught_up():
            offsets = committed(dsn, pg_schema)
            return all(
                offsets.get(unit_key("bid_counts", p), {}).get(f"bids/{p}") == done[p]
                for p in range(PARTITIONS)
            )

        wait_until("the survivor committing every partition to the end", caught_up)
        # It took the first's partitions over (its report follows its commit).
        wait_until("the survivor's reports", lambda: second.reported() == set(range(PARTITIONS)))
        finals = second.finish()
        assert sorted(line["partition"] for line in finals) == list(range(PARTITIONS))
    finally:
        first.kill()
        if second is not None:
            second.kill()
    got = table(dsn, pg_schema)
    want = truth(appended, 3_600_000)
    assert got.height == want.height > 0
    assert got.to_dicts() == want.to_dicts()


def test_group_membership_settings_are_checked_naming_the_field(
    tmp_path, dsn, pg_schema, kafka_bootstrap
):
    base = {
        "kind": "kafka",
        "bootstrap_servers": kafka_bootstrap,
        "topic": "bids",
        "schema": {"auction": "int64", "date_time": "int64"},
    }
    with pytest.raises(
        ConfigError, match=r"(?s)sources\.bids:.*- membership: heartbeat.*third of session"
    ):
        kafka.KafkaSourceSettings.validated(
            {**base, "membership": {"session_timeout_ms": 6000, "heartbeat_interval_ms": 3000}},
            "sources.bids",
        )
    with pytest.raises(ConfigError, match=r"(?s)sources\.bids:.*- membership\.strategy"):
        kafka.KafkaSourceSettings.validated(
            {**base, "membership": {"strategy": "sticky-ish"}}, "sources.bids"
        )
    # The group hands out one topic's partitions: its source must be the only one.
    two = yaml.safe_load(spec_text(kafka_bootstrap, "bids", dsn, pg_schema, membership={}))
    two["sources"]["asks"] = {**two["sources"]["bids"], "topic": "asks"}
    del two["sources"]["asks"]["membership"]
    with pytest.raises(ConfigError, match=r"sources\.bids\.membership: .*only source"):
        group_membership(PipelineSpec.model_validate(two))
    # A worker of a group-owned pipeline is given every partition: the group decides.
    topic = unique_topic("bids")
    create_topic(kafka_bootstrap, topic)
    spec_path = tmp_path / "bid_counts.yaml"
    spec_path.write_text(spec_text(kafka_bootstrap, topic, dsn, pg_schema, membership=MEMBERSHIP))
    with pytest.raises(InvalidInputError, match=r"sources\.bids\.membership"):
        PartitionWorker(
            PipelineSpec.from_yaml(spec_path), EventLog(tmp_path / "log"), tmp_path, [0, 2]
        )


def test_a_run_closes_the_kafka_consumers_it_opened(kafka_setup, monkeypatch):
    """A bounded run and a worker's check open sources to read or to ask; each closes
    them when done, so no consumer stays connected in a long-lived process (a code
    server, a worker run that goes on to other units)."""
    from dataflare_platform.connectors import registry
    from dataflare_platform.streams.ranges import run_range
    from dataflare_platform.streams.workers import check_splittable
    from dataflare_platform_tests.streams.test_workers import events

    settings, spec_path, log, streams = kafka_setup
    send(settings, events(0, 400, 1))
    opened = []
    real = registry.open_source

    def recording(source_settings, context):
        source = real(source_settings, context)
        opened.append(source)
        return source

    monkeypatch.setattr(registry, "open_source", recording)
    spec = PipelineSpec.from_yaml(spec_path)
    end = ends(settings)
    run_range(spec, log, {f"bids/{p}": end[p] for p in range(PARTITIONS)}, streams)
    assert check_splittable(spec, log, streams) == list(range(PARTITIONS))
    assert len(opened) == 3  # the run's, and the check's whole and one-partition views
    for source in opened:
        with pytest.raises(RuntimeError, match="closed"):
            source._consumer.assignment()
