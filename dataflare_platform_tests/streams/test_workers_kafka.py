"""Partition-parallel workers over a Kafka topic (librdkafka's mock cluster: see
``kafka_cluster``): 4 partitions keyed by auction, two worker processes, one SIGKILLed
and succeeded by another that takes its partitions over from their checkpoints; the
PostgreSQL table equals the ground truth exactly once, as for the embedded log
(``test_workers``)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from confluent_kafka import Consumer, TopicPartition

from dataflare_platform.connectors import kafka
from dataflare_platform.events.log import EventLog
from dataflare_platform.streams.parallel import ParallelismError
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform.streams.workers import PartitionWorker, check_splittable
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
    counts_spec,
)

__all__ = ["kafka_bootstrap"]


def spec_text(bootstrap: str, topic: str, dsn: str, schema: str, key: str = "auction") -> str:
    source = {
        "kind": "kafka",
        "bootstrap_servers": bootstrap,
        "topic": topic,
        "partitioned_by": "auction" if key == "auction" else "price",
        "schema": {"auction": "int64", "price": "int64", "date_time": "int64"},
    }
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
