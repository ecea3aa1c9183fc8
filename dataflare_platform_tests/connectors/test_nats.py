"""NATS JetStream connectors against a real server (127.0.0.1:4222 unless
DATAFLARE_TEST_NATS_URL says otherwise): round trips in both formats, fuzzed payloads,
durable consumers across restarts, redelivery of unacked messages, offsets that
survive deletions and concurrent producers, and engine runs equal to a TableSource."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataflare_platform.connectors import nats as nats_connector
from dataflare_platform.connectors.broker import BrokerError, BrokerUnavailableError
from dataflare_platform.connectors.nats.jetstream import (
    NatsConsumer,
    NatsProducer,
    NatsSource,
    delete_stream,
    ensure_stream,
)
from dataflare_platform.connectors.nats.session import NatsSession
from dataflare_platform.connectors.nats.settings import NatsSettings
from dataflare_platform.engine import CollectSink
from dataflare_platform.errors import ConfigError
from dataflare_platform_tests.connectors.broker_helpers import (
    NATS_URL_VARIABLE,
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
def nats_url() -> str:
    return service_url(
        NATS_URL_VARIABLE, "nats://127.0.0.1:4222", "NATS JetStream", "nats-server -js"
    )


@pytest.fixture
def make_settings(nats_url):
    """Settings for fresh, uniquely named streams, all deleted after the test."""
    made: list[NatsSettings] = []

    def make(**values) -> NatsSettings:
        s = NatsSettings(url=nats_url, stream=unique("dftest-"), **values)
        made.append(s)
        return s

    yield make
    for s in made:
        delete_stream(s)


@pytest.fixture(scope="module")
def bids(small_nexmark) -> pa.Table:
    return small_nexmark["bids"]


def fetch_all(consumer: NatsConsumer, expected_messages: int) -> tuple[pa.Table, list[str]]:
    tables, ids = [], []
    while len(ids) < expected_messages:
        result = consumer.fetch(700, timeout_s=2)
        assert result.messages, f"only {len(ids)} of {expected_messages} messages came"
        assert result.dead.num_rows == 0
        tables.append(result.table)
        ids += result.ids
        result.ack()
    return pa.concat_tables(tables), ids


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_of_nexmark_bids(make_settings, bids, fmt):
    s = make_settings(format=fmt, batch_rows=300)
    producer = NatsProducer(s)
    try:
        assert producer.send(bids) == bids.num_rows
        messages = bids.num_rows if fmt == "json" else -(-bids.num_rows // 300)
        assert producer.messages == messages
    finally:
        producer.close()

    source = NatsSource(s, bids.schema, name="bids", bounded=True)
    try:
        rows = read_all(source)
        assert rows.equals(bids)
        check_source_accounting(source, rows, messages)
        assert source.stats.dead_messages == source.stats.placeholder_rows == 0
    finally:
        source.close()

    consumer = NatsConsumer(s, bids.schema)
    try:
        table, ids = fetch_all(consumer, messages)
        assert table.equals(bids)
        assert ids == [str(seq) for seq in range(1, messages + 1)]
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
        s = make_settings(format=fmt, durable="fuzz")
        producer = NatsProducer(s)
        try:
            assert producer.send_raw([p for _, p, _ in items]) == len(items)
        finally:
            producer.close()
        source = NatsSource(s, bids.schema, bounded=True)
        try:
            check_fuzzed_read(items, fmt, source)
        finally:
            source.close()
        consumer = NatsConsumer(s, bids.schema)
        try:
            check_fuzzed_fetch(items, fmt, consumer)
        finally:
            consumer.close()

    check()


def test_durable_consumer_resumes_where_it_acked(make_settings, bids):
    s = make_settings(format="json", durable="resume")
    producer = NatsProducer(s)
    producer.send(bids.slice(0, 100))
    producer.close()

    first = NatsConsumer(s, bids.schema)
    result = first.fetch(40, timeout_s=2)
    assert result.ids == [str(i) for i in range(1, 41)]
    result.ack()
    first.close()

    second = NatsConsumer(s, bids.schema)
    try:
        table, ids = fetch_all(second, 60)
        assert ids == [str(i) for i in range(41, 101)]
        assert table.equals(bids.slice(40, 60))
        assert second.fetch(10, timeout_s=0.1).messages == 0
    finally:
        second.close()


def test_unacked_messages_are_redelivered_after_ack_wait(make_settings, bids):
    """Unacked messages come back, each once, to another member of the group, and acked
    ones never. When they come back is the server's timer: the test checks that the
    consumer's ``ack_wait`` reached the server, not how long the wait took here (an
    elapsed-time bound measured around the fetch failed by 2 ms under two workers)."""
    ack_wait = 2.0
    s = make_settings(format="json", durable="redeliver", ack_wait_s=ack_wait)
    producer = NatsProducer(s)
    producer.send(bids.slice(0, 30))
    producer.close()

    crashed = NatsConsumer(s, bids.schema)
    taken = crashed.fetch(10, timeout_s=2)
    assert taken.ids == [str(i) for i in range(1, 11)]
    crashed.close()  # gone without acking

    other = NatsConsumer(s, bids.schema)
    try:
        rest = other.fetch(100, timeout_s=0.5)
        fresh = [i for i in rest.ids if int(i) > 10]
        redelivered = [i for i in rest.ids if int(i) <= 10]
        assert fresh == [str(i) for i in range(11, 31)]
        rest.ack()
        deadline = time.monotonic() + 60
        while len(redelivered) < len(taken.ids) and time.monotonic() < deadline:
            again = other.fetch(100, timeout_s=1)
            redelivered += again.ids
            again.ack()
        assert sorted(redelivered, key=int) == taken.ids  # each unacked one, once
        session = NatsSession(s)
        try:
            info = session.run(session.js.consumer_info(s.stream, s.durable))
        finally:
            session.close()
        assert info.config.ack_wait == ack_wait  # the wait the server redelivers after
        time.sleep(ack_wait + 0.3)
        assert other.fetch(100, timeout_s=0.2).messages == 0  # acked: never again
    finally:
        other.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_engine_over_nats_equals_engine_over_table(make_settings, bids, fmt):
    s = make_settings(format=fmt, batch_rows=256)
    producer = NatsProducer(s)
    producer.send(bids)
    producer.close()
    source = NatsSource(s, bids.schema, name="bids", bounded=True)
    try:
        got = run_q1(source)
    finally:
        source.close()
    expected = q1_over_table(bids)
    assert got.height == bids.num_rows
    assert got.equals(expected)


def test_engine_dead_letters_bad_messages_and_keeps_the_rest(make_settings, bids):
    s = make_settings(format="json")
    producer = NatsProducer(s)
    good = bids.slice(0, 1000)
    producer.send(good.slice(0, 400))
    producer.send_raw([b"{not json", b"\xff\x00", b'{"price": "high"}'])
    producer.send(good.slice(400))
    producer.close()
    source = NatsSource(s, bids.schema, name="bids", bounded=True)
    try:
        got = run_q1(source)
        dead = dead_of(source)
    finally:
        source.close()
    assert got.equals(q1_over_table(good))
    assert dead.column("offset").to_pylist() == [400, 401, 402]
    assert dead.column("payload").to_pylist()[1] == b"\xff\x00"


@pytest.mark.parametrize("fmt", FORMATS)
def test_engine_restarts_from_its_checkpoint_on_a_fresh_source(make_settings, bids, fmt):
    """A run stops mid-stream (mid-message for arrow); a new source object resumes
    from the sink's checkpoint: the two runs together equal one uninterrupted run."""
    s = make_settings(format=fmt, batch_rows=256)
    producer = NatsProducer(s)
    producer.send(bids)
    producer.close()
    sink = CollectSink()
    first = NatsSource(s, bids.schema, name="bids", bounded=True)
    try:
        partial = run_q1(first, sink, until={f"bids/{s.stream}": 1000})
    finally:
        first.close()
    assert partial.height == 1000
    assert sink.checkpoint.offsets == {f"bids/{s.stream}": 1000}
    second = NatsSource(s, bids.schema, name="bids", bounded=True)
    try:
        resumed = run_q1(second, sink)
    finally:
        second.close()
    assert resumed.equals(q1_over_table(bids))


@pytest.mark.parametrize("fmt", FORMATS)
def test_deleted_messages_leave_placeholders_and_offsets_stay(make_settings, bids, fmt):
    s = make_settings(format=fmt, batch_rows=100)
    producer = NatsProducer(s)
    table = bids.slice(0, 500)
    producer.send(table)
    producer.close()
    session = NatsSession(s)
    try:
        session.run(session.js.delete_msg(s.stream, 2))  # json: row 1; arrow: rows 100..199
    finally:
        session.close()
    source = NatsSource(s, bids.schema, bounded=True)
    try:
        rows = read_all(source, max_rows=64)
        gone = range(1, 2) if fmt == "json" else range(100, 200)
        assert rows.num_rows == 500
        assert rows.column("auction").null_count == len(gone)
        kept = [i for i in range(500) if i not in gone]
        assert rows.take(kept).equals(table.take(kept))
        reasons = dead_of(source).column("reason").to_pylist()
        assert reasons and all("hold no message" in r for r in reasons)
        # A fresh source seeks straight past the hole: offsets did not shift.
        again = NatsSource(s, bids.schema)
        try:
            assert again.read(again.partitions()[0], 250, 10).equals(table.slice(250, 10))
        finally:
            again.close()
    finally:
        source.close()


def test_concurrent_arrow_producers_never_overlap(make_settings, bids):
    s = make_settings(format="arrow", batch_rows=50)
    errors: list[BaseException] = []

    def produce(part: pa.Table) -> None:
        try:
            producer = NatsProducer(s)
            try:
                for start in range(0, part.num_rows, 150):
                    producer.send(part.slice(start, 150))
            finally:
                producer.close()
        except BaseException as err:
            errors.append(err)

    NatsProducer(s).close()  # create the stream once, before the race
    halves = [bids.slice(0, 1200), bids.slice(1200, 1200)]
    threads = [threading.Thread(target=produce, args=(h,)) for h in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    source = NatsSource(s, bids.schema, bounded=True)
    try:
        rows = read_all(source)
        assert source.stats.placeholder_rows == 0 and source.stats.dead_messages == 0
        assert rows.num_rows == 2400
        assert same_rows(rows, bids.slice(0, 2400))
    finally:
        source.close()


def test_unreachable_server_fails_clearly():
    s = NatsSettings(url="nats://127.0.0.1:1", stream="nowhere", connect_timeout_s=0.5)
    with pytest.raises(BrokerUnavailableError, match=r"NATS at nats://127\.0\.0\.1:1"):
        NatsProducer(s)


def test_missing_stream_is_refused_by_readers(nats_url, bids):
    s = NatsSettings(url=nats_url, stream=unique("dftest-missing-"))
    with pytest.raises(BrokerError, match="does not exist"):
        NatsSource(s, bids.schema)
    with pytest.raises(BrokerError, match="does not exist"):
        NatsConsumer(s, bids.schema)
    ensure_stream(s)
    try:
        ensure_stream(s)  # idempotent
        source = NatsSource(s, bids.schema)
        try:
            assert source.read(s.stream, 0, 100).num_rows == 0  # nothing yet, no error
        finally:
            source.close()
    finally:
        delete_stream(s)


def test_bad_settings_are_refused_naming_the_field():
    with pytest.raises(ConfigError) as caught:
        NatsSettings.load(stream="has space", batch_rows=0, colour="red")
    assert set(caught.value.fields) == {"stream", "batch_rows", "colour"}
    with pytest.raises(ConfigError, match="not captured"):
        NatsSettings.load(stream="s", subject="other.x")


# -- the connector contracts ------------------------------------------------------------
class TestNatsSourceContract(DeadLetterContract):
    """A json stream opened through the registry (``kind: nats``)."""

    KIND = "nats"

    @pytest.fixture
    def source_case(self, make_settings) -> SourceCase:
        def fresh() -> NatsSettings:
            settings = make_settings()
            ensure_stream(settings)
            return settings

        return broker_source_case(
            fresh, NatsProducer, nats_connector.NatsSourceSettings, nats_connector.open_source
        )
