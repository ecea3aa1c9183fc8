"""Connector metrics on real brokers: round trips and their latency, acks and
redeliveries (NATS JetStream, Redis Streams), commits (PostgreSQL, the embedded log),
read back through the Prometheus multiprocess endpoint."""

from __future__ import annotations

import time
import uuid

import polars as pl
import psycopg
import pytest

from dataflare_platform import observability
from dataflare_platform.connectors.nats.jetstream import NatsConsumer, NatsProducer, delete_stream
from dataflare_platform.connectors.nats.settings import NatsSettings
from dataflare_platform.connectors.postgres.sink import PostgresSink
from dataflare_platform.connectors.redis import streams as redis_streams
from dataflare_platform.connectors.redis.streams import RedisConsumer, RedisProducer
from dataflare_platform.engine.checkpoint import Checkpoint
from dataflare_platform.events.engine_io import LogSink
from dataflare_platform.events.log import EventLog
from dataflare_platform.observability import connectors as connector_metrics
from dataflare_platform.observability.prometheus import exposition
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform_tests.connectors.broker_helpers import (
    NATS_URL_VARIABLE,
    REDIS_URL_VARIABLE,
    service_url,
    unique,
)
from dataflare_platform_tests.observability.fixtures import metrics_dir
from dataflare_platform_tests.observability.scrape import value

__all__ = ["metrics_dir"]

REQUESTS = "dataflare_connector_requests_total"
SECONDS = "dataflare_connector_request_seconds_count"
ACKS = "dataflare_connector_acks_total"
REDELIVERED = "dataflare_connector_redeliveries_total"


@pytest.fixture(scope="module")
def bids(small_nexmark):
    return small_nexmark["bids"]


def test_metrics_off_bind_nothing():
    """Off: the connector holds the shared no-op object (nothing bound, nothing kept)."""
    observability.configure(None)
    off = connector_metrics.for_connector("nats", "x")
    assert off is connector_metrics.OFF
    with off.request("fetch"):
        off.acked(3)
        off.redelivered(2)


def test_nats_publish_fetch_ack_and_redelivery(metrics_dir, bids):
    url = service_url(NATS_URL_VARIABLE, "nats://127.0.0.1:4222", "NATS JetStream", "nats-server")
    s = NatsSettings(url=url, stream=unique("dftest-"), durable="m", ack_wait_s=1.0)
    try:
        producer = NatsProducer(s)
        producer.send(bids.slice(0, 20))
        producer.close()
        crashed = NatsConsumer(s, bids.schema)
        taken = crashed.fetch(10, timeout_s=2)
        assert taken.messages == 10
        crashed.close()  # gone without acking: JetStream delivers them again
        other = NatsConsumer(s, bids.schema)
        try:
            seen: list[str] = []
            deadline = time.monotonic() + 60  # progress decides; this only catches a hang
            while len(seen) < 20 and time.monotonic() < deadline:
                result = other.fetch(100, timeout_s=1)
                seen += result.ids
                result.ack()
            assert sorted(set(seen), key=int) == [str(i) for i in range(1, 21)]
        finally:
            other.close()
    finally:
        delete_stream(s)
    text = exposition(metrics_dir)
    labels = {"connector": "nats", "stream": s.stream}
    assert value(text, REQUESTS, **labels, operation="publish", outcome="ok") == 1
    assert value(text, SECONDS, **labels, operation="publish") == 1
    assert value(text, REQUESTS, **labels, operation="fetch", outcome="ok") >= 2
    assert value(text, ACKS, **labels, outcome="ack") == 20
    assert value(text, REDELIVERED, **labels) == 10


def test_redis_append_fetch_ack_and_redelivery(metrics_dir, bids):
    url = service_url(REDIS_URL_VARIABLE, "redis://127.0.0.1:6379/0", "Redis", "redis-server")
    s = redis_streams.RedisSettings(url=url, stream=unique("dftest:"), consumer="a")
    try:
        producer = RedisProducer(s)
        producer.send(bids.slice(0, 20))
        producer.close()
        first = RedisConsumer(s, bids.schema)
        assert first.fetch(10, timeout_s=1).messages == 10  # never acked
        first.close()
        again = RedisConsumer(s, bids.schema)  # the same member restarted
        backlog = again.fetch(100, timeout_s=1)
        assert backlog.messages == 10
        backlog.ack()
        rest = again.fetch(100, timeout_s=1)
        assert rest.messages == 10
        rest.ack()
        again.close()
    finally:
        redis_streams.delete_stream(s)
    text = exposition(metrics_dir)
    labels = {"connector": "redis", "stream": s.stream}
    assert value(text, REQUESTS, **labels, operation="append", outcome="ok") >= 1
    assert value(text, REQUESTS, **labels, operation="fetch", outcome="ok") == 3
    assert value(text, REQUESTS, **labels, operation="ack", outcome="ok") == 2
    assert value(text, ACKS, **labels, outcome="ack") == 20
    assert value(text, REDELIVERED, **labels) == 10


def test_postgres_commits_and_a_refused_one(metrics_dir, dsn):
    schema = f"dataflare_test_{uuid.uuid4().hex[:12]}"
    try:
        sink = PostgresSink(dsn, "out", schema_name=schema)
        sink.open("p")
        sink.write(pl.DataFrame({"a": [1, 2]}), None)
        sink.commit(Checkpoint())
        with psycopg.connect(dsn, autocommit=True) as conn:  # the server refuses the next
            conn.execute(f"DROP TABLE {quote_identifier(schema)}.out")
        sink.write(pl.DataFrame({"a": [3]}), None)
        with pytest.raises(psycopg.errors.UndefinedTable):
            sink.commit(Checkpoint())
        sink.close()
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {quote_identifier(schema)} CASCADE")
    text = exposition(metrics_dir)
    labels = {"connector": "postgres", "stream": f"{schema}.out", "operation": "commit"}
    assert value(text, REQUESTS, **labels, outcome="ok") == 1
    assert value(text, REQUESTS, **labels, outcome="error") == 1
    assert value(text, SECONDS, **labels) == 2


def test_log_sink_commits(metrics_dir, tmp_path):
    log = EventLog(tmp_path / "log")
    sink = LogSink(log, "out", time_column="date_time")
    sink.open("p")
    frame = pl.DataFrame({"date_time": [1, 2]}).with_columns(
        pl.col("date_time").cast(pl.Datetime("ms"))
    )
    for _ in range(3):
        sink.write(frame, None)
        sink.commit(Checkpoint())
    sink.close()
    text = exposition(metrics_dir)
    labels = {"connector": "log", "stream": "out", "operation": "commit"}
    assert value(text, REQUESTS, **labels, outcome="ok") == 3
    assert value(text, SECONDS, **labels) == 3
