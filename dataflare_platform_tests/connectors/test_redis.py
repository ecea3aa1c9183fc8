"""Redis Streams connectors against a real server (127.0.0.1:6379 unless
DATAFLARE_TEST_REDIS_URL says otherwise): round trips in both formats, fuzzed payloads,
consumer groups across restarts, XAUTOCLAIM recovery after a crash, offsets that
survive trimming and concurrent producers, and engine runs equal to a TableSource."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataflare_platform.connectors import redis as redis_connector
from dataflare_platform.connectors.broker import BrokerError, BrokerUnavailableError
from dataflare_platform.connectors.redis.streams import (
    RedisConsumer,
    RedisProducer,
    RedisSettings,
    RedisSource,
    delete_stream,
)
from dataflare_platform.engine import CollectSink
from dataflare_platform.errors import ConfigError
from dataflare_platform.events.codec import DEAD_LETTER_SCHEMA
from dataflare_platform_tests.connectors.broker_helpers import (
    REDIS_URL_VARIABLE,
    arrow_items,
    broker_source_case,
    check_fuzzed_fetch,
    check_fuzzed_read,
    check_source_accounting,
    dead_of,
    json_items,
    q1_over_table,
    read_all,
    run_q1,
    same_rows,
    service_url,
    unique,
)
from dataflare_platform_tests.connectors.contract import DeadLetterContract, SourceCase

FORMATS = ["json", "arrow"]


@pytest.fixture(scope="module")
def redis_url() -> str:
    return service_url(REDIS_URL_VARIABLE, "redis://127.0.0.1:6379/0", "Redis", "redis-server")


@pytest.fixture
def make_settings(redis_url):
    """Settings for fresh, uniquely named streams, all deleted after the test."""
    made: list[RedisSettings] = []

    def make(**values) -> RedisSettings:
        stream = values.pop("stream", None) or unique("dftest:")
        s = RedisSettings(url=redis_url, stream=stream, **values)
        made.append(s)
        return s

    yield make
    for s in made:
        delete_stream(s)


@pytest.fixture(scope="module")
def bids(small_nexmark) -> pa.Table:
    return small_nexmark["bids"]


def member(s: RedisSettings, name: str) -> RedisSettings:
    return s.model_copy(update={"consumer": name})


def fetch_all(consumer: RedisConsumer, expected: int) -> tuple[pa.Table, list[str]]:
    tables, ids = [], []
    while len(ids) < expected:
        result = consumer.fetch(700, timeout_s=1)
        assert result.messages, f"only {len(ids)} of {expected} entries came"
        assert result.dead.num_rows == 0
        tables.append(result.table)
        ids += result.ids
        result.ack()
    return pa.concat_tables(tables), ids


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_of_nexmark_bids(make_settings, bids, fmt):
    s = make_settings(format=fmt, batch_rows=300)
    producer = RedisProducer(s)
    try:
        assert producer.send(bids) == bids.num_rows
        assert producer.end_offset == bids.num_rows
        messages = bids.num_rows if fmt == "json" else -(-bids.num_rows // 300)
        assert producer.messages == messages
    finally:
        producer.close()

    source = RedisSource(s, bids.schema, name="bids", bounded=True)
    try:
        rows = read_all(source)
        assert rows.equals(bids)
        check_source_accounting(source, rows, messages)
        assert source.stats.dead_messages == source.stats.placeholder_rows == 0
    finally:
        source.close()

    consumer = RedisConsumer(s, bids.schema)
    try:
        table, ids = fetch_all(consumer, messages)
        assert table.equals(bids)
        ends = (
            range(1, messages + 1)
            if fmt == "json"
            else [min(bids.num_rows, 300 * i) for i in range(1, messages + 1)]
        )
        assert ids == [f"0-{end}" for end in ends]
        assert consumer.pending() == 0
    finally:
        consumer.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_fuzzed_payloads_are_dead_lettered_never_fatal(make_settings, bids, fmt):
    items_of = json_items(bids) if fmt == "json" else arrow_items(bids)

    @settings(
        max_examples=15,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(items=st.lists(items_of, min_size=1, max_size=40))
    def check(items):
        s = make_settings(format=fmt)
        producer = RedisProducer(s)
        try:
            assert producer.send_raw([p for _, p, _ in items]) == len(items)
        finally:
            producer.close()
        source = RedisSource(s, bids.schema, bounded=True)
        try:
            check_fuzzed_read(items, fmt, source)
        finally:
            source.close()
        consumer = RedisConsumer(s, bids.schema)
        try:
            check_fuzzed_fetch(items, fmt, consumer)
        finally:
            consumer.close()

    check()


def test_group_resumes_where_it_acked_and_rereads_its_own_pending(make_settings, bids):
    s = make_settings(format="json", group="resume", consumer="worker-1")
    producer = RedisProducer(s)
    producer.send(bids.slice(0, 100))
    producer.close()

    first = RedisConsumer(s, bids.schema)
    acked = first.fetch(30, timeout_s=1)
    acked.ack()
    unacked = first.fetch(20, timeout_s=1)  # fetched, then the process dies
    first.close()
    assert acked.ids == [f"0-{i}" for i in range(1, 31)]
    assert unacked.ids == [f"0-{i}" for i in range(31, 51)]

    again = RedisConsumer(s, bids.schema)  # same member name: its pending entries first
    try:
        table, ids = fetch_all(again, 70)
        assert ids == [f"0-{i}" for i in range(31, 101)]
        assert table.equals(bids.slice(30, 70))
        assert again.fetch(10, timeout_s=0.05).messages == 0
        assert again.pending() == 0
    finally:
        again.close()


def test_xautoclaim_recovers_a_crashed_members_entries(make_settings, bids):
    s = make_settings(format="json", group="workers")
    producer = RedisProducer(s)
    producer.send(bids.slice(0, 60))
    producer.close()
    all_ids = {f"0-{i}" for i in range(1, 61)}

    a = RedisConsumer(member(s, "a"), bids.schema)
    lost = a.fetch(25, timeout_s=1)
    a.close()  # crashes: connection dropped, nothing acked

    b = RedisConsumer(member(s, "b"), bids.schema)
    try:
        _, rest_ids = fetch_all(b, 35)
        assert b.claim(min_idle_s=60, max_records=100).messages == 0  # not idle long enough
        time.sleep(0.3)
        claimed = b.claim(min_idle_s=0.2, max_records=100)
        assert claimed.ids == lost.ids  # exactly the crashed member's entries, once
        assert claimed.table.equals(lost.table)
        claimed.ack()
        assert set(lost.ids).isdisjoint(rest_ids)
        assert set(lost.ids) | set(rest_ids) == all_ids
        assert len(lost.ids) + len(rest_ids) == len(all_ids)  # nothing twice
        assert b.pending() == 0
        assert b.claim(min_idle_s=0, max_records=100).messages == 0
    finally:
        b.close()


def test_fetch_adopts_stale_entries_when_claim_idle_is_set(make_settings, bids):
    s = make_settings(format="json", group="auto", claim_idle_s=0.2)
    producer = RedisProducer(s)
    producer.send(bids.slice(0, 10))
    producer.close()
    a = RedisConsumer(member(s, "a"), bids.schema)
    lost = a.fetch(10, timeout_s=1)
    a.close()
    time.sleep(0.3)
    b = RedisConsumer(member(s, "b"), bids.schema)
    try:
        adopted = b.fetch(100, timeout_s=1)
        assert adopted.ids == lost.ids
        adopted.ack()
        assert b.pending() == 0
    finally:
        b.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_engine_over_redis_equals_engine_over_table(make_settings, bids, fmt):
    s = make_settings(format=fmt, batch_rows=256)
    producer = RedisProducer(s)
    producer.send(bids)
    producer.close()
    source = RedisSource(s, bids.schema, name="bids", bounded=True)
    try:
        got = run_q1(source)
    finally:
        source.close()
    assert got.height == bids.num_rows
    assert got.equals(q1_over_table(bids))


@pytest.mark.parametrize("fmt", FORMATS)
def test_engine_restarts_from_its_checkpoint_on_a_fresh_source(make_settings, bids, fmt):
    """A run stops mid-stream (mid-message for arrow); a new source object resumes
    from the sink's checkpoint: the two runs together equal one uninterrupted run."""
    s = make_settings(format=fmt, batch_rows=256)
    producer = RedisProducer(s)
    producer.send(bids)
    producer.close()
    sink = CollectSink()
    first = RedisSource(s, bids.schema, name="bids", bounded=True)
    try:
        partial = run_q1(first, sink, until={f"bids/{s.stream}": 1000})
    finally:
        first.close()
    assert partial.height == 1000
    assert sink.checkpoint.offsets == {f"bids/{s.stream}": 1000}
    second = RedisSource(s, bids.schema, name="bids", bounded=True)
    try:
        resumed = run_q1(second, sink)
    finally:
        second.close()
    assert resumed.equals(q1_over_table(bids))


def test_dead_letters_can_be_routed_to_a_dead_letter_stream(make_settings, bids):
    s = make_settings(format="json")
    dlq = make_settings(format="arrow")
    producer = RedisProducer(s)
    good = bids.slice(0, 500)
    producer.send(good.slice(0, 250))
    producer.send_raw([b"{broken", b'{"auction": "x"}'])
    producer.send(good.slice(250))
    producer.close()
    forward = RedisProducer(dlq)
    source = RedisSource(s, bids.schema, name="bids", bounded=True, on_dead_letter=forward.send)
    try:
        got = run_q1(source)
    finally:
        source.close()
        forward.close()
    assert got.equals(q1_over_table(good))
    assert source.dead_letters == []  # all went to the callback
    reader = RedisConsumer(dlq, DEAD_LETTER_SCHEMA)
    try:
        result = reader.fetch(100, timeout_s=1)
        assert result.table.column("offset").to_pylist() == [250, 251]
        assert result.table.column("payload").to_pylist() == [b"{broken", b'{"auction": "x"}']
        result.ack()
    finally:
        reader.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_trimmed_and_deleted_entries_leave_placeholders(make_settings, bids, fmt):
    s = make_settings(format=fmt, batch_rows=100)
    producer = RedisProducer(s)
    table = bids.slice(0, 500)
    producer.send(table)
    producer.close()
    client = redis.Redis.from_url(s.url)
    try:
        gone_id = "0-2" if fmt == "json" else "0-200"
        assert client.xdel(s.stream, gone_id) == 1
    finally:
        client.close()
    source = RedisSource(s, bids.schema, bounded=True)
    try:
        rows = read_all(source, max_rows=64)
        gone = range(1, 2) if fmt == "json" else range(100, 200)
        assert rows.num_rows == 500
        assert rows.column("auction").null_count == len(gone)
        kept = [i for i in range(500) if i not in gone]
        assert rows.take(kept).equals(table.take(kept))
        reasons = dead_of(source).column("reason").to_pylist()
        assert reasons and all("hold no message" in r for r in reasons)
    finally:
        source.close()


def test_maxlen_trims_the_head_without_shifting_offsets(make_settings, bids):
    s = make_settings(format="json", maxlen=100, append_messages=50)
    producer = RedisProducer(s)
    producer.send(bids.slice(0, 1000))
    producer.close()
    source = RedisSource(s, bids.schema, bounded=True)
    try:
        rows = read_all(source)
        assert rows.num_rows == 1000  # trimmed offsets read as placeholders
        kept = rows.column("auction").null_count
        assert 100 <= 1000 - kept < 1000
        tail = 1000 - kept
        assert rows.slice(kept).equals(bids.slice(kept, tail))
        fresh = RedisSource(s, bids.schema)
        try:
            assert fresh.read(s.stream, 990, 10).equals(bids.slice(990, 10))
        finally:
            fresh.close()
    finally:
        source.close()


def test_concurrent_producers_never_overlap(make_settings, bids):
    s = make_settings(format="arrow", batch_rows=50, append_messages=2)
    errors: list[BaseException] = []

    def produce(part: pa.Table) -> None:
        try:
            producer = RedisProducer(s)
            try:
                for start in range(0, part.num_rows, 150):
                    producer.send(part.slice(start, 150))
            finally:
                producer.close()
        except BaseException as err:
            errors.append(err)

    threads = [
        threading.Thread(target=produce, args=(bids.slice(i * 1200, 1200),)) for i in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    source = RedisSource(s, bids.schema, bounded=True)
    try:
        rows = read_all(source)
        assert source.stats.placeholder_rows == 0 and source.stats.dead_messages == 0
        assert same_rows(rows, bids.slice(0, 2400))
    finally:
        source.close()


def test_foreign_entry_ids_are_refused_by_offset_readers_only(make_settings, bids):
    s = make_settings(format="json")
    producer = RedisProducer(s)
    producer.send(bids.slice(0, 5))
    client = redis.Redis.from_url(s.url)
    try:
        client.xadd(s.stream, {"data": b"{}"})  # an ordinary millisecond id
    finally:
        client.close()
    with pytest.raises(BrokerError, match="not written by the DataFlare producer"):
        producer.send(bids.slice(5, 1))
    producer.close()
    source = RedisSource(s, bids.schema)
    try:
        assert source.read(s.stream, 0, 5).equals(bids.slice(0, 5))
        with pytest.raises(BrokerError, match="cannot be read by offset"):
            source.read(s.stream, 5, 5)
    finally:
        source.close()
    consumer = RedisConsumer(s, bids.schema)  # groups read any stream
    try:
        result = consumer.fetch(10, timeout_s=1)
        # The foreign entry is read; ``{}`` misses every field, so it is a dead letter
        # (on_schema_mismatch), not a row of nulls.
        assert result.messages == 6 and result.table.num_rows == 5
        assert "missing field(s)" in result.dead.column("reason")[0].as_py()
        result.ack()
    finally:
        consumer.close()


def test_unreachable_server_fails_clearly():
    s = RedisSettings(url="redis://127.0.0.1:1/0", stream="nowhere", connect_timeout_s=0.5)
    with pytest.raises(BrokerUnavailableError, match=r"Redis at redis://127\.0\.0\.1:1/0"):
        RedisProducer(s)


def test_bad_settings_are_refused_naming_the_field():
    with pytest.raises(ConfigError) as caught:
        RedisSettings.load(stream="s", format="xml", maxlen=0, url="http://x")
    assert set(caught.value.fields) == {"format", "maxlen", "url"}


# -- the connector contracts ------------------------------------------------------------
class TestRedisSourceContract(DeadLetterContract):
    """A json stream opened through the registry (``kind: redis``)."""

    KIND = "redis"

    @pytest.fixture
    def source_case(self, make_settings) -> SourceCase:
        return broker_source_case(
            make_settings,
            RedisProducer,
            redis_connector.RedisSourceSettings,
            redis_connector.open_source,
        )
