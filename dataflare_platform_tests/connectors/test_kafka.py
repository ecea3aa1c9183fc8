"""Kafka (``kind: kafka``) against librdkafka's mock cluster (see ``kafka_cluster``):
the shared source, dead-letter and transactional-sink contracts, reads over the offsets
transactions leave behind, group offsets, and settings refused at load.

Not shown here, because the mock does not implement it (measured, librdkafka 2.16.0): a
zombie writer fenced by a newer one with its transactional id (the mock lets the old
producer commit), and aborted records hidden from read_committed readers (see
``kafka_cluster``). Both are the broker's side of Kafka's transaction protocol; the sink
uses them as any Kafka client does."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from pydantic import TypeAdapter

from dataflare_platform.connectors import kafka, registry
from dataflare_platform.connectors.broker import BrokerError
from dataflare_platform.connectors.kafka import sink as kafka_sink
from dataflare_platform.connectors.settings import OpenContext
from dataflare_platform.engine import CollectSink, TableSource, arrays
from dataflare_platform.engine.checkpoint import Checkpoint
from dataflare_platform.errors import ConfigError
from dataflare_platform.events.codec import encode_json
from dataflare_platform_tests.connectors.broker_helpers import broker_source_case
from dataflare_platform_tests.connectors.contract import (
    DeadLetterContract,
    SinkCase,
    SourceCase,
    TransactionalSinkContract,
)
from dataflare_platform_tests.connectors.sink_helpers import run_q1
from dataflare_platform_tests.kafka_cluster import (
    arrow_rows,
    create_topic,
    kafka_bootstrap,
    read_committed,
    unique_topic,
)

__all__ = ["kafka_bootstrap"]

BIDS = {"auction": "int64", "bidder": "int64", "price": "int64", "date_time": "timestamp[ms]"}


def _types(table: pa.Table) -> dict[str, str]:
    return {f.name: str(f.type) for f in table.schema}


def _source_case(bootstrap: str, fmt: str) -> SourceCase:
    """Rows sent to partition 0 of a fresh topic (64 rows per arrow message); the source
    reads that partition."""

    def fresh() -> kafka.KafkaSettings:
        topic = unique_topic()
        create_topic(bootstrap, topic)
        return kafka.KafkaSettings(
            bootstrap_servers=bootstrap, topic=topic, format=fmt, batch_rows=64
        )

    return broker_source_case(
        fresh,
        lambda settings: kafka.KafkaProducer(settings, partition=0),
        kafka.KafkaSourceSettings,
        registry.open_source,
        context=OpenContext("contract", "bids", bounded=True, partitions=(0,)),
    )


class TestKafkaSourceContract(DeadLetterContract):
    """json messages, one per row, read through the registry."""

    KIND = "kafka"

    @pytest.fixture
    def source_case(self, kafka_bootstrap) -> SourceCase:
        return _source_case(kafka_bootstrap, "json")


def test_arrow_messages_offsets_count_messages_and_a_resumed_run_equals_one_run(
    kafka_bootstrap, small_nexmark
):
    """arrow: 64 rows per message, one Kafka offset each; a run stopped at a message
    offset and resumed from its checkpoint gives the output of one run."""
    table = small_nexmark["bids"].slice(0, 1_000)
    open_source = _source_case(kafka_bootstrap, "arrow").store(table)
    source = open_source()
    try:
        assert source.end_offset("0") == -(-table.num_rows // 64)  # messages, not rows
        got = source.read("0", 3, 128)  # rows: two whole messages
        assert got.equals(table.slice(3 * 64, 2 * 64).select(source.schema.names))
        assert source.next_offset("0") == 5
    finally:
        source.close()
    sink = CollectSink()
    first = open_source()
    try:
        run_q1(first, sink, until={"bids/0": 7})
    finally:
        first.close()
    assert sink.checkpoint is not None and sink.checkpoint.offsets == {"bids/0": 7}
    second = open_source()
    try:
        resumed = run_q1(second, sink)
    finally:
        second.close()
    expected = run_q1(TableSource.single("bids", table))
    assert resumed.height == table.num_rows
    assert resumed.equals(expected.select(resumed.columns).cast(dict(resumed.schema)))


def _sink_settings(bootstrap: str) -> tuple[str, kafka.KafkaSinkSettings]:
    """A fresh output topic and arrow sink settings writing to it."""
    topic = unique_topic("out")
    create_topic(bootstrap, topic)
    return topic, kafka.KafkaSinkSettings(
        bootstrap_servers=bootstrap,
        topic=topic,
        format="arrow",
        checkpoint_topic=unique_topic("checkpoints"),
        transactional_id_prefix=f"{topic}.",
    )


class TestKafkaSinkContract(TransactionalSinkContract):
    KIND = "kafka"

    @pytest.fixture
    def sink_case(self, kafka_bootstrap) -> SinkCase:
        topic, settings = _sink_settings(kafka_bootstrap)

        def read() -> pl.DataFrame:
            table = arrow_rows(read_committed(kafka_bootstrap, topic))
            return pl.DataFrame() if table is None else pl.from_arrow(table)

        return SinkCase(
            open=lambda: registry.open_sink(settings, OpenContext("contract")),
            read=read,
            settings=settings.model_dump(),
        )


def _transactional_topic(bootstrap: str, table: pa.Table, cuts: list[int]) -> str:
    """``table``'s rows as json in partition 0, one transaction per slice between
    ``cuts``, so transaction markers occupy offsets between the rows. (Aborted
    transactions would too, but the mock cluster does not hide their records from
    read_committed readers: see ``kafka_cluster``.)"""
    topic = unique_topic("txn")
    create_topic(bootstrap, topic)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": topic})
    producer.init_transactions(30)
    payloads = encode_json(table)
    bounds = [0, *cuts, table.num_rows]
    for lo, hi in itertools.pairwise(bounds):
        producer.begin_transaction()
        for payload in payloads[lo:hi]:
            producer.produce(topic, payload, partition=0)
        producer.commit_transaction(30)
    return topic


def test_transactional_input_skips_markers_and_resumes_exactly(kafka_bootstrap, small_nexmark):
    """Transaction markers occupy offsets no row comes from: a bounded run reads every
    row once and ends at the partition's end, and a run stopped at an offset among
    them resumes from its checkpoint to the same output."""
    table = small_nexmark["bids"].slice(0, 1_200)
    cuts = [300, 450, 800, 900]
    topic = _transactional_topic(kafka_bootstrap, table, cuts)
    settings = kafka.KafkaSourceSettings(
        bootstrap_servers=kafka_bootstrap, topic=topic, schema=_types(table)
    )

    def opened():
        return registry.open_source(
            settings, OpenContext("txn", "bids", bounded=True, partitions=(0,))
        )

    source = opened()
    end = source.end_offset("0")
    source.close()
    assert end == table.num_rows + len(cuts) + 1  # one marker per transaction
    expected = run_q1(TableSource.single("bids", table))
    whole = opened()
    try:
        one_run = run_q1(whole)
    finally:
        whole.close()
    assert one_run.equals(expected.select(one_run.columns).cast(dict(one_run.schema)))
    sink = CollectSink()
    first = opened()
    try:
        run_q1(first, sink, until={"bids/0": 451})  # just past the second marker
    finally:
        first.close()
    assert sink.checkpoint is not None
    second = opened()
    try:
        resumed = run_q1(second, sink)
    finally:
        second.close()
    assert sink.checkpoint.offsets == {"bids/0": end}
    assert resumed.equals(one_run)


def test_group_offsets_follow_the_committed_checkpoints(kafka_bootstrap, small_nexmark):
    table = small_nexmark["bids"].slice(0, 500)
    open_source = _source_case(kafka_bootstrap, "json").store(table)
    source = open_source()
    try:
        run_q1(source)
    finally:
        source.close()
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "dataflare.contract"})
    try:
        (committed,) = consumer.committed([TopicPartition(source.settings.topic, 0)], timeout=30)
    finally:
        consumer.close()
    assert committed.offset == table.num_rows


@pytest.mark.parametrize(
    ("values", "field", "says"),
    [
        ({"client": {"sasl.password": "hunter2"}}, "client", "secrets_from_env"),
        ({"client": {"isolation.level": "read_uncommitted"}}, "client", "set by the connector"),
        ({"secrets_from_env": {"sasl.password": "not a name"}}, "secrets_from_env", "variable"),
        ({"topic": "../etc"}, "topic", "pattern"),
        ({"bootstrap_servers": "kafka://x"}, "bootstrap_servers", "pattern"),
        ({"partitioned_by": "nope"}, "partitioned_by", "not a column"),
    ],
)
def test_bad_settings_are_refused_at_load_naming_the_field(values, field, says):
    base = {
        "kind": "kafka",
        "bootstrap_servers": "127.0.0.1:9092",
        "topic": "bids",
        "schema": BIDS,
    }
    with pytest.raises(ConfigError) as err:
        kafka.KafkaSourceSettings.validated({**base, **values}, "sources.bids")
    assert field in str(err.value)  # in the location, or the message of a model check
    assert says in str(err.value)
    assert "hunter2" not in str(err.value)


def test_secrets_come_from_the_environment_and_never_show(monkeypatch, kafka_bootstrap):
    settings = kafka.KafkaSourceSettings(
        bootstrap_servers=kafka_bootstrap,
        topic=unique_topic(),
        schema=BIDS,
        secrets_from_env={"sasl.password": "DFTEST_KAFKA_PASSWORD"},
    )
    monkeypatch.delenv("DFTEST_KAFKA_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match=r"\$DFTEST_KAFKA_PASSWORD is not set"):
        settings.properties("sources.bids")
    monkeypatch.setenv("DFTEST_KAFKA_PASSWORD", "hunter2")
    assert settings.properties("sources.bids")["sasl.password"] == "hunter2"
    assert "hunter2" not in repr(settings) and "hunter2" not in settings.model_dump_json()


def test_an_unknown_topic_or_partition_is_refused_naming_the_source(kafka_bootstrap):
    settings = kafka.KafkaSourceSettings(
        bootstrap_servers=kafka_bootstrap, topic=unique_topic("missing"), schema=BIDS
    )
    with pytest.raises(ConfigError, match=r"sources\.bids\.topic"):
        registry.open_source(settings, OpenContext("p", "bids"))
    topic = unique_topic()
    partitions = create_topic(kafka_bootstrap, topic)
    with pytest.raises(ConfigError, match=rf"no partition\(s\) \[{partitions}\]"):
        registry.open_source(
            settings.model_copy(update={"topic": topic}),
            OpenContext("p", "bids", partitions=(partitions,)),
        )


def test_a_pipeline_spec_declares_kafka_sources_and_sinks(kafka_bootstrap):
    source = TypeAdapter(registry.SourceSettings).validate_python(
        {"kind": "kafka", "bootstrap_servers": kafka_bootstrap, "topic": "bids", "schema": BIDS}
    )
    sink = TypeAdapter(registry.SinkSettings).validate_python(
        {"kind": "kafka", "bootstrap_servers": kafka_bootstrap, "topic": "out", "key": "auction"}
    )
    assert isinstance(source, kafka.KafkaSourceSettings) and registry.supports_ranges(source)
    assert isinstance(sink, kafka.KafkaSinkSettings) and sink.side_topic is None


def test_reading_again_from_an_earlier_offset_seeks_back(kafka_bootstrap, small_nexmark):
    """A runner restarted in-process re-reads from its checkpoint: the same source seeks
    back, and the first read after the seek returns the stored rows, not an empty table."""
    table = small_nexmark["bids"].slice(0, 1_000)
    source = _source_case(kafka_bootstrap, "json").store(table)()
    try:
        assert source.read("0", 0, 400).num_rows == 400
        again = source.read("0", 10, 5)
        assert again.equals(table.slice(10, 5).select(source.schema.names))
        assert source.next_offset("0") == 15
        tail = source.read("0", 990, 100)
        assert tail.num_rows == 10 and source.next_offset("0") == 1_000
        assert source.read("0", 1_000, 100).num_rows == 0
        assert source.next_offset("0") == 1_000
    finally:
        source.close()


def test_a_checkpoint_over_a_record_is_written_as_parts_and_read_back(kafka_bootstrap, monkeypatch):
    """Kafka refuses records over ``message.max.bytes`` (1 MB by default; a 3 MB
    checkpoint was refused): a larger checkpoint goes as parts with a head naming them,
    in the commit's transaction, and the newest one is read back whole, also after a
    smaller one and a larger one replaced it."""
    monkeypatch.setattr(kafka_sink, "PART_BYTES", 100_000)  # parts without 10 MB states
    _, settings = _sink_settings(kafka_bootstrap)
    rng = np.random.default_rng(3)
    for n, rows in enumerate((60_000, 10, 200_000), start=1):  # parts, one record, parts
        state = pa.table({"k": arrays.from_numpy(rng.integers(0, 1 << 62, rows), pa.int64())})
        checkpoint = Checkpoint(offsets={"s/0": n}, states={"op": {"t": state}})
        blob = checkpoint.encode("zstd")
        sink = registry.open_sink(settings, OpenContext("contract"))
        sink.open("p")
        sink.commit_batch(pl.DataFrame({"a": [n]}), None, checkpoint)
        sink.close()
        again = registry.open_sink(settings, OpenContext("contract"))
        restored = again.open("p")
        again.close()
        assert (len(blob) > 100_000) == (rows > 10)
        assert restored.offsets == {"s/0": n} and restored.states["op"]["t"].equals(state)


@pytest.mark.parametrize("damage", ["a part lost", "a part altered"])
def test_a_checkpoint_with_a_part_lost_or_altered_is_refused_not_restored(
    kafka_bootstrap, monkeypatch, damage
):
    """A checkpoint stored as parts whose parts do not add up to its head (one never
    written, as retention or a bad compaction would leave it, or one whose bytes changed)
    is refused at open with an error naming the key, never decoded from what is there."""
    monkeypatch.setattr(kafka_sink, "PART_BYTES", 100_000)
    _, settings = _sink_settings(kafka_bootstrap)
    produce = kafka_sink.KafkaSink._produce

    def damaged(self, topic, value, **kwargs):
        key = kwargs.get("key") or b""
        if key.endswith(b"\0part1"):
            if damage == "a part lost":
                return None
            value = bytes([value[0] ^ 0xFF]) + value[1:]
        return produce(self, topic, value, **kwargs)

    rng = np.random.default_rng(5)
    state = pa.table({"k": arrays.from_numpy(rng.integers(0, 1 << 62, 60_000), pa.int64())})
    checkpoint = Checkpoint(offsets={"s/0": 1}, states={"op": {"t": state}})
    assert len(checkpoint.encode("zstd")) > 2 * 100_000  # at least three parts
    sink = registry.open_sink(settings, OpenContext("contract"))
    sink.open("p")
    with monkeypatch.context() as patch:
        patch.setattr(kafka_sink.KafkaSink, "_produce", damaged)
        sink.commit_batch(pl.DataFrame({"a": [1]}), None, checkpoint)
    sink.close()
    again = registry.open_sink(settings, OpenContext("contract"))
    try:
        with pytest.raises(BrokerError, match=r"checkpoint of 'p'.* is incomplete") as refused:
            again.open("p")
    finally:
        again.close()
    if damage == "a part lost":
        assert "parts missing: [1]" in str(refused.value)
