"""A Kafka cluster for tests: librdkafka's mock cluster, held by this test process.

There is no Kafka broker package on the machines that run these tests. librdkafka ships
a mock cluster (``test.mock.num.brokers``) that listens on 127.0.0.1 and speaks the Kafka
protocol, transactions, ``read_committed`` and consumer groups included; its broker
threads are native, so other processes (crash workers, worker runs) reach it for as long
as this process holds the client that created it. Its topics are created on first use
with 4 partitions; it does not implement topic creation through the admin API, and it
reports the high watermark where a broker would report the last stable offset.

Measured with librdkafka 2.16.0: the mock writes transaction markers, fences zombie
producers (``init_transactions``) and hides control records, but it does **not** hide
the records of aborted transactions from ``read_committed`` consumers (a broker keeps an
aborted-transaction index for that; the mock sends none). So a test that reads what a
transactional writer committed also drops, by the ``dataflare-txn`` header the Kafka
sink writes, the transactions a later writer superseded: :func:`without_aborted`.

Its consumer-group coordinator rebalances across processes, slowly by default: a join
phase lasts the members' ``session.timeout.ms`` minus 1 s whatever they do, and a killed
member is dropped after its session, so tests that move partitions by rebalance set a 6 s
session and 1 s heartbeats (5 s per join, about 12 s for a kill; docs/events.md has the
measurements and the mock's source behind them).

``KAFKA_BOOTSTRAP_SERVERS`` set in the environment points the tests at a real cluster
instead (topics must then be creatable on first use, or created beforehand).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pyarrow as pa
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from dataflare_platform.connectors.kafka.sink import TXN_HEADER

MOCK_PARTITIONS = 4


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    holder = Producer({"test.mock.num.brokers": 3, "bootstrap.servers": "", "log_level": 2})
    brokers = holder.list_topics(timeout=30).brokers.values()
    yield ",".join(f"{b.host}:{b.port}" for b in brokers)
    holder.flush(5)


def unique_topic(prefix: str = "dftest") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


def create_topic(bootstrap: str, topic: str) -> int:
    """Make ``topic`` exist, empty, and return its partition count: a producer's metadata
    request creates it where the cluster allows that (the mock does, with 4 partitions)."""
    producer = Producer({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 60
    while True:
        metadata = producer.list_topics(topic, timeout=30).topics.get(topic)
        if metadata is not None and metadata.error is None and metadata.partitions:
            return len(metadata.partitions)
        assert time.monotonic() < deadline, f"topic {topic} was not created: {metadata.error}"
        time.sleep(0.2)


def read_committed(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[bytes]:
    """Every message of ``topic`` a ``read_committed`` reader gets, all partitions, minus
    the aborted transactions of Kafka sinks the mock fails to hide (``without_aborted``)."""
    return [value for value, _ in without_aborted(read_messages(bootstrap, topic, timeout_s))]


def without_aborted(
    messages: list[tuple[bytes, dict[str, str]]],
) -> list[tuple[bytes, dict[str, str]]]:
    """Drop the records of transactions a later writer superseded. A Kafka sink numbers
    its transactions by checkpoint (``dataflare-txn: <writer>:<n>``) and a restarted writer
    starts at the last *committed* number + 1; so a writer's transaction ``n`` was aborted
    exactly when the next writer starts at a number <= ``n``. What a real broker does with
    its aborted-transaction index, from the sink's own bookkeeping."""
    writers: dict[str, list[int]] = {}
    for _, headers in messages:
        txn = headers.get(TXN_HEADER)
        if txn is not None:
            writer, _, number = txn.rpartition(":")
            writers.setdefault(writer, []).append(int(number))
    # Writers run one after another; of two starting at one number, the one killed in
    # its first transaction wrote only that number.
    order = sorted(writers, key=lambda w: (min(writers[w]), max(writers[w])))
    superseded = {
        w: min(writers[order[i + 1]]) for i, w in enumerate(order[:-1])
    }  # a writer's numbers from here on were aborted
    kept = []
    for value, headers in messages:
        txn = headers.get(TXN_HEADER)
        if txn is not None:
            writer, _, number = txn.rpartition(":")
            if writer in superseded and int(number) >= superseded[writer]:
                continue
        kept.append((value, headers))
    return kept


def read_messages(
    bootstrap: str, topic: str, timeout_s: float = 60.0
) -> list[tuple[bytes, dict[str, str]]]:
    """(value, headers) of every message a ``read_committed`` reader gets, in partition
    order, all partitions."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"dftest.read.{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return []
        parts = list(metadata.partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        pending, values = set(parts), []
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                    continue
                raise AssertionError(error.str())
            headers = {k: v.decode() for k, v in message.headers() or []}
            values.append((message.value(), headers))
        assert not pending, f"partitions {pending} of {topic} not read to the end"
        return values
    finally:
        consumer.close()


def arrow_rows(payloads: list[bytes]) -> pa.Table | None:
    tables = [pa.ipc.open_stream(pa.py_buffer(p)).read_all() for p in payloads if p]
    return pa.concat_tables(tables) if tables else None
