"""``on_schema_mismatch`` on the message streams, against the real NATS JetStream
(127.0.0.1:4222) and Redis (127.0.0.1:6379): a message whose field is misspelled or
missing is dead-lettered naming the field, never a row with a silently null column, in
consumer groups, in pipeline sources (both formats) and in ``ingest_payloads``; counts
stay in = out + dead. ``refuse_file`` has no meaning for a message and is refused at
load."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from dataflare_platform.connectors.nats.jetstream import (
    NatsConsumer,
    NatsProducer,
    NatsSource,
    delete_stream,
    ensure_stream,
)
from dataflare_platform.connectors.nats.settings import NatsSettings
from dataflare_platform.connectors.redis import streams as rs
from dataflare_platform.errors import ConfigError
from dataflare_platform.events.codec import encode_arrow
from dataflare_platform.events.deadletter import DeadLetters
from dataflare_platform.events.ingest import ingest_payloads
from dataflare_platform.events.log import EventLog
from dataflare_platform_tests.connectors.broker_helpers import (
    NATS_URL_VARIABLE,
    REDIS_URL_VARIABLE,
    dead_of,
    read_all,
    service_url,
    unique,
)

SCHEMA = pa.schema([("id", pa.int64()), ("price", pa.int64()), ("date_time", pa.timestamp("ms"))])
T = "2026-01-01 00:00:0{}.000"
GOOD = [json.dumps({"id": i, "price": 10 * i, "date_time": T.format(i)}).encode() for i in range(4)]
MISSPELLED = b'{"id": 7, "pirce": 70, "date_time": "2026-01-01 00:00:07.000"}'  # pirce/price
EXTRA = b'{"id": 8, "price": 80, "date_time": "2026-01-01 00:00:08.000", "channel": "x"}'
NULL_PRICE = b'{"id": 9, "price": null, "date_time": "2026-01-01 00:00:09.000"}'  # not missing
PAYLOADS = [GOOD[0], MISSPELLED, GOOD[1], EXTRA, GOOD[2], NULL_PRICE, GOOD[3]]


@pytest.fixture(scope="module")
def nats_url() -> str:
    return service_url(
        NATS_URL_VARIABLE, "nats://127.0.0.1:4222", "NATS JetStream", "nats-server -js"
    )


@pytest.fixture(scope="module")
def redis_url() -> str:
    return service_url(REDIS_URL_VARIABLE, "redis://127.0.0.1:6379/0", "Redis", "redis-server")


@pytest.fixture
def broker(request, nats_url, redis_url):
    """(make settings, producer class, consumer class, source class) of one broker;
    every stream made is deleted after the test."""
    made = []
    if request.param == "nats":

        def make(**values):
            s = NatsSettings(url=nats_url, stream=unique("dftest-"), **values)
            ensure_stream(s)
            made.append((delete_stream, s))
            return s

        yield make, NatsProducer, NatsConsumer, NatsSource
    else:

        def make(**values):
            s = rs.RedisSettings(url=redis_url, stream=unique("dftest:"), **values)
            made.append((rs.delete_stream, s))
            return s

        yield make, rs.RedisProducer, rs.RedisConsumer, rs.RedisSource
    for delete, s in made:
        delete(s)


BROKERS = pytest.mark.parametrize("broker", ["nats", "redis"], indirect=True)


def _send(producer_class, settings, payloads) -> None:
    producer = producer_class(settings)
    try:
        producer.send_raw(payloads)
    finally:
        producer.close()


def _fetch_everything(consumer, messages: int):
    tables, dead, ids = [], [], []
    while len(ids) < messages:
        result = consumer.fetch(100, timeout_s=5)
        assert result.messages, f"only {len(ids)} of {messages} messages came"
        tables.append(result.table)
        dead.append(result.dead)
        ids += result.ids
        result.ack()
    return pa.concat_tables(tables), pa.concat_tables(dead), ids


@BROKERS
def test_consumer_group_dead_letters_a_misspelled_field(broker):
    make, producer_class, consumer_class, _ = broker
    s = make()
    consumer = consumer_class(s, SCHEMA)
    try:
        _send(producer_class, s, PAYLOADS)
        table, dead, ids = _fetch_everything(consumer, len(PAYLOADS))
    finally:
        consumer.close()
    assert len(ids) == table.num_rows + dead.num_rows == len(PAYLOADS)
    assert sorted(dead.column("payload").to_pylist()) == sorted([MISSPELLED, EXTRA])
    reasons = dict(
        zip(dead.column("payload").to_pylist(), dead.column("reason").to_pylist(), strict=True)
    )
    assert "unknown field(s) ['pirce']" in reasons[MISSPELLED]
    assert "missing field(s) ['price']" in reasons[MISSPELLED]
    assert "on_schema_mismatch: dead_letter" in reasons[MISSPELLED]
    assert "unknown field(s) ['channel']" in reasons[EXTRA]
    assert sorted(table.column("id").to_pylist()) == [0, 1, 2, 3, 9]
    assert table.column("price").null_count == 1  # the explicit null only


@BROKERS
def test_allow_extra_ignores_unknown_fields_but_not_missing_ones(broker):
    make, producer_class, consumer_class, _ = broker
    s = make(on_schema_mismatch="allow_extra")
    consumer = consumer_class(s, SCHEMA)
    try:
        _send(producer_class, s, PAYLOADS)
        table, dead, _ = _fetch_everything(consumer, len(PAYLOADS))
    finally:
        consumer.close()
    assert dead.column("payload").to_pylist() == [MISSPELLED]
    reason = dead.column("reason")[0].as_py()
    assert "missing field(s) ['price']" in reason and "pirce" not in reason
    assert sorted(table.column("id").to_pylist()) == [0, 1, 2, 3, 8, 9]


@BROKERS
def test_pipeline_source_dead_letters_a_misspelled_field(broker):
    make, producer_class, _, source_class = broker
    s = make()
    _send(producer_class, s, PAYLOADS)
    source = source_class(s, SCHEMA, time_column="date_time", bounded=True)
    try:
        rows = read_all(source, max_rows=3)
        dead = dead_of(source)
    finally:
        source.close()
    assert sorted(dead.column("payload").to_pylist()) == sorted([MISSPELLED, EXTRA])
    assert all("on_schema_mismatch" in r for r in dead.column("reason").to_pylist())
    # Dense offsets: the dead messages read as placeholder rows, the rest as sent.
    assert source.stats.messages == len(PAYLOADS) == source.stats.good_messages + 2
    assert rows.num_rows == len(PAYLOADS)
    assert rows.column("id").to_pylist() == [0, None, 1, None, 2, 9, 3]


@BROKERS
def test_arrow_messages_with_a_renamed_column_are_dead_lettered(broker):
    make, producer_class, consumer_class, _ = broker
    s = make(format="arrow")
    good = pa.table({"id": [1, 2], "price": [5, 6], "date_time": [1, 2]}).cast(SCHEMA)
    renamed = good.rename_columns(["id", "pirce", "date_time"])
    consumer = consumer_class(s, SCHEMA)
    try:
        _send(producer_class, s, [encode_arrow(good), encode_arrow(renamed)])
        table, dead, ids = _fetch_everything(consumer, 2)
    finally:
        consumer.close()
    assert len(ids) == 2 and table.num_rows == 2 and dead.num_rows == 1
    assert "unknown field(s) ['pirce']" in dead.column("reason")[0].as_py()


def test_refuse_file_is_refused_for_a_stream_naming_the_field(nats_url, redis_url):
    with pytest.raises(ConfigError, match="on_schema_mismatch"):
        NatsSettings.load(url=nats_url, stream="s", on_schema_mismatch="refuse_file")
    with pytest.raises(ConfigError, match="on_schema_mismatch"):
        rs.RedisSettings.load(url=redis_url, stream="s", on_schema_mismatch="refuse_file")


def test_ingest_payloads_follows_the_policy(tmp_path):
    log = EventLog(tmp_path / "log")
    log.create_topic("t", SCHEMA)
    result = ingest_payloads(log, "t", PAYLOADS, source="bridge")
    assert (result.accepted, result.dead_lettered) == (5, 2)
    letters = DeadLetters(log, "t")
    reasons = {letters.show(i).offset: letters.show(i).reason for i in range(2)}
    assert set(reasons) == {1, 3}
    assert "unknown field(s) ['pirce']" in reasons[1]
    assert log.topic("t").read_all().column("price").null_count == 1

    log.create_topic("u", SCHEMA)
    result = ingest_payloads(log, "u", PAYLOADS, on_schema_mismatch="allow_extra")
    assert (result.accepted, result.dead_lettered) == (6, 1)
